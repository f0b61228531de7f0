package sqlite

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/artifactstore/artifactstore/catalog"
	"github.com/artifactstore/artifactstore/catalog/catalogtest"
)

func openTest(t testing.TB, path string, now func() time.Time) *Catalog {
	t.Helper()
	c, err := Open(context.Background(), path, Options{Now: now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCatalog(t *testing.T) {
	catalogtest.Run(t, catalogtest.Harness{
		New: func(t *testing.T, now func() time.Time) catalog.Catalog {
			return openTest(t, filepath.Join(t.TempDir(), "catalog.db"), now)
		},
	})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c := openTest(t, path, nil)
	p, err := c.CreatePackage(ctx, catalog.Package{ID: "01P", Tenant: "t", Metadata: map[string]string{"k": "v"}}, catalog.NewEvent{Type: "package.created"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c = openTest(t, path, nil)
	got, err := c.GetPackage(ctx, "t", p.ID)
	if err != nil {
		t.Fatalf("GetPackage after reopen: %v", err)
	}
	if got.Metadata["k"] != "v" || !got.CreatedAt.Equal(p.CreatedAt) {
		t.Errorf("after reopen: %+v, want %+v", got, p)
	}
	if got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt location %v, want UTC", got.CreatedAt.Location())
	}
	var n int
	if err := c.writer.Get(&n, `SELECT count(*) FROM schema_migrations`); err != nil {
		t.Fatal(err)
	}
	entries, _ := migrations.ReadDir("migrations")
	if n != len(entries) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(entries))
	}
	if _, head, err := c.Events(ctx, "t", 0, 10); err != nil || head != 1 {
		t.Errorf("Events after reopen: head %d, %v; want 1", head, err)
	}
}

func TestOpenOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%chars&x=y")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cat?.db")
	c := openTest(t, path, nil)
	if _, err := c.CreatePackage(context.Background(), catalog.Package{ID: "01P", Tenant: "t"}, catalog.NewEvent{Type: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %s: %v", path, err)
	}
	// Relative paths work too.
	t.Chdir(dir)
	openTest(t, "relative.db", nil)
	if _, err := os.Stat(filepath.Join(dir, "relative.db")); err != nil {
		t.Errorf("relative database: %v", err)
	}
}

func TestPragmas(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "catalog.db"), nil)
	for _, tc := range []struct {
		pragma string
		want   string
		reader bool
	}{
		{"journal_mode", "wal", false},
		{"synchronous", "2", false}, // FULL
		{"foreign_keys", "1", false},
		{"busy_timeout", busyTimeout, false},
		{"query_only", "0", false},
		{"journal_mode", "wal", true},
		{"query_only", "1", true},
		{"busy_timeout", busyTimeout, true},
	} {
		db := c.writer
		if tc.reader {
			db = c.reader
		}
		var got string
		if err := db.Get(&got, "PRAGMA "+tc.pragma); err != nil {
			t.Fatal(err)
		}
		if !strings.EqualFold(got, tc.want) {
			t.Errorf("reader=%v PRAGMA %s = %s, want %s", tc.reader, tc.pragma, got, tc.want)
		}
	}
	if _, err := c.reader.Exec(`DELETE FROM packages`); err == nil {
		t.Error("the reader pool can write")
	}
}

