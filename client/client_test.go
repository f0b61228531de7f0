package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/client"
	"github.com/artifactstore/artifactstore/embedded"
	"github.com/artifactstore/artifactstore/httpserver"
)

const (
	tokenAcme   = "acme-secret-token"
	tokenGlobex = "globex-secret-token"
)

type testServer struct {
	*httptest.Server
	st *artifactstore.Store
}

// newServer runs the reference server over an embedded store on a real
// loopback listener (as httpserver's tests do).
func newServer(tb testing.TB) *testServer {
	tb.Helper()
	st, err := embedded.Open(context.Background(), tb.TempDir(), artifactstore.Options{CleanupInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := httpserver.New(st, httpserver.Config{
		Tokens: map[string]string{tokenAcme: "acme", tokenGlobex: "globex"},
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

func (ts *testServer) client(tb testing.TB, token string, opts ...client.Option) *client.Client {
	tb.Helper()
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	c, err := client.New(ts.URL, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// genReader generates size deterministic pseudo-random bytes without
// holding them: the content of large test files.
type genReader struct {
	seed      uint64
	off, size int64
}

func newGen(seed uint64, size int64) *genReader { return &genReader{seed: seed, size: size} }

func (g *genReader) byteAt(i int64) byte {
	x := uint64(i)/8 ^ g.seed
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 29
	return byte(x >> (8 * (uint64(i) % 8)))
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), g.size-g.off))
	for i := range n {
		p[i] = g.byteAt(g.off + int64(i))
	}
	g.off += int64(n)
	return n, nil
}

func (g *genReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += g.off
	case io.SeekEnd:
		offset += g.size
	}
	if offset < 0 {
		return 0, errors.New("negative offset")
	}
	g.off = offset
	return offset, nil
}

// digestOf hashes a reader.
func digestOf(tb testing.TB, r io.Reader) string {
	tb.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		tb.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func wantKind(tb testing.TB, err error, want artifactstore.Kind) *artifactstore.Error {
	tb.Helper()
	if err == nil {
		tb.Fatalf("err = nil, want kind %v", want)
	}
	if got := artifactstore.KindOf(err); got != want {
		tb.Fatalf("KindOf(%v) = %v, want %v", err, got, want)
	}
	e, _ := errors.AsType[*artifactstore.Error](err)
	return e
}

func newPackage(tb testing.TB, c *client.Client, md map[string]string) artifactstore.Package {
	tb.Helper()
	p, err := c.CreatePackage(context.Background(), artifactstore.NewPackage{Producer: "ci", Subject: "svc-a", Metadata: md})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestHealth(t *testing.T) {
	ts := newServer(t)
	if err := ts.client(t, "").Health(context.Background()); err != nil {
		t.Fatalf("anonymous health: %v", err)
	}
	if err := ts.client(t, tokenAcme).Health(context.Background()); err != nil {
		t.Fatalf("health: %v", err)
	}
}

func TestNew(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8480", "ftp://x", "http://x/?q=1", "://"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) = nil error", u)
		}
	}
	if _, err := client.New("http://x", client.WithToken("a b")); err == nil {
		t.Error("a token with a space was accepted")
	}
	// A path prefix is kept: the requests go below it.
	var got string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`)
	}))
	defer ts.Close()
	c, err := client.New(ts.URL + "/prefix/")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Health(context.Background()); err != nil || got != "/prefix/health" {
		t.Fatalf("Health: %v, path %q", err, got)
	}
}

// TestWalkthrough exercises the package and file operations end to end and
// checks what the client returns against what the Store holds.
func TestWalkthrough(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	c := ts.client(t, tokenAcme)

	pkg := newPackage(t, c, map[string]string{"git.sha": "abc123"})
	if pkg.ID == "" || pkg.Tenant != "acme" || pkg.State != artifactstore.StateOpen || pkg.RetentionClass != "standard" ||
		pkg.Metadata["git.sha"] != "abc123" || pkg.CreatedAt.IsZero() || !pkg.FinalizedAt.IsZero() || pkg.ManifestDigest != "" {
		t.Fatalf("created %+v", pkg)
	}
	other := newPackage(t, c, map[string]string{"team": "b"})

	// An 8 MiB file from a generator: nothing of it exists in memory.
	const big = 8 << 20
	wantBig := digestOf(t, newGen(1, big))
	bigFile, err := c.PutFile(ctx, pkg.ID, "data/big.bin", newGen(1, big), artifactstore.PutOptions{Digest: wantBig})
	if err != nil {
		t.Fatal(err)
	}
	if bigFile.Size != big || bigFile.Digest != wantBig || bigFile.MediaType != artifactstore.DefaultMediaType || bigFile.PackageID != pkg.ID || bigFile.Path != "data/big.bin" {
		t.Fatalf("big file %+v", bigFile)
	}
	small, err := c.PutFile(ctx, pkg.ID, "bin/app ü", strings.NewReader("app bytes"), artifactstore.PutOptions{MediaType: "application/x-executable"})
	if err != nil {
		t.Fatal(err)
	}
	if small.MediaType != "application/x-executable" || small.Digest != sha([]byte("app bytes")) || small.Size != 9 {
		t.Fatalf("small file %+v", small)
	}
	empty, err := c.PutFile(ctx, pkg.ID, "data/empty", strings.NewReader(""), artifactstore.PutOptions{})
	if err != nil || empty.Size != 0 {
		t.Fatalf("empty file: %+v %v", empty, err)
	}

	got, err := c.GetPackage(ctx, pkg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.FileCount != 3 || got.TotalSize != big+9 {
		t.Fatalf("package after puts %+v", got)
	}
	inproc, err := ts.st.GetPackage(ctx, "acme", pkg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.Equal(inproc.CreatedAt) || got.Producer != inproc.Producer || !reflect.DeepEqual(got.Metadata, inproc.Metadata) {
		t.Fatalf("over HTTP %+v\nin-process %+v", got, inproc)
	}
	f, err := c.GetFile(ctx, bigFile.ID)
	if err != nil || f != bigFile {
		t.Fatalf("GetFile = %+v, %v; want %+v", f, err, bigFile)
	}

	// Listing: filters and pages.
	page, err := c.ListPackages(ctx, artifactstore.PackageQuery{Limit: 1})
	if err != nil || len(page.Packages) != 1 || page.Packages[0].ID != other.ID || page.NextCursor == "" {
		t.Fatalf("first page %+v %v", page, err)
	}
	page, err = c.ListPackages(ctx, artifactstore.PackageQuery{Limit: 1, Cursor: page.NextCursor})
	if err != nil || len(page.Packages) != 1 || page.Packages[0].ID != pkg.ID {
		t.Fatalf("second page %+v %v", page, err)
	}
	page, err = c.ListPackages(ctx, artifactstore.PackageQuery{Metadata: []string{"git.sha=abc123"}, Producer: "ci", State: artifactstore.StateOpen})
	if err != nil || len(page.Packages) != 1 || page.Packages[0].ID != pkg.ID || page.NextCursor != "" {
		t.Fatalf("filtered %+v %v", page, err)
	}
	page, err = c.ListPackages(ctx, artifactstore.PackageQuery{Metadata: []string{"team"}})
	if err != nil || len(page.Packages) != 1 || page.Packages[0].ID != other.ID {
		t.Fatalf("has-key filter %+v %v", page, err)
	}
	files, err := c.ListFiles(ctx, pkg.ID, artifactstore.FileQuery{})
	if err != nil || len(files.Files) != 3 || files.Files[0].Path != "bin/app ü" || files.Files[1].Path != "data/big.bin" {
		t.Fatalf("files %+v %v", files, err)
	}
	files, err = c.ListFiles(ctx, pkg.ID, artifactstore.FileQuery{Prefix: "data/", Limit: 1})
	if err != nil || len(files.Files) != 1 || files.Files[0].Path != "data/big.bin" || files.NextCursor == "" {
		t.Fatalf("prefix page %+v %v", files, err)
	}
	files, err = c.ListFiles(ctx, pkg.ID, artifactstore.FileQuery{Prefix: "data/", Limit: 1, Cursor: files.NextCursor})
	if err != nil || len(files.Files) != 1 || files.Files[0].Path != "data/empty" || files.NextCursor != "" {
		t.Fatalf("prefix second page %+v %v", files, err)
	}

	// Finalize (twice: same digest) and the manifest in both encodings.
	fin, err := c.Finalize(ctx, pkg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fin.State != artifactstore.StateFinalized || fin.FinalizedAt.IsZero() || !strings.HasPrefix(fin.ManifestDigest, "sha256:") {
		t.Fatalf("finalized %+v", fin)
	}
	again, err := c.Finalize(ctx, pkg.ID)
	if err != nil || again.ManifestDigest != fin.ManifestDigest {
		t.Fatalf("second finalize %+v %v", again, err)
	}
	cb, err := c.Manifest(ctx, pkg.ID)
	if err != nil {
		t.Fatal(err)
	}
	js, err := c.ManifestJSON(ctx, pkg.ID)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ts.st.Manifest(ctx, "acme", pkg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cb, want.CBOR) || !bytes.Equal(js, want.JSON) {
		t.Fatalf("manifest bytes differ from the Store's")
	}
	if sha(cb) != fin.ManifestDigest {
		t.Fatalf("sha of the CBOR %s, manifest digest %s", sha(cb), fin.ManifestDigest)
	}
	m, err := artifactstore.DecodeManifestCBOR(cb)
	if err != nil {
		t.Fatal(err)
	}
	if m.FileCount != 3 || m.Package.ID != pkg.ID || m.Files[1].Digest != wantBig {
		t.Fatalf("manifest %+v", m)
	}
	if re, err := m.MarshalJCS(); err != nil || !bytes.Equal(re, js) {
		t.Fatalf("the JSON manifest is not the JCS of the CBOR one: %v", err)
	}

	// Downloads: whole, ranges, conditional, unsatisfiable.
	d, err := c.Download(ctx, bigFile.ID, client.DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.StatusCode != 200 || d.File.Size != big || d.File.Digest != wantBig || d.File.MediaType != artifactstore.DefaultMediaType ||
		d.Filename != "big.bin" || d.Offset != 0 || d.Length != big {
		t.Fatalf("download %+v", d)
	}
	if got := digestOf(t, d.Body); got != wantBig {
		t.Fatalf("downloaded %s, want %s", got, wantBig)
	}
	d.Body.Close()

	d, err = c.Download(ctx, bigFile.ID, client.DownloadOptions{Offset: 1000, Length: 5000})
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(d.Body)
	d.Body.Close()
	g := newGen(1, big)
	g.Seek(1000, io.SeekStart)
	wantPart, _ := io.ReadAll(io.LimitReader(g, 5000))
	if d.StatusCode != 206 || d.Offset != 1000 || d.Length != 5000 || d.File.Size != big || !bytes.Equal(part, wantPart) {
		t.Fatalf("range: %+v (%d bytes)", d, len(part))
	}

	d, err = c.Download(ctx, bigFile.ID, client.DownloadOptions{Offset: big - 10})
	if err != nil {
		t.Fatal(err)
	}
	tail, _ := io.ReadAll(d.Body)
	d.Body.Close()
	if d.StatusCode != 206 || len(tail) != 10 || tail[9] != g.byteAt(big-1) {
		t.Fatalf("tail: %+v %x", d, tail)
	}

	for _, inm := range []string{wantBig, strconv.Quote(wantBig), `"sha256:other", ` + strconv.Quote(wantBig)} {
		d, err = c.Download(ctx, bigFile.ID, client.DownloadOptions{IfNoneMatch: inm})
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := io.Copy(io.Discard, d.Body); !d.NotModified || d.StatusCode != 304 || n != 0 || d.File.Digest != wantBig {
			t.Fatalf("If-None-Match %s: %+v", inm, d)
		}
		d.Body.Close()
	}
	d, err = c.Download(ctx, small.ID, client.DownloadOptions{IfNoneMatch: wantBig})
	if err != nil || d.NotModified {
		t.Fatalf("If-None-Match of another digest: %+v %v", d, err)
	}
	if b, _ := io.ReadAll(d.Body); string(b) != "app bytes" || d.File.MediaType != "application/x-executable" {
		t.Fatalf("small download %q %+v", b, d)
	}
	d.Body.Close()

	_, err = c.Download(ctx, small.ID, client.DownloadOptions{Offset: 9})
	wantKind(t, err, artifactstore.RangeNotSatisfiable)

	var buf bytes.Buffer
	vf, err := c.DownloadVerified(ctx, small.ID, &buf)
	if err != nil || vf != small || buf.String() != "app bytes" {
		t.Fatalf("DownloadVerified = %+v, %v, %q", vf, err, buf.String())
	}
	h := sha256.New()
	vf, err = c.DownloadVerified(ctx, bigFile.ID, h)
	if err != nil || vf.Digest != wantBig || "sha256:"+hex.EncodeToString(h.Sum(nil)) != wantBig {
		t.Fatalf("DownloadVerified of the big file = %+v, %v", vf, err)
	}
}

// TestPutFileStreams checks that PutFile does not hold the content: the
// whole process (client and server) allocates far less than the file's size
// while it goes through.
func TestPutFileStreams(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	c := ts.client(t, tokenAcme)
	pkg := newPackage(t, c, nil)
	// Warm up connections and pools.
	if _, err := c.PutFile(ctx, pkg.ID, "warm", newGen(2, 1<<20), artifactstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, err := c.PutFile(ctx, pkg.ID, "big", newGen(3, size), artifactstore.PutOptions{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if f.Size != size {
		t.Fatalf("size %d", f.Size)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("putting %d MiB allocated %.1f MiB", size>>20, float64(alloc)/(1<<20))
	if alloc > size/2 {
		t.Fatalf("putting %d bytes allocated %d bytes: the content is buffered somewhere", size, alloc)
	}
}

// tamper flips a byte of every download body.
type tamper struct{ base http.RoundTripper }

func (t tamper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/download") || resp.StatusCode != 200 {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(b) > 0 {
		b[len(b)/2] ^= 1
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func TestDownloadVerifiedDetectsCorruption(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	c := ts.client(t, tokenAcme)
	pkg := newPackage(t, c, nil)
	f, err := c.PutFile(ctx, pkg.ID, "f", strings.NewReader("the real bytes"), artifactstore.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := ts.client(t, tokenAcme, client.WithHTTPClient(&http.Client{Transport: tamper{http.DefaultTransport}}))
	_, err = bad.DownloadVerified(ctx, f.ID, io.Discard)
	wantKind(t, err, artifactstore.DigestMismatch)
}

func TestUploadSession(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	c := ts.client(t, tokenAcme)
	pkg := newPackage(t, c, nil)

	content := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	size := int64(len(content))
	u, err := c.CreateUpload(ctx, artifactstore.NewUpload{Size: &size})
	if err != nil {
		t.Fatal(err)
	}
	if u.ID == "" || u.Offset != 0 || u.Size != size || u.ExpiresAt.Before(time.Now()) {
		t.Fatalf("created %+v", u)
	}
	half := size / 2
	u, err = c.AppendUpload(ctx, u.ID, 0, bytes.NewReader(content[:half]))
	if err != nil || u.Offset != half {
		t.Fatalf("first append: %+v %v", u, err)
	}
	// A wrong offset: OffsetMismatch carrying the session's offset, as
	// in-process.
	wrong, err := c.AppendUpload(ctx, u.ID, 7, bytes.NewReader(content[half:]))
	e := wantKind(t, err, artifactstore.OffsetMismatch)
	if e.Offset != half || wrong.Offset != half {
		t.Fatalf("offset mismatch: error offset %d, upload %+v; want %d", e.Offset, wrong, half)
	}
	_, local := ts.st.AppendUpload(ctx, "acme", u.ID, 7, bytes.NewReader(content[half:]))
	le := wantKind(t, local, artifactstore.OffsetMismatch)
	if le.Offset != e.Offset {
		t.Fatalf("in-process offset %d, over HTTP %d", le.Offset, e.Offset)
	}
	st, err := c.UploadStatus(ctx, u.ID)
	if err != nil || st.Offset != half || st.Size != size || st.ID != u.ID {
		t.Fatalf("status %+v %v", st, err)
	}
	// Completing early: Invalid (short of the declared size).
	_, err = c.CompleteUpload(ctx, u.ID, artifactstore.CompleteUploadRequest{PackageID: pkg.ID, Path: "blob"})
	wantKind(t, err, artifactstore.Invalid)

	u, err = c.AppendUpload(ctx, u.ID, artifactstore.AtCurrentOffset, bytes.NewReader(content[half:]))
	if err != nil || u.Offset != size {
		t.Fatalf("second append: %+v %v", u, err)
	}
	req := artifactstore.CompleteUploadRequest{PackageID: pkg.ID, Path: "data/blob.bin", MediaType: "text/plain", Digest: sha(content)}
	f, err := c.CompleteUpload(ctx, u.ID, req)
	if err != nil || f.Size != size || f.Digest != sha(content) || f.MediaType != "text/plain" || f.Path != "data/blob.bin" {
		t.Fatalf("complete: %+v %v", f, err)
	}
	f2, err := c.CompleteUpload(ctx, u.ID, req)
	if err != nil || f2 != f {
		t.Fatalf("a retried complete: %+v %v; want %+v", f2, err, f)
	}

	// Abort: the session is gone.
	v, err := c.CreateUpload(ctx, artifactstore.NewUpload{})
	if err != nil || v.Size != -1 {
		t.Fatalf("create without size: %+v %v", v, err)
	}
	if _, err := c.AppendUpload(ctx, v.ID, 0, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	if err := c.AbortUpload(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadStatus(ctx, v.ID)
	wantKind(t, err, artifactstore.NotFound)
	wantKind(t, c.AbortUpload(ctx, v.ID), artifactstore.NotFound)

	// A reader that fails: Invalid, as in-process.
	w, err := c.CreateUpload(ctx, artifactstore.NewUpload{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AppendUpload(ctx, w.ID, 0, io.MultiReader(strings.NewReader("abc"), errReader{}))
	wantKind(t, err, artifactstore.Invalid)
	_, err = c.PutFile(ctx, pkg.ID, "failing", io.MultiReader(strings.NewReader("abc"), errReader{}), artifactstore.PutOptions{})
	wantKind(t, err, artifactstore.Invalid)
	_, err = ts.st.PutFile(ctx, "acme", pkg.ID, "failing", io.MultiReader(strings.NewReader("abc"), errReader{}), artifactstore.PutOptions{})
	wantKind(t, err, artifactstore.Invalid)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// patchLog records the PATCH requests of uploads and can break them.
type patchLog struct {
	base http.RoundTripper

	mu      sync.Mutex
	patches []*patchRec
	// cutAfter, when positive, breaks the body of PATCH number cutPatch
	// (1-based) after that many bytes, as a dropped connection would.
	cutPatch int
	cutAfter int64
	// fail502 answers the PATCH of that index (1-based) with a bare 502
	// without sending it on.
	fail502 int
}

type patchRec struct {
	offset string
	status int
	sent   int64
	err    error
}

func (p *patchLog) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPatch {
		return p.base.RoundTrip(req)
	}
	p.mu.Lock()
	rec := &patchRec{offset: req.Header.Get("Upload-Offset")}
	p.patches = append(p.patches, rec)
	n := len(p.patches)
	p.mu.Unlock()
	if n == p.fail502 {
		req.Body.Close()
		rec.status = http.StatusBadGateway
		return &http.Response{
			StatusCode: http.StatusBadGateway, Status: "502 Bad Gateway", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:  http.Header{"Content-Type": {"text/plain"}},
			Body:    io.NopCloser(strings.NewReader("upstream went away")),
			Request: req,
		}, nil
	}
	body := &countingBody{rc: req.Body, rec: rec, limit: -1}
	if n == p.cutPatch && p.cutAfter > 0 {
		body.limit = p.cutAfter
	}
	out := req.Clone(req.Context())
	out.Body = body
	resp, err := p.base.RoundTrip(out)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		rec.err = err
		return nil, err
	}
	rec.status = resp.StatusCode
	return resp, nil
}

func (p *patchLog) log() []patchRec {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]patchRec, len(p.patches))
	for i, r := range p.patches {
		out[i] = *r
	}
	return out
}

var errCut = errors.New("connection cut by the test")

type countingBody struct {
	rc    io.ReadCloser
	rec   *patchRec
	limit int64
	mu    sync.Mutex
}

func (b *countingBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit >= 0 {
		if b.rec.sent >= b.limit {
			return 0, errCut
		}
		p = p[:min(int64(len(p)), b.limit-b.rec.sent)]
	}
	n, err := b.rc.Read(p)
	b.rec.sent += int64(n)
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// TestUploadResumableAfterBrokenConnection breaks the connection of the
// second chunk part-way: the upload must go on from the server's offset, not
// from 0, and end with the right file.
func TestUploadResumableAfterBrokenConnection(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	pkg := newPackage(t, ts.client(t, tokenAcme), nil)
	const (
		size     = 8<<20 + 12345
		chunk    = 3 << 20
		cutAfter = 1<<20 + 777
	)
	pl := &patchLog{base: http.DefaultTransport, cutPatch: 2, cutAfter: cutAfter}
	c := ts.client(t, tokenAcme, client.WithHTTPClient(&http.Client{Transport: pl}))
	want := digestOf(t, newGen(4, size))

	f, err := c.UploadResumable(ctx, newGen(4, size), size,
		artifactstore.CompleteUploadRequest{PackageID: pkg.ID, Path: "resumed.bin"}, client.ResumableOptions{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	if f.Size != size || f.Digest != want || f.Path != "resumed.bin" {
		t.Fatalf("file %+v, want digest %s", f, want)
	}
	var buf countingWriter
	if _, err := c.DownloadVerified(ctx, f.ID, &buf); err != nil || buf.n != size {
		t.Fatalf("verified download: %d bytes, %v", buf.n, err)
	}

	log := pl.log()
	t.Logf("PATCHes: %+v", log)
	if len(log) < 3 || log[0].offset != "0" || log[0].status != http.StatusNoContent ||
		log[1].offset != strconv.Itoa(chunk) || log[1].err == nil {
		t.Fatalf("the first PATCH should succeed and the second, at %d, break: %+v", chunk, log)
	}
	// Every PATCH the server took after the break started where the server
	// was; together they carried exactly the bytes it did not have yet.
	var resumedAt, carried int64 = -1, 0
	for _, r := range log[2:] {
		if r.status != http.StatusNoContent {
			continue
		}
		off, _ := strconv.ParseInt(r.offset, 10, 64)
		if resumedAt < 0 {
			resumedAt = off
		}
		carried += r.sent
	}
	if resumedAt < chunk || resumedAt > chunk+cutAfter {
		t.Fatalf("resumed at %d; want the server's offset after the break, in [%d, %d]", resumedAt, chunk, chunk+cutAfter)
	}
	if resumedAt+carried != size {
		t.Fatalf("resumed at %d and sent %d more bytes; the file has %d", resumedAt, carried, size)
	}
	if resumedAt == chunk {
		// DESIGN §4 says an interrupted body keeps the bytes that arrived;
		// the reference server drops them (the request's context is
		// cancelled before they are counted). The client copes either way.
		t.Logf("the server kept none of the %d bytes sent before the break", cutAfter)
	}
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// TestUploadResumableServerError answers one chunk with a bare 502: the
// upload asks where it stands and goes on.
func TestUploadResumableServerError(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	pkg := newPackage(t, ts.client(t, tokenAcme), nil)
	const size = 1<<20 + 3
	pl := &patchLog{base: http.DefaultTransport, fail502: 2}
	c := ts.client(t, tokenAcme, client.WithHTTPClient(&http.Client{Transport: pl}))
	f, err := c.UploadResumable(ctx, newGen(5, size), size,
		artifactstore.CompleteUploadRequest{PackageID: pkg.ID, Path: "x", MediaType: "text/plain"}, client.ResumableOptions{ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if f.Digest != digestOf(t, newGen(5, size)) || f.MediaType != "text/plain" {
		t.Fatalf("file %+v", f)
	}
	log := pl.log()
	var offsets []string
	for _, r := range log {
		offsets = append(offsets, r.offset+":"+strconv.Itoa(r.status))
	}
	want := []string{"0:204", "262144:502", "262144:204", "524288:204", "786432:204", "1048576:204"}
	if !reflect.DeepEqual(offsets, want) {
		t.Fatalf("PATCHes %v, want %v", offsets, want)
	}
}

// TestUploadResumableContinuesASession resumes a session that already has
// bytes: they are not sent again, and the digest still covers them.
func TestUploadResumableContinuesASession(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	pkg := newPackage(t, ts.client(t, tokenAcme), nil)
	const size = 300_000
	pl := &patchLog{base: http.DefaultTransport}
	c := ts.client(t, tokenAcme, client.WithHTTPClient(&http.Client{Transport: pl}))
	sz := int64(size)
	u, err := c.CreateUpload(ctx, artifactstore.NewUpload{Size: &sz})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AppendUpload(ctx, u.ID, 0, io.LimitReader(newGen(6, size), 100_000)); err != nil {
		t.Fatal(err)
	}
	f, err := c.UploadResumable(ctx, newGen(6, size), size,
		artifactstore.CompleteUploadRequest{PackageID: pkg.ID, Path: "y"}, client.ResumableOptions{UploadID: u.ID})
	if err != nil {
		t.Fatal(err)
	}
	if f.Digest != digestOf(t, newGen(6, size)) || f.Size != size {
		t.Fatalf("file %+v", f)
	}
	log := pl.log()
	if len(log) != 2 || log[1].offset != "100000" || log[1].sent != size-100_000 {
		t.Fatalf("PATCHes %+v", log)
	}

	// A source that is not what the caller declares: DigestMismatch, and
	// the error names the session to resume.
	u2, err := c.CreateUpload(ctx, artifactstore.NewUpload{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadResumable(ctx, newGen(7, 1000), 1000,
		artifactstore.CompleteUploadRequest{PackageID: pkg.ID, Path: "z", Digest: sha([]byte("other"))}, client.ResumableOptions{UploadID: u2.ID})
	wantKind(t, err, artifactstore.DigestMismatch)
	ue, ok := errors.AsType[*client.UploadError](err)
	if !ok || ue.UploadID != u2.ID || ue.Offset != 1000 {
		t.Fatalf("error %v (%T), want an UploadError for %s at 1000", err, err, u2.ID)
	}
	// An unknown session: NotFound, no retries.
	_, err = c.UploadResumable(ctx, newGen(7, 10), 10,
		artifactstore.CompleteUploadRequest{PackageID: pkg.ID, Path: "z"}, client.ResumableOptions{UploadID: "01JDX3A6Q2G8M4WJ0T5N7R9KZD"})
	wantKind(t, err, artifactstore.NotFound)
}

func TestEvents(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	c := ts.client(t, tokenAcme)
	pkg := newPackage(t, c, nil)
	if _, err := c.PutFile(ctx, pkg.ID, "a", strings.NewReader("hello"), artifactstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Finalize(ctx, pkg.ID); err != nil {
		t.Fatal(err)
	}
	newPackage(t, ts.client(t, tokenGlobex), nil) // another tenant's: not seen

	page, err := c.Events(ctx, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ts.st.Events(ctx, "acme", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 3 || page.Next != 3 || page.Head != 3 || page.Next != want.Next || page.Head != want.Head {
		t.Fatalf("page %+v, in-process %+v", page, want)
	}
	for i, e := range page.Events {
		w := want.Events[i]
		if e.Seq != w.Seq || e.Type != w.Type || e.Tenant != w.Tenant || e.PackageID != w.PackageID || e.FileID != w.FileID ||
			artifactstore.FormatTime(e.Time) != artifactstore.FormatTime(w.Time) || !reflect.DeepEqual(e.Data, w.Data) {
			t.Fatalf("event %d over HTTP %+v\nin-process %+v", i, e, w)
		}
	}
	if page.Events[1].Data["size"] != uint64(5) {
		t.Fatalf("data %#v", page.Events[1].Data)
	}
	page, err = c.Events(ctx, 1, 1, 0)
	if err != nil || len(page.Events) != 1 || page.Events[0].Seq != 2 || page.Next != 2 {
		t.Fatalf("page from 1: %+v %v", page, err)
	}

	// Long-poll: the wait ends with the next event.
	go func() {
		time.Sleep(200 * time.Millisecond)
		newPackage(t, c, nil)
	}()
	start := time.Now()
	page, err = c.Events(ctx, 3, 10, 10*time.Second)
	if err != nil || len(page.Events) != 1 || page.Events[0].Type != artifactstore.EventPackageCreated || page.Next != 4 {
		t.Fatalf("long-poll: %+v %v", page, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the long-poll took %v", took)
	}
	// At the tail with a short wait: an empty page.
	page, err = c.Events(ctx, 4, 0, time.Millisecond)
	if err != nil || len(page.Events) != 0 || page.Next != 4 || page.Head != 4 {
		t.Fatalf("empty page: %+v %v", page, err)
	}
}

// TestErrorKinds makes the same mistakes over HTTP and in-process: the
// kinds must agree.
func TestErrorKinds(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t)
	st := ts.st
	acme, globex := ts.client(t, tokenAcme), ts.client(t, tokenGlobex)

	open := newPackage(t, acme, nil)
	taken, err := acme.PutFile(ctx, open.ID, "taken", strings.NewReader("x"), artifactstore.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	final := newPackage(t, acme, nil)
	if _, err := acme.Finalize(ctx, final.ID); err != nil {
		t.Fatal(err)
	}
	upload, err := acme.CreateUpload(ctx, artifactstore.NewUpload{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acme.AppendUpload(ctx, upload.ID, 0, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	body := func() io.Reader { return strings.NewReader("content") }
	wrongDigest := sha([]byte("something else"))

	cases := []struct {
		name   string
		want   artifactstore.Kind
		remote func() error
		local  func() error // nil: the mistake only exists over HTTP
	}{
		{"another tenant's package", artifactstore.NotFound,
			func() error { _, err := globex.GetPackage(ctx, open.ID); return err },
			func() error { _, err := st.GetPackage(ctx, "globex", open.ID); return err }},
		{"another tenant's file", artifactstore.NotFound,
			func() error { _, err := globex.GetFile(ctx, taken.ID); return err },
			func() error { _, err := st.GetFile(ctx, "globex", taken.ID); return err }},
		{"another tenant's download", artifactstore.NotFound,
			func() error { _, err := globex.Download(ctx, taken.ID, client.DownloadOptions{}); return err },
			func() error { _, _, err := st.OpenFile(ctx, "globex", taken.ID); return err }},
		{"another tenant's files", artifactstore.NotFound,
			func() error { _, err := globex.ListFiles(ctx, open.ID, artifactstore.FileQuery{}); return err },
			func() error { _, err := st.ListFiles(ctx, "globex", open.ID, artifactstore.FileQuery{}); return err }},
		{"another tenant's upload", artifactstore.NotFound,
			func() error { _, err := globex.UploadStatus(ctx, upload.ID); return err },
			func() error { _, err := st.UploadStatus(ctx, "globex", upload.ID); return err }},
		{"putting into another tenant's package", artifactstore.NotFound,
			func() error {
				_, err := globex.PutFile(ctx, open.ID, "p", body(), artifactstore.PutOptions{})
				return err
			},
			func() error {
				_, err := st.PutFile(ctx, "globex", open.ID, "p", body(), artifactstore.PutOptions{})
				return err
			}},
		{"a malformed id", artifactstore.Invalid,
			func() error { _, err := acme.GetPackage(ctx, "not-an-id"); return err },
			func() error { _, err := st.GetPackage(ctx, "acme", "not-an-id"); return err }},
		{"an empty id", artifactstore.Invalid,
			func() error { _, err := acme.GetFile(ctx, ""); return err },
			func() error { _, err := st.GetFile(ctx, "acme", ""); return err }},
		{"a bad path", artifactstore.Invalid,
			func() error {
				_, err := acme.PutFile(ctx, open.ID, "../etc/passwd", body(), artifactstore.PutOptions{})
				return err
			},
			func() error {
				_, err := st.PutFile(ctx, "acme", open.ID, "../etc/passwd", body(), artifactstore.PutOptions{})
				return err
			}},
		{"a path with a trailing slash", artifactstore.Invalid,
			func() error {
				_, err := acme.PutFile(ctx, open.ID, "dir/", body(), artifactstore.PutOptions{})
				return err
			},
			func() error {
				_, err := st.PutFile(ctx, "acme", open.ID, "dir/", body(), artifactstore.PutOptions{})
				return err
			}},
		{"a bad media type", artifactstore.Invalid,
			func() error {
				_, err := acme.PutFile(ctx, open.ID, "m", body(), artifactstore.PutOptions{MediaType: "not a type"})
				return err
			},
			func() error {
				_, err := st.PutFile(ctx, "acme", open.ID, "m", body(), artifactstore.PutOptions{MediaType: "not a type"})
				return err
			}},
		{"a package without producer", artifactstore.Invalid,
			func() error { _, err := acme.CreatePackage(ctx, artifactstore.NewPackage{Subject: "s"}); return err },
			func() error {
				_, err := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{Subject: "s"})
				return err
			}},
		{"an unknown retention class", artifactstore.Invalid,
			func() error {
				_, err := acme.CreatePackage(ctx, artifactstore.NewPackage{Producer: "p", Subject: "s", RetentionClass: "forever"})
				return err
			},
			func() error {
				_, err := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{Producer: "p", Subject: "s", RetentionClass: "forever"})
				return err
			}},
		{"a page too large", artifactstore.Invalid,
			func() error { _, err := acme.ListPackages(ctx, artifactstore.PackageQuery{Limit: 5000}); return err },
			func() error {
				_, err := st.ListPackages(ctx, "acme", artifactstore.PackageQuery{Limit: 5000})
				return err
			}},
		{"a bad state filter", artifactstore.Invalid,
			func() error { _, err := acme.ListPackages(ctx, artifactstore.PackageQuery{State: "gone"}); return err },
			func() error {
				_, err := st.ListPackages(ctx, "acme", artifactstore.PackageQuery{State: "gone"})
				return err
			}},
		{"a foreign cursor", artifactstore.Invalid,
			func() error {
				_, err := acme.ListPackages(ctx, artifactstore.PackageQuery{Cursor: "bogus"})
				return err
			},
			func() error {
				_, err := st.ListPackages(ctx, "acme", artifactstore.PackageQuery{Cursor: "bogus"})
				return err
			}},
		{"events beyond the head", artifactstore.Invalid,
			func() error { _, err := acme.Events(ctx, 1000, 0, 0); return err },
			func() error { _, err := st.Events(ctx, "acme", 1000, 0); return err }},
		{"a wait too long", artifactstore.Invalid,
			func() error { _, err := acme.Events(ctx, 0, 0, 2*time.Minute); return err },
			func() error { _, err := st.WaitEvents(ctx, "acme", 0, 0, 2*time.Minute); return err }},
		{"putting into a finalized package", artifactstore.Finalized,
			func() error {
				_, err := acme.PutFile(ctx, final.ID, "late", body(), artifactstore.PutOptions{})
				return err
			},
			func() error {
				_, err := st.PutFile(ctx, "acme", final.ID, "late", body(), artifactstore.PutOptions{})
				return err
			}},
		{"completing into a finalized package", artifactstore.Finalized,
			func() error {
				_, err := acme.CompleteUpload(ctx, upload.ID, artifactstore.CompleteUploadRequest{PackageID: final.ID, Path: "late"})
				return err
			},
			func() error {
				_, err := st.CompleteUpload(ctx, "acme", upload.ID, artifactstore.CompleteUploadRequest{PackageID: final.ID, Path: "late"})
				return err
			}},
		{"a taken path", artifactstore.Conflict,
			func() error {
				_, err := acme.PutFile(ctx, open.ID, "taken", body(), artifactstore.PutOptions{})
				return err
			},
			func() error {
				_, err := st.PutFile(ctx, "acme", open.ID, "taken", body(), artifactstore.PutOptions{})
				return err
			}},
		{"the manifest of an open package", artifactstore.Conflict,
			func() error { _, err := acme.Manifest(ctx, open.ID); return err },
			func() error { _, err := st.Manifest(ctx, "acme", open.ID); return err }},
		{"the JSON manifest of an open package", artifactstore.Conflict,
			func() error { _, err := acme.ManifestJSON(ctx, open.ID); return err },
			func() error { _, err := st.Manifest(ctx, "acme", open.ID); return err }},
		{"a wrong digest", artifactstore.DigestMismatch,
			func() error {
				_, err := acme.PutFile(ctx, open.ID, "d", body(), artifactstore.PutOptions{Digest: wrongDigest})
				return err
			},
			func() error {
				_, err := st.PutFile(ctx, "acme", open.ID, "d", body(), artifactstore.PutOptions{Digest: wrongDigest})
				return err
			}},
		{"a wrong digest at completion", artifactstore.DigestMismatch,
			func() error {
				_, err := acme.CompleteUpload(ctx, upload.ID, artifactstore.CompleteUploadRequest{PackageID: open.ID, Path: "u", Digest: wrongDigest})
				return err
			},
			func() error {
				_, err := st.CompleteUpload(ctx, "acme", upload.ID, artifactstore.CompleteUploadRequest{PackageID: open.ID, Path: "u", Digest: wrongDigest})
				return err
			}},
		{"a wrong offset", artifactstore.OffsetMismatch,
			func() error { _, err := acme.AppendUpload(ctx, upload.ID, 1, body()); return err },
			func() error { _, err := st.AppendUpload(ctx, "acme", upload.ID, 1, body()); return err }},
		{"a range beyond the end", artifactstore.RangeNotSatisfiable,
			func() error { _, err := acme.Download(ctx, taken.ID, client.DownloadOptions{Offset: 5}); return err },
			nil},
		{"a bad token", artifactstore.Unauthorized,
			func() error { _, err := ts.client(t, "wrong-token").GetPackage(ctx, open.ID); return err },
			nil},
		{"a bad token putting", artifactstore.Unauthorized,
			func() error {
				_, err := ts.client(t, "wrong-token").PutFile(ctx, open.ID, "p", body(), artifactstore.PutOptions{})
				return err
			},
			nil},
		{"a bad token downloading", artifactstore.Unauthorized,
			func() error {
				_, err := ts.client(t, "wrong-token").Download(ctx, taken.ID, client.DownloadOptions{})
				return err
			},
			nil},
		{"anonymous reading", artifactstore.Unauthorized,
			func() error { _, err := ts.client(t, "").GetPackage(ctx, open.ID); return err },
			nil},
		{"anonymous writing", artifactstore.Unauthorized,
			func() error {
				_, err := ts.client(t, "").CreatePackage(ctx, artifactstore.NewPackage{Producer: "p", Subject: "s"})
				return err
			},
			nil},
		{"anonymous putting", artifactstore.Unauthorized,
			func() error {
				_, err := ts.client(t, "").PutFile(ctx, open.ID, "p", body(), artifactstore.PutOptions{})
				return err
			},
			nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			remote := tc.remote()
			e := wantKind(t, remote, tc.want)
			if e == nil {
				t.Fatalf("%v (%T) is not an *artifactstore.Error", remote, remote)
			}
			if e.Op == "" || e.Detail == "" {
				t.Errorf("error without Op or Detail: %#v", e)
			}
			if tc.local != nil {
				local := tc.local()
				if got := artifactstore.KindOf(local); got != tc.want {
					t.Fatalf("in-process: KindOf(%v) = %v, over HTTP %v", local, got, tc.want)
				}
				le, _ := errors.AsType[*artifactstore.Error](local)
				if tc.want == artifactstore.Invalid && len(le.Fields) > 0 && len(e.Fields) == 0 {
					t.Errorf("in-process names fields %v; over HTTP none", le.Fields)
				}
				if tc.want == artifactstore.OffsetMismatch && le.Offset != e.Offset {
					t.Errorf("offset in-process %d, over HTTP %d", le.Offset, e.Offset)
				}
			}
		})
	}

	// The status and the raw problem stay reachable.
	_, err = globex.GetPackage(ctx, open.ID)
	if p, ok := errors.AsType[*client.Problem](err); !ok || p.Status != 404 || p.Type != "/problems/not-found" {
		t.Fatalf("problem of %v: %+v", err, p)
	}
}

func TestTransportErrorIsPlain(t *testing.T) {
	ts := newServer(t)
	c := ts.client(t, tokenAcme)
	ts.Close()
	_, err := c.GetPackage(context.Background(), "01JDX3A6Q2G8M4WJ0T5N7R9KZB")
	if err == nil {
		t.Fatal("no error from a closed server")
	}
	if _, ok := errors.AsType[*artifactstore.Error](err); ok || artifactstore.KindOf(err) != artifactstore.Internal {
		t.Fatalf("transport error %v (%T): want a plain error of kind Internal", err, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Events(ctx, 0, 0, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNonProblemAnswer(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer ts.Close()
	c, err := client.New(ts.URL, client.WithToken("t"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetPackage(context.Background(), "01JDX3A6Q2G8M4WJ0T5N7R9KZB")
	re, ok := errors.AsType[*client.ResponseError](err)
	if !ok || re.StatusCode != 502 || artifactstore.KindOf(err) != artifactstore.Internal {
		t.Fatalf("err %v (%T)", err, err)
	}
}
