package s3blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/blob/blobtest"
)

// The tests that need a server read it from ARTIFACTSTORE_TEST_S3, e.g.
//
//	ARTIFACTSTORE_TEST_S3='s3://artifactstore-test?endpoint=http://127.0.0.1:7070&region=us-east-1'
//	AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
//
// and skip without it, unless ARTIFACTSTORE_TEST_REQUIRE lists "s3". The
// bucket is created if missing; every store gets its own random prefix in it,
// removed when the test ends.

var bucketOnce struct {
	sync.Mutex
	done bool
}

// testConfig returns the server's Config, skipping (or failing, where
// required) when none is set.
func testConfig(t *testing.T) Config {
	t.Helper()
	u := os.Getenv("ARTIFACTSTORE_TEST_S3")
	if u == "" {
		if slices.ContainsFunc(strings.Split(os.Getenv("ARTIFACTSTORE_TEST_REQUIRE"), ","), func(s string) bool {
			return strings.TrimSpace(s) == "s3"
		}) {
			t.Fatal("ARTIFACTSTORE_TEST_REQUIRE lists s3 but ARTIFACTSTORE_TEST_S3 is not set")
		}
		t.Skip("no S3 server: set ARTIFACTSTORE_TEST_S3=s3://bucket?endpoint=http://host:port&region=... " +
			"and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY to run these tests")
	}
	cfg, err := ParseURL(u)
	if err != nil {
		t.Fatalf("ARTIFACTSTORE_TEST_S3: %v", err)
	}
	bucketOnce.Lock()
	defer bucketOnce.Unlock()
	if !bucketOnce.done {
		c, _, err := newClient(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		ok, err := c.BucketExists(t.Context(), cfg.Bucket)
		if err != nil {
			t.Fatalf("checking bucket %s: %v", cfg.Bucket, err)
		}
		if !ok {
			err := c.MakeBucket(t.Context(), cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
			if err != nil && minio.ToErrorResponse(err).Code != "BucketAlreadyOwnedByYou" {
				t.Fatalf("creating bucket %s: %v", cfg.Bucket, err)
			}
		}
		bucketOnce.done = true
	}
	return cfg
}

// mustOpen opens a store under a fresh random prefix and removes everything
// under it (objects and incomplete multipart uploads) when the test ends.
func mustOpen(t *testing.T, cfg Config) *Store {
	t.Helper()
	cfg.Prefix = cfg.Prefix + "s3blob-test-" + randomName()[:12] + "/"
	s, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		purge(t, s)
	})
	return s
}

func purge(t *testing.T, s *Store) {
	ctx := context.Background()
	var keys []string
	for obj, err := range s.list(ctx, s.prefix, true) {
		if err != nil {
			t.Errorf("purge: %v", err)
			return
		}
		keys = append(keys, obj.Key)
	}
	if err := s.removeKeys(ctx, keys); err != nil {
		t.Errorf("purge: %v", err)
	}
	for up := range s.client.ListIncompleteUploads(ctx, s.bucket, s.prefix, true) {
		if up.Err == nil {
			_ = s.core.AbortMultipartUpload(ctx, s.bucket, up.Key, up.UploadID)
		}
	}
}

// leftovers lists staged objects and incomplete multipart uploads: whatever
// is neither a blob nor an upload chunk.
func leftovers(t *testing.T, s *Store) []string {
	t.Helper()
	ctx := context.Background()
	var stray []string
	for obj, err := range s.list(ctx, s.prefix, true) {
		if err != nil {
			t.Fatalf("listing %s: %v", s.prefix, err)
		}
		rel := strings.TrimPrefix(obj.Key, s.prefix)
		name, isBlob := strings.CutPrefix(rel, "blobs/sha256/")
		if isBlob && blob.IsDigestHex(name) || strings.HasPrefix(rel, "uploads/") {
			continue
		}
		stray = append(stray, rel)
	}
	for up := range s.client.ListIncompleteUploads(ctx, s.bucket, s.prefix, true) {
		if up.Err != nil {
			t.Fatalf("listing multipart uploads: %v", up.Err)
		}
		stray = append(stray, "multipart upload of "+strings.TrimPrefix(up.Key, s.prefix))
	}
	return stray
}

