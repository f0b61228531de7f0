package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/artifactstore/artifactstore/catalog"
	"github.com/artifactstore/artifactstore/catalog/catalogtest"
)

// The tests need a PostgreSQL server: ARTIFACTSTORE_TEST_POSTGRES holds a DSN
// of a database they may create schemas (and, for one test, databases) in,
// e.g. postgres://postgres@127.0.0.1:54329/artifacts?sslmode=disable. Without
// it they skip, unless ARTIFACTSTORE_TEST_REQUIRE (a comma-separated list)
// names postgres: then they fail.
const (
	dsnEnv     = "ARTIFACTSTORE_TEST_POSTGRES"
	requireEnv = "ARTIFACTSTORE_TEST_REQUIRE"
)

func serverDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(dsnEnv)
	if dsn != "" {
		return dsn
	}
	for _, s := range strings.Split(os.Getenv(requireEnv), ",") {
		if strings.TrimSpace(s) == "postgres" {
			t.Fatalf("%s is not set, but %s=%q requires the PostgreSQL tests", dsnEnv, requireEnv, os.Getenv(requireEnv))
		}
	}
	t.Skipf("%s is not set (a DSN such as postgres://postgres@127.0.0.1:5432/db?sslmode=disable); skipping the PostgreSQL tests", dsnEnv)
	return ""
}