// TestReadersDoNotWaitForWriter holds a write transaction open and reads.
func TestReadersDoNotWaitForWriter(t *testing.T) {
	ctx := context.Background()
	c := openTest(t, filepath.Join(t.TempDir(), "catalog.db"), nil)
	if _, err := c.CreatePackage(ctx, catalog.Package{ID: "01A", Tenant: "t"}, catalog.NewEvent{Type: "x"}); err != nil {
		t.Fatal(err)
	}
	tx, err := c.writer.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := createPackage(ctx, tx, catalog.Package{ID: "01B", Tenant: "t"}, 1, catalog.NewEvent{Type: "x"}); err != nil {
		t.Fatal(err)
	}

	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	ps, err := c.ListPackages(rctx, "t", catalog.PackageFilter{Limit: 10})
	if err != nil {
		t.Fatalf("ListPackages during a write: %v", err)
	}
	if len(ps) != 1 || ps[0].ID != "01A" {
		t.Errorf("ListPackages during a write saw %d packages, want only the committed one", len(ps))
	}
	if _, head, err := c.Events(rctx, "t", 0, 10); err != nil || head != 1 {
		t.Errorf("Events during a write: head %d, %v; want 1", head, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("reads took %v during a write", d)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPackage(ctx, "t", "01B"); err != nil {
		t.Errorf("GetPackage after commit: %v", err)
	}
}

func TestCanceledWriteLeavesNothing(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "catalog.db"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.CreatePackage(ctx, catalog.Package{ID: "01A", Tenant: "t"}, catalog.NewEvent{Type: "x"})
	if err == nil {
		t.Fatal("CreatePackage with a canceled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Logf("error: %v", err)
	}
	if _, err := c.GetPackage(context.Background(), "t", "01A"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("GetPackage after canceled create: %v, want ErrNotFound", err)
	}
	// The writer connection is usable afterwards.
	if _, err := c.CreatePackage(context.Background(), catalog.Package{ID: "01A", Tenant: "t"}, catalog.NewEvent{Type: "x"}); err != nil {
		t.Errorf("CreatePackage after a canceled one: %v", err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"a", "b", true},
		{"a/", "a0", true},
		{"a\xff", "b", true},
		{"\xff\xff", "", false},
		{"ä", "\xc3\xa5", true},
	} {
		got, ok := prefixEnd(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// bulkInsert inserts n packages of tenant "bench" in one transaction,
// bypassing the event log. Package i has ID %026d(i+1) and metadata
// env=prod|dev|staging (i%3), build=i%100, team=i%7 when i%10 == 0 and
// rare=yes when i%5000 == 0.
func bulkInsert(tb testing.TB, c *Catalog, n int) {
	tb.Helper()
	ctx := context.Background()
	tx, err := c.writer.BeginTxx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	pkgStmt, err := tx.PrepareContext(ctx, `INSERT INTO packages
		(id, tenant, producer, subject, retention_class, state, file_count, total_size, created_at)
		VALUES (?, 'bench', ?, ?, ?, ?, 0, 0, ?)`)
	if err != nil {
		tb.Fatal(err)
	}
	metaStmt, err := tx.PrepareContext(ctx, `INSERT INTO package_metadata (tenant, package_id, key, value) VALUES ('bench', ?, ?, ?)`)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for i := range n {
		id := fmt.Sprintf("%026d", i+1)
		state := catalog.StateOpen
		if i%2 == 1 {
			state = catalog.StateFinalized
		}
		if _, err := pkgStmt.ExecContext(ctx, id, fmt.Sprintf("producer-%d", i%5), fmt.Sprintf("subject-%d", i%1000),
			[]string{"short", "long"}[i%2], state, now); err != nil {
			tb.Fatal(err)
		}
		meta := [][2]string{{"env", []string{"prod", "dev", "staging"}[i%3]}, {"build", strconv.Itoa(i % 100)}}
		if i%10 == 0 {
			meta = append(meta, [2]string{"team", strconv.Itoa(i % 7)})
		}
		if i%5000 == 0 {
			meta = append(meta, [2]string{"rare", "yes"})
		}
		for _, kv := range meta {
			if _, err := metaStmt.ExecContext(ctx, id, kv[0], kv[1]); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}

func has(k string) catalog.MetaFilter   { return catalog.MetaFilter{Key: k} }
func eq(k, v string) catalog.MetaFilter { return catalog.MetaFilter{Key: k, Value: v, HasValue: true} }

// listCases are ListPackages filters over bulkInsert's data, with the index
// each query must walk.
var listCases = []struct {
	name   string
	f      catalog.PackageFilter
	index  string // that drives the query
	driver int    // the metadata filter that drives the query, or -1
}{
	{"KeyValue", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("build", "42")}}, "package_metadata_tenant_key_value", 0},
	{"KeyValueBefore", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("build", "42")}, Before: fmt.Sprintf("%026d", 50_000)}, "package_metadata_tenant_key_value", 0},
	{"HasKey", catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("team")}}, "package_metadata_tenant_key", 0},
	{"HasKeyRare", catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("rare")}}, "package_metadata_tenant_key", 0},
	{"HasKeyThenKeyValue", catalog.PackageFilter{Metadata: []catalog.MetaFilter{has("team"), eq("build", "40")}}, "package_metadata_tenant_key_value", 1},
	{"RareHasKeyThenKeyValue", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), has("rare")}}, "package_metadata_tenant_key", 1},
	{"TwoKeyValues", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), eq("build", "42")}}, "package_metadata_tenant_key_value", 1},
	{"TwoCommonKeyValues", catalog.PackageFilter{Metadata: []catalog.MetaFilter{eq("env", "prod"), has("build")}}, "package_metadata_tenant_key_value", 0},
	{"KeyValueAndColumns", catalog.PackageFilter{Producer: "producer-2", State: catalog.StateFinalized, Metadata: []catalog.MetaFilter{eq("build", "47")}}, "package_metadata_tenant_key_value", 0},
	{"Producer", catalog.PackageFilter{Producer: "producer-3"}, "packages_tenant_producer_id", -1},
	{"Subject", catalog.PackageFilter{Subject: "subject-7"}, "packages_tenant_subject_id", -1},
	{"NoFilter", catalog.PackageFilter{Before: fmt.Sprintf("%026d", 70_000)}, "packages_tenant_id", -1},
}

