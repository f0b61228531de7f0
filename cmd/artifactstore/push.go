package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/client"
)

type pushConfig struct {
	clientConfig
	producer   string
	subject    string
	retention  string
	meta       metaFlag
	noFinalize bool
	jsonOut    bool
	parallel   int
	resumable  int64
	chunk      int64
	stateDir   string
}

func pushCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := pushConfig{meta: metaFlag{}}
	fs := newFlagSet("push", stderr)
	cfg.register(fs)
	fs.StringVar(&cfg.producer, "producer", "", "who produced the package (required)")
	fs.StringVar(&cfg.subject, "subject", "", "what the package is of (required)")
	fs.StringVar(&cfg.retention, "retention-class", "", "retention class (server default: standard)")
	fs.Var(cfg.meta, "meta", "metadata key=value (repeatable)")
	fs.BoolVar(&cfg.noFinalize, "no-finalize", false, "leave the package open")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print the package as JSON")
	fs.IntVar(&cfg.parallel, "parallel", 4, "files uploaded at once")
	fs.Int64Var(&cfg.resumable, "resumable-over", 64<<20, "files of at least this many bytes go through resumable upload sessions")
	fs.Int64Var(&cfg.chunk, "chunk-size", client.DefaultChunkSize, "bytes per request of a resumable upload")
	fs.StringVar(&cfg.stateDir, "state-dir", "", "where an interrupted push remembers its package (default: the user cache directory)")
	return &ffcli.Command{
		Name:       "push",
		ShortUsage: "artifactstore push --producer P --subject S [flags] DIR",
		ShortHelp:  "upload every regular file under DIR into a new package and finalize it",
		LongHelp: "Uploads every regular file under DIR with its path relative to DIR, several at once;\n" +
			"large files go through resumable upload sessions. Symlinks and special files are reported\n" +
			"and skipped. An interrupted push, run again with the same DIR, producer and subject,\n" +
			"continues the same package without sending finished files again.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("push takes one directory")
			}
			if cfg.producer == "" || cfg.subject == "" {
				return usagef("push needs --producer and --subject")
			}
			return push(ctx, cfg, args[0], stdout, stderr)
		},
	}
}

type localFile struct {
	rel  string // slash-separated path inside the package
	abs  string
	size int64
}

// scan lists the regular files under dir, sorted by path. Symlinks and
// special files are reported on warn and skipped; nothing outside dir is
// ever followed.
func scan(dir string, warn io.Writer) ([]localFile, error) {
	var files []localFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			what := "special file"
			if d.Type()&fs.ModeSymlink != 0 {
				what = "symlink"
			}
			fmt.Fprintf(warn, "skipping %s %s\n", what, rel)
			return nil
		}
		if err := artifactstore.ValidatePath(rel); err != nil {
			return fmt.Errorf("%s: the path %v", rel, err)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, localFile{rel: rel, abs: p, size: info.Size()})
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, err
}

func push(ctx context.Context, cfg pushConfig, dir string, stdout, stderr io.Writer) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if info, err := os.Stat(dir); err != nil {
		return err
	} else if !info.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	files, err := scan(dir, stderr)
	if err != nil {
		return err
	}
	c, err := cfg.client()
	if err != nil {
		return err
	}
	st, err := openPushState(cfg, dir)
	if err != nil {
		return err
	}

	pkg, err := resumePackage(ctx, c, st, stderr)
	if err != nil {
		return err
	}
	if pkg.ID == "" {
		pkg, err = c.CreatePackage(ctx, artifactstore.NewPackage{
			Producer: cfg.producer, Subject: cfg.subject, RetentionClass: cfg.retention, Metadata: cfg.meta,
		})
		if err != nil {
			return err
		}
		st.PackageID = pkg.ID
		if err := st.save(); err != nil {
			return err
		}
	}
	if pkg.State == artifactstore.StateOpen {
		todo, err := pending(ctx, c, pkg.ID, files, stderr)
		if err != nil {
			return err
		}
		if err := uploadAll(ctx, c, cfg, st, pkg.ID, todo, stderr); err != nil {
			return err
		}
		if !cfg.noFinalize {
			if pkg, err = c.Finalize(ctx, pkg.ID); err != nil {
				return err
			}
		} else if pkg, err = c.GetPackage(ctx, pkg.ID); err != nil {
			return err
		}
	}
	if pkg.State == artifactstore.StateFinalized || cfg.noFinalize {
		st.remove()
	}
	if cfg.jsonOut {
		return json.NewEncoder(stdout).Encode(packageJSON(pkg))
	}
	fmt.Fprintf(stdout, "package %s\n", pkg.ID)
	if pkg.ManifestDigest != "" {
		fmt.Fprintf(stdout, "manifest %s\n", pkg.ManifestDigest)
	}
	return nil
}