func randomName(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// withParam returns dsn with a connection parameter set.
func withParam(t testing.TB, dsn, key, value string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse %s: %v", dsnEnv, err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value // keyword/value form; the names used here need no quoting
}

// adminExec runs statements on a connection of its own to dsn.
func adminExec(t testing.TB, dsn string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// freshSchema creates an empty schema, dropped when t ends, and returns the
// server DSN with its search_path set to it: catalogs opened on it migrate
// into that schema and see nothing of other tests.
func freshSchema(t testing.TB) string {
	t.Helper()
	dsn := serverDSN(t)
	return schemaIn(t, dsn)
}

func schemaIn(t testing.TB, dsn string) string {
	t.Helper()
	schema := randomName("t_")
	adminExec(t, dsn, "CREATE SCHEMA "+schema)
	// Registered before any catalog's Close, so it runs after them.
	t.Cleanup(func() { adminExec(t, dsn, "DROP SCHEMA "+schema+" CASCADE") })
	return withParam(t, dsn, "search_path", schema)
}

func openTest(t testing.TB, dsn string, now func() time.Time) *Catalog {
	t.Helper()
	c, err := Open(context.Background(), dsn, Options{Now: now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCatalog(t *testing.T) {
	serverDSN(t) // skip (or fail) once, not in every sub-test
	catalogtest.Run(t, catalogtest.Harness{
		New: func(t *testing.T, now func() time.Time) catalog.Catalog {
			return openTest(t, freshSchema(t), now)
		},
	})
}

// TestCatalogICUDefaultCollation runs the suite in a database whose default
// collation is ICU en-US, where "a" < "B" and punctuation is nearly
// ignored: paths and ids must still sort bytewise (their columns are
// COLLATE "C").
func TestCatalogICUDefaultCollation(t *testing.T) {
	dsn := serverDSN(t)
	db := randomName("artifactstore_icu_")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+db+" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
	conn.Close(ctx)
	if err != nil {
		t.Skipf("cannot create a database with an ICU default collation: %v", err)
	}
	t.Cleanup(func() { adminExec(t, dsn, "DROP DATABASE "+db+" WITH (FORCE)") })
	icuDSN := dsn + " dbname=" + db
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + db
		icuDSN = u.String()
	}
	// The collation really is not bytewise there.
	conn, err = pgx.Connect(ctx, icuDSN)
	if err != nil {
		t.Fatal(err)
	}
	var aFirst bool
	err = conn.QueryRow(ctx, `SELECT 'a' < 'B'`).Scan(&aFirst)
	conn.Close(ctx)
	if err != nil || !aFirst {
		t.Fatalf("'a' < 'B' = %v, %v in the ICU database; want true", aFirst, err)
	}
	catalogtest.Run(t, catalogtest.Harness{
		New: func(t *testing.T, now func() time.Time) catalog.Catalog {
			return openTest(t, schemaIn(t, icuDSN), now)
		},
	})
}

// TestConcurrentOpen starts several replicas at once on one empty schema:
// the advisory lock makes them apply each migration once, in turn, and all
// of them open.
func TestConcurrentOpen(t *testing.T) {
	entries, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		dsn := freshSchema(t)
		const replicas = 4
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			cats  [replicas]*Catalog
			errs  [replicas]error
		)
		for i := range replicas {
			wg.Go(func() {
				<-start
				cats[i], errs[i] = Open(context.Background(), dsn, Options{})
			})
		}
		close(start)
		wg.Wait()
		for i := range replicas {
			if errs[i] != nil {
				t.Fatalf("round %d: replica %d: Open: %v", round, i, errs[i])
			}
			t.Cleanup(func() { cats[i].Close() })
		}
		var n int
		if err := cats[0].pool.QueryRow(context.Background(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(entries) {
			t.Errorf("round %d: schema_migrations has %d rows, want %d", round, n, len(entries))
		}
		// Every replica works, and they share the database.
		for i, c := range cats {
			id := fmt.Sprintf("%026d", i+1)
			if _, err := c.CreatePackage(context.Background(), catalog.Package{ID: id, Tenant: "t"}, catalog.NewEvent{Type: "x"}); err != nil {
				t.Fatalf("round %d: replica %d: CreatePackage: %v", round, i, err)
			}
		}
		if _, head, err := cats[0].Events(context.Background(), "t", 0, 1); err != nil || head != replicas {
			t.Errorf("round %d: head %d, %v; want %d", round, head, err, replicas)
		}
	}
}

// TestReopen checks that a second Open applies nothing again.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	c := openTest(t, dsn, nil)
	p, err := c.CreatePackage(ctx, catalog.Package{ID: "01P", Tenant: "t", Metadata: map[string]string{"k": "v"}}, catalog.NewEvent{Type: "package.created"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dsn, nil)
	got, err := c.GetPackage(ctx, "t", p.ID)
	if err != nil {
		t.Fatalf("GetPackage after reopen: %v", err)
	}
	if got.Metadata["k"] != "v" || !got.CreatedAt.Equal(p.CreatedAt) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("after reopen: %+v, want %+v (UTC)", got, p)
	}
}

// TestSharedClaims runs the claim race through several catalogs on one
// schema, as several replicas would.
func TestSharedClaims(t *testing.T) {
	dsn := freshSchema(t)
	catalogtest.RunSharedClaims(t, openTest(t, dsn, nil), openTest(t, dsn, nil), openTest(t, dsn, nil))
}

// TestMigrateUploadClaims opens a schema that only has the first migration
// and a session in it: the claim columns are added, and the old session is
// unclaimed.
func TestMigrateUploadClaims(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	body, err := migrations.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	adminExec(t, dsn,
		`CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at bigint NOT NULL)`,
		string(body),
		`INSERT INTO schema_migrations (name, applied_at) VALUES ('0001_init.sql', 1)`,
		fmt.Sprintf(`INSERT INTO uploads (id, tenant, "offset", size, digest, hash_state, created_at, expires_at)
			VALUES ('01U', 't', 5, -1, '', '\x73', %d, %d)`, now, now+time.Hour.Milliseconds()),
	)

	c := openTest(t, dsn, nil)
	var n int
	if err := c.pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if entries, _ := migrations.ReadDir("migrations"); n != len(entries) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(entries))
	}
	if _, err := c.ClaimUpload(ctx, "t", "01U", "h1", 5, time.Minute); err != nil {
		t.Fatalf("ClaimUpload(old session): %v", err)
	}
	if _, err := c.ClaimUpload(ctx, "t", "01U", "h2", 5, time.Minute); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("second ClaimUpload(old session) = %v, want ErrConflict", err)
	}
	u, err := c.AdvanceUpload(ctx, "t", "01U", "h1", 5, 7, []byte("s7"))
	if err != nil || u.Offset != 7 {
		t.Fatalf("AdvanceUpload(old session) = %+v, %v", u, err)
	}
}

