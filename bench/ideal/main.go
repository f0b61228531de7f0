// Command ideal is the "physical limit" ingest and download server of the
// benchmark harness: the least work a durable, content-addressed HTTP store
// could do, with no catalog, no validation and no logging.
//
//	PUT  /raw/{name}            body → SHA-256 → temp file → fsync → rename → dir fsync
//	POST /multipart/{name}      multipart/form-data (path, file): the file part the
//	                            same way, read through a 1 MiB bufio.Reader under
//	                            multipart.NewReader, written through a 256 KiB
//	                            bufio.Writer over the file
//	POST /session               an upload session (hash state kept in memory)
//	PATCH /session/{id}         Content-Range: bytes a-b/n; append at a, fsync
//	PUT  /session/{id}?name=N   the session's file renamed into place, dir fsync
//	GET  /files/{name}          http.ServeContent of the file (sendfile)
//
// Every ingest answers 201 with the body "sha256:<hex>". Files land in
// DIR/files, so nginx can serve the very same files.
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	dir      string
	filesDir string
	tmpDir   string
	sessDir  string

	bufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

	sessMu   sync.Mutex
	sessions = map[string]*session{}
)

type session struct {
	mu     sync.Mutex
	h      hash.Hash
	offset int64
	path   string
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18482", "listen address")
	flag.StringVar(&dir, "dir", "", "data directory")
	flag.Parse()
	if dir == "" {
		log.Fatal("ideal: -dir is required")
	}
	filesDir, tmpDir, sessDir = filepath.Join(dir, "files"), filepath.Join(dir, "tmp"), filepath.Join(dir, "sessions")
	for _, d := range []string{filesDir, tmpDir, sessDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			log.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /raw/{name}", putRaw)
	mux.HandleFunc("POST /multipart/{name}", postMultipart)
	mux.HandleFunc("POST /session", newSession)
	mux.HandleFunc("PATCH /session/{id}", patchSession)
	mux.HandleFunc("PUT /session/{id}", completeSession)
	mux.HandleFunc("GET /files/{name}", getFile)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Fatal(srv.Serve(ln))
}

func fail(w http.ResponseWriter, code int, err error) {
	http.Error(w, err.Error(), code)
}

func validName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.ContainsAny(n, "/\\\x00")
}

// store streams r through SHA-256 into a temp file (through bw when
// bufSize > 0), fsyncs it, renames it to files/name and fsyncs the
// directory.
func store(name string, r io.Reader, bufSize int) (string, error) {
	f, err := os.CreateTemp(tmpDir, "w-*")
	if err != nil {
		return "", err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	h := sha256.New()
	var w io.Writer = f
	var bw *bufio.Writer
	if bufSize > 0 {
		bw = bufio.NewWriterSize(f, bufSize)
		w = bw
	}
	bp := bufs.Get().(*[]byte)
	_, err = io.CopyBuffer(io.MultiWriter(w, h), r, *bp)
	bufs.Put(bp)
	if err != nil {
		return "", err
	}
	if bw != nil {
		if err := bw.Flush(); err != nil {
			return "", err
		}
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), filepath.Join(filesDir, name)); err != nil {
		return "", err
	}
	if err := syncDir(filesDir); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func created(w http.ResponseWriter, digest string) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, digest)
}

func putRaw(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validName(name) {
		fail(w, 400, errors.New("bad name"))
		return
	}
	d, err := store(name, r.Body, 0)
	if err != nil {
		fail(w, 500, err)
		return
	}
	created(w, d)
}

func postMultipart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validName(name) {
		fail(w, 400, errors.New("bad name"))
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		fail(w, 400, errors.New("want multipart/form-data"))
		return
	}
	mr := multipart.NewReader(bufio.NewReaderSize(r.Body, 1<<20), params["boundary"])
	digest := ""
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fail(w, 400, err)
			return
		}
		switch part.FormName() {
		case "file":
			if digest, err = store(name, part, 256<<10); err != nil {
				fail(w, 500, err)
				return
			}
		default:
			io.Copy(io.Discard, io.LimitReader(part, 4096))
		}
	}
	if digest == "" {
		fail(w, 400, errors.New("no file part"))
		return
	}
	created(w, digest)
}

func newSession(w http.ResponseWriter, r *http.Request) {
	var b [12]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	p := filepath.Join(sessDir, id)
	f, err := os.Create(p)
	if err != nil {
		fail(w, 500, err)
		return
	}
	f.Close()
	sessMu.Lock()
	sessions[id] = &session{h: sha256.New(), path: p}
	sessMu.Unlock()
	w.Header().Set("Location", "/session/"+id)
	w.WriteHeader(http.StatusCreated)
}

func getSession(id string) *session {
	sessMu.Lock()
	defer sessMu.Unlock()
	return sessions[id]
}

// patchSession appends one chunk: "Content-Range: bytes a-b/n" with a the
// session's offset; the chunk is hashed, written and fsynced.
func patchSession(w http.ResponseWriter, r *http.Request) {
	s := getSession(r.PathValue("id"))
	if s == nil {
		fail(w, 404, errors.New("no session"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cr := strings.TrimPrefix(r.Header.Get("Content-Range"), "bytes ")
	first, rest, _ := strings.Cut(cr, "-")
	lastS, _, _ := strings.Cut(rest, "/")
	a, err1 := strconv.ParseInt(first, 10, 64)
	b, err2 := strconv.ParseInt(lastS, 10, 64)
	if err1 != nil || err2 != nil || a != s.offset || b < a {
		fail(w, 409, fmt.Errorf("bad Content-Range %q at offset %d", cr, s.offset))
		return
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY, 0)
	if err != nil {
		fail(w, 500, err)
		return
	}
	defer f.Close()
	if _, err := f.Seek(a, io.SeekStart); err != nil {
		fail(w, 500, err)
		return
	}
	bp := bufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.MultiWriter(struct{ io.Writer }{f}, s.h), io.LimitReader(r.Body, b-a+1), *bp)
	bufs.Put(bp)
	if err != nil {
		fail(w, 500, err)
		return
	}
	if err := f.Sync(); err != nil {
		fail(w, 500, err)
		return
	}
	s.offset += n
	w.Header().Set("Upload-Offset", strconv.FormatInt(s.offset, 10))
	w.WriteHeader(http.StatusNoContent)
}

func completeSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	name := r.URL.Query().Get("name")
	s := getSession(id)
	if s == nil || !validName(name) {
		fail(w, 404, errors.New("no session or bad name"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The bytes were fsynced by each PATCH: rename and sync the directory.
	if err := os.Rename(s.path, filepath.Join(filesDir, name)); err != nil {
		fail(w, 500, err)
		return
	}
	if err := syncDir(filesDir); err != nil {
		fail(w, 500, err)
		return
	}
	sessMu.Lock()
	delete(sessions, id)
	sessMu.Unlock()
	created(w, "sha256:"+hex.EncodeToString(s.h.Sum(nil)))
}

func getFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validName(name) {
		fail(w, 400, errors.New("bad name"))
		return
	}
	f, err := os.Open(filepath.Join(filesDir, name))
	if err != nil {
		fail(w, 404, err)
		return
	}
	defer f.Close()
	http.ServeContent(w, r, name, time.Time{}, f)
}
