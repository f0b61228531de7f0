package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/httpserver"
)

type serveConfig struct {
	addr       string
	data       string
	tokens     string
	tokensFile string
	anonRead   bool
	catalog    string
	blob       string
	debugAddr  string
}

func serveCommand(stdout, stderr io.Writer) *ffcli.Command {
	var cfg serveConfig
	fs := flag.NewFlagSet("artifactstore serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8480", "listen address (ARTIFACTSTORE_ADDR)")
	fs.StringVar(&cfg.data, "data", "./artifactstore-data", "data directory: the SQLite catalog and the blobs (ARTIFACTSTORE_DATA)")
	fs.StringVar(&cfg.tokens, "tokens", "", "bearer tokens as tenant:token,tenant:token (ARTIFACTSTORE_TOKENS)")
	fs.StringVar(&cfg.tokensFile, "tokens-file", "", "file of tenant:token lines (ARTIFACTSTORE_TOKENS_FILE)")
	fs.BoolVar(&cfg.anonRead, "anon-read", false, "let callers without a token use the read endpoints; development only (ARTIFACTSTORE_ANON_READ)")
	fs.StringVar(&cfg.catalog, "catalog", "", "PostgreSQL catalog, postgres://user@host:port/db?sslmode=disable (ARTIFACTSTORE_CATALOG; default: SQLite in --data)")
	fs.StringVar(&cfg.blob, "blob", "", "S3 blob store, s3://bucket?endpoint=http://host:port&region=r, credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (ARTIFACTSTORE_BLOB; default: files in --data)")
	fs.StringVar(&cfg.debugAddr, "debug-addr", "", "also serve profiles (net/http/pprof, CPU profiles on demand) on this address; off when empty; keep it on loopback (ARTIFACTSTORE_DEBUG_ADDR)")
	fs.String("config", "", "config file of \"flag value\" lines")
	return &ffcli.Command{
		Name:       "serve",
		ShortUsage: "artifactstore serve [flags]",
		ShortHelp:  "run the reference HTTP server on the embedded store",
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, _ []string) error {
			return serve(ctx, cfg, stdout, stderr)
		},
	}
}

// parseTokens reads "tenant:token" entries separated by commas or newlines;
// blank lines and lines starting with # are skipped.
func parseTokens(src, text string, into map[string]string) error {
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(text, ",", "\n")))
	line := 0
	for sc.Scan() {
		line++
		entry := strings.TrimSpace(sc.Text())
		if entry == "" || strings.HasPrefix(entry, "#") {
			continue
		}
		tenant, tok, ok := strings.Cut(entry, ":")
		tenant, tok = strings.TrimSpace(tenant), strings.TrimSpace(tok)
		if !ok || tok == "" || !artifactstore.ValidTenant(tenant) {
			return fmt.Errorf("%s, entry %d: want tenant:token (tenant of letters, digits, '.', '_', '-')", src, line)
		}
		if prev, dup := into[tok]; dup && prev != tenant {
			return fmt.Errorf("%s: one token is given to two tenants", src)
		}
		into[tok] = tenant
	}
	return nil
}

// defaultMemoryLimit is the Go runtime's soft memory limit for serve unless
// GOMEMLIMIT says otherwise: the server streams everything, so its live heap
// is small, and a soft limit makes the collector run before garbage from
// bursts of small requests doubles the resident size. It is a GC target,
// never a cap that fails allocations.
const defaultMemoryLimit = 40 << 20

func serve(ctx context.Context, cfg serveConfig, stdout, stderr io.Writer) error {
	logw := newLogWriter(stderr)
	defer logw.Close()
	log := slog.New(slog.NewTextHandler(logw, nil))
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	tokens := map[string]string{}
	if err := parseTokens("ARTIFACTSTORE_TOKENS", cfg.tokens, tokens); err != nil {
		return err
	}
	if cfg.tokensFile != "" {
		b, err := os.ReadFile(cfg.tokensFile)
		if err != nil {
			return fmt.Errorf("tokens file: %w", err)
		}
		if err := parseTokens(cfg.tokensFile, string(b), tokens); err != nil {
			return err
		}
	}

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := httpserver.New(st, httpserver.Config{Tokens: tokens, AnonRead: cfg.anonRead, Logger: log, AccessLog: logw})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		// Streaming routes (uploads, downloads, event long-polls) lift
		// these deadlines for themselves; everything else must be quick.
		ReadTimeout:  time.Minute,
		WriteTimeout: time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(srv.Drain)
	var debugAddr net.Addr
	if cfg.debugAddr != "" {
		ds, addr, err := startDebugServer(cfg.debugAddr, log)
		if err != nil {
			ln.Close()
			return err
		}
		// Closed when serve returns, after the main server's shutdown.
		defer ds.Close()
		debugAddr = addr
	}

	fmt.Fprintf(stdout, "artifactstore listening on http://%s (%s)\n", ln.Addr(), describeBackends(cfg))
	switch {
	case len(tokens) == 0:
		fmt.Fprintln(stdout, "WARNING: no tokens are configured: every write is refused. Set ARTIFACTSTORE_TOKENS=tenant:token or --tokens-file.")
	default:
		fmt.Fprintf(stdout, "authenticate with: Authorization: Bearer <token> (%d token(s) configured)\n", len(tokens))
	}
	if cfg.anonRead {
		fmt.Fprintln(stdout, "WARNING: anonymous reads are on (--anon-read): anyone who can reach the server reads every tenant.")
	}
	if debugAddr != nil {
		fmt.Fprintf(stdout, "WARNING: the debug port is on at http://%s (--debug-addr): it exposes profiles and the command line (--tokens included) to anyone who can reach it.\n", debugAddr)
	}

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "shutting down: letting in-flight requests finish")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// describeBackends says where the data lives, without credentials.
func describeBackends(cfg serveConfig) string {
	switch {
	case cfg.catalog == "" && cfg.blob == "":
		return "data in " + cfg.data + ": SQLite catalog, blobs on disk"
	case cfg.catalog == "":
		return "SQLite catalog in " + cfg.data + ", blobs in S3"
	case cfg.blob == "":
		return "PostgreSQL catalog, blobs in " + cfg.data
	}
	return "PostgreSQL catalog, blobs in S3"
}