// TestEventsTailNeverSkips has many writers, through several catalogs (as
// several processes would), append events to one tenant while readers tail
// the log the way a consumer does: each read asks for the events after its
// cursor and moves the cursor to the last one returned. Every page must
// continue exactly at cursor+1, and in the end each reader must have read
// every seq from 1 to head.
//
// A plain sequence (seq DEFAULT nextval(...)) would fail this: transaction
// A takes seq 5, transaction B takes 6 and commits first. A reader at
// cursor 4 then gets a page starting at 6 (not contiguous), and, moving its
// cursor to 6, never reads 5 once A commits. The event_heads row lock
// instead makes B wait for A's commit before it takes its number, so seq
// order is commit order and every snapshot holds a gapless prefix.
func TestEventsTailNeverSkips(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	const instances, writersPer, filesPer = 4, 4, 25
	cats := make([]*Catalog, instances)
	for i := range cats {
		cats[i] = openTest(t, dsn, nil)
	}
	const tenant = "tail"
	total := uint64(instances * writersPer * (1 + filesPer))

	var (
		writers sync.WaitGroup
		written atomic.Bool
		mu      sync.Mutex
		ids     = map[string]bool{} // package and file ids, one event each
	)
	for i := range instances {
		for w := range writersPer {
			writers.Go(func() {
				c := cats[i]
				// A package per writer: the writers contend only for the
				// tenant's event head.
				pid := fmt.Sprintf("p%02d%02d", i, w)
				if _, err := c.CreatePackage(ctx, catalog.Package{ID: pid, Tenant: tenant}, catalog.NewEvent{Type: "package.created", Data: []byte(pid)}); err != nil {
					t.Errorf("CreatePackage: %v", err)
					return
				}
				mu.Lock()
				ids[pid] = true
				mu.Unlock()
				for n := range filesPer {
					fid := fmt.Sprintf("f%02d%02d%03d", i, w, n)
					f := catalog.File{ID: fid, Tenant: tenant, PackageID: pid, Path: fid, Size: 1, Digest: "sha256:x", MediaType: "x"}
					if _, err := c.AddFile(ctx, f, catalog.NewEvent{Type: "file.added", Data: []byte(fid)}); err != nil {
						t.Errorf("AddFile: %v", err)
						return
					}
					mu.Lock()
					ids[fid] = true
					mu.Unlock()
				}
			})
		}
	}
	go func() {
		writers.Wait()
		written.Store(true)
	}()

	var readers sync.WaitGroup
	for r, limit := range []int{1, 7, 64} {
		readers.Go(func() {
			c := cats[r%instances]
			var (
				since uint64
				seen  []uint64
				data  = map[string]int{}
				reads int
			)
			deadline := time.Now().Add(2 * time.Minute)
			for {
				done := written.Load() // read before Events: afterwards, a short page means the end
				evs, head, err := c.Events(ctx, tenant, since, limit)
				if err != nil {
					t.Errorf("reader %d: Events: %v", r, err)
					return
				}
				reads++
				for i, e := range evs {
					if e.Seq != since+uint64(i)+1 {
						t.Errorf("reader %d: Events(since %d) returned seq %d at index %d: the log skipped", r, since, e.Seq, i)
						return
					}
					seen = append(seen, e.Seq)
					data[string(e.Data)]++
				}
				if len(evs) > 0 {
					since = evs[len(evs)-1].Seq
				}
				if head < since {
					t.Errorf("reader %d: head %d below a returned seq %d", r, head, since)
					return
				}
				if done && len(evs) < limit {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("reader %d: stuck at %d", r, since)
					return
				}
			}
			if uint64(len(seen)) != total || since != total {
				t.Errorf("reader %d read %d events up to seq %d, want %d", r, len(seen), since, total)
			}
			for id := range ids {
				if data[id] != 1 {
					t.Errorf("reader %d: %d events for %s, want 1", r, data[id], id)
				}
			}
			t.Logf("reader %d (pages of %d): %d reads", r, limit, reads)
		})
	}
	readers.Wait()
	writers.Wait()
	if t.Failed() {
		return
	}
	if _, head, err := cats[0].Events(ctx, tenant, 0, 0); err != nil || head != total {
		t.Errorf("head %d, %v; want %d", head, err, total)
	}
}

