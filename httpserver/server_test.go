package httpserver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/httpserver"
	"github.com/artifactstore/artifactstore/internal/testbackend"
)

const (
	tokenAcme   = "acme-secret-token"
	tokenGlobex = "globex-secret-token"
)

type testServer struct {
	*httptest.Server
	st *artifactstore.Store
}

// newServer runs the reference server on a real loopback listener, over a
// store on the backends ARTIFACTSTORE_TEST_BACKEND selects (see
// internal/testbackend): embedded by default, or PostgreSQL and S3.
func newServer(tb testing.TB, anonRead bool) *testServer {
	tb.Helper()
	blobs, cat := testbackend.Open(tb)
	st, err := artifactstore.Open(context.Background(), artifactstore.Options{Blobs: blobs, Catalog: cat, CleanupInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := httpserver.New(st, httpserver.Config{
		Tokens:   map[string]string{tokenAcme: "acme", tokenGlobex: "globex"},
		AnonRead: anonRead,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	tb.Cleanup(func() {
		ts.Close()
		st.Close()
	})
	return &testServer{Server: ts, st: st}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		tb.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

// do sends a request; token "" sends none.
func (ts *testServer) do(tb testing.TB, method, path, token string, body io.Reader, hdr ...string) resp {
	tb.Helper()
	req, err := http.NewRequest(method, ts.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func (ts *testServer) createPackage(tb testing.TB, token string) string {
	tb.Helper()
	r := ts.do(tb, "POST", "/packages", token, strings.NewReader(`{"producer":"ci","subject":"svc-a","metadata":{"git.sha":"abc"}}`), "Content-Type", "application/json")
	if r.status != 201 {
		tb.Fatalf("create package: %d %s", r.status, r.body)
	}
	return r.json(tb)["id"].(string)
}

// multipartBody builds a form with the given fields in order; the field
// "file" carries content.
func multipartBody(tb testing.TB, fields [][2]string) (io.Reader, string) {
	tb.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		if f[0] == "file" {
			w, err := mw.CreateFormFile("file", "blob")
			if err != nil {
				tb.Fatal(err)
			}
			w.Write([]byte(f[1]))
			continue
		}
		mw.WriteField(f[0], f[1])
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func (ts *testServer) putFile(tb testing.TB, token, pkg string, fields ...[2]string) resp {
	tb.Helper()
	body, ct := multipartBody(tb, fields)
	return ts.do(tb, "POST", "/packages/"+pkg+"/files", token, body, "Content-Type", ct)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func wantProblem(tb testing.TB, r resp, status int, kind string) map[string]any {
	tb.Helper()
	if r.status != status {
		tb.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		tb.Fatalf("Content-Type %q, want application/problem+json (body %s)", ct, r.body)
	}
	p := r.json(tb)
	if p["type"] != "/problems/"+kind || p["status"] != float64(status) || p["title"] == "" {
		tb.Fatalf("problem = %v, want kind %s", p, kind)
	}
	return p
}

func TestWalkthrough(t *testing.T) {
	ts := newServer(t, false)
	if r := ts.do(t, "GET", "/health", "", nil); r.status != 200 || r.json(t)["status"] != "ok" {
		t.Fatalf("health: %d %s", r.status, r.body)
	}
	pkg := ts.createPackage(t, tokenAcme)

	// Single-shot multipart, fields before and after the file part.
	r := ts.putFile(t, tokenAcme, pkg, [2]string{"path", "bin/app"}, [2]string{"media_type", "application/x-executable"}, [2]string{"file", "app bytes"})
	if r.status != 201 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	app := r.json(t)
	if app["digest"] != sha([]byte("app bytes")) || app["media_type"] != "application/x-executable" || app["size"] != float64(9) {
		t.Fatalf("file = %v", app)
	}
	r = ts.putFile(t, tokenAcme, pkg, [2]string{"file", "readme"}, [2]string{"path", "docs/README ü.md"}, [2]string{"digest", sha([]byte("readme"))})
	if r.status != 201 {
		t.Fatalf("put with the file part first: %d %s", r.status, r.body)
	}

	// An upload session in two chunks: Upload-Offset, then Content-Range.
	content := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	r = ts.do(t, "POST", "/uploads", tokenAcme, strings.NewReader(fmt.Sprintf(`{"size":%d}`, len(content))), "Content-Type", "application/json")
	if r.status != 201 || r.header.Get("Upload-Offset") != "0" || r.header.Get("Location") == "" || r.header.Get("Upload-Expires") == "" {
		t.Fatalf("create upload: %d %v %s", r.status, r.header, r.body)
	}
	loc := r.header.Get("Location")
	half := len(content) / 2
	r = ts.do(t, "PATCH", loc, tokenAcme, bytes.NewReader(content[:half]), "Content-Type", "application/octet-stream", "Upload-Offset", "0")
	if r.status != 204 || r.header.Get("Upload-Offset") != fmt.Sprint(half) {
		t.Fatalf("first chunk: %d %v %s", r.status, r.header, r.body)
	}
	// A wrong offset: 409 with the current one.
	r = ts.do(t, "PATCH", loc, tokenAcme, bytes.NewReader(content[half:]), "Content-Type", "application/octet-stream", "Upload-Offset", "7")
	p := wantProblem(t, r, 409, "offset-mismatch")
	if p["expected-offset"] != float64(half) || r.header.Get("Upload-Offset") != fmt.Sprint(half) {
		t.Fatalf("offset mismatch: %v %v", p, r.header)
	}
	r = ts.do(t, "HEAD", loc, tokenAcme, nil)
	if r.status != 204 || r.header.Get("Upload-Offset") != fmt.Sprint(half) || r.header.Get("Upload-Length") != fmt.Sprint(len(content)) || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("HEAD upload: %d %v", r.status, r.header)
	}
	r = ts.do(t, "PATCH", loc, tokenAcme, bytes.NewReader(content[half:]), "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("bytes %d-%d/%d", half, len(content)-1, len(content)))
	if r.status != 204 || r.header.Get("Upload-Offset") != fmt.Sprint(len(content)) {
		t.Fatalf("second chunk: %d %v %s", r.status, r.header, r.body)
	}
	r = ts.do(t, "POST", loc+"/complete", tokenAcme, strings.NewReader(fmt.Sprintf(`{"package_id":%q,"path":"data/blob.bin","digest":%q}`, pkg, sha(content))), "Content-Type", "application/json")
	if r.status != 201 {
		t.Fatalf("complete: %d %s", r.status, r.body)
	}
	blobFile := r.json(t)

	// Finalize; the manifest in CBOR and JSON.
	r = ts.do(t, "GET", "/packages/"+pkg+"/manifest", tokenAcme, nil)
	wantProblem(t, r, 409, "conflict")
	r = ts.do(t, "POST", "/packages/"+pkg+"/finalize", tokenAcme, nil)
	if r.status != 200 || r.json(t)["state"] != "finalized" {
		t.Fatalf("finalize: %d %s", r.status, r.body)
	}
	digest := r.json(t)["manifest_digest"].(string)
	r = ts.do(t, "GET", "/packages/"+pkg+"/manifest", tokenAcme, nil)
	if r.status != 200 || sha(r.body) != digest || r.header.Get("ETag") != `"`+digest+`"` || r.header.Get("Content-Type") != "application/cbor" {
		t.Fatalf("manifest: %d %v", r.status, r.header)
	}
	m, err := artifactstore.DecodeManifestCBOR(r.body)
	if err != nil || m.FileCount != 3 {
		t.Fatalf("manifest decodes to %+v, %v", m, err)
	}
	r2 := ts.do(t, "GET", "/packages/"+pkg+"/manifest.json", tokenAcme, nil)
	want, _ := m.MarshalJCS()
	if r2.status != 200 || !bytes.Equal(r2.body, want) {
		t.Fatalf("manifest.json: %d %s", r2.status, r2.body)
	}
	// Finalize again: same digest.
	if r = ts.do(t, "POST", "/packages/"+pkg+"/finalize", tokenAcme, nil); r.json(t)["manifest_digest"] != digest {
		t.Fatalf("second finalize: %s", r.body)
	}

	// Downloads: whole, ranged, conditional, HEAD, unsatisfiable.
	dl := "/files/" + blobFile["id"].(string) + "/download"
	r = ts.do(t, "GET", dl, tokenAcme, nil)
	if r.status != 200 || !bytes.Equal(r.body, content) || r.header.Get("Accept-Ranges") != "bytes" ||
		r.header.Get("ETag") != `"`+sha(content)+`"` || r.header.Get("Content-Length") != fmt.Sprint(len(content)) ||
		!strings.Contains(r.header.Get("Content-Disposition"), "blob.bin") || !strings.HasPrefix(r.header.Get("Repr-Digest"), "sha-256=:") {
		t.Fatalf("download: %d %v", r.status, r.header)
	}
	r = ts.do(t, "GET", dl, tokenAcme, nil, "Range", "bytes=100-199")
	if r.status != 206 || !bytes.Equal(r.body, content[100:200]) || r.header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(content)) {
		t.Fatalf("range: %d %v", r.status, r.header)
	}
	r = ts.do(t, "GET", dl, tokenAcme, nil, "Range", "bytes=-10")
	if r.status != 206 || !bytes.Equal(r.body, content[len(content)-10:]) {
		t.Fatalf("suffix range: %d", r.status)
	}
	r = ts.do(t, "GET", dl, tokenAcme, nil, "Range", "bytes=100-199", "If-Range", `"sha256:other"`)
	if r.status != 200 || len(r.body) != len(content) {
		t.Fatalf("If-Range mismatch should send everything: %d", r.status)
	}
	r = ts.do(t, "GET", dl, tokenAcme, nil, "If-None-Match", `"`+sha(content)+`"`)
	if r.status != 304 || len(r.body) != 0 {
		t.Fatalf("If-None-Match: %d", r.status)
	}
	r = ts.do(t, "GET", dl, tokenAcme, nil, "Range", fmt.Sprintf("bytes=%d-", len(content)))
	wantProblem(t, r, 416, "range-not-satisfiable")
	if r.header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(content)) {
		t.Fatalf("416 Content-Range = %q", r.header.Get("Content-Range"))
	}
	r = ts.do(t, "HEAD", dl, tokenAcme, nil)
	if r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != fmt.Sprint(len(content)) {
		t.Fatalf("HEAD: %d %v", r.status, r.header)
	}

	// Events, JSON and CBOR.
	r = ts.do(t, "GET", "/events?since=0&wait=0", tokenAcme, nil, "Accept", "application/json")
	if r.status != 200 {
		t.Fatalf("events: %d %s", r.status, r.body)
	}
	evs := r.json(t)
	list := evs["events"].([]any)
	if len(list) != 5 || evs["head"] != float64(5) || evs["next"] != float64(5) {
		t.Fatalf("events = %s", r.body)
	}
	var types []string
	for _, e := range list {
		types = append(types, e.(map[string]any)["type"].(string))
	}
	if strings.Join(types, ",") != "package.created,file.added,file.added,file.added,package.finalized" {
		t.Fatalf("event types %v", types)
	}
	r = ts.do(t, "GET", "/events?since=0&wait=0", tokenAcme, nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/cbor") || len(r.body) == 0 {
		t.Fatalf("CBOR events: %d %v", r.status, r.header)
	}
}

// TestInterruptedAppendKeepsBytes: a client that sends half of a PATCH body
// and hangs up keeps the half that arrived; it resumes from there.
func TestInterruptedAppendKeepsBytes(t *testing.T) {
	ts := newServer(t, false)
	r := ts.do(t, "POST", "/uploads", tokenAcme, nil)
	loc := r.header.Get("Location")
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nUpload-Offset: 0\r\nContent-Type: application/octet-stream\r\nContent-Length: 2000000\r\n\r\n", loc, tokenAcme)
	if _, err := conn.Write(bytes.Repeat([]byte("k"), 1_000_000)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = ts.do(t, "HEAD", loc, tokenAcme, nil)
		if r.header.Get("Upload-Offset") == "1000000" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the broken PATCH the upload is at %q, want 1000000", r.header.Get("Upload-Offset"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A download that takes longer than the server's WriteTimeout (a slow
// client, a large file) is not cut off: the route lifts its write deadline.
func TestSlowDownloadOutlivesWriteTimeout(t *testing.T) {
	blobs, cat := testbackend.Open(t)
	st, err := artifactstore.Open(context.Background(), artifactstore.Options{Blobs: blobs, Catalog: cat, CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := httpserver.New(st, httpserver.Config{Tokens: map[string]string{tokenAcme: "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	hts := httptest.NewUnstartedServer(srv)
	hts.Config.WriteTimeout = 200 * time.Millisecond
	hts.Start()
	defer hts.Close()
	ts := &testServer{Server: hts, st: st}
	pkg := ts.createPackage(t, tokenAcme)
	data := bytes.Repeat([]byte("slow download "), 32<<20/14)
	f, err := st.PutFile(context.Background(), "acme", pkg, "big.bin", bytes.NewReader(data), artifactstore.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", hts.URL+"/files/"+f.ID+"/download", nil)
	req.Header.Set("Authorization", "Bearer "+tokenAcme)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	start := time.Now()
	buf := make([]byte, 64<<10)
	n := 0
	for {
		m, err := res.Body.Read(buf)
		n += m
		if err != nil {
			if err != io.EOF {
				t.Fatalf("after %d of %d bytes and %v: %v", n, len(data), time.Since(start), err)
			}
			break
		}
		time.Sleep(2 * time.Millisecond) // about 32 MiB/s
	}
	if n != len(data) || time.Since(start) < 2*hts.Config.WriteTimeout {
		t.Fatalf("read %d of %d bytes in %v; the test needs a download slower than the %v WriteTimeout", n, len(data), time.Since(start), hts.Config.WriteTimeout)
	}
}
