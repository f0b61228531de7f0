// Package catalogtest is the conformance suite every catalog.Catalog
// implementation passes. A backend's own test file is a few lines:
//
//	func TestCatalog(t *testing.T) {
//		catalogtest.Run(t, catalogtest.Harness{
//			New: func(t *testing.T, now func() time.Time) catalog.Catalog {
//				c, err := mybackend.Open(...)          // a fresh or shared database
//				if err != nil {
//					t.Fatal(err)
//				}
//				t.Cleanup(func() { c.Close() })
//				return c
//			},
//		})
//	}
//
// The suite uses only the catalog contract. It chooses IDs that are unique
// across runs and tenants that are unique per sub-test, so a harness may hand
// out catalogs that share one database (as a PostgreSQL harness might).
package catalogtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore/catalog"
)

// Harness creates the catalogs under test.
type Harness struct {
	// New returns a catalog whose clock is now. It registers with t
	// whatever cleanup the catalog needs (Close may already have been
	// called by the suite by then; a second Close may return an error).
	New func(t *testing.T, now func() time.Time) catalog.Catalog
}

// Clock is a controllable clock for the catalog under test. It is safe for
// concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads t until advanced.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Run runs the conformance suite against the catalogs h creates.
func Run(t *testing.T, h Harness) {
	if h.New == nil {
		t.Fatal("catalogtest: Harness.New is nil")
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, f *fixture)
	}{
		{"CreateGetPackage", testCreateGetPackage},
		{"Events", testEvents},
		{"AddFile", testAddFile},
		{"ListFiles", testListFiles},
		{"ListPackages", testListPackages},
		{"Finalize", testFinalize},
		{"UploadRoundTrip", testUploadRoundTrip},
		{"AdvanceUpload", testAdvanceUpload},
		{"UploadClaims", testUploadClaims},
		{"UploadExpiry", testUploadExpiry},
		{"CompleteUpload", testCompleteUpload},
		{"CompleteUploadFailures", testCompleteUploadFailures},
		{"DeleteUpload", testDeleteUpload},
		{"UploadTenantIsolation", testUploadTenantIsolation},
		{"DigestReferenced", testDigestReferenced},
		{"ConcurrentEventsGapless", testConcurrentEventsGapless},
		{"ConcurrentAddFileFinalize", testConcurrentAddFileFinalize},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewClock(start)
			c := h.New(t, clock.Now)
			if c == nil {
				t.Fatal("Harness.New returned nil")
			}
			tc.fn(t, &fixture{t: t, ctx: context.Background(), c: c, clock: clock, uniq: uniq()})
		})
	}
}

// start is the suite clock's initial time; it has sub-millisecond digits so
// the suite can check truncation.
var start = time.Date(2031, time.March, 4, 5, 6, 7, 891_234_567, time.UTC)

var (
	runStamp = time.Now().UnixMilli()
	counter  atomic.Int64
)

// newID returns a unique, 26-character ID. IDs sort in creation order, also
// across runs, and are valid ULIDs (Crockford base32 digits, first char 0).
func newID() string {
	return fmt.Sprintf("%013d%013d", runStamp, counter.Add(1))
}

func uniq() string { return fmt.Sprintf("%d-%d", runStamp, counter.Add(1)) }

// newDigest returns a digest no other run has used.
func newDigest() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "sha256:" + hex.EncodeToString(b[:])
}

func ms(t time.Time) time.Time { return t.Truncate(time.Millisecond) }

type fixture struct {
	t     *testing.T
	ctx   context.Context
	c     catalog.Catalog
	clock *Clock
	uniq  string
}

// tenant returns a tenant name unique to this sub-test.
func (f *fixture) tenant(name string) string { return name + "-" + f.uniq }

// name returns a producer, subject or other value unique to this sub-test.
func (f *fixture) name(name string) string { return name + "-" + f.uniq }

func (f *fixture) now() time.Time { return ms(f.clock.Now()) }

// create creates an open package of tenant with the given fields.
func (f *fixture) create(p catalog.Package) catalog.Package {
	f.t.Helper()
	if p.ID == "" {
		p.ID = newID()
	}
	got, err := f.c.CreatePackage(f.ctx, p, catalog.NewEvent{Type: "package.created", Data: []byte("created " + p.ID)})
	if err != nil {
		f.t.Fatalf("CreatePackage(%s): %v", p.ID, err)
	}
	return got
}

func (f *fixture) newFile(tenant, pkg, path string, size int64) catalog.File {
	return catalog.File{ID: newID(), Tenant: tenant, PackageID: pkg, Path: path, Size: size, Digest: newDigest(), MediaType: "application/octet-stream"}
}

func (f *fixture) addFile(file catalog.File) catalog.File {
	f.t.Helper()
	got, err := f.c.AddFile(f.ctx, file, catalog.NewEvent{Type: "file.added", Data: []byte("added " + file.ID)})
	if err != nil {
		f.t.Fatalf("AddFile(%s, %q): %v", file.PackageID, file.Path, err)
	}
	return got
}

func (f *fixture) getPackage(tenant, id string) catalog.Package {
	f.t.Helper()
	p, err := f.c.GetPackage(f.ctx, tenant, id)
	if err != nil {
		f.t.Fatalf("GetPackage(%s, %s): %v", tenant, id, err)
	}
	return p
}

// events returns all events of tenant, paging through them.
func (f *fixture) events(tenant string) ([]catalog.Event, uint64) {
	f.t.Helper()
	var all []catalog.Event
	var since, head uint64
	for {
		evs, h, err := f.c.Events(f.ctx, tenant, since, 50)
		if err != nil {
			f.t.Fatalf("Events(%s, %d): %v", tenant, since, err)
		}
		head = h
		if len(evs) == 0 {
			return all, head
		}
		all = append(all, evs...)
		since = evs[len(evs)-1].Seq
	}
}

func (f *fixture) head(tenant string) uint64 {
	f.t.Helper()
	_, head, err := f.c.Events(f.ctx, tenant, 0, 1)
	if err != nil {
		f.t.Fatalf("Events(%s): %v", tenant, err)
	}
	return head
}