func TestConformance(t *testing.T) {
	cfg := testConfig(t)
	// The smallest part size makes blobtest's 8 MiB stream a multipart
	// upload; smaller writes take the single-PUT path.
	cfg.PartSize = MinPartSize
	blobtest.RunWithOptions(t, blobtest.Options{
		New:       func(t *testing.T) blob.Store { return mustOpen(t, cfg) },
		Leftovers: func(t *testing.T, s blob.Store) []string { return leftovers(t, s.(*Store)) },
	})
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pattern returns n bytes that differ from those of other seeds.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31+i>>9) ^ seed
	}
	return b
}

func put(t *testing.T, s blob.Store, data []byte) string {
	t.Helper()
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	d := digestOf(data)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	return d
}

func read(t *testing.T, s blob.Store, d string) []byte {
	t.Helper()
	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLayout(t *testing.T) {
	cfg := testConfig(t)
	t.Parallel()
	s := mustOpen(t, cfg)
	data := []byte("layout")
	d := put(t, s, data)
	key := s.prefix + "blobs/sha256/" + strings.TrimPrefix(d, "sha256:")
	if _, err := s.client.StatObject(t.Context(), s.bucket, key, minio.StatObjectOptions{}); err != nil {
		t.Errorf("blob not at %s: %v", key, err)
	}
	if _, err := s.Uploads().Append(t.Context(), "id_1", 0, strings.NewReader("up")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Uploads().Append(t.Context(), "id_1", 2, strings.NewReader("load")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for obj, err := range s.list(t.Context(), s.prefix, true) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.TrimPrefix(obj.Key, s.prefix))
	}
	want := []string{
		"blobs/sha256/" + strings.TrimPrefix(d, "sha256:"),
		"uploads/id_1/00000000000000000000",
		"uploads/id_1/00000000000000000002",
	}
	if !slices.Equal(got, want) {
		t.Errorf("keys = %q, want %q", got, want)
	}
}

// A write cancelled after its first part went up aborts the multipart
// upload; so does Abort.
func TestCancelledMultipartWrite(t *testing.T) {
	cfg := testConfig(t)
	t.Parallel()
	cfg.PartSize = MinPartSize
	s := mustOpen(t, cfg)
	data := pattern(1, MinPartSize+1000)
	for _, cancelFirst := range []bool{true, false} {
		ctx, cancel := context.WithCancel(t.Context())
		w, err := s.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if got := w.(*writer).upload; got == "" {
			t.Fatal("no multipart upload after writing more than a part")
		}
		if cancelFirst {
			cancel()
			if err := w.Commit(digestOf(data)); err == nil {
				t.Error("Commit after cancel succeeded")
			}
		}
		if err := w.Abort(); err != nil {
			t.Errorf("Abort: %v", err)
		}
		cancel()
		if got := leftovers(t, s); len(got) != 0 {
			t.Errorf("cancelFirst=%v: leftovers %q", cancelFirst, got)
		}
		if _, err := s.Stat(t.Context(), digestOf(data)); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("cancelFirst=%v: Stat = %v, want ErrNotFound", cancelFirst, err)
		}
	}
}