// TestListen has a Listen on one catalog receive, within a second, the
// notification of an AddFile committed through another.
func TestListen(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	c1, c2 := openTest(t, dsn, nil), openTest(t, dsn, nil)
	tenant := randomName("listen-")
	p, err := c2.CreatePackage(ctx, catalog.Package{ID: "01P", Tenant: tenant}, catalog.NewEvent{Type: "package.created"})
	if err != nil {
		t.Fatal(err)
	}

	got := make(chan string, 1000)
	listen := func(c *Catalog) (context.CancelFunc, chan error) {
		t.Helper()
		lctx, cancel := context.WithCancel(ctx)
		ready := make(chan struct{})
		c.onListen = func() { close(ready) }
		done := make(chan error, 1)
		go func() {
			done <- c.Listen(lctx, func(tn string) {
				select {
				case got <- tn:
				default:
				}
			})
		}()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("Listen: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("Listen is not listening after 10s")
		}
		return cancel, done
	}
	// waitFor waits up to d for a notification of tenant.
	waitFor := func(d time.Duration) bool {
		timeout := time.After(d)
		for {
			select {
			case tn := <-got:
				if tn == tenant {
					return true
				}
			case <-timeout:
				return false
			}
		}
	}

	cancel, done := listen(c1)
	start := time.Now()
	if _, err := c2.AddFile(ctx, catalog.File{ID: "01F", Tenant: tenant, PackageID: p.ID, Path: "x", Size: 1, Digest: "sha256:x", MediaType: "x"}, catalog.NewEvent{Type: "file.added"}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(time.Second) {
		t.Fatal("no notification within 1s of AddFile")
	}
	t.Logf("notified %v after AddFile began", time.Since(start))

	// A change that rolls back notifies nothing.
	_, err = c2.AddFile(ctx, catalog.File{ID: "01G", Tenant: tenant, PackageID: p.ID, Path: "x", Size: 1, Digest: "sha256:x", MediaType: "x"}, catalog.NewEvent{Type: "file.added"})
	if !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("AddFile(taken path) = %v, want ErrConflict", err)
	}
	if waitFor(300 * time.Millisecond) {
		t.Error("a rolled-back AddFile notified")
	}

	// Canceling ctx stops Listen.
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Listen after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not return after its context was canceled")
	}

	// Close stops a running Listen, and a later Listen fails at once.
	c3 := openTest(t, dsn, nil)
	cancel, done = listen(c3)
	defer cancel()
	c3.Close()
	select {
	case err := <-done:
		if !errors.Is(err, catalog.ErrClosed) {
			t.Errorf("Listen after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not return after Close")
	}
	if err := c3.Listen(ctx, func(string) {}); !errors.Is(err, catalog.ErrClosed) {
		t.Errorf("Listen on a closed catalog = %v, want ErrClosed", err)
	}
}