// TestListPackagesQueryPlan checks that ListPackages walks an index in the
// result order: no full scans, no sorting.
func TestListPackagesQueryPlan(t *testing.T) {
	ctx := context.Background()
	c := openTest(t, filepath.Join(t.TempDir(), "catalog.db"), nil)
	bulkInsert(t, c, 2000)
	for _, tc := range listCases {
		f := tc.f
		f.Limit = 50
		tx, err := c.reader.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		driver, err := chooseDriver(ctx, tx, "bench", f)
		tx.Rollback()
		if err != nil {
			t.Fatal(err)
		}
		if driver != tc.driver {
			t.Errorf("%s: driven by metadata filter %d, want %d", tc.name, driver, tc.driver)
		}
		q, args := listPackagesQuery("bench", f, driver)
		rows, err := c.reader.Queryx("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		all := strings.Join(plan, "\n")
		t.Logf("%s:\n%s", tc.name, all)
		if strings.Contains(all, "TEMP B-TREE") {
			t.Errorf("%s: query sorts:\n%s", tc.name, all)
		}
		for _, line := range plan {
			if strings.HasPrefix(line, "SCAN ") && !strings.Contains(line, "COVERING INDEX") && !strings.Contains(line, " USING INDEX") {
				t.Errorf("%s: full scan %q", tc.name, line)
			}
		}
		if !strings.Contains(plan[0], tc.index+" ") && !strings.HasSuffix(plan[0], tc.index) && !strings.Contains(plan[0], tc.index+"(") {
			t.Errorf("%s: query is driven by %q, want index %s", tc.name, plan[0], tc.index)
		}

		// And the result is right.
		got, err := c.ListPackages(ctx, "bench", f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Errorf("%s: no results", tc.name)
		}
	}
}

// BenchmarkListPackagesMetadataFilter lists a page of 50 of 100,000
// packages under each of listCases' filters.
func BenchmarkListPackagesMetadataFilter(b *testing.B) {
	c := openTest(b, filepath.Join(b.TempDir(), "catalog.db"), nil)
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

// TestSharedClaims runs the claim race through several catalogs on one
// database file, as several processes would.
func TestSharedClaims(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	catalogtest.RunSharedClaims(t, openTest(t, path, nil), openTest(t, path, nil), openTest(t, path, nil))
}

// TestMigrateUploadClaims opens a database that only has the first
// migration and a session in it: the claim columns are added, and the old
// session is unclaimed.
func TestMigrateUploadClaims(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	db, err := sqlx.Open("sqlite3", dsn(path, url.Values{"_journal_mode": {"WAL"}}))
	if err != nil {
		t.Fatal(err)
	}
	body, err := migrations.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for _, q := range []string{
		`CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`,
		string(body),
		`INSERT INTO schema_migrations (name, applied_at) VALUES ('0001_init.sql', 1)`,
		fmt.Sprintf(`INSERT INTO uploads (id, tenant, "offset", size, digest, hash_state, created_at, expires_at)
			VALUES ('01U', 't', 5, -1, '', x'73', %d, %d)`, now, now+time.Hour.Milliseconds()),
	} {
		if _, err := db.Exec(q); err != nil {
			db.Close()
			t.Fatalf("%.40s: %v", q, err)
		}
	}
	db.Close()

	c := openTest(t, path, nil)
	var n int
	if err := c.writer.Get(&n, `SELECT count(*) FROM schema_migrations`); err != nil {
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