// Re-committing equal content moves LastModified (whole seconds) for Stat
// and All alike, through a Writer and through an upload whose chunks are
// gone.
func TestRefreshModTime(t *testing.T) {
	cfg := testConfig(t)
	t.Parallel()
	cfg.PartSize = MinPartSize
	s := mustOpen(t, cfg)
	small := []byte("refresh me")
	big := pattern(2, MinPartSize+7) // staged and copied
	var ds []string
	for _, data := range [][]byte{small, big, nil} {
		ds = append(ds, put(t, s, data))
	}
	modTimes := func() map[string][2]time.Time {
		m := make(map[string][2]time.Time)
		listed := make(map[string]time.Time)
		for info, err := range s.All(t.Context()) {
			if err != nil {
				t.Fatal(err)
			}
			listed[info.Digest] = info.ModTime
		}
		for _, d := range ds {
			info, err := s.Stat(t.Context(), d)
			if err != nil {
				t.Fatal(err)
			}
			m[d] = [2]time.Time{info.ModTime, listed[d]}
		}
		return m
	}
	before := modTimes()
	time.Sleep(1100 * time.Millisecond)
	put(t, s, small)
	put(t, s, big)
	// Uploads.Commit of existing content needs no chunks.
	if err := s.Uploads().Commit(t.Context(), "gone", 0, ds[2]); err != nil {
		t.Fatalf("Uploads().Commit of an existing empty blob: %v", err)
	}
	after := modTimes()
	for _, d := range ds {
		for i, what := range []string{"Stat", "All"} {
			if !after[d][i].After(before[d][i]) {
				t.Errorf("%s ModTime of %s: %v, then %v; want it to move", what, d, before[d][i], after[d][i])
			}
		}
	}
	time.Sleep(1100 * time.Millisecond)
	if err := s.Uploads().Commit(t.Context(), "gone", int64(len(big)), ds[1]); err != nil {
		t.Fatalf("Uploads().Commit of an existing blob: %v", err)
	}
	again := modTimes()
	if !again[ds[1]][0].After(after[ds[1]][0]) {
		t.Errorf("Uploads().Commit did not refresh: %v, then %v", after[ds[1]][0], again[ds[1]][0])
	}
	if got := read(t, s, ds[1]); !bytes.Equal(got, big) {
		t.Error("refresh changed the content")
	}
	if got := leftovers(t, s); len(got) != 0 {
		t.Errorf("leftovers %q", got)
	}
}

// Uploads.Commit joins chunks of at least MinPartSize server-side, also
// when the committed size ends inside a chunk, and streams small ones.
func TestUploadCommitCompose(t *testing.T) {
	cfg := testConfig(t)
	t.Parallel()
	s := mustOpen(t, cfg)
	u := s.Uploads()
	data := pattern(3, 2*MinPartSize+5000)
	pieces := []int{MinPartSize, MinPartSize, 5000}
	off := 0
	for _, n := range pieces {
		if _, err := u.Append(t.Context(), "big", int64(off), bytes.NewReader(data[off:off+n])); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	for _, size := range []int{len(data), MinPartSize + 10, MinPartSize - 10, MinPartSize} {
		d := digestOf(data[:size])
		if err := u.Commit(t.Context(), "big", int64(size), d); err != nil {
			t.Fatalf("Commit(%d): %v", size, err)
		}
		if got := read(t, s, d); !bytes.Equal(got, data[:size]) {
			t.Errorf("Commit(%d) stored %d different bytes", size, len(got))
		}
	}
	if got := leftovers(t, s); len(got) != 0 {
		t.Errorf("leftovers %q", got)
	}
}

// countingTransport adds up the Content-Length of GET responses.
type countingTransport struct {
	rt       http.RoundTripper
	gets     atomic.Int64
	getBytes atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(req)
	if err == nil && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
		c.gets.Add(1)
		c.getBytes.Add(resp.ContentLength)
	}
	return resp, err
}

// A range costs one GET that starts at the range, and a Seek alone costs
// nothing.
func TestRangedReadFetchesOnlyTheRange(t *testing.T) {
	cfg := testConfig(t)
	t.Parallel()
	ct := &countingTransport{}
	cfg.Prefix += "s3blob-test-" + randomName()[:12] + "/"
	s, err := open(t.Context(), cfg, func(rt http.RoundTripper) http.RoundTripper { ct.rt = rt; return ct })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); purge(t, s) })
	data := pattern(4, 1<<20)
	d := put(t, s, data)
	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, off := range []int64{900_000, 10, 1<<20 - 100} {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
	}
	if n := ct.gets.Load(); n != 0 {
		t.Errorf("Seeks sent %d GETs", n)
	}
	buf := make([]byte, 100)
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[len(data)-100:]) {
		t.Fatalf("tail = %v, %v", buf[:8], err)
	}
	if n, b := ct.gets.Load(), ct.getBytes.Load(); n != 1 || b != 100 {
		t.Errorf("reading the last 100 bytes: %d GETs, %d bytes; want 1, 100", n, b)
	}
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read at end = %d, %v; want 0, EOF", n, err)
	}
	if _, err := r.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[1000:1100]) {
		t.Fatalf("range at 1000: %v", err)
	}
	if n := ct.gets.Load(); n != 2 {
		t.Errorf("%d GETs after two ranges, want 2", n)
	}
}