// resumePackage returns the package an interrupted push left, or a zero
// Package to start afresh.
func resumePackage(ctx context.Context, c *client.Client, st *pushState, stderr io.Writer) (artifactstore.Package, error) {
	if st.PackageID == "" {
		return artifactstore.Package{}, nil
	}
	p, err := c.GetPackage(ctx, st.PackageID)
	switch {
	case artifactstore.KindOf(err) == artifactstore.NotFound:
		st.PackageID, st.Uploads = "", nil
		return artifactstore.Package{}, nil
	case err != nil:
		return artifactstore.Package{}, err
	}
	fmt.Fprintf(stderr, "continuing the interrupted push into package %s\n", p.ID)
	return p, nil
}

// pending drops the files the package has already (checking they are the
// same bytes) and returns the rest.
func pending(ctx context.Context, c *client.Client, pkgID string, files []localFile, stderr io.Writer) ([]localFile, error) {
	have := map[string]artifactstore.File{}
	q := artifactstore.FileQuery{Limit: artifactstore.MaxPageSize}
	for {
		page, err := c.ListFiles(ctx, pkgID, q)
		if err != nil {
			return nil, err
		}
		for _, f := range page.Files {
			have[f.Path] = f
		}
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	var todo []localFile
	for _, f := range files {
		got, ok := have[f.rel]
		if !ok {
			todo = append(todo, f)
			continue
		}
		d, err := fileDigest(f.abs)
		if err != nil {
			return nil, err
		}
		if d != got.Digest {
			return nil, fmt.Errorf("%s changed since the interrupted push put it into package %s; push into a new package", f.rel, pkgID)
		}
	}
	if n := len(files) - len(todo); n > 0 {
		fmt.Fprintf(stderr, "%d file(s) already in the package, not sent again\n", n)
	}
	return todo, nil
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// uploadAll sends files, cfg.parallel at a time, with a progress bar on a
// terminal and a line per file elsewhere.
func uploadAll(ctx context.Context, c *client.Client, cfg pushConfig, st *pushState, pkgID string, files []localFile, stderr io.Writer) error {
	var total int64
	for _, f := range files {
		total += f.size
	}
	prog := newProgress(stderr, total, fmt.Sprintf("pushing %d files", len(files)))
	defer prog.finish()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan localFile)
	var (
		mu       sync.Mutex
		failures []error
		wg       sync.WaitGroup
	)
	for range max(cfg.parallel, 1) {
		wg.Go(func() {
			for f := range work {
				if err := uploadOne(ctx, c, cfg, st, pkgID, f, prog); err != nil {
					mu.Lock()
					failures = append(failures, fmt.Errorf("%s: %s", f.rel, describe(err)))
					mu.Unlock()
					if artifactstore.KindOf(err) != artifactstore.Internal {
						cancel() // the server refused: more of the same would not help
					}
					continue
				}
				prog.done(f)
			}
		})
	}
	for _, f := range files {
		select {
		case work <- f:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if len(failures) > 0 {
		return fmt.Errorf("%d file(s) not pushed (run the same push again to continue): %w", len(failures), failures[0])
	}
	return ctx.Err()
}

func uploadOne(ctx context.Context, c *client.Client, cfg pushConfig, st *pushState, pkgID string, f localFile, prog *progress) error {
	fh, err := os.Open(f.abs)
	if err != nil {
		return err
	}
	defer fh.Close()
	if f.size < cfg.resumable {
		_, err := c.PutFile(ctx, pkgID, f.rel, prog.reader(fh), artifactstore.PutOptions{})
		return err
	}
	id := st.upload(f.rel)
	if id == "" {
		u, err := c.CreateUpload(ctx, artifactstore.NewUpload{Size: &f.size})
		if err != nil {
			return err
		}
		id = u.ID
		if err := st.setUpload(f.rel, id); err != nil {
			return err
		}
	}
	_, err = c.UploadResumable(ctx, prog.readSeeker(fh), f.size,
		artifactstore.CompleteUploadRequest{PackageID: pkgID, Path: f.rel},
		client.ResumableOptions{UploadID: id, ChunkSize: cfg.chunk})
	if artifactstore.KindOf(err) == artifactstore.NotFound {
		// The session expired or was lost: start a new one next time.
		st.setUpload(f.rel, "")
	}
	return err
}

// pushState is what an interrupted push remembers, in the user's cache
// directory, keyed by server, directory, producer and subject: the package
// it fills and the upload sessions of its large files.
type pushState struct {
	path      string
	mu        sync.Mutex
	PackageID string            `json:"package_id"`
	Uploads   map[string]string `json:"uploads,omitempty"` // path → upload id
}

func openPushState(cfg pushConfig, dir string) (*pushState, error) {
	base := cfg.stateDir
	if base == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		base = filepath.Join(cache, "artifactstore", "push")
	}
	key := sha256.Sum256([]byte(cfg.url + "\x00" + dir + "\x00" + cfg.producer + "\x00" + cfg.subject))
	st := &pushState{path: filepath.Join(base, hex.EncodeToString(key[:12])+".json")}
	b, err := os.ReadFile(st.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return st, nil
	case err != nil:
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return st, nil // a damaged state: start afresh
	}
	return st, nil
}

func (s *pushState) upload(path string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Uploads[path]
}

func (s *pushState) setUpload(path, id string) error {
	s.mu.Lock()
	if s.Uploads == nil {
		s.Uploads = map[string]string{}
	}
	if id == "" {
		delete(s.Uploads, path)
	} else {
		s.Uploads[path] = id
	}
	s.mu.Unlock()
	return s.save()
}

// save writes the state atomically.
func (s *pushState) save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

func (s *pushState) remove() { os.Remove(s.path) }

// progress reports bytes sent: a bar on a terminal, a line per file
// elsewhere.
type progress struct {
	bar *progressbar.ProgressBar
	mu  sync.Mutex // serializes lines on out
	out io.Writer
}

func newProgress(w io.Writer, total int64, what string) *progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &progress{bar: progressbar.DefaultBytes(total, what)}
	}
	return &progress{out: w}
}