// files returns all files of a package, paging through them.
func (f *fixture) files(tenant, pkg string) []catalog.File {
	f.t.Helper()
	var all []catalog.File
	after := ""
	for {
		page, err := f.c.ListFiles(f.ctx, tenant, pkg, catalog.FileFilter{After: after, Limit: 500})
		if err != nil {
			f.t.Fatalf("ListFiles(%s, %s): %v", tenant, pkg, err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Path
	}
}

// finalize finalizes a package with a build that records its input.
func (f *fixture) finalize(tenant, id string) (catalog.Package, catalog.Finalization) {
	f.t.Helper()
	var fin catalog.Finalization
	p, err := f.c.Finalize(f.ctx, tenant, id, "package.finalized", func(p catalog.Package, files []catalog.File) (catalog.Finalization, error) {
		fin = buildManifest(p, files)
		return fin, nil
	})
	if err != nil {
		f.t.Fatalf("Finalize(%s, %s): %v", tenant, id, err)
	}
	return p, fin
}

// buildManifest is a deterministic stand-in for the root's manifest builder.
func buildManifest(p catalog.Package, files []catalog.File) catalog.Finalization {
	var b strings.Builder
	fmt.Fprintf(&b, "package %s %s %d\n", p.ID, p.State, p.FinalizedAt.UnixMilli())
	for _, f := range files {
		fmt.Fprintf(&b, "%s %s %d\n", f.Path, f.Digest, f.Size)
	}
	m := []byte(b.String())
	return catalog.Finalization{
		Manifest:  m,
		Digest:    fmt.Sprintf("sha256:%064x", len(m)) + "-" + p.ID,
		EventData: append([]byte{0x00, 0xff, 0x01}, p.ID...),
	}
}

func wantErr(t *testing.T, op string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", op, err, target)
	}
}

func comparePackage(got, want catalog.Package) string {
	var d []string
	cmp := func(name string, g, w any) {
		if g != w {
			d = append(d, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	cmp("ID", got.ID, want.ID)
	cmp("Tenant", got.Tenant, want.Tenant)
	cmp("Producer", got.Producer, want.Producer)
	cmp("Subject", got.Subject, want.Subject)
	cmp("RetentionClass", got.RetentionClass, want.RetentionClass)
	cmp("State", got.State, want.State)
	cmp("FileCount", got.FileCount, want.FileCount)
	cmp("TotalSize", got.TotalSize, want.TotalSize)
	cmp("ManifestDigest", got.ManifestDigest, want.ManifestDigest)
	if !got.CreatedAt.Equal(want.CreatedAt) {
		d = append(d, fmt.Sprintf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt))
	}
	if !got.FinalizedAt.Equal(want.FinalizedAt) {
		d = append(d, fmt.Sprintf("FinalizedAt = %v, want %v", got.FinalizedAt, want.FinalizedAt))
	}
	if got.Metadata == nil {
		d = append(d, "Metadata is nil")
	} else if !maps.Equal(got.Metadata, want.Metadata) {
		d = append(d, fmt.Sprintf("Metadata = %v, want %v", got.Metadata, want.Metadata))
	}
	return strings.Join(d, "; ")
}

func checkPackage(t *testing.T, op string, got, want catalog.Package) {
	t.Helper()
	if d := comparePackage(got, want); d != "" {
		t.Errorf("%s: %s", op, d)
	}
}

func compareFile(got, want catalog.File) string {
	var d []string
	if got.ID != want.ID || got.Tenant != want.Tenant || got.PackageID != want.PackageID ||
		got.Path != want.Path || got.Size != want.Size || got.Digest != want.Digest || got.MediaType != want.MediaType {
		d = append(d, fmt.Sprintf("got %+v, want %+v", got, want))
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		d = append(d, fmt.Sprintf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt))
	}
	return strings.Join(d, "; ")
}

func checkFile(t *testing.T, op string, got, want catalog.File) {
	t.Helper()
	if d := compareFile(got, want); d != "" {
		t.Errorf("%s: %s", op, d)
	}
}

func checkUpload(t *testing.T, op string, got, want catalog.Upload) {
	t.Helper()
	if got.ID != want.ID || got.Tenant != want.Tenant || got.Offset != want.Offset || got.Size != want.Size ||
		got.Digest != want.Digest || !bytes.Equal(got.HashState, want.HashState) || got.FileID != want.FileID {
		t.Errorf("%s: got %+v, want %+v", op, got, want)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("%s: CreatedAt, ExpiresAt = %v, %v; want %v, %v", op, got.CreatedAt, got.ExpiresAt, want.CreatedAt, want.ExpiresAt)
	}
}

func checkEvent(t *testing.T, op string, got catalog.Event, want catalog.Event) {
	t.Helper()
	if got.Seq != want.Seq || got.Type != want.Type || got.Tenant != want.Tenant ||
		got.PackageID != want.PackageID || got.FileID != want.FileID || !bytes.Equal(got.Data, want.Data) {
		t.Errorf("%s: got event %+v, want %+v", op, got, want)
	}
	if !got.Time.Equal(want.Time) {
		t.Errorf("%s: event Time = %v, want %v", op, got.Time, want.Time)
	}
}

func testCreateGetPackage(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	meta := map[string]string{"env": "prod", "empty": "", "ünïcödé": "välüé", "k=v": "a,b"}
	in := catalog.Package{
		ID:             newID(),
		Tenant:         ta,
		Producer:       "ci",
		Subject:        "repo@0123abc",
		RetentionClass: "long",
		Metadata:       maps.Clone(meta),
		// The catalog decides these.
		State:          catalog.StateFinalized,
		CreatedAt:      time.Unix(1, 0),
		FinalizedAt:    time.Unix(2, 0),
		ManifestDigest: "sha256:bogus",
	}
	want := catalog.Package{
		ID: in.ID, Tenant: ta, Producer: "ci", Subject: "repo@0123abc", RetentionClass: "long",
		Metadata: meta, State: catalog.StateOpen, CreatedAt: f.now(),
	}
	got, err := f.c.CreatePackage(f.ctx, in, catalog.NewEvent{Type: "package.created"})
	if err != nil {
		t.Fatalf("CreatePackage: %v", err)
	}
	checkPackage(t, "CreatePackage", got, want)
	if got.CreatedAt.Nanosecond()%int(time.Millisecond) != 0 {
		t.Errorf("CreatedAt %v is not truncated to milliseconds", got.CreatedAt)
	}
	// The catalog must not alias the caller's map.
	in.Metadata["env"] = "changed"
	in.Metadata["new"] = "x"

	f.clock.Advance(time.Hour)
	checkPackage(t, "GetPackage", f.getPackage(ta, in.ID), want)
	checkPackage(t, "GetPackage(AnyTenant)", f.getPackage(catalog.AnyTenant, in.ID), want)

	_, err = f.c.GetPackage(f.ctx, tb, in.ID)
	wantErr(t, "GetPackage(other tenant)", err, catalog.ErrNotFound)
	_, err = f.c.GetPackage(f.ctx, ta, newID())
	wantErr(t, "GetPackage(missing)", err, catalog.ErrNotFound)
	_, err = f.c.GetPackage(f.ctx, catalog.AnyTenant, newID())
	wantErr(t, "GetPackage(AnyTenant, missing)", err, catalog.ErrNotFound)

	// A reused ID conflicts, for the same tenant and for another, and
	// writes no event.
	dup := catalog.Package{ID: in.ID, Tenant: ta, Producer: "other"}
	_, err = f.c.CreatePackage(f.ctx, dup, catalog.NewEvent{Type: "package.created"})
	wantErr(t, "CreatePackage(duplicate ID)", err, catalog.ErrConflict)
	dup.Tenant = tb
	_, err = f.c.CreatePackage(f.ctx, dup, catalog.NewEvent{Type: "package.created"})
	wantErr(t, "CreatePackage(duplicate ID, other tenant)", err, catalog.ErrConflict)
	checkPackage(t, "GetPackage after conflict", f.getPackage(ta, in.ID), want)
	if h := f.head(ta); h != 1 {
		t.Errorf("tenant a head = %d after a conflicting create, want 1", h)
	}
	if h := f.head(tb); h != 0 {
		t.Errorf("tenant b head = %d after a conflicting create, want 0", h)
	}

	// Nil metadata comes back as an empty, non-nil map.
	bare := f.create(catalog.Package{Tenant: tb})
	checkPackage(t, "CreatePackage(no metadata)", bare, catalog.Package{ID: bare.ID, Tenant: tb, Metadata: map[string]string{}, State: catalog.StateOpen, CreatedAt: f.now()})
	checkPackage(t, "GetPackage(no metadata)", f.getPackage(tb, bare.ID), catalog.Package{ID: bare.ID, Tenant: tb, Metadata: map[string]string{}, State: catalog.StateOpen, CreatedAt: f.now()})
}

func testEvents(t *testing.T, f *fixture) {
	ta, tb, tnone := f.tenant("a"), f.tenant("b"), f.tenant("none")
	data := []byte{0x00, 0x01, 0xff, 0xfe, 'x', 0x00}
	p1, err := f.c.CreatePackage(f.ctx, catalog.Package{ID: newID(), Tenant: ta}, catalog.NewEvent{Type: "package.created", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	evs, head, err := f.c.Events(f.ctx, ta, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if head != 1 || len(evs) != 1 {
		t.Fatalf("Events(a) = %d events, head %d; want 1, 1", len(evs), head)
	}
	checkEvent(t, "first event", evs[0], catalog.Event{Seq: 1, Type: "package.created", Time: f.now(), Tenant: ta, PackageID: p1.ID, Data: data})

	// Per-tenant counters are independent.
	f.clock.Advance(1500 * time.Microsecond)
	pb := f.create(catalog.Package{Tenant: tb})
	evs, head, err = f.c.Events(f.ctx, tb, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if head != 1 || len(evs) != 1 {
		t.Fatalf("Events(b) = %d events, head %d; want 1, 1", len(evs), head)
	}
	checkEvent(t, "tenant b event", evs[0], catalog.Event{Seq: 1, Type: "package.created", Time: f.now(), Tenant: tb, PackageID: pb.ID, Data: []byte("created " + pb.ID)})

	file := f.newFile(ta, p1.ID, "x", 1)
	if _, err := f.c.AddFile(f.ctx, file, catalog.NewEvent{Type: "file.added"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		f.clock.Advance(time.Second)
		ids = append(ids, f.create(catalog.Package{Tenant: ta}).ID)
	}
	pb2 := f.create(catalog.Package{Tenant: tb})

	all, head := f.events(ta)
	if head != 5 || len(all) != 5 {
		t.Fatalf("Events(a) = %d events, head %d; want 5, 5", len(all), head)
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) || e.Tenant != ta {
			t.Errorf("event %d of tenant a: Seq %d Tenant %q", i, e.Seq, e.Tenant)
		}
	}
	if e := all[1]; e.Type != "file.added" || e.PackageID != p1.ID || e.FileID != file.ID || len(e.Data) != 0 {
		t.Errorf("AddFile event = %+v", e)
	}
	for i, id := range ids {
		if e := all[2+i]; e.PackageID != id || e.FileID != "" || e.Type != "package.created" {
			t.Errorf("event %d = %+v, want package.created of %s", e.Seq, e, id)
		}
	}
	if !all[4].Time.Equal(f.now()) || !all[2].Time.Equal(f.now().Add(-2*time.Second)) {
		t.Errorf("event times %v, %v; want %v, %v", all[2].Time, all[4].Time, f.now().Add(-2*time.Second), f.now())
	}
	if all, head := f.events(tb); head != 2 || len(all) != 2 || all[1].Seq != 2 || all[1].PackageID != pb2.ID {
		t.Errorf("Events(b) = %+v, head %d; want seqs 1, 2 and head 2", all, head)
	}

	// Paging.
	for _, tc := range []struct {
		since uint64
		limit int
		want  []uint64
	}{
		{0, 2, []uint64{1, 2}},
		{2, 2, []uint64{3, 4}},
		{4, 2, []uint64{5}},
		{5, 2, nil},
		{1, 100, []uint64{2, 3, 4, 5}},
		{3, 1, []uint64{4}},
		{99, 10, nil},
	} {
		evs, head, err := f.c.Events(f.ctx, ta, tc.since, tc.limit)
		if err != nil {
			t.Fatalf("Events(a, %d, %d): %v", tc.since, tc.limit, err)
		}
		var got []uint64
		for _, e := range evs {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, tc.want) || head != 5 {
			t.Errorf("Events(a, %d, %d) = %v, head %d; want %v, head 5", tc.since, tc.limit, got, head, tc.want)
		}
	}

	// A tenant without events.
	evs, head, err = f.c.Events(f.ctx, tnone, 0, 10)
	if err != nil || len(evs) != 0 || head != 0 {
		t.Errorf("Events(unknown tenant) = %v, %d, %v; want none, 0, nil", evs, head, err)
	}
}

func testAddFile(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	p := f.create(catalog.Package{Tenant: ta, Metadata: map[string]string{"k": "v"}})
	f.clock.Advance(1500 * time.Microsecond)

	in := catalog.File{ID: newID(), Tenant: ta, PackageID: p.ID, Path: "dir/a.txt", Size: 5, Digest: newDigest(), MediaType: "text/plain", CreatedAt: time.Unix(1, 0)}
	want := in
	want.CreatedAt = f.now()
	got, err := f.c.AddFile(f.ctx, in, catalog.NewEvent{Type: "file.added", Data: []byte{1, 2, 3}})
	if err != nil {
		t.Fatalf("AddFile: %v", err)
	}
	checkFile(t, "AddFile", got, want)
	f.clock.Advance(time.Minute)

	g, err := f.c.GetFile(f.ctx, ta, in.ID)
	if err != nil {
		t.Fatalf("GetFile: %v", err)
	}
	checkFile(t, "GetFile", g, want)
	g, err = f.c.GetFile(f.ctx, catalog.AnyTenant, in.ID)
	if err != nil {
		t.Fatalf("GetFile(AnyTenant): %v", err)
	}
	checkFile(t, "GetFile(AnyTenant)", g, want)
	_, err = f.c.GetFile(f.ctx, tb, in.ID)
	wantErr(t, "GetFile(other tenant)", err, catalog.ErrNotFound)
	_, err = f.c.GetFile(f.ctx, ta, newID())
	wantErr(t, "GetFile(missing)", err, catalog.ErrNotFound)

	evs, head := f.events(ta)
	if head != 2 || len(evs) != 2 {
		t.Fatalf("events after AddFile: %d, head %d; want 2, 2", len(evs), head)
	}
	checkEvent(t, "file event", evs[1], catalog.Event{Seq: 2, Type: "file.added", Time: want.CreatedAt, Tenant: ta, PackageID: p.ID, FileID: in.ID, Data: []byte{1, 2, 3}})

	wantPkg := p
	wantPkg.FileCount, wantPkg.TotalSize = 1, 5
	checkPackage(t, "package after one file", f.getPackage(ta, p.ID), wantPkg)

	f.addFile(f.newFile(ta, p.ID, "dir/b.bin", 7))
	f.addFile(f.newFile(ta, p.ID, "empty", 0))
	wantPkg.FileCount, wantPkg.TotalSize = 3, 12
	checkPackage(t, "package after three files", f.getPackage(ta, p.ID), wantPkg)

	// A taken path conflicts and changes nothing.
	dup := f.newFile(ta, p.ID, "dir/a.txt", 100)
	_, err = f.c.AddFile(f.ctx, dup, catalog.NewEvent{Type: "file.added"})
	wantErr(t, "AddFile(taken path)", err, catalog.ErrConflict)
	_, err = f.c.GetFile(f.ctx, ta, dup.ID)
	wantErr(t, "GetFile(rejected file)", err, catalog.ErrNotFound)
	// A reused file ID conflicts too.
	reused := f.newFile(ta, p.ID, "other/path", 100)
	reused.ID = in.ID
	_, err = f.c.AddFile(f.ctx, reused, catalog.NewEvent{Type: "file.added"})
	wantErr(t, "AddFile(reused ID)", err, catalog.ErrConflict)
	checkPackage(t, "package after conflicts", f.getPackage(ta, p.ID), wantPkg)
	if h := f.head(ta); h != 4 {
		t.Errorf("head after conflicts = %d, want 4", h)
	}

	// Missing package, or a package of another tenant.
	_, err = f.c.AddFile(f.ctx, f.newFile(ta, newID(), "x", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "AddFile(missing package)", err, catalog.ErrNotFound)
	_, err = f.c.AddFile(f.ctx, f.newFile(tb, p.ID, "y", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "AddFile(other tenant's package)", err, catalog.ErrNotFound)
	if h := f.head(tb); h != 0 {
		t.Errorf("tenant b head = %d after a failed AddFile, want 0", h)
	}
	checkPackage(t, "package after other tenant's AddFile", f.getPackage(ta, p.ID), wantPkg)

	// A finalized package takes no more files.
	fp, _ := f.finalize(ta, p.ID)
	h := f.head(ta)
	late := f.newFile(ta, p.ID, "late", 1)
	_, err = f.c.AddFile(f.ctx, late, catalog.NewEvent{Type: "file.added"})
	wantErr(t, "AddFile(finalized)", err, catalog.ErrFinalized)
	_, err = f.c.GetFile(f.ctx, ta, late.ID)
	wantErr(t, "GetFile(file rejected by finalized package)", err, catalog.ErrNotFound)
	if h2 := f.head(ta); h2 != h {
		t.Errorf("head = %d after AddFile into a finalized package, want %d", h2, h)
	}
	checkPackage(t, "finalized package after rejected AddFile", f.getPackage(ta, p.ID), fp)
}

func testListFiles(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	p := f.create(catalog.Package{Tenant: ta})
	other := f.create(catalog.Package{Tenant: ta})
	f.addFile(f.newFile(ta, other.ID, "a/b", 1)) // must not show up

	paths := []string{"ä", "a/b", "B", "a", "a.b", "Z", "a/c", "a/b/c", "a0", "a\x7f", "z", "\U0010FFFF", "ab", "a/", "~"}
	files := map[string]catalog.File{}
	for i, path := range paths {
		f.clock.Advance(time.Millisecond)
		files[path] = f.addFile(f.newFile(ta, p.ID, path, int64(i)))
	}
	sorted := slices.Clone(paths)
	sort.Strings(sorted) // Go compares strings bytewise

	list := func(tenant, prefix, after string, limit int) []catalog.File {
		t.Helper()
		got, err := f.c.ListFiles(f.ctx, tenant, p.ID, catalog.FileFilter{Prefix: prefix, After: after, Limit: limit})
		if err != nil {
			t.Fatalf("ListFiles(%q, %q, %d): %v", prefix, after, limit, err)
		}
		return got
	}
	pathsOf := func(fs []catalog.File) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Path)
		}
		return out
	}

	got := list(ta, "", "", 100)
	if !slices.Equal(pathsOf(got), sorted) {
		t.Errorf("ListFiles = %q, want %q", pathsOf(got), sorted)
	}
	for _, g := range got {
		checkFile(t, "ListFiles", g, files[g.Path])
	}
	if got := list(catalog.AnyTenant, "", "", 100); !slices.Equal(pathsOf(got), sorted) {
		t.Errorf("ListFiles(AnyTenant) = %q, want %q", pathsOf(got), sorted)
	}

	for _, tc := range []struct {
		prefix, after string
		limit         int
		want          []string
	}{
		{"a/", "", 100, []string{"a/", "a/b", "a/b/c", "a/c"}},
		{"a/b", "", 100, []string{"a/b", "a/b/c"}},
		{"a", "", 100, []string{"a", "a.b", "a/", "a/b", "a/b/c", "a/c", "a0", "ab", "a\x7f"}},
		{"a", "a/b", 100, []string{"a/b/c", "a/c", "a0", "ab", "a\x7f"}},
		{"a", "", 3, []string{"a", "a.b", "a/"}},
		{"a/", "a/c", 100, nil},
		{"ä", "", 100, []string{"ä"}},
		{"\U0010FFFF", "", 100, []string{"\U0010FFFF"}},
		{"b", "", 100, nil},
		{"", "Z", 3, []string{"a", "a.b", "a/"}},
		{"", "a\x7f", 100, []string{"z", "~", "ä", "\U0010FFFF"}},
		{"", "\U0010FFFF", 100, nil},
		{"", "", 1, []string{"B"}},
	} {
		if got := pathsOf(list(ta, tc.prefix, tc.after, tc.limit)); !slices.Equal(got, tc.want) {
			t.Errorf("ListFiles(prefix %q, after %q, limit %d) = %q, want %q", tc.prefix, tc.after, tc.limit, got, tc.want)
		}
	}

	// Walking pages returns every file once, in order.
	for _, limit := range []int{1, 2, 4, 7} {
		var walked []string
		after := ""
		for i := 0; ; i++ {
			if i > len(paths)+1 {
				t.Fatalf("paging with limit %d does not end", limit)
			}
			page := list(ta, "", after, limit)
			if len(page) > limit {
				t.Fatalf("page of %d files with limit %d", len(page), limit)
			}
			if len(page) == 0 {
				break
			}
			walked = append(walked, pathsOf(page)...)
			after = page[len(page)-1].Path
		}
		if !slices.Equal(walked, sorted) {
			t.Errorf("paging with limit %d = %q, want %q", limit, walked, sorted)
		}
	}

	_, err := f.c.ListFiles(f.ctx, ta, newID(), catalog.FileFilter{Limit: 10})
	wantErr(t, "ListFiles(missing package)", err, catalog.ErrNotFound)
	_, err = f.c.ListFiles(f.ctx, tb, p.ID, catalog.FileFilter{Limit: 10})
	wantErr(t, "ListFiles(other tenant)", err, catalog.ErrNotFound)

	// An empty package lists nothing.
	empty := f.create(catalog.Package{Tenant: ta})
	if got, err := f.c.ListFiles(f.ctx, ta, empty.ID, catalog.FileFilter{Limit: 10}); err != nil || len(got) != 0 {
		t.Errorf("ListFiles(empty package) = %v, %v; want none", got, err)
	}
	// Finalized packages list too.
	f.finalize(ta, p.ID)
	if got := list(ta, "", "", 100); !slices.Equal(pathsOf(got), sorted) {
		t.Errorf("ListFiles(finalized) = %q, want %q", pathsOf(got), sorted)
	}
}

func testListPackages(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	prodX, prodY := f.name("producer-x"), f.name("producer-y")
	var model []catalog.Package // every package created, oldest first

	for i := range 40 {
		tenant := ta
		if i%5 == 4 {
			tenant = tb
		}
		p := catalog.Package{
			Tenant:         tenant,
			Producer:       []string{prodX, prodY}[i%2],
			Subject:        fmt.Sprintf("subject-%d", i%3),
			RetentionClass: []string{"short", "long", "forever"}[i%3],
			Metadata:       map[string]string{},
		}
		if i%4 != 3 {
			p.Metadata["env"] = []string{"prod", "dev", "staging"}[i%3]
		}
		if i%3 == 0 {
			p.Metadata["team"] = fmt.Sprintf("team-%d", i%2)
		}
		if i%7 == 0 {
			p.Metadata["flag"] = ""
		}
		f.clock.Advance(time.Millisecond)
		created := f.create(p)
		if i%4 == 1 {
			f.addFile(f.newFile(tenant, created.ID, "f", int64(i)))
			created = f.getPackage(tenant, created.ID)
		}
		if i%3 == 1 {
			created, _ = f.finalize(tenant, created.ID)
		}
		model = append(model, created)
	}

	type filterCase struct {
		tenant string
		f      catalog.PackageFilter
	}
	matches := func(tc filterCase, p catalog.Package) bool {
		ff := tc.f
		switch {
		case tc.tenant != catalog.AnyTenant && p.Tenant != tc.tenant,
			ff.Producer != "" && p.Producer != ff.Producer,
			ff.Subject != "" && p.Subject != ff.Subject,
			ff.RetentionClass != "" && p.RetentionClass != ff.RetentionClass,
			ff.State != "" && p.State != ff.State,
			ff.Before != "" && p.ID >= ff.Before:
			return false
		}
		for _, m := range ff.Metadata {
			v, ok := p.Metadata[m.Key]
			if !ok || m.HasValue && v != m.Value {
				return false
			}
		}
		return true
	}
	expect := func(tc filterCase) []catalog.Package {
		var out []catalog.Package
		for i := len(model) - 1; i >= 0; i-- {
			if matches(tc, model[i]) {
				out = append(out, model[i])
			}
		}
		return out
	}
	ids := func(ps []catalog.Package) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	// own keeps packages of this sub-test; AnyTenant results of a shared
	// database may hold others.
	own := func(ps []catalog.Package) []catalog.Package {
		var out []catalog.Package
		for _, p := range ps {
			if p.Tenant == ta || p.Tenant == tb {
				out = append(out, p)
			}
		}
		return out
	}

	has := func(k string) catalog.MetaFilter { return catalog.MetaFilter{Key: k} }
	eq := func(k, v string) catalog.MetaFilter { return catalog.MetaFilter{Key: k, Value: v, HasValue: true} }
	cases := []filterCase{
		{ta, catalog.PackageFilter{}},
		{tb, catalog.PackageFilter{}},
		{ta, catalog.PackageFilter{Producer: prodX}},
		{ta, catalog.PackageFilter{Subject: "subject-1"}},
		{ta, catalog.PackageFilter{RetentionClass: "long"}},
		{ta, catalog.PackageFilter{State: catalog.StateFinalized}},
		{ta, catalog.PackageFilter{State: catalog.StateOpen}},
		{ta, catalog.PackageFilter{Producer: prodY, Subject: "subject-2", State: catalog.StateOpen}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("team")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), has("team")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("team"), eq("env", "prod")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("team", "team-0"), eq("env", "prod")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), eq("env", "dev")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("flag")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("flag", "")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("nope")}}},
		{ta, catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "nope")}}},
		{ta, catalog.PackageFilter{Producer: prodX, State: catalog.StateOpen, Metadata: []catalog.MetaFilter{has("env")}}},
		{ta, catalog.PackageFilter{RetentionClass: "short", Metadata: []catalog.MetaFilter{eq("team", "team-1")}}},
		{tb, catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("env")}}},
		{ta, catalog.PackageFilter{Producer: "nobody"}},
		{f.tenant("c"), catalog.PackageFilter{}},
		{catalog.AnyTenant, catalog.PackageFilter{Producer: prodX}},
		{catalog.AnyTenant, catalog.PackageFilter{Producer: prodY, Metadata: []catalog.MetaFilter{has("env")}}},
		{catalog.AnyTenant, catalog.PackageFilter{Producer: prodX, Metadata: []catalog.MetaFilter{eq("team", "team-0")}}},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("ListPackages(%s, %+v)", tc.tenant, tc.f)
		want := expect(tc)
		// One big page.
		ff := tc.f
		ff.Limit = 1000
		got, err := f.c.ListPackages(f.ctx, tc.tenant, ff)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tc.tenant == catalog.AnyTenant {
			got = own(got)
		}
		if !slices.Equal(ids(got), ids(want)) {
			t.Errorf("%s = %v, want %v", name, ids(got), ids(want))
			continue
		}
		for i := range got {
			checkPackage(t, name, got[i], want[i])
		}
		// Walk small pages with Before.
		for _, limit := range []int{1, 3, 7} {
			var walked []string
			ff := tc.f
			ff.Limit = limit
			for i := 0; ; i++ {
				if i > len(model)+1 {
					t.Fatalf("%s: paging with limit %d does not end", name, limit)
				}
				page, err := f.c.ListPackages(f.ctx, tc.tenant, ff)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if len(page) > limit {
					t.Fatalf("%s: page of %d with limit %d", name, len(page), limit)
				}
				if len(page) == 0 {
					break
				}
				ff.Before = page[len(page)-1].ID
				if tc.tenant == catalog.AnyTenant {
					page = own(page)
				}
				walked = append(walked, ids(page)...)
			}
			if !slices.Equal(walked, ids(want)) {
				t.Errorf("%s paged by %d = %v, want %v", name, limit, walked, ids(want))
			}
		}
	}

	// Before starts in the middle (exclusive).
	mid := model[20].ID // a tenant a package
	got, err := f.c.ListPackages(f.ctx, ta, catalog.PackageFilter{Before: mid, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if want := expect(filterCase{ta, catalog.PackageFilter{Before: mid}}); !slices.Equal(ids(got), ids(want)) || slices.Contains(ids(got), mid) {
		t.Errorf("ListPackages(Before %s) = %v, want %v", mid, ids(got), ids(want))
	}
	// Before beyond every ID, and below every ID.
	got, err = f.c.ListPackages(f.ctx, ta, catalog.PackageFilter{Before: "\U0010FFFF", Limit: 3})
	if want := expect(filterCase{ta, catalog.PackageFilter{}})[:3]; err != nil || !slices.Equal(ids(got), ids(want)) {
		t.Errorf("ListPackages(Before max) = %v, %v; want %v", ids(got), err, ids(want))
	}
	got, err = f.c.ListPackages(f.ctx, ta, catalog.PackageFilter{Before: "0", Limit: 3})
	if err != nil || len(got) != 0 {
		t.Errorf("ListPackages(Before \"0\") = %v, %v; want none", ids(got), err)
	}
}

func testFinalize(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	p := f.create(catalog.Package{Tenant: ta, Producer: "ci", Metadata: map[string]string{"k": "v"}})
	paths := []string{"b", "a/z", "A", "a", "ä", "a.b"}
	var total int64
	for i, path := range paths {
		f.addFile(f.newFile(ta, p.ID, path, int64(i+1)))
		total += int64(i + 1)
	}
	sorted := slices.Clone(paths)
	sort.Strings(sorted)

	_, _, err := f.c.GetManifest(f.ctx, ta, p.ID)
	wantErr(t, "GetManifest(open)", err, catalog.ErrConflict)
	_, _, err = f.c.GetManifest(f.ctx, ta, newID())
	wantErr(t, "GetManifest(missing)", err, catalog.ErrNotFound)

	// A failing build leaves the package open and writes no event.
	f.clock.Advance(time.Second)
	head := f.head(ta)
	boom := errors.New("boom")
	_, err = f.c.Finalize(f.ctx, ta, p.ID, "package.finalized", func(catalog.Package, []catalog.File) (catalog.Finalization, error) {
		return catalog.Finalization{}, boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Finalize with a failing build: got %v, want %v", err, boom)
	}
	if got := f.getPackage(ta, p.ID); got.State != catalog.StateOpen || !got.FinalizedAt.IsZero() || got.ManifestDigest != "" {
		t.Errorf("package after failed Finalize = %+v, want open", got)
	}
	if h := f.head(ta); h != head {
		t.Errorf("head = %d after failed Finalize, want %d", h, head)
	}
	f.addFile(f.newFile(ta, p.ID, "after-failed-finalize", 10))
	total += 10
	sorted = append(sorted, "after-failed-finalize")
	sort.Strings(sorted)
	head++

	// Missing package, other tenant.
	noBuild := func(catalog.Package, []catalog.File) (catalog.Finalization, error) {
		t.Error("build called")
		return catalog.Finalization{}, errors.New("unexpected build")
	}
	_, err = f.c.Finalize(f.ctx, ta, newID(), "package.finalized", noBuild)
	wantErr(t, "Finalize(missing)", err, catalog.ErrNotFound)
	_, err = f.c.Finalize(f.ctx, tb, p.ID, "package.finalized", noBuild)
	wantErr(t, "Finalize(other tenant)", err, catalog.ErrNotFound)

	f.clock.Advance(1500 * time.Microsecond)
	finAt := f.now()
	calls := 0
	var fin catalog.Finalization
	got, err := f.c.Finalize(f.ctx, ta, p.ID, "package.finalized", func(bp catalog.Package, files []catalog.File) (catalog.Finalization, error) {
		calls++
		if bp.State != catalog.StateFinalized || !bp.FinalizedAt.Equal(finAt) {
			t.Errorf("build got State %q FinalizedAt %v; want finalized at %v", bp.State, bp.FinalizedAt, finAt)
		}
		if bp.ID != p.ID || bp.Tenant != ta || bp.Producer != "ci" || bp.FileCount != int64(len(sorted)) || bp.TotalSize != total || bp.Metadata["k"] != "v" {
			t.Errorf("build got package %+v", bp)
		}
		var got []string
		for _, file := range files {
			got = append(got, file.Path)
			if file.PackageID != p.ID || file.Tenant != ta || file.Digest == "" {
				t.Errorf("build got file %+v", file)
			}
		}
		if !slices.Equal(got, sorted) {
			t.Errorf("build got paths %q, want %q", got, sorted)
		}
		fin = buildManifest(bp, files)
		return fin, nil
	})
	if err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if calls != 1 {
		t.Errorf("build called %d times, want 1", calls)
	}
	want := p
	want.State, want.FinalizedAt, want.ManifestDigest = catalog.StateFinalized, finAt, fin.Digest
	want.FileCount, want.TotalSize = int64(len(sorted)), total
	checkPackage(t, "Finalize", got, want)
	checkPackage(t, "GetPackage(finalized)", f.getPackage(ta, p.ID), want)

	for _, tenant := range []string{ta, catalog.AnyTenant} {
		mp, m, err := f.c.GetManifest(f.ctx, tenant, p.ID)
		if err != nil {
			t.Fatalf("GetManifest(%s): %v", tenant, err)
		}
		checkPackage(t, "GetManifest", mp, want)
		if !bytes.Equal(m, fin.Manifest) {
			t.Errorf("GetManifest = %q, want %q", m, fin.Manifest)
		}
	}
	_, _, err = f.c.GetManifest(f.ctx, tb, p.ID)
	wantErr(t, "GetManifest(other tenant)", err, catalog.ErrNotFound)

	evs, h := f.events(ta)
	if h != head+1 || len(evs) != int(head+1) {
		t.Fatalf("events after Finalize: %d, head %d; want %d", len(evs), h, head+1)
	}
	checkEvent(t, "finalized event", evs[len(evs)-1], catalog.Event{Seq: head + 1, Type: "package.finalized", Time: finAt, Tenant: ta, PackageID: p.ID, Data: fin.EventData})

	// Finalizing again returns the package unchanged, builds nothing and
	// writes no event.
	f.clock.Advance(time.Hour)
	again, err := f.c.Finalize(f.ctx, ta, p.ID, "package.finalized", noBuild)
	if err != nil {
		t.Fatalf("second Finalize: %v", err)
	}
	checkPackage(t, "second Finalize", again, want)
	if h := f.head(ta); h != head+1 {
		t.Errorf("head = %d after second Finalize, want %d", h, head+1)
	}
	_, m, err := f.c.GetManifest(f.ctx, ta, p.ID)
	if err != nil || !bytes.Equal(m, fin.Manifest) {
		t.Errorf("GetManifest after second Finalize = %q, %v", m, err)
	}

	// An empty package finalizes with an empty file list.
	empty := f.create(catalog.Package{Tenant: tb})
	_, err = f.c.Finalize(f.ctx, tb, empty.ID, "package.finalized", func(bp catalog.Package, files []catalog.File) (catalog.Finalization, error) {
		if len(files) != 0 || bp.FileCount != 0 {
			t.Errorf("build of empty package got %d files, FileCount %d", len(files), bp.FileCount)
		}
		return buildManifest(bp, files), nil
	})
	if err != nil {
		t.Errorf("Finalize(empty): %v", err)
	}
}

func testUploadRoundTrip(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	ttl := 90 * time.Minute
	for _, in := range []catalog.Upload{
		{ID: newID(), Tenant: ta, Size: -1, HashState: []byte{0x00, 0x01, 0xff}},
		{ID: newID(), Tenant: ta, Size: 12345, Digest: newDigest(), HashState: []byte("state\x00")},
		{ID: newID(), Tenant: ta, Size: 0, HashState: []byte{}},
	} {
		f.clock.Advance(1500 * time.Microsecond)
		// The catalog sets these.
		in.Offset, in.CreatedAt, in.ExpiresAt, in.FileID = 7, time.Unix(1, 0), time.Unix(2, 0), "bogus"
		want := in
		want.Offset, want.CreatedAt, want.ExpiresAt, want.FileID = 0, f.now(), f.now().Add(ttl), ""
		got, err := f.c.CreateUpload(f.ctx, in, ttl)
		if err != nil {
			t.Fatalf("CreateUpload: %v", err)
		}
		checkUpload(t, "CreateUpload", got, want)
		g, err := f.c.GetUpload(f.ctx, ta, in.ID)
		if err != nil {
			t.Fatalf("GetUpload: %v", err)
		}
		checkUpload(t, "GetUpload", g, want)
		if ok, err := f.c.UploadExists(f.ctx, in.ID); err != nil || !ok {
			t.Errorf("UploadExists = %v, %v; want true", ok, err)
		}
		_, err = f.c.CreateUpload(f.ctx, catalog.Upload{ID: in.ID, Tenant: ta, Size: -1}, ttl)
		wantErr(t, "CreateUpload(reused ID)", err, catalog.ErrConflict)
		g, err = f.c.GetUpload(f.ctx, ta, in.ID)
		if err != nil {
			t.Fatalf("GetUpload: %v", err)
		}
		checkUpload(t, "GetUpload after conflict", g, want)
	}
	_, err := f.c.GetUpload(f.ctx, ta, newID())
	wantErr(t, "GetUpload(missing)", err, catalog.ErrNotFound)
	if ok, err := f.c.UploadExists(f.ctx, newID()); err != nil || ok {
		t.Errorf("UploadExists(missing) = %v, %v; want false", ok, err)
	}
	if h := f.head(ta); h != 0 {
		t.Errorf("uploads wrote events: head %d", h)
	}
}

// claim claims a session for holder at offset for a minute.
func (f *fixture) claim(tenant, id, holder string, offset int64) catalog.Upload {
	f.t.Helper()
	u, err := f.c.ClaimUpload(f.ctx, tenant, id, holder, offset, time.Minute)
	if err != nil {
		f.t.Fatalf("ClaimUpload(%s at %d): %v", holder, offset, err)
	}
	return u
}

func testAdvanceUpload(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	h := f.name("holder")
	u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s0")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	checkUpload(t, "ClaimUpload", f.claim(ta, u.ID, h, 0), u)
	got, err := f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 0, 10, []byte("s10"))
	if err != nil {
		t.Fatalf("AdvanceUpload(0→10): %v", err)
	}
	want := u
	want.Offset, want.HashState = 10, []byte("s10")
	checkUpload(t, "AdvanceUpload", got, want)

	// A stale from conflicts and changes nothing, also for the holder of a
	// live claim.
	checkUpload(t, "ClaimUpload", f.claim(ta, u.ID, h, 10), want)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 0, 5, []byte("s5"))
	wantErr(t, "AdvanceUpload(stale from)", err, catalog.ErrConflict)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 20, 30, []byte("s30"))
	wantErr(t, "AdvanceUpload(future from)", err, catalog.ErrConflict)
	g, err := f.c.GetUpload(f.ctx, ta, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkUpload(t, "GetUpload after conflicts", g, want)

	// The failed advances left the claim in place.
	got, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 10, 25, []byte{0xff, 0x00})
	if err != nil {
		t.Fatalf("AdvanceUpload(10→25): %v", err)
	}
	want.Offset, want.HashState = 25, []byte{0xff, 0x00}
	checkUpload(t, "AdvanceUpload", got, want)
	g, err = f.c.GetUpload(f.ctx, ta, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkUpload(t, "GetUpload", g, want)

	// The advance ended the claim.
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 25, 26, []byte("s26"))
	wantErr(t, "AdvanceUpload(claim ended)", err, catalog.ErrConflict)

	_, err = f.c.AdvanceUpload(f.ctx, ta, newID(), h, 0, 1, nil)
	wantErr(t, "AdvanceUpload(missing)", err, catalog.ErrNotFound)
	_, err = f.c.ClaimUpload(f.ctx, ta, newID(), h, 0, time.Minute)
	wantErr(t, "ClaimUpload(missing)", err, catalog.ErrNotFound)

	// Concurrent claims at the same offset: exactly one wins, and it
	// advances.
	var wins, conflicts atomic.Int32
	winner := -1
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := f.c.ClaimUpload(f.ctx, ta, u.ID, fmt.Sprintf("%s-%d", h, i), 25, time.Minute)
			switch {
			case err == nil:
				wins.Add(1)
				mu.Lock()
				winner = i
				mu.Unlock()
			case errors.Is(err, catalog.ErrConflict):
				conflicts.Add(1)
			default:
				t.Errorf("concurrent ClaimUpload: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != 7 {
		t.Fatalf("concurrent ClaimUpload: %d wins, %d conflicts; want 1, 7", wins.Load(), conflicts.Load())
	}
	for i := range 8 {
		if i == winner {
			continue
		}
		_, err := f.c.AdvanceUpload(f.ctx, ta, u.ID, fmt.Sprintf("%s-%d", h, i), 25, int64(26+i), []byte{byte(i)})
		wantErr(t, "AdvanceUpload(lost the claim race)", err, catalog.ErrConflict)
	}
	if _, err := f.c.AdvanceUpload(f.ctx, ta, u.ID, fmt.Sprintf("%s-%d", h, winner), 25, int64(26+winner), []byte{byte(winner)}); err != nil {
		t.Fatalf("AdvanceUpload(won the claim race): %v", err)
	}
	g, err = f.c.GetUpload(f.ctx, ta, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if i := int(g.Offset) - 26; i != winner || !bytes.Equal(g.HashState, []byte{byte(i)}) {
		t.Errorf("after concurrent ClaimUpload: offset %d, state %v; want the winner %d's", g.Offset, g.HashState, winner)
	}
}

// testUploadClaims checks ClaimUpload: claims are exclusive, renewable by
// their holder, run out after their ttl, end with AdvanceUpload, and take a
// live, uncompleted session of the tenant at its offset.
func testUploadClaims(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	h1, h2, h3 := f.name("h1"), f.name("h2"), f.name("h3")
	ttl := time.Minute
	u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s0")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	claim := func(tenant, id, holder string, offset int64) (catalog.Upload, error) {
		return f.c.ClaimUpload(f.ctx, tenant, id, holder, offset, ttl)
	}
	mustClaim := func(op, holder string, offset int64, want catalog.Upload) {
		t.Helper()
		got, err := claim(ta, u.ID, holder, offset)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		checkUpload(t, op, got, want)
	}
	conflict := func(op, holder string, offset int64) {
		t.Helper()
		_, err := claim(ta, u.ID, holder, offset)
		wantErr(t, op, err, catalog.ErrConflict)
	}
	unchanged := func(op string, want catalog.Upload) {
		t.Helper()
		g, err := f.c.GetUpload(f.ctx, ta, u.ID)
		if err != nil {
			t.Fatalf("%s: GetUpload: %v", op, err)
		}
		checkUpload(t, op, g, want)
	}

	// Exclusive.
	f.clock.Advance(1500 * time.Microsecond)
	mustClaim("ClaimUpload(h1)", h1, 0, u)
	conflict("ClaimUpload(h2 while h1 holds)", h2, 0)

	// A non-holder cannot advance; nothing changes.
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h2, 0, 10, []byte("bad"))
	wantErr(t, "AdvanceUpload(non-holder)", err, catalog.ErrConflict)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h2, 0, 0, []byte("bad"))
	wantErr(t, "AdvanceUpload(non-holder release)", err, catalog.ErrConflict)
	unchanged("after AdvanceUpload(non-holder)", u)

	// Renewal by the holder extends the claim from now.
	f.clock.Advance(40 * time.Second)
	mustClaim("ClaimUpload(h1 renews)", h1, 0, u)
	f.clock.Advance(30 * time.Second) // past the first claim's end, before the renewed one's
	conflict("ClaimUpload(h2 after the first ttl, before the renewed)", h2, 0)
	f.clock.Advance(30*time.Second - time.Millisecond)
	conflict("ClaimUpload(h2 just before the renewed claim ends)", h2, 0)

	// Expiry: once the claim ran out another holder takes it, and the first
	// holder can no longer advance.
	f.clock.Advance(time.Millisecond)
	mustClaim("ClaimUpload(h2 after h1's claim ran out)", h2, 0, u)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h1, 0, 10, []byte("s10-h1"))
	wantErr(t, "AdvanceUpload(claim taken over)", err, catalog.ErrConflict)
	unchanged("after AdvanceUpload(claim taken over)", u)
	conflict("ClaimUpload(h1 after h2 took over)", h1, 0)
	got, err := f.c.AdvanceUpload(f.ctx, ta, u.ID, h2, 0, 10, []byte("s10"))
	if err != nil {
		t.Fatalf("AdvanceUpload(h2): %v", err)
	}
	want := u
	want.Offset, want.HashState = 10, []byte("s10")
	checkUpload(t, "AdvanceUpload(h2)", got, want)

	// A claim that ran out without being taken over is no use either.
	mustClaim("ClaimUpload(h3)", h3, 10, want)
	f.clock.Advance(ttl)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h3, 10, 20, []byte("s20"))
	wantErr(t, "AdvanceUpload(claim ran out)", err, catalog.ErrConflict)
	unchanged("after AdvanceUpload(claim ran out)", want)

	// Release: AdvanceUpload(from, from) ends the claim at once.
	mustClaim("ClaimUpload(h1 again)", h1, 10, want)
	conflict("ClaimUpload(h2 while h1 holds again)", h2, 10)
	got, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h1, 10, 10, []byte("s10"))
	if err != nil {
		t.Fatalf("AdvanceUpload(release): %v", err)
	}
	checkUpload(t, "AdvanceUpload(release)", got, want)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h1, 10, 10, []byte("s10"))
	wantErr(t, "AdvanceUpload(release twice)", err, catalog.ErrConflict)
	mustClaim("ClaimUpload(h2 after release)", h2, 10, want)

	// A wrong offset conflicts, for the holder too, and leaves its claim.
	conflict("ClaimUpload(h2 at a stale offset)", h2, 0)
	conflict("ClaimUpload(h2 at a future offset)", h2, 11)
	conflict("ClaimUpload(h3 at a stale offset)", h3, 0)
	conflict("ClaimUpload(h3 at a future offset)", h3, 11)
	conflict("ClaimUpload(h3 while h2 holds)", h3, 10)
	unchanged("after wrong offsets", want)

	// Claims are per tenant.
	_, err = claim(tb, u.ID, h3, 10)
	wantErr(t, "ClaimUpload(other tenant)", err, catalog.ErrNotFound)
	_, err = f.c.AdvanceUpload(f.ctx, tb, u.ID, h2, 10, 20, []byte("s20"))
	wantErr(t, "AdvanceUpload(other tenant, holder's name)", err, catalog.ErrNotFound)
	unchanged("after other tenant's calls", want)
	got, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h2, 10, 20, []byte("s20"))
	if err != nil {
		t.Fatalf("AdvanceUpload(h2 after other tenant's calls): %v", err)
	}
	want.Offset, want.HashState = 20, []byte("s20")
	checkUpload(t, "AdvanceUpload(h2 after other tenant's calls)", got, want)
	_, err = claim(ta, newID(), h1, 0)
	wantErr(t, "ClaimUpload(missing)", err, catalog.ErrNotFound)

	// A completed session cannot be claimed, by anyone.
	mustClaim("ClaimUpload(h1 before completion)", h1, 20, want)
	p := f.create(catalog.Package{Tenant: ta})
	file := f.newFile(ta, p.ID, "claimed", 20)
	if _, err := f.c.CompleteUpload(f.ctx, u.ID, file, catalog.NewEvent{Type: "file.added"}); err != nil {
		t.Fatalf("CompleteUpload: %v", err)
	}
	conflict("ClaimUpload(h1, completed)", h1, 20)
	conflict("ClaimUpload(h2, completed)", h2, 20)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h1, 20, 30, []byte("s30"))
	wantErr(t, "AdvanceUpload(claimed, then completed)", err, catalog.ErrConflict)
	want.FileID = file.ID
	unchanged("after completion", want)

	// An expired session cannot be claimed (it is not found), nor
	// advanced under a claim that outlives it.
	u2, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s")}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := claim(ta, u2.ID, h1, 0); err != nil {
		t.Fatalf("ClaimUpload(u2): %v", err)
	}
	f.clock.Advance(10 * time.Second)
	_, err = claim(ta, u2.ID, h1, 0)
	wantErr(t, "ClaimUpload(expired, holder)", err, catalog.ErrNotFound)
	_, err = claim(ta, u2.ID, h2, 0)
	wantErr(t, "ClaimUpload(expired, other)", err, catalog.ErrNotFound)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u2.ID, h1, 0, 1, []byte("s1"))
	wantErr(t, "AdvanceUpload(expired, claimed)", err, catalog.ErrNotFound)

	if h := f.head(tb); h != 0 {
		t.Errorf("claims wrote events: tenant b head %d", h)
	}
}