func TestParseURL(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "ak")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "sk")
	good := []struct {
		in   string
		want Config
	}{
		{"s3://b?endpoint=http://127.0.0.1:7070&region=us-east-1",
			Config{Endpoint: "http://127.0.0.1:7070", Bucket: "b", Region: "us-east-1", AccessKey: "ak", SecretKey: "sk"}},
		{"s3://my-bucket/?endpoint=https://s3.example.com&prefix=team/a/",
			Config{Endpoint: "https://s3.example.com", Bucket: "my-bucket", Prefix: "team/a/", AccessKey: "ak", SecretKey: "sk"}},
	}
	for _, tc := range good {
		got, err := ParseURL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	bad := []string{
		"http://b?endpoint=http://h",                 // scheme
		"s3://?endpoint=http://h",                    // no bucket
		"s3://b",                                     // no endpoint
		"s3://b?endpoint=127.0.0.1:7070",             // endpoint without scheme
		"s3://b?endpoint=ftp://h",                    // endpoint scheme
		"s3://b?endpoint=http://h/path",              // endpoint path
		"s3://b?endpoint=http://h&regoin=x",          // typo
		"s3://b?endpoint=http://h&region=a&region=b", // twice
		"s3://b/key?endpoint=http://h",               // path
		"s3://b?endpoint=http://h&prefix=/abs",       // leading slash
		"s3://user@b?endpoint=http://h",              // user info
	}
	for _, in := range bad {
		if got, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", in, got)
		}
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, err := ParseURL("s3://b?endpoint=http://h"); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("ParseURL without a secret key: %v, want a credentials error", err)
	}
}

func TestConfigPartSize(t *testing.T) {
	base := Config{Endpoint: "http://127.0.0.1:1", Bucket: "b", AccessKey: "a", SecretKey: "s"}
	for _, ps := range []uint64{1, MinPartSize - 1, MaxPartSize + 1} {
		cfg := base
		cfg.PartSize = ps
		if _, err := Open(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "part size") {
			t.Errorf("Open with PartSize %d: %v, want a part size error", ps, err)
		}
	}
}

func TestSpans(t *testing.T) {
	c := func(start, size int64) chunk { return chunk{key: string(rune('a' + start)), start: start, size: size} }
	tests := []struct {
		chunks []chunk
		size   int64
		want   []int64 // n of each span
		err    bool
	}{
		{[]chunk{c(0, 5), c(5, 6)}, 11, []int64{5, 6}, false},
		{[]chunk{c(0, 5), c(5, 6)}, 7, []int64{5, 2}, false},
		{[]chunk{c(0, 10), c(5, 2)}, 7, []int64{5, 2}, false}, // cut by a later chunk
		{[]chunk{c(0, 10), c(5, 2)}, 8, nil, true},            // the cut tail is gone
		{[]chunk{c(0, 10), c(5, 0)}, 5, []int64{5}, false},    // an empty chunk cuts too
		{[]chunk{c(0, 3), c(5, 2)}, 7, nil, true},             // gap
		{[]chunk{c(1, 3)}, 1, nil, true},                      // no start
		{[]chunk{c(0, 0)}, 0, nil, false},
	}
	for i, tc := range tests {
		got, err := spans(tc.chunks, tc.size)
		if (err != nil) != tc.err {
			t.Errorf("%d: spans error %v, want error %v", i, err, tc.err)
			continue
		}
		var ns []int64
		for _, sp := range got {
			ns = append(ns, sp.n)
		}
		if !slices.Equal(ns, tc.want) {
			t.Errorf("%d: span lengths %v, want %v", i, ns, tc.want)
		}
	}
}