func (p *progress) reader(r io.Reader) io.Reader {
	if p.bar == nil {
		return r
	}
	return io.TeeReader(r, p.bar)
}

// readSeeker counts what is read; a resumed upload seeks back and counts a
// few bytes twice, which a progress bar can bear.
func (p *progress) readSeeker(r io.ReadSeeker) io.ReadSeeker {
	if p.bar == nil {
		return r
	}
	return struct {
		io.Reader
		io.Seeker
	}{io.TeeReader(r, p.bar), r}
}

func (p *progress) done(f localFile) {
	if p.bar == nil {
		p.mu.Lock()
		fmt.Fprintf(p.out, "pushed %s (%d bytes)\n", f.rel, f.size)
		p.mu.Unlock()
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

// packageJSON is the Package as the API shows it (DESIGN §4).
func packageJSON(p artifactstore.Package) any {
	out := map[string]any{
		"id": p.ID, "tenant": p.Tenant, "producer": p.Producer, "subject": p.Subject,
		"retention_class": p.RetentionClass, "metadata": p.Metadata, "state": p.State,
		"file_count": p.FileCount, "total_size": p.TotalSize, "created_at": artifactstore.FormatTime(p.CreatedAt),
	}
	if !p.FinalizedAt.IsZero() {
		out["finalized_at"] = artifactstore.FormatTime(p.FinalizedAt)
		out["manifest_digest"] = p.ManifestDigest
	}
	return out
}