// TestStringsPostgresCannotStore: metadata values may hold NUL (stored as
// bytea), and lookups and filters with strings PostgreSQL text cannot hold
// (invalid UTF-8, NUL) find nothing instead of failing; prefixes and cursors
// that are not valid UTF-8 still compare bytewise.
func TestStringsPostgresCannotStore(t *testing.T) {
	ctx := context.Background()
	c := openTest(t, freshSchema(t), nil)
	meta := map[string]string{"nul": "a\x00b", "bin": "\xff\xfe"}
	p, err := c.CreatePackage(ctx, catalog.Package{ID: "01P", Tenant: "t", Metadata: meta}, catalog.NewEvent{Type: "x"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetPackage(ctx, "t", p.ID)
	if err != nil || got.Metadata["nul"] != "a\x00b" || got.Metadata["bin"] != "\xff\xfe" {
		t.Errorf("GetPackage = %q, %v; want metadata %q", got.Metadata, err, meta)
	}
	for _, f := range []catalog.MetaFilter{{Key: "nul", Value: "a\x00b", HasValue: true}, {Key: "bin", Value: "\xff\xfe", HasValue: true}} {
		ps, err := c.ListPackages(ctx, "t", catalog.PackageFilter{Metadata: []catalog.MetaFilter{f, {Key: "nul"}}, Limit: 10})
		if err != nil || len(ps) != 1 {
			t.Errorf("ListPackages(%+v) = %d packages, %v; want 1", f, len(ps), err)
		}
	}
	for _, path := range []string{"ä/x", "äb", "a", "z"} {
		if _, err := c.AddFile(ctx, catalog.File{ID: "f-" + path, Tenant: "t", PackageID: p.ID, Path: path, Digest: "sha256:x"}, catalog.NewEvent{Type: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		prefix, after string
		want          []string
	}{
		{"\xc3", "", []string{"äb", "ä/x"}},             // the first byte of ä
		{"\xc3\xa4", "", []string{"äb", "ä/x"}},         // ä
		{"\xc3\xa4/", "", []string{"ä/x"}},              //
		{"\xc3a", "", nil},                              // cannot start any valid string
		{"a\x00", "", nil},                              //
		{"", "\xc3", []string{"äb", "ä/x"}},             // after a partial ä
		{"", "\xc3\xa4\xff", nil},                       // after every ä...
		{"", "a\x00", []string{"z", "äb", "ä/x"}},       // after "a"
		{"\xc3", "\xc3\xa4b", nil},                      // "äb" is the last
		{"", "\xff", nil},                               //
		{"", "\x7f\xff", []string{"äb", "ä/x"}},         //
		{"", "", []string{"a", "z", "äb", "ä/x"}},       //
		{"\xc3\xa4", "\xc3\xa4", []string{"äb", "ä/x"}}, //
		{"\U0010FFFF", "", nil},                         //
		{"a\U0010FFFF", "", nil},                        //
		{"\xf4\x8f\xbf", "", nil},                       // a partial U+10FFFF
		{"", "\xf4\x8f\xbf\xbf", nil},                   //
		{"", "\xf4\x8f\xbf", nil},                       //
		{"", "\xed\xa0\x80", nil},                       // a surrogate: above every stored path below U+E000
		{"", "\xe2", nil},                               // U+2000..: above ä
		{"", "\xc3\xa4\x00", []string{"äb", "ä/x"}},     //
		{"\xc3\xa4", "\xc3\xa4/x", []string{"äb"}},      //
	} {
		files, err := c.ListFiles(ctx, "t", p.ID, catalog.FileFilter{Prefix: tc.prefix, After: tc.after, Limit: 10})
		if err != nil {
			t.Errorf("ListFiles(%q, %q): %v", tc.prefix, tc.after, err)
			continue
		}
		var paths []string
		for _, f := range files {
			paths = append(paths, f.Path)
		}
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(paths, want) {
			t.Errorf("ListFiles(%q, %q) = %q, want %q", tc.prefix, tc.after, paths, want)
		}
	}
	bad := "\xff\x00"
	if _, err := c.GetPackage(ctx, "t", bad); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("GetPackage(bad id) = %v, want ErrNotFound", err)
	}
	if _, err := c.GetFile(ctx, bad, "f-a"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("GetFile(bad tenant) = %v, want ErrNotFound", err)
	}
	if _, err := c.AddFile(ctx, catalog.File{ID: "x", Tenant: "t", PackageID: bad, Path: "y"}, catalog.NewEvent{Type: "x"}); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("AddFile(bad package) = %v, want ErrNotFound", err)
	}
	if ps, err := c.ListPackages(ctx, "t", catalog.PackageFilter{Producer: bad, Limit: 10}); err != nil || len(ps) != 0 {
		t.Errorf("ListPackages(bad producer) = %d, %v; want none", len(ps), err)
	}
	if ps, err := c.ListPackages(ctx, "t", catalog.PackageFilter{Before: "01P\x00", Limit: 10}); err != nil || len(ps) != 1 {
		t.Errorf("ListPackages(Before 01P+NUL) = %d, %v; want 1", len(ps), err)
	}
	if ps, err := c.ListPackages(ctx, "t", catalog.PackageFilter{Before: "01P\xff", Metadata: []catalog.MetaFilter{{Key: "nul"}, {Key: "bin"}}, Limit: 10}); err != nil || len(ps) != 1 {
		t.Errorf("ListPackages(Before 01P+0xff) = %d, %v; want 1", len(ps), err)
	}
	if ok, err := c.UploadExists(ctx, bad); err != nil || ok {
		t.Errorf("UploadExists(bad) = %v, %v", ok, err)
	}
	if _, err := c.ClaimUpload(ctx, "t", bad, "h", 0, time.Minute); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("ClaimUpload(bad id) = %v, want ErrNotFound", err)
	}
	if _, err := c.AdvanceUpload(ctx, bad, "u", "h", 0, 1, nil); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("AdvanceUpload(bad tenant) = %v, want ErrNotFound", err)
	}
	u, err := c.CreateUpload(ctx, catalog.Upload{ID: "01U", Tenant: "t", Size: -1}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A holder PostgreSQL cannot store never holds a claim.
	if _, err := c.ClaimUpload(ctx, "t", u.ID, bad, 0, time.Minute); err == nil || errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("ClaimUpload(bad holder) = %v, want an error other than ErrNotFound", err)
	}
	if _, err := c.AdvanceUpload(ctx, "t", u.ID, bad, 0, 1, nil); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("AdvanceUpload(bad holder) = %v, want ErrConflict", err)
	}
	if _, err := c.AdvanceUpload(ctx, "t", "missing", bad, 0, 1, nil); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("AdvanceUpload(bad holder, missing) = %v, want ErrNotFound", err)
	}
	if evs, head, err := c.Events(ctx, bad, 0, 10); err != nil || head != 0 || len(evs) != 0 {
		t.Errorf("Events(bad tenant) = %v, %d, %v", evs, head, err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"a", "b", true},
		{"a/", "a0", true},
		{"a\x7f", "a\u0080", true},
		{"ä", "å", true},
		{"a\U0010FFFF", "b", true},
		{"\U0010FFFF\U0010FFFF", "", false},
		{"x\uD7FF", "x\uE000", true},
		{"\uFFFF", "\U00010000", true},
	} {
		got, ok := prefixEnd(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// bulkInsert copies n packages of tenant "bench" into c's schema, bypassing
// the event log. Package i has ID %026d(i+1) and metadata
// env=prod|dev|staging (i%3), build=i%100, team=i%7 when i%10 == 0 and
// rare=yes when i%5000 == 0; every package has 3 files.
func bulkInsert(tb testing.TB, c *Catalog, n int) {
	tb.Helper()
	ctx := context.Background()
	now := time.Now().UnixMilli()
	var pkgs, meta, files [][]any
	for i := range n {
		id := fmt.Sprintf("%026d", i+1)
		state := catalog.StateOpen
		if i%2 == 1 {
			state = catalog.StateFinalized
		}
		pkgs = append(pkgs, []any{id, "bench", fmt.Sprintf("producer-%d", i%5), fmt.Sprintf("subject-%d", i%1000),
			[]string{"short", "long"}[i%2], state, int64(3), int64(3), now})
		kv := [][2]string{{"env", []string{"prod", "dev", "staging"}[i%3]}, {"build", strconv.Itoa(i % 100)}}
		if i%10 == 0 {
			kv = append(kv, [2]string{"team", strconv.Itoa(i % 7)})
		}
		if i%5000 == 0 {
			kv = append(kv, [2]string{"rare", "yes"})
		}
		for _, e := range kv {
			meta = append(meta, []any{"bench", id, e[0], []byte(e[1])})
		}
		for j, path := range []string{"a/x", "b/y", "b/z"} {
			files = append(files, []any{fmt.Sprintf("%s-%d", id, j), "bench", id, path, int64(1), "sha256:x", "x", now})
		}
	}
	for _, cp := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"packages", []string{"id", "tenant", "producer", "subject", "retention_class", "state", "file_count", "total_size", "created_at"}, pkgs},
		{"package_metadata", []string{"tenant", "package_id", "key", "value"}, meta},
		{"files", []string{"id", "tenant", "package_id", "path", "size", "digest", "media_type", "created_at"}, files},
	} {
		if _, err := c.pool.CopyFrom(ctx, pgx.Identifier{cp.table}, cp.cols, pgx.CopyFromRows(cp.rows)); err != nil {
			tb.Fatalf("copy %s: %v", cp.table, err)
		}
	}
	if _, err := c.pool.Exec(ctx, `ANALYZE`); err != nil {
		tb.Fatal(err)
	}
}

