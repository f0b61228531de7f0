package artifactstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/blob/fsblob"
	"github.com/artifactstore/artifactstore/catalog/sqlite"
)

type testStore struct {
	*artifactstore.Store
	dir   string
	blobs *fsblob.Store
	cat   *sqlite.Catalog
}

// mustOpen opens a store over fsblob and SQLite in dir (a new temp dir when
// empty) and closes it when the test ends.
func mustOpen(tb testing.TB, dir string, opts artifactstore.Options) *testStore {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	blobs, err := fsblob.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	cat, err := sqlite.Open(context.Background(), filepath.Join(dir, "catalog.db"), sqlite.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	opts.Blobs, opts.Catalog = blobs, cat
	if opts.CleanupInterval == 0 {
		opts.CleanupInterval = -1
	}
	st, err := artifactstore.Open(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return &testStore{Store: st, dir: dir, blobs: blobs, cat: cat}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func mustPackage(tb testing.TB, st *testStore, tenant string, md map[string]string) artifactstore.Package {
	tb.Helper()
	p, err := st.CreatePackage(context.Background(), tenant, artifactstore.NewPackage{Producer: "ci", Subject: "svc-a", Metadata: md})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func mustPut(tb testing.TB, st *testStore, tenant, pkg, path string, content []byte) artifactstore.File {
	tb.Helper()
	f, err := st.PutFile(context.Background(), tenant, pkg, path, bytes.NewReader(content), artifactstore.PutOptions{})
	if err != nil {
		tb.Fatalf("PutFile(%s): %v", path, err)
	}
	return f
}

func wantKind(tb testing.TB, err error, k artifactstore.Kind) {
	tb.Helper()
	if got := artifactstore.KindOf(err); got != k || err == nil {
		tb.Fatalf("error %v has kind %v, want %v", err, got, k)
	}
}

func allEvents(tb testing.TB, st *testStore, tenant string) []artifactstore.Event {
	tb.Helper()
	var all []artifactstore.Event
	var since uint64
	for {
		page, err := st.Events(context.Background(), tenant, since, 1000)
		if err != nil {
			tb.Fatal(err)
		}
		all = append(all, page.Events...)
		if len(page.Events) == 0 {
			return all
		}
		since = page.Next
	}
}

func readAll(tb testing.TB, st *testStore, tenant, fileID string) []byte {
	tb.Helper()
	_, r, err := st.OpenFile(context.Background(), tenant, fileID)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestPackageLifecycle(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", map[string]string{"git.sha": "abc123"})
	if p.State != artifactstore.StateOpen || p.RetentionClass != "standard" || p.Tenant != "acme" || p.CreatedAt.IsZero() {
		t.Fatalf("new package = %+v", p)
	}
	contents := map[string][]byte{
		"bin/app":        bytes.Repeat([]byte("x"), 1<<20+5),
		"README.md":      []byte("hello"),
		"empty":          {},
		"ünï/日本語.txt":    []byte("こんにちは"),
		"dir with space": []byte("s"),
	}
	files := map[string]artifactstore.File{}
	for path, c := range contents {
		f := mustPut(t, st, "acme", p.ID, path, c)
		if f.Digest != sha(c) || f.Size != int64(len(c)) || f.Path != path || f.MediaType != artifactstore.DefaultMediaType {
			t.Fatalf("PutFile(%s) = %+v", path, f)
		}
		files[path] = f
		if got := readAll(t, st, "acme", f.ID); !bytes.Equal(got, c) {
			t.Fatalf("%s reads back %d bytes, want %d", path, len(got), len(c))
		}
	}
	// Equal content is stored once.
	dup := mustPut(t, st, "acme", p.ID, "copy/of/readme", []byte("hello"))
	if dup.Digest != files["README.md"].Digest {
		t.Fatal("equal content got another digest")
	}
	n := 0
	for _, err := range st.blobs.All(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(contents) {
		t.Errorf("%d blobs stored for %d distinct contents", n, len(contents))
	}

	got, err := st.GetPackage(ctx, "acme", p.ID)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, c := range contents {
		total += int64(len(c))
	}
	if got.FileCount != int64(len(contents)+1) || got.TotalSize != total+5 {
		t.Errorf("package counts = %d files, %d bytes; want %d, %d", got.FileCount, got.TotalSize, len(contents)+1, total+5)
	}

	_, err = st.Manifest(ctx, "acme", p.ID)
	wantKind(t, err, artifactstore.Conflict)

	fp, err := st.Finalize(ctx, "acme", p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fp.State != artifactstore.StateFinalized || fp.FinalizedAt.IsZero() || !strings.HasPrefix(fp.ManifestDigest, "sha256:") {
		t.Fatalf("finalized package = %+v", fp)
	}
	mb, err := st.Manifest(ctx, "acme", p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sha(mb.CBOR) != fp.ManifestDigest {
		t.Errorf("manifest digest %s, CBOR hashes to %s", fp.ManifestDigest, sha(mb.CBOR))
	}
	m, err := artifactstore.DecodeManifestJSON(mb.JSON)
	if err != nil {
		t.Fatal(err)
	}
	if m.FileCount != uint64(len(contents)+1) || m.Package.Metadata["git.sha"] != "abc123" || m.Package.ID != p.ID {
		t.Errorf("manifest = %+v", m)
	}
	if !slices.IsSortedFunc(m.Files, func(a, b artifactstore.ManifestFile) int { return strings.Compare(a.Path, b.Path) }) {
		t.Error("manifest files are not sorted by path")
	}
	for _, mf := range m.Files {
		c, ok := contents[mf.Path]
		if mf.Path == "copy/of/readme" {
			c, ok = []byte("hello"), true
		}
		if !ok || mf.Digest != sha(c) || mf.Size != uint64(len(c)) {
			t.Errorf("manifest file %+v does not match its content", mf)
		}
	}

	// Finalize is idempotent; the package never changes again.
	again, err := st.Finalize(ctx, "acme", p.ID)
	if err != nil || again.ManifestDigest != fp.ManifestDigest || !again.FinalizedAt.Equal(fp.FinalizedAt) {
		t.Fatalf("second Finalize = %+v, %v", again, err)
	}
	_, err = st.PutFile(ctx, "acme", p.ID, "late", strings.NewReader("late"), artifactstore.PutOptions{})
	wantKind(t, err, artifactstore.Finalized)
	mb2, _ := st.Manifest(ctx, "acme", p.ID)
	if !bytes.Equal(mb.CBOR, mb2.CBOR) || !bytes.Equal(mb.JSON, mb2.JSON) {
		t.Error("manifest bytes changed")
	}

	// One event per change, in order.
	evs := allEvents(t, st, "acme")
	var types []string
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		types = append(types, e.Type)
	}
	want := []string{"package.created"}
	for range len(contents) + 1 {
		want = append(want, "file.added")
	}
	want = append(want, "package.finalized")
	if !slices.Equal(types, want) {
		t.Errorf("event types = %v, want %v", types, want)
	}
	last := evs[len(evs)-1]
	if last.Data["manifest_digest"] != fp.ManifestDigest || last.Data["file_count"] != uint64(len(contents)+1) {
		t.Errorf("finalized event data = %v", last.Data)
	}
	fe := evs[1]
	if fe.FileID == "" || fe.Data["digest"] == nil || fe.Data["size"] == nil || fe.Data["path"] == nil {
		t.Errorf("file.added event = %+v", fe)
	}
}

func TestCreatePackageValidation(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	long := strings.Repeat("p", 257)
	for _, tc := range []struct {
		name   string
		tenant string
		np     artifactstore.NewPackage
		fields []string
	}{
		{"missing producer and subject", "acme", artifactstore.NewPackage{}, []string{"producer", "subject"}},
		{"long producer", "acme", artifactstore.NewPackage{Producer: long, Subject: "s"}, []string{"producer"}},
		{"control in subject", "acme", artifactstore.NewPackage{Producer: "p", Subject: "a\nb"}, []string{"subject"}},
		{"unknown retention", "acme", artifactstore.NewPackage{Producer: "p", Subject: "s", RetentionClass: "forever"}, []string{"retention_class"}},
		{"bad metadata key", "acme", artifactstore.NewPackage{Producer: "p", Subject: "s", Metadata: map[string]string{"a=b": "c"}}, []string{"metadata"}},
		{"bad tenant", "ac me", artifactstore.NewPackage{Producer: "p", Subject: "s"}, []string{"tenant"}},
		{"all tenants", artifactstore.AllTenants, artifactstore.NewPackage{Producer: "p", Subject: "s"}, []string{"tenant"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.CreatePackage(ctx, tc.tenant, tc.np)
			wantKind(t, err, artifactstore.Invalid)
			var e *artifactstore.Error
			errors.As(err, &e)
			var fields []string
			for _, f := range e.Fields {
				fields = append(fields, f.Field)
			}
			if !slices.Equal(fields, tc.fields) {
				t.Errorf("fields = %v, want %v", fields, tc.fields)
			}
		})
	}
	if evs := allEvents(t, st, "acme"); len(evs) != 0 {
		t.Errorf("rejected input wrote %d events", len(evs))
	}
	page, _ := st.ListPackages(ctx, artifactstore.AllTenants, artifactstore.PackageQuery{})
	if len(page.Packages) != 0 {
		t.Errorf("rejected input created %d packages", len(page.Packages))
	}
}

func TestPutFileRejections(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{MaxFileSize: 1000})
	p := mustPackage(t, st, "acme", nil)
	mustPut(t, st, "acme", p.ID, "taken", []byte("one"))
	head := func() uint64 {
		page, err := st.Events(ctx, "acme", 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		return page.Head
	}
	before := head()
	data := []byte("content")
	for _, tc := range []struct {
		name string
		pkg  string
		path string
		r    io.Reader
		o    artifactstore.PutOptions
		kind artifactstore.Kind
	}{
		{"digest mismatch", p.ID, "a", bytes.NewReader(data), artifactstore.PutOptions{Digest: sha([]byte("other"))}, artifactstore.DigestMismatch},
		{"malformed digest", p.ID, "a", bytes.NewReader(data), artifactstore.PutOptions{Digest: "md5:abc"}, artifactstore.Invalid},
		{"path escapes", p.ID, "../etc/passwd", bytes.NewReader(data), artifactstore.PutOptions{}, artifactstore.Invalid},
		{"absolute path", p.ID, "/etc/passwd", bytes.NewReader(data), artifactstore.PutOptions{}, artifactstore.Invalid},
		{"bad media type", p.ID, "a", bytes.NewReader(data), artifactstore.PutOptions{MediaType: "nonsense"}, artifactstore.Invalid},
		{"path taken", p.ID, "taken", bytes.NewReader(data), artifactstore.PutOptions{}, artifactstore.Conflict},
		{"too large", p.ID, "big", bytes.NewReader(make([]byte, 1001)), artifactstore.PutOptions{}, artifactstore.TooLarge},
		{"no such package", "01JDX0000000000000000000ZZ", "a", bytes.NewReader(data), artifactstore.PutOptions{}, artifactstore.NotFound},
		{"malformed package id", "nope", "a", bytes.NewReader(data), artifactstore.PutOptions{}, artifactstore.Invalid},
		{"broken reader", p.ID, "a", io.MultiReader(bytes.NewReader(data), errReader{}), artifactstore.PutOptions{}, artifactstore.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.PutFile(ctx, "acme", tc.pkg, tc.path, tc.r, tc.o)
			wantKind(t, err, tc.kind)
		})
	}
	if h := head(); h != before {
		t.Errorf("rejected puts moved the event head from %d to %d", before, h)
	}
	got, _ := st.GetPackage(ctx, "acme", p.ID)
	if got.FileCount != 1 {
		t.Errorf("package has %d files, want 1", got.FileCount)
	}
	// Exactly 1000 bytes is within the limit.
	mustPut(t, st, "acme", p.ID, "limit", make([]byte, 1000))
	// Nothing half-written is left in the staging area.
	if tmp, _ := os.ReadDir(filepath.Join(st.dir, "tmp")); len(tmp) != 0 {
		t.Errorf("%d staged files left in tmp/", len(tmp))
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestTenantIsolation(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	f := mustPut(t, st, "acme", p.ID, "a", []byte("a"))
	u, err := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	if err != nil {
		t.Fatal(err)
	}
	other := "globex"
	// A file record the owner has read (and so cached) stays invisible to
	// another tenant.
	if _, err := st.GetFile(ctx, "acme", f.ID); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetPackage(ctx, other, p.ID)
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.GetFile(ctx, other, f.ID)
	wantKind(t, err, artifactstore.NotFound)
	_, _, err = st.OpenFile(ctx, other, f.ID)
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.ListFiles(ctx, other, p.ID, artifactstore.FileQuery{})
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.PutFile(ctx, other, p.ID, "b", strings.NewReader("b"), artifactstore.PutOptions{})
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.Finalize(ctx, other, p.ID)
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.Manifest(ctx, other, p.ID)
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.UploadStatus(ctx, other, u.ID)
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.AppendUpload(ctx, other, u.ID, 0, strings.NewReader("x"))
	wantKind(t, err, artifactstore.NotFound)
	err = st.AbortUpload(ctx, other, u.ID)
	wantKind(t, err, artifactstore.NotFound)
	page, err := st.ListPackages(ctx, other, artifactstore.PackageQuery{})
	if err != nil || len(page.Packages) != 0 {
		t.Errorf("other tenant lists %d packages, %v", len(page.Packages), err)
	}
	if evs := allEvents(t, st, other); len(evs) != 0 {
		t.Errorf("other tenant sees %d events", len(evs))
	}
	// AllTenants reads, but never writes.
	if _, err := st.GetPackage(ctx, artifactstore.AllTenants, p.ID); err != nil {
		t.Errorf("AllTenants read: %v", err)
	}
	_, err = st.Finalize(ctx, artifactstore.AllTenants, p.ID)
	wantKind(t, err, artifactstore.Invalid)
	_, err = st.Events(ctx, artifactstore.AllTenants, 0, 0)
	wantKind(t, err, artifactstore.Invalid)
}

func TestListPackages(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	var ids []string
	for i := range 25 {
		md := map[string]string{"n": fmt.Sprint(i), "parity": []string{"even", "odd"}[i%2]}
		if i%5 == 0 {
			md["release"] = "yes"
		}
		p, err := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{
			Producer: []string{"ci", "etl"}[i%2], Subject: "svc", Metadata: md,
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
		if i%3 == 0 {
			if _, err := st.Finalize(ctx, "acme", p.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	slices.Reverse(ids) // newest first
	list := func(q artifactstore.PackageQuery) []string {
		var got []string
		for {
			page, err := st.ListPackages(ctx, "acme", q)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range page.Packages {
				got = append(got, p.ID)
			}
			if page.NextCursor == "" {
				return got
			}
			q.Cursor = page.NextCursor
		}
	}
	if got := list(artifactstore.PackageQuery{Limit: 4}); !slices.Equal(got, ids) {
		t.Errorf("paging by 4 = %v, want %v", got, ids)
	}
	pick := func(keep func(i int) bool) []string {
		var want []string
		for j, id := range ids {
			if keep(24 - j) {
				want = append(want, id)
			}
		}
		return want
	}
	for _, tc := range []struct {
		name string
		q    artifactstore.PackageQuery
		keep func(i int) bool
	}{
		{"producer", artifactstore.PackageQuery{Producer: "etl"}, func(i int) bool { return i%2 == 1 }},
		{"has key", artifactstore.PackageQuery{Metadata: []string{"release"}}, func(i int) bool { return i%5 == 0 }},
		{"key=value", artifactstore.PackageQuery{Metadata: []string{"parity=even"}}, func(i int) bool { return i%2 == 0 }},
		{"two filters", artifactstore.PackageQuery{Metadata: []string{"parity=odd", "release"}}, func(i int) bool { return i%2 == 1 && i%5 == 0 }},
		{"state", artifactstore.PackageQuery{State: "finalized", Limit: 2}, func(i int) bool { return i%3 == 0 }},
		{"state and producer", artifactstore.PackageQuery{State: "open", Producer: "ci"}, func(i int) bool { return i%3 != 0 && i%2 == 0 }},
		{"no match", artifactstore.PackageQuery{Subject: "other"}, func(int) bool { return false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := list(tc.q), pick(tc.keep); !slices.Equal(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		})
	}
	for _, q := range []artifactstore.PackageQuery{
		{Limit: 1001}, {Limit: -1}, {Cursor: "garbage!"}, {State: "closed"}, {Metadata: []string{"=v"}},
	} {
		_, err := st.ListPackages(ctx, "acme", q)
		wantKind(t, err, artifactstore.Invalid)
	}
}

func TestListFiles(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	paths := []string{"b", "a/x", "a/y", "a.b", "B", "ä", "a/z/deep"}
	for _, path := range paths {
		mustPut(t, st, "acme", p.ID, path, []byte(path))
	}
	slices.Sort(paths) // Go's string order is bytewise
	var got []string
	q := artifactstore.FileQuery{Limit: 2}
	for {
		page, err := st.ListFiles(ctx, "acme", p.ID, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range page.Files {
			got = append(got, f.Path)
		}
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	if !slices.Equal(got, paths) {
		t.Errorf("files = %v, want %v", got, paths)
	}
	page, err := st.ListFiles(ctx, "acme", p.ID, artifactstore.FileQuery{Prefix: "a/"})
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, f := range page.Files {
		got = append(got, f.Path)
	}
	if want := []string{"a/x", "a/y", "a/z/deep"}; !slices.Equal(got, want) {
		t.Errorf("prefix a/ = %v, want %v", got, want)
	}
	// A cursor of one package is refused by another.
	p2 := mustPackage(t, st, "acme", nil)
	first, _ := st.ListFiles(ctx, "acme", p.ID, artifactstore.FileQuery{Limit: 1})
	_, err = st.ListFiles(ctx, "acme", p2.ID, artifactstore.FileQuery{Cursor: first.NextCursor})
	wantKind(t, err, artifactstore.Invalid)
}

func TestOpenFileRanges(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	content := make([]byte, 300_000)
	for i := range content {
		content[i] = byte(i * 7)
	}
	f := mustPut(t, st, "acme", p.ID, "data.bin", content)
	got, r, err := st.OpenFile(ctx, "acme", f.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got.ID != f.ID || r.Size() != int64(len(content)) {
		t.Fatalf("OpenFile = %+v, size %d", got, r.Size())
	}
	if _, err := r.Seek(123_456, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, content[123_456:124_456]) {
		t.Error("ranged read returned other bytes")
	}
}

func TestEventsWait(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	mustPackage(t, st, "acme", nil)

	// since beyond head is refused.
	_, err := st.Events(ctx, "acme", 2, 10)
	wantKind(t, err, artifactstore.Invalid)

	// A long-poll at the tail times out cleanly with an empty page.
	start := time.Now()
	page, err := st.WaitEvents(ctx, "acme", 1, 10, 100*time.Millisecond)
	if err != nil || len(page.Events) != 0 || page.Next != 1 || page.Head != 1 {
		t.Fatalf("timed-out wait = %+v, %v", page, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("wait of 100ms took %v", d)
	}

	// A waiter wakes when a change commits, well before its timeout.
	type result struct {
		page artifactstore.EventPage
		err  error
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		page, err := st.WaitEvents(ctx, "acme", 1, 10, 10*time.Second)
		done <- result{page, err, time.Now()}
	}()
	time.Sleep(50 * time.Millisecond)
	committed := time.Now()
	mustPackage(t, st, "acme", nil)
	res := <-done
	if res.err != nil || len(res.page.Events) != 1 || res.page.Events[0].Seq != 2 || res.page.Next != 2 {
		t.Fatalf("woken wait = %+v, %v", res.page, res.err)
	}
	if lat := res.at.Sub(committed); lat > time.Second {
		t.Errorf("the waiter woke %v after the commit", lat)
	}

	// Cancelling the context ends the wait.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = st.WaitEvents(cctx, "acme", 2, 10, 10*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled wait = %v", err)
	}
	_, err = st.WaitEvents(ctx, "acme", 0, 10, 61*time.Second)
	wantKind(t, err, artifactstore.Invalid)
}

func TestEventPageEncoding(t *testing.T) {
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	mustPut(t, st, "acme", p.ID, "bin/app", []byte("app"))
	page, err := st.Events(context.Background(), "acme", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	js, err := page.MarshalJCS()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`"data":{"digest":"%s","media_type":"application/octet-stream","path":"bin/app","size":3}`, sha([]byte("app")))
	if !bytes.Contains(js, []byte(want)) || !bytes.HasSuffix(js, []byte(`"head":2,"next":2}`)) {
		t.Errorf("JCS page = %s", js)
	}
	if !bytes.Contains(js, []byte(`"time":"`+artifactstore.FormatTime(page.Events[0].Time)+`"`)) {
		t.Errorf("JCS page lacks the fixed-precision time: %s", js)
	}
	cb, err := page.MarshalCBOR()
	if err != nil || len(cb) == 0 || cb[0] != 0xa3 { // a map of 3: events, head, next
		t.Errorf("CBOR page = %x, %v", cb, err)
	}
}

func TestCleanupCollectsOrphans(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{OrphanGrace: time.Nanosecond})
	p := mustPackage(t, st, "acme", nil)
	kept := mustPut(t, st, "acme", p.ID, "kept", []byte("kept"))

	// An orphan: bytes committed, never recorded (a crash between the two).
	w, err := st.blobs.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("orphan"))
	if err := w.Commit(sha([]byte("orphan"))); err != nil {
		t.Fatal(err)
	}
	// Staged upload bytes whose session is gone.
	if _, err := st.blobs.Uploads().Append(ctx, "01JDX0000000000000000000ZZ", 0, strings.NewReader("stray")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := st.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.blobs.Stat(ctx, sha([]byte("orphan"))); err == nil {
		t.Error("the orphan blob survived Cleanup")
	}
	for id := range st.blobs.Uploads().All(ctx) {
		t.Errorf("staged upload %s survived Cleanup", id)
	}
	if got := readAll(t, st, "acme", kept.ID); string(got) != "kept" {
		t.Errorf("referenced file reads %q", got)
	}
}

func TestStageContentThenAddFile(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	c, err := st.StageContent(ctx, "acme", strings.NewReader("staged"), "")
	if err != nil || c.Digest != sha([]byte("staged")) || c.Size != 6 {
		t.Fatalf("StageContent = %+v, %v", c, err)
	}
	// Nothing is visible until AddFile.
	if page, _ := st.ListFiles(ctx, "acme", p.ID, artifactstore.FileQuery{}); len(page.Files) != 0 {
		t.Fatal("staged content is visible as a file")
	}
	_, err = st.AddFile(ctx, "acme", p.ID, "f", c, artifactstore.PutOptions{Digest: sha([]byte("other"))})
	wantKind(t, err, artifactstore.DigestMismatch)
	f, err := st.AddFile(ctx, "acme", p.ID, "f", c, artifactstore.PutOptions{MediaType: "text/plain"})
	if err != nil || f.Digest != c.Digest || f.MediaType != "text/plain" {
		t.Fatalf("AddFile = %+v, %v", f, err)
	}
	// A declared digest that does not match stores nothing.
	_, err = st.StageContent(ctx, "acme", strings.NewReader("x"), sha([]byte("y")))
	wantKind(t, err, artifactstore.DigestMismatch)
	if _, err := st.blobs.Stat(ctx, sha([]byte("x"))); err == nil {
		t.Error("mismatched content was stored")
	}
	// Content that vanished (collected) is never recorded.
	gone := artifactstore.Content{Digest: sha([]byte("never stored")), Size: 12}
	_, err = st.AddFile(ctx, "acme", p.ID, "g", gone, artifactstore.PutOptions{})
	wantKind(t, err, artifactstore.Invalid)
}
