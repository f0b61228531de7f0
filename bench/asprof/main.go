// Command asprof is `artifactstore serve` on the embedded default (SQLite
// catalog and blobs in --data), wired the same way as cmd/artifactstore's
// serve (same Store options, same httpserver.Config, same http.Server
// timeouts, the same text access log on stderr), plus a side port for CPU
// profiles:
//
//	POST /prof/start?name=N   starts a CPU profile into PROFDIR/N.pprof
//	POST /prof/stop           stops it
//	/debug/pprof/…            net/http/pprof
//
// bench/run.sh --profile runs the driver against it so that each
// artifactstore workload gets its own profile. Keep the wiring in step with
// cmd/artifactstore/serve.go and backends.go.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	rpprof "runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/embedded"
	"github.com/artifactstore/artifactstore/httpserver"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8480", "listen address")
	data := flag.String("data", "./artifactstore-data", "data directory")
	tokens := flag.String("tokens", "", "tenant:token,…")
	profAddr := flag.String("prof-addr", "127.0.0.1:18490", "side port for profiles")
	profDir := flag.String("prof-dir", ".", "where profiles are written")
	blockRate := flag.Int("block-rate", 0, "runtime.SetBlockProfileRate (ns); also turns on the mutex profile; /prof/stop then writes N.block.pprof and N.mutex.pprof (cumulative)")
	flag.Parse()
	if *blockRate > 0 {
		runtime.SetBlockProfileRate(*blockRate)
		runtime.SetMutexProfileFraction(10)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	toks := map[string]string{}
	for _, e := range strings.Split(*tokens, ",") {
		if tenant, tok, ok := strings.Cut(strings.TrimSpace(e), ":"); ok {
			toks[tok] = tenant
		}
	}
	st, err := embedded.Open(ctx, *data, artifactstore.Options{Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	srv, err := httpserver.New(st, httpserver.Config{Tokens: toks, Logger: logger})
	if err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(srv.Drain)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}

	var mu sync.Mutex
	var cur *os.File
	var curName string
	pm := http.NewServeMux()
	pm.HandleFunc("/debug/pprof/", pprof.Index)
	pm.HandleFunc("/debug/pprof/profile", pprof.Profile)
	pm.HandleFunc("POST /prof/start", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		name := filepath.Base(r.URL.Query().Get("name"))
		if cur != nil || name == "" || name == "." {
			http.Error(w, "a profile is running, or no name", http.StatusConflict)
			return
		}
		f, err := os.Create(filepath.Join(*profDir, name+".pprof"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if err := rpprof.StartCPUProfile(f); err != nil {
			f.Close()
			http.Error(w, err.Error(), 500)
			return
		}
		cur, curName = f, name
	})
	pm.HandleFunc("POST /prof/stop", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if cur == nil {
			return
		}
		rpprof.StopCPUProfile()
		cur.Close()
		cur = nil
		if *blockRate > 0 {
			for _, kind := range []string{"block", "mutex"} {
				if f, err := os.Create(filepath.Join(*profDir, curName+"."+kind)); err == nil {
					rpprof.Lookup(kind).WriteTo(f, 0)
					f.Close()
				}
			}
		}
	})
	pm.HandleFunc("GET /prof/memstats", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "HeapInuse %d\nHeapSys %d\nStackInuse %d\nSys %d\nNumGC %d\n", ms.HeapInuse, ms.HeapSys, ms.StackInuse, ms.Sys, ms.NumGC)
	})
	go func() { log.Fatal(http.ListenAndServe(*profAddr, pm)) }()

	fmt.Printf("asprof listening on http://%s, profiles on http://%s\n", ln.Addr(), *profAddr)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
}