func has(k string) catalog.MetaFilter   { return catalog.MetaFilter{Key: k} }
func eq(k, v string) catalog.MetaFilter { return catalog.MetaFilter{Key: k, Value: v, HasValue: true} }

// listCases are ListPackages filters over bulkInsert's data, with the index
// that drives each query.
var listCases = []struct {
	name   string
	f      catalog.PackageFilter
	index  string
	driver int // the metadata filter that drives the query, or -1
}{
	{"KeyValue", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("build", "42")}}, "package_metadata_tenant_key_value", 0},
	{"KeyValueBefore", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("build", "42")}, Before: fmt.Sprintf("%026d", 10_000)}, "package_metadata_tenant_key_value", 0},
	{"HasKey", catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("team")}}, "package_metadata_tenant_key", 0},
	{"HasKeyRare", catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("rare")}}, "package_metadata_tenant_key", 0},
	{"HasKeyThenKeyValue", catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("team"), eq("build", "40")}}, "package_metadata_tenant_key_value", 1},
	{"RareHasKeyThenKeyValue", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), has("rare")}}, "package_metadata_tenant_key", 1},
	{"TwoKeyValues", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), eq("build", "42")}}, "package_metadata_tenant_key_value", 1},
	{"TwoCommonKeyValues", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), has("build")}}, "package_metadata_tenant_key_value", 0},
	{"KeyValueAndColumns", catalog.PackageFilter{Producer: "producer-2", State: catalog.StateFinalized, Metadata: []catalog.MetaFilter{eq("build", "47")}}, "package_metadata_tenant_key_value", 0},
	{"Producer", catalog.PackageFilter{Producer: "producer-3"}, "packages_tenant_producer_id", -1},
	{"Subject", catalog.PackageFilter{Subject: "subject-7"}, "packages_tenant_subject_id", -1},
	{"NoFilter", catalog.PackageFilter{Before: fmt.Sprintf("%026d", 14_000)}, "packages_tenant_id", -1},
}