func testUploadExpiry(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	ttl := time.Hour
	u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s")}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(30 * time.Minute)
	later, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s")}, ttl)
	if err != nil {
		t.Fatal(err)
	}

	// Just before expiry everything works.
	f.clock.Advance(30*time.Minute - time.Millisecond)
	if _, err := f.c.GetUpload(f.ctx, ta, u.ID); err != nil {
		t.Fatalf("GetUpload just before expiry: %v", err)
	}
	h := f.name("holder")
	f.claim(ta, u.ID, h, 0)
	if _, err := f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 0, 1, []byte("s1")); err != nil {
		t.Fatalf("AdvanceUpload just before expiry: %v", err)
	}
	f.claim(ta, u.ID, h, 1) // outlives the session
	deleted, err := f.c.DeleteExpiredUploads(f.ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(deleted, u.ID) || slices.Contains(deleted, later.ID) {
		t.Errorf("DeleteExpiredUploads before expiry deleted %v", deleted)
	}

	// After expiry the session is not found, but exists until deleted.
	f.clock.Advance(2 * time.Millisecond)
	_, err = f.c.GetUpload(f.ctx, ta, u.ID)
	wantErr(t, "GetUpload(expired)", err, catalog.ErrNotFound)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 1, 2, []byte("s2"))
	wantErr(t, "AdvanceUpload(expired)", err, catalog.ErrNotFound)
	_, err = f.c.ClaimUpload(f.ctx, ta, u.ID, h, 1, time.Minute)
	wantErr(t, "ClaimUpload(expired)", err, catalog.ErrNotFound)
	p := f.create(catalog.Package{Tenant: ta})
	_, err = f.c.CompleteUpload(f.ctx, u.ID, f.newFile(ta, p.ID, "x", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(expired)", err, catalog.ErrNotFound)
	if got := f.getPackage(ta, p.ID); got.FileCount != 0 {
		t.Errorf("CompleteUpload(expired) added a file: FileCount %d", got.FileCount)
	}
	if ok, err := f.c.UploadExists(f.ctx, u.ID); err != nil || !ok {
		t.Errorf("UploadExists(expired) = %v, %v; want true", ok, err)
	}
	if _, err := f.c.GetUpload(f.ctx, ta, later.ID); err != nil {
		t.Errorf("GetUpload(unexpired): %v", err)
	}

	// DeleteExpiredUploads removes it (a shared database may hold other
	// expired sessions, so page until done).
	var all []string
	for i := 0; i < 1000; i++ {
		deleted, err := f.c.DeleteExpiredUploads(f.ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(deleted) > 10 {
			t.Fatalf("DeleteExpiredUploads(10) deleted %d", len(deleted))
		}
		if len(deleted) == 0 {
			break
		}
		all = append(all, deleted...)
	}
	if !slices.Contains(all, u.ID) {
		t.Errorf("DeleteExpiredUploads = %v, want it to contain %s", all, u.ID)
	}
	if slices.Contains(all, later.ID) {
		t.Errorf("DeleteExpiredUploads deleted the unexpired %s", later.ID)
	}
	if ok, err := f.c.UploadExists(f.ctx, u.ID); err != nil || ok {
		t.Errorf("UploadExists after DeleteExpiredUploads = %v, %v; want false", ok, err)
	}
	if deleted, err := f.c.DeleteExpiredUploads(f.ctx, 10); err != nil || slices.Contains(deleted, u.ID) {
		t.Errorf("second DeleteExpiredUploads = %v, %v", deleted, err)
	}
	_, err = f.c.GetUpload(f.ctx, ta, later.ID)
	if err != nil {
		t.Errorf("GetUpload(unexpired) after DeleteExpiredUploads: %v", err)
	}
	err = f.c.DeleteUpload(f.ctx, ta, u.ID)
	wantErr(t, "DeleteUpload(deleted)", err, catalog.ErrNotFound)

	// An expired session can still be deleted explicitly.
	f.clock.Advance(ttl)
	if err := f.c.DeleteUpload(f.ctx, ta, later.ID); err != nil {
		t.Errorf("DeleteUpload(expired): %v", err)
	}
	if ok, err := f.c.UploadExists(f.ctx, later.ID); err != nil || ok {
		t.Errorf("UploadExists after DeleteUpload(expired) = %v, %v; want false", ok, err)
	}
}

func testCompleteUpload(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	p := f.create(catalog.Package{Tenant: ta})
	u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: 3, HashState: []byte("s")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h := f.name("holder")
	f.claim(ta, u.ID, h, 0)
	if _, err := f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 0, 3, []byte("s3")); err != nil {
		t.Fatal(err)
	}
	// A claim that outlives the completion.
	if _, err := f.c.ClaimUpload(f.ctx, ta, u.ID, h, 3, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(1500 * time.Microsecond)
	in := f.newFile(ta, p.ID, "dir/file", 3)
	want := in
	want.CreatedAt = f.now()
	got, err := f.c.CompleteUpload(f.ctx, u.ID, in, catalog.NewEvent{Type: "file.added", Data: []byte("upload")})
	if err != nil {
		t.Fatalf("CompleteUpload: %v", err)
	}
	checkFile(t, "CompleteUpload", got, want)
	g, err := f.c.GetFile(f.ctx, ta, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, "GetFile", g, want)
	if pk := f.getPackage(ta, p.ID); pk.FileCount != 1 || pk.TotalSize != 3 {
		t.Errorf("package after CompleteUpload: FileCount %d TotalSize %d; want 1, 3", pk.FileCount, pk.TotalSize)
	}
	gu, err := f.c.GetUpload(f.ctx, ta, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if gu.FileID != in.ID || gu.Offset != 3 {
		t.Errorf("upload after CompleteUpload: FileID %q Offset %d; want %q, 3", gu.FileID, gu.Offset, in.ID)
	}
	evs, head := f.events(ta)
	if head != 2 || len(evs) != 2 {
		t.Fatalf("events after CompleteUpload: %d, head %d; want 2", len(evs), head)
	}
	checkEvent(t, "CompleteUpload event", evs[1], catalog.Event{Seq: 2, Type: "file.added", Time: want.CreatedAt, Tenant: ta, PackageID: p.ID, FileID: in.ID, Data: []byte("upload")})

	// A retry for the same package and path returns the same file, even
	// with a fresh file ID, and changes nothing.
	f.clock.Advance(time.Minute)
	for _, retry := range []catalog.File{in, {ID: newID(), Tenant: ta, PackageID: p.ID, Path: in.Path, Size: 3, Digest: in.Digest, MediaType: in.MediaType}} {
		got, err := f.c.CompleteUpload(f.ctx, u.ID, retry, catalog.NewEvent{Type: "file.added"})
		if err != nil {
			t.Fatalf("CompleteUpload retry: %v", err)
		}
		checkFile(t, "CompleteUpload retry", got, want)
	}
	if h := f.head(ta); h != 2 {
		t.Errorf("head = %d after retries, want 2", h)
	}
	if pk := f.getPackage(ta, p.ID); pk.FileCount != 1 || pk.TotalSize != 3 {
		t.Errorf("package after retries: FileCount %d TotalSize %d; want 1, 3", pk.FileCount, pk.TotalSize)
	}

	// Into another path or package: conflict.
	_, err = f.c.CompleteUpload(f.ctx, u.ID, f.newFile(ta, p.ID, "other", 3), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(completed, other path)", err, catalog.ErrConflict)
	p2 := f.create(catalog.Package{Tenant: ta})
	_, err = f.c.CompleteUpload(f.ctx, u.ID, f.newFile(ta, p2.ID, in.Path, 3), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(completed, other package)", err, catalog.ErrConflict)
	if pk := f.getPackage(ta, p2.ID); pk.FileCount != 0 {
		t.Errorf("other package got a file")
	}

	// A completed session does not move.
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 3, 4, []byte("s4"))
	wantErr(t, "AdvanceUpload(completed)", err, catalog.ErrConflict)
	_, err = f.c.ClaimUpload(f.ctx, ta, u.ID, h, 3, time.Minute)
	wantErr(t, "ClaimUpload(completed)", err, catalog.ErrConflict)
	if h := f.head(ta); h != 3 { // p2's creation
		t.Errorf("head = %d, want 3", h)
	}
}

func testCompleteUploadFailures(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	newUpload := func(tenant string) catalog.Upload {
		t.Helper()
		u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: tenant, Size: -1, HashState: []byte("s")}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	incomplete := func(op string, u catalog.Upload) {
		t.Helper()
		g, err := f.c.GetUpload(f.ctx, u.Tenant, u.ID)
		if err != nil {
			t.Fatalf("%s: GetUpload: %v", op, err)
		}
		if g.FileID != "" {
			t.Errorf("%s: upload FileID = %q, want incomplete", op, g.FileID)
		}
	}

	p := f.create(catalog.Package{Tenant: ta})
	f.addFile(f.newFile(ta, p.ID, "taken", 1))
	head := f.head(ta)

	// A taken path.
	u := newUpload(ta)
	dup := f.newFile(ta, p.ID, "taken", 2)
	_, err := f.c.CompleteUpload(f.ctx, u.ID, dup, catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(taken path)", err, catalog.ErrConflict)
	incomplete("CompleteUpload(taken path)", u)
	_, err = f.c.GetFile(f.ctx, ta, dup.ID)
	wantErr(t, "GetFile(rejected)", err, catalog.ErrNotFound)
	// The session can still complete elsewhere.
	ok := f.newFile(ta, p.ID, "free", 2)
	if _, err := f.c.CompleteUpload(f.ctx, u.ID, ok, catalog.NewEvent{Type: "file.added"}); err != nil {
		t.Errorf("CompleteUpload after a conflict: %v", err)
	}
	head++

	// A missing package, another tenant's package.
	u2 := newUpload(ta)
	_, err = f.c.CompleteUpload(f.ctx, u2.ID, f.newFile(ta, newID(), "x", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(missing package)", err, catalog.ErrNotFound)
	incomplete("CompleteUpload(missing package)", u2)
	pb := f.create(catalog.Package{Tenant: tb})
	_, err = f.c.CompleteUpload(f.ctx, u2.ID, f.newFile(ta, pb.ID, "x", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(other tenant's package)", err, catalog.ErrNotFound)
	incomplete("CompleteUpload(other tenant's package)", u2)

	// A session of another tenant.
	_, err = f.c.CompleteUpload(f.ctx, u2.ID, f.newFile(tb, pb.ID, "x", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(other tenant's session)", err, catalog.ErrNotFound)
	incomplete("CompleteUpload(other tenant's session)", u2)
	if pk := f.getPackage(tb, pb.ID); pk.FileCount != 0 {
		t.Errorf("CompleteUpload with another tenant's session added a file")
	}
	// A missing session.
	_, err = f.c.CompleteUpload(f.ctx, newID(), f.newFile(ta, p.ID, "y", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(missing session)", err, catalog.ErrNotFound)

	// A finalized package.
	f.finalize(ta, p.ID)
	head++
	_, err = f.c.CompleteUpload(f.ctx, u2.ID, f.newFile(ta, p.ID, "late", 1), catalog.NewEvent{Type: "file.added"})
	wantErr(t, "CompleteUpload(finalized)", err, catalog.ErrFinalized)
	incomplete("CompleteUpload(finalized)", u2)

	if h := f.head(ta); h != head {
		t.Errorf("tenant a head = %d, want %d", h, head)
	}
	if h := f.head(tb); h != 1 {
		t.Errorf("tenant b head = %d, want 1", h)
	}
}

func testDeleteUpload(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	err = f.c.DeleteUpload(f.ctx, tb, u.ID)
	wantErr(t, "DeleteUpload(other tenant)", err, catalog.ErrNotFound)
	if _, err := f.c.GetUpload(f.ctx, ta, u.ID); err != nil {
		t.Fatalf("GetUpload after other tenant's DeleteUpload: %v", err)
	}
	h := f.name("holder")
	f.claim(ta, u.ID, h, 0)
	if err := f.c.DeleteUpload(f.ctx, ta, u.ID); err != nil {
		t.Fatalf("DeleteUpload: %v", err)
	}
	_, err = f.c.GetUpload(f.ctx, ta, u.ID)
	wantErr(t, "GetUpload(deleted)", err, catalog.ErrNotFound)
	_, err = f.c.AdvanceUpload(f.ctx, ta, u.ID, h, 0, 1, nil)
	wantErr(t, "AdvanceUpload(deleted)", err, catalog.ErrNotFound)
	_, err = f.c.ClaimUpload(f.ctx, ta, u.ID, h, 0, time.Minute)
	wantErr(t, "ClaimUpload(deleted)", err, catalog.ErrNotFound)
	if ok, err := f.c.UploadExists(f.ctx, u.ID); err != nil || ok {
		t.Errorf("UploadExists(deleted) = %v, %v; want false", ok, err)
	}
	err = f.c.DeleteUpload(f.ctx, ta, u.ID)
	wantErr(t, "DeleteUpload twice", err, catalog.ErrNotFound)
	err = f.c.DeleteUpload(f.ctx, ta, newID())
	wantErr(t, "DeleteUpload(missing)", err, catalog.ErrNotFound)

	// Deleting a completed session keeps its file.
	p := f.create(catalog.Package{Tenant: ta})
	u2, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	file, err := f.c.CompleteUpload(f.ctx, u2.ID, f.newFile(ta, p.ID, "x", 0), catalog.NewEvent{Type: "file.added"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.c.DeleteUpload(f.ctx, ta, u2.ID); err != nil {
		t.Fatalf("DeleteUpload(completed): %v", err)
	}
	if _, err := f.c.GetFile(f.ctx, ta, file.ID); err != nil {
		t.Errorf("GetFile after deleting its session: %v", err)
	}
}

func testUploadTenantIsolation(t *testing.T, f *fixture) {
	ta, tb := f.tenant("a"), f.tenant("b")
	u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.c.GetUpload(f.ctx, tb, u.ID)
	wantErr(t, "GetUpload(other tenant)", err, catalog.ErrNotFound)
	h := f.name("holder")
	_, err = f.c.ClaimUpload(f.ctx, tb, u.ID, h, 0, time.Minute)
	wantErr(t, "ClaimUpload(other tenant)", err, catalog.ErrNotFound)
	f.claim(ta, u.ID, h, 0)
	_, err = f.c.AdvanceUpload(f.ctx, tb, u.ID, h, 0, 1, []byte("x"))
	wantErr(t, "AdvanceUpload(other tenant)", err, catalog.ErrNotFound)
	g, err := f.c.GetUpload(f.ctx, ta, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Offset != 0 || !bytes.Equal(g.HashState, []byte("s")) {
		t.Errorf("upload changed by another tenant: %+v", g)
	}
	// The same ID cannot be taken by another tenant either.
	_, err = f.c.CreateUpload(f.ctx, catalog.Upload{ID: u.ID, Tenant: tb, Size: -1}, time.Hour)
	wantErr(t, "CreateUpload(other tenant's ID)", err, catalog.ErrConflict)
}

func testDigestReferenced(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	d := newDigest()
	if ok, err := f.c.DigestReferenced(f.ctx, d); err != nil || ok {
		t.Errorf("DigestReferenced(unused) = %v, %v; want false", ok, err)
	}
	p := f.create(catalog.Package{Tenant: ta})
	file := f.newFile(ta, p.ID, "x", 1)
	file.Digest = d
	f.addFile(file)
	if ok, err := f.c.DigestReferenced(f.ctx, d); err != nil || !ok {
		t.Errorf("DigestReferenced(used) = %v, %v; want true", ok, err)
	}
	// A rejected file does not reference its digest.
	d2 := newDigest()
	rejected := f.newFile(ta, p.ID, "x", 1)
	rejected.Digest = d2
	_, err := f.c.AddFile(f.ctx, rejected, catalog.NewEvent{Type: "file.added"})
	wantErr(t, "AddFile(taken path)", err, catalog.ErrConflict)
	if ok, err := f.c.DigestReferenced(f.ctx, d2); err != nil || ok {
		t.Errorf("DigestReferenced(rejected) = %v, %v; want false", ok, err)
	}
	// Still referenced after finalization.
	f.finalize(ta, p.ID)
	if ok, err := f.c.DigestReferenced(f.ctx, d); err != nil || !ok {
		t.Errorf("DigestReferenced(finalized) = %v, %v; want true", ok, err)
	}
}

func testConcurrentEventsGapless(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	const writers, perWriter, creators, perCreator = 8, 25, 2, 10
	p := f.create(catalog.Package{Tenant: ta})

	var wg sync.WaitGroup
	var mu sync.Mutex
	fileIDs := map[string]bool{}
	pkgIDs := map[string]bool{p.ID: true}
	var total int64
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				file := f.newFile(ta, p.ID, fmt.Sprintf("w%d/f%03d", w, i), int64(w*100+i))
				if _, err := f.c.AddFile(f.ctx, file, catalog.NewEvent{Type: "file.added", Data: []byte(file.ID)}); err != nil {
					t.Errorf("AddFile: %v", err)
					return
				}
				mu.Lock()
				fileIDs[file.ID] = true
				total += file.Size
				mu.Unlock()
			}
		})
	}
	for range creators {
		wg.Go(func() {
			for range perCreator {
				id := newID()
				if _, err := f.c.CreatePackage(f.ctx, catalog.Package{ID: id, Tenant: ta}, catalog.NewEvent{Type: "package.created", Data: []byte(id)}); err != nil {
					t.Errorf("CreatePackage: %v", err)
					return
				}
				mu.Lock()
				pkgIDs[id] = true
				mu.Unlock()
			}
		})
	}
	// Readers run meanwhile and must never see a gap.
	done := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				evs, head, err := f.c.Events(f.ctx, ta, 0, 1000)
				if err != nil {
					t.Errorf("Events: %v", err)
					return
				}
				for i, e := range evs {
					if e.Seq != uint64(i+1) {
						t.Errorf("reader saw seq %d at index %d", e.Seq, i)
						return
					}
				}
				if uint64(len(evs)) > head {
					t.Errorf("reader saw %d events but head %d", len(evs), head)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	if t.Failed() {
		return
	}

	n := 1 + writers*perWriter + creators*perCreator
	evs, head := f.events(ta)
	if head != uint64(n) || len(evs) != n {
		t.Fatalf("got %d events, head %d; want %d", len(evs), head, n)
	}
	seenFiles, seenPkgs := map[string]int{}, map[string]int{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: not gapless", i, e.Seq)
		}
		switch e.Type {
		case "file.added":
			if e.PackageID != p.ID || string(e.Data) != e.FileID {
				t.Errorf("event %+v", e)
			}
			seenFiles[e.FileID]++
		case "package.created":
			seenPkgs[e.PackageID]++
		default:
			t.Errorf("unexpected event %+v", e)
		}
	}
	for id := range fileIDs {
		if seenFiles[id] != 1 {
			t.Errorf("file %s has %d events, want 1", id, seenFiles[id])
		}
	}
	for id := range pkgIDs {
		if seenPkgs[id] != 1 {
			t.Errorf("package %s has %d events, want 1", id, seenPkgs[id])
		}
	}
	if len(seenFiles) != len(fileIDs) || len(seenPkgs) != len(pkgIDs) {
		t.Errorf("events for %d files and %d packages, want %d and %d", len(seenFiles), len(seenPkgs), len(fileIDs), len(pkgIDs))
	}
	got := f.getPackage(ta, p.ID)
	if got.FileCount != writers*perWriter || got.TotalSize != total {
		t.Errorf("package FileCount %d TotalSize %d; want %d, %d", got.FileCount, got.TotalSize, writers*perWriter, total)
	}
}

func testConcurrentAddFileFinalize(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	for round := range 3 {
		p := f.create(catalog.Package{Tenant: ta})
		const writers = 6
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			added     = map[string]bool{} // paths whose AddFile succeeded
			rejected  int
			progress  atomic.Int32
			exited    atomic.Int32
			finalized = make(chan struct{})
		)
		for w := range writers {
			wg.Go(func() {
				defer exited.Add(1)
				// Writers keep adding until they see ErrFinalized, however
				// long Finalize waits for its turn (locks need not be fair).
				for i := 0; ; i++ {
					if i >= 10000 {
						t.Errorf("writer %d never saw ErrFinalized", w)
						return
					}
					path := fmt.Sprintf("w%d/%05d", w, i)
					var returned bool
					select {
					case <-finalized:
						returned = true
					default:
					}
					_, err := f.c.AddFile(f.ctx, f.newFile(ta, p.ID, path, 1), catalog.NewEvent{Type: "file.added"})
					if err == nil && returned {
						t.Errorf("AddFile succeeded after Finalize returned")
					}
					if errors.Is(err, catalog.ErrFinalized) {
						mu.Lock()
						rejected++
						mu.Unlock()
						// After Finalize returned, every AddFile must fail.
						<-finalized
						_, err := f.c.AddFile(f.ctx, f.newFile(ta, p.ID, path+"-after", 1), catalog.NewEvent{Type: "file.added"})
						wantErr(t, "AddFile after Finalize returned", err, catalog.ErrFinalized)
						return
					}
					if err != nil {
						t.Errorf("AddFile: %v", err)
						return
					}
					mu.Lock()
					added[path] = true
					mu.Unlock()
					progress.Add(1)
				}
			})
		}
		for progress.Load() < int32(5+round*10) && exited.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		var built []string
		calls := 0
		fp, err := f.c.Finalize(f.ctx, ta, p.ID, "package.finalized", func(bp catalog.Package, files []catalog.File) (catalog.Finalization, error) {
			calls++
			built = built[:0]
			for _, file := range files {
				built = append(built, file.Path)
			}
			if int(bp.FileCount) != len(files) {
				t.Errorf("build got FileCount %d and %d files", bp.FileCount, len(files))
			}
			return buildManifest(bp, files), nil
		})
		close(finalized)
		wg.Wait()
		if err != nil {
			t.Fatalf("Finalize: %v", err)
		}
		if calls != 1 {
			t.Errorf("build called %d times, want 1", calls)
		}
		if rejected != writers {
			t.Errorf("%d writers saw ErrFinalized, want %d", rejected, writers)
		}
		var want []string
		for path := range added {
			want = append(want, path)
		}
		sort.Strings(want)
		if !slices.Equal(built, want) {
			t.Errorf("round %d: manifest built from %d files %q; %d AddFile calls succeeded: %q", round, len(built), built, len(want), want)
		}
		if fp.FileCount != int64(len(want)) {
			t.Errorf("finalized FileCount %d, want %d", fp.FileCount, len(want))
		}
		listed := f.files(ta, p.ID)
		if len(listed) != len(want) {
			t.Errorf("ListFiles after Finalize: %d files, want %d", len(listed), len(want))
		}
		// Every file event of the package precedes its finalized event.
		evs, _ := f.events(ta)
		finSeq := uint64(0)
		fileEvents := 0
		for _, e := range evs {
			if e.PackageID != p.ID {
				continue
			}
			switch e.Type {
			case "package.finalized":
				if finSeq != 0 {
					t.Errorf("two finalized events")
				}
				finSeq = e.Seq
			case "file.added":
				fileEvents++
				if finSeq != 0 {
					t.Errorf("file event %d after finalized event %d", e.Seq, finSeq)
				}
			}
		}
		if finSeq == 0 || fileEvents != len(want) {
			t.Errorf("finalized event seq %d, %d file events; want one and %d", finSeq, fileEvents, len(want))
		}
	}
}

func testClose(t *testing.T, f *fixture) {
	ta := f.tenant("a")
	p := f.create(catalog.Package{Tenant: ta})
	file := f.addFile(f.newFile(ta, p.ID, "x", 1))
	u, err := f.c.CreateUpload(f.ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte("s")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := f.ctx
	build := func(p catalog.Package, files []catalog.File) (catalog.Finalization, error) {
		t.Error("build called after Close")
		return buildManifest(p, files), nil
	}
	ev := catalog.NewEvent{Type: "x"}
	calls := map[string]func() error{
		"CreatePackage": func() error {
			_, err := f.c.CreatePackage(ctx, catalog.Package{ID: newID(), Tenant: ta}, ev)
			return err
		},
		"GetPackage": func() error { _, err := f.c.GetPackage(ctx, ta, p.ID); return err },
		"ListPackages": func() error {
			_, err := f.c.ListPackages(ctx, ta, catalog.PackageFilter{Limit: 10})
			return err
		},
		"AddFile": func() error { _, err := f.c.AddFile(ctx, f.newFile(ta, p.ID, "y", 1), ev); return err },
		"GetFile": func() error { _, err := f.c.GetFile(ctx, ta, file.ID); return err },
		"ListFiles": func() error {
			_, err := f.c.ListFiles(ctx, ta, p.ID, catalog.FileFilter{Limit: 10})
			return err
		},
		"Finalize":    func() error { _, err := f.c.Finalize(ctx, ta, p.ID, "package.finalized", build); return err },
		"GetManifest": func() error { _, _, err := f.c.GetManifest(ctx, ta, p.ID); return err },
		"CreateUpload": func() error {
			_, err := f.c.CreateUpload(ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1}, time.Hour)
			return err
		},
		"GetUpload": func() error { _, err := f.c.GetUpload(ctx, ta, u.ID); return err },
		"ClaimUpload": func() error {
			_, err := f.c.ClaimUpload(ctx, ta, u.ID, "holder", 0, time.Minute)
			return err
		},
		"AdvanceUpload": func() error { _, err := f.c.AdvanceUpload(ctx, ta, u.ID, "holder", 0, 1, nil); return err },
		"CompleteUpload": func() error {
			_, err := f.c.CompleteUpload(ctx, u.ID, f.newFile(ta, p.ID, "z", 1), ev)
			return err
		},
		"DeleteUpload":         func() error { return f.c.DeleteUpload(ctx, ta, u.ID) },
		"DeleteExpiredUploads": func() error { _, err := f.c.DeleteExpiredUploads(ctx, 10); return err },
		"UploadExists":         func() error { _, err := f.c.UploadExists(ctx, u.ID); return err },
		"DigestReferenced":     func() error { _, err := f.c.DigestReferenced(ctx, file.Digest); return err },
		"Events":               func() error { _, _, err := f.c.Events(ctx, ta, 0, 10); return err },
	}
	for _, name := range slices.Sorted(maps.Keys(calls)) {
		wantErr(t, name+" after Close", calls[name](), catalog.ErrClosed)
	}
	if err := f.c.Close(); err != nil && !errors.Is(err, catalog.ErrClosed) {
		t.Errorf("second Close = %v, want nil or ErrClosed", err)
	}
}

// RunSharedClaims checks that upload claims are exclusive across several
// catalogs sharing one database (as the processes of a deployment do): cats
// must all open the same database, with real clocks. Workers spread over
// the catalogs race to claim one session at its offset and advance it by
// one byte; every offset must be claimed by exactly one of them, and every
// winner's advance must succeed.
func RunSharedClaims(t *testing.T, cats ...catalog.Catalog) {
	t.Helper()
	if len(cats) == 0 {
		t.Fatal("catalogtest: RunSharedClaims without catalogs")
	}
	ctx := context.Background()
	ta := "shared-claims-" + uniq()
	u, err := cats[0].CreateUpload(ctx, catalog.Upload{ID: newID(), Tenant: ta, Size: -1, HashState: []byte{}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const (
		workers = 12
		target  = 60
	)
	var (
		mu      sync.Mutex
		winners = map[int64][]string{}
		wg      sync.WaitGroup
	)
	for w := range workers {
		c := cats[w%len(cats)]
		holder := fmt.Sprintf("worker-%d-%s", w, uniq())
		wg.Go(func() {
			for {
				g, err := c.GetUpload(ctx, ta, u.ID)
				if err != nil {
					t.Errorf("%s: GetUpload: %v", holder, err)
					return
				}
				if g.Offset >= target {
					return
				}
				if _, err := c.ClaimUpload(ctx, ta, u.ID, holder, g.Offset, time.Minute); err != nil {
					if !errors.Is(err, catalog.ErrConflict) {
						t.Errorf("%s: ClaimUpload(%d): %v", holder, g.Offset, err)
						return
					}
					continue
				}
				mu.Lock()
				winners[g.Offset] = append(winners[g.Offset], holder)
				mu.Unlock()
				state := []byte(fmt.Sprint(g.Offset + 1))
				if _, err := c.AdvanceUpload(ctx, ta, u.ID, holder, g.Offset, g.Offset+1, state); err != nil {
					t.Errorf("%s: AdvanceUpload(%d→%d) under a claim: %v", holder, g.Offset, g.Offset+1, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for o := range int64(target) {
		if hs := winners[o]; len(hs) != 1 {
			t.Errorf("offset %d claimed by %d holders %v, want 1", o, len(hs), hs)
		}
	}
	g, err := cats[len(cats)-1].GetUpload(ctx, ta, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Offset != target || string(g.HashState) != fmt.Sprint(target) {
		t.Errorf("after the race: offset %d, state %q; want %d", g.Offset, g.HashState, target)
	}
}