// TestQueryPlans checks that ListPackages and ListFiles walk an index in
// the result order (no full scans, no sorting) and read few rows to fill a
// page of 50 from 20,000 packages.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	c := openTest(t, freshSchema(t), nil)
	bulkInsert(t, c, 20_000)
	for _, tc := range listCases {
		f := tc.f
		f.Limit = 50
		driver, err := chooseDriver(ctx, c.pool, "bench", f)
		if err != nil {
			t.Fatal(err)
		}
		if driver != tc.driver {
			t.Errorf("%s: driven by metadata filter %d, want %d", tc.name, driver, tc.driver)
		}
		sql, args := listPackagesQuery("bench", f, driver)
		indexes := []string{tc.index}
		if tc.driver < 0 {
			// One tenant holds every package here: walking the primary
			// key costs the same, and the planner may take it.
			indexes = append(indexes, "packages_pkey")
		}
		checkPlan(t, tc.name, explain(t, c, sql, args), 2000, indexes...)
		got, err := c.ListPackages(ctx, "bench", f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Errorf("%s: no results", tc.name)
		}
	}
	pkg := fmt.Sprintf("%026d", 777)
	for _, f := range []catalog.FileFilter{{Limit: 10}, {Prefix: "b/", Limit: 10}, {Prefix: "b/", After: "b/y", Limit: 10}} {
		// Take packageFiles' query from a querier that records it.
		rec := &recorder{}
		if _, err := packageFiles(ctx, rec, pkg, f); !errors.Is(err, errRecorded) {
			t.Fatal(err)
		}
		checkPlan(t, fmt.Sprintf("ListFiles(%+v)", f), explain(t, c, rec.sql, rec.args), 10, "files_package_id_path_key")
		files, err := c.ListFiles(ctx, "bench", pkg, f)
		if err != nil || len(files) == 0 {
			t.Errorf("ListFiles(%+v) = %d files, %v", f, len(files), err)
		}
	}
}

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON)'s output.
type planNode struct {
	NodeType         string     `json:"Node Type"`
	Relation         string     `json:"Relation Name"`
	Index            string     `json:"Index Name"`
	ActualRows       float64    `json:"Actual Rows"`
	ActualLoops      float64    `json:"Actual Loops"`
	RemovedByFilter  float64    `json:"Rows Removed by Filter"`
	RemovedByRecheck float64    `json:"Rows Removed by Index Recheck"`
	Plans            []planNode `json:"Plans"`
}

// explain runs a query under EXPLAIN ANALYZE and returns its plan.
func explain(t *testing.T, c *Catalog, sql string, args []any) planNode {
	t.Helper()
	var out []byte
	if err := c.pool.QueryRow(context.Background(), "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&out); err != nil {
		t.Fatalf("EXPLAIN %s: %v", sql, err)
	}
	var plans []struct{ Plan planNode }
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("EXPLAIN output %s: %v", out, err)
	}
	return plans[0].Plan
}

// walk calls fn on n and its descendants, depth first, children in order.
func (n planNode) walk(depth int, fn func(n planNode, depth int)) {
	fn(n, depth)
	for _, c := range n.Plans {
		c.walk(depth+1, fn)
	}
}

// checkPlan checks that a plan neither scans a whole table nor sorts, that
// its first scan (the outermost loop) uses one of indexes, and that its
// scans read at most maxRows rows (returned or filtered out) in all.
func checkPlan(t *testing.T, name string, plan planNode, maxRows float64, indexes ...string) {
	t.Helper()
	var (
		b     strings.Builder
		first string
		rows  float64
	)
	plan.walk(0, func(n planNode, depth int) {
		fmt.Fprintf(&b, "%s%s", strings.Repeat("  ", depth), n.NodeType)
		if n.Index != "" {
			fmt.Fprintf(&b, " using %s", n.Index)
		}
		fmt.Fprintf(&b, " (rows %g, removed %g, loops %g)\n", n.ActualRows, n.RemovedByFilter+n.RemovedByRecheck, n.ActualLoops)
		if strings.Contains(n.NodeType, "Sort") {
			t.Errorf("%s: query sorts", name)
		}
		if n.NodeType == "Seq Scan" {
			t.Errorf("%s: full scan of %s", name, n.Relation)
		}
		if strings.Contains(n.NodeType, "Scan") {
			if first == "" {
				first = n.Index
				if first == "" {
					first = n.NodeType
				}
			}
			rows += (n.ActualRows + n.RemovedByFilter + n.RemovedByRecheck) * n.ActualLoops
		}
	})
	t.Logf("%s: %g rows read\n%s", name, rows, b.String())
	if !slices.Contains(indexes, first) {
		t.Errorf("%s: query is driven by %s, want one of %q", name, first, indexes)
	}
	if rows > maxRows {
		t.Errorf("%s: query reads %g rows, want at most %g", name, rows, maxRows)
	}
}

// recorder is a querier that records a query and returns no rows.
type recorder struct {
	querier
	sql  string
	args []any
}

func (r *recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return nil, errRecorded
}

var errRecorded = errors.New("recorded")

// BenchmarkListPackagesMetadataFilter lists a page of 50 of 100,000
// packages under each of listCases' filters.
func BenchmarkListPackagesMetadataFilter(b *testing.B) {
	c := openTest(b, freshSchema(b), nil)
	bulkInsert(b, c, 100_000)
	ctx := context.Background()
	for _, tc := range listCases {
		b.Run(tc.name, func(b *testing.B) {
			f := tc.f
			f.Limit = 50
			n := 0
			for b.Loop() {
				ps, err := c.ListPackages(ctx, "bench", f)
				if err != nil {
					b.Fatal(err)
				}
				n = len(ps)
			}
			if n == 0 {
				b.Fatal("no results")
			}
		})
	}
}
