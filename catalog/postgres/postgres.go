// Package postgres implements catalog.Catalog on PostgreSQL (15 or later),
// with github.com/jackc/pgx/v5. Many processes may share one database.
//
// # Transactions and locks
//
// Every change runs in one READ COMMITTED transaction and serializes with
// the changes it could race with through explicit row locks, not through
// SERIALIZABLE (whose failures would need retry loops around callbacks such
// as Finalize's BuildFunc). READ COMMITTED gives every statement a fresh
// snapshot, so a statement that runs after a lock was granted sees everything
// the previous holder committed; and a locking statement (UPDATE, SELECT ...
// FOR UPDATE, INSERT ... ON CONFLICT DO UPDATE) that had to wait re-reads the
// newest version of its row before it decides. The locks, always taken in
// this order (so two changes never wait for each other in a cycle):
//
//   - an upload session row (CompleteUpload: SELECT ... FOR UPDATE;
//     ClaimUpload and AdvanceUpload: their UPDATE);
//   - a package row: AddFile and CompleteUpload take it with the UPDATE that
//     counts the file (state = 'open' is part of its WHERE, re-checked on
//     the newest version), Finalize with SELECT ... FOR NO KEY UPDATE. The
//     two conflict, so a file is either counted and committed before
//     Finalize reads the package and its files, or its AddFile waits and
//     then finds the package finalized;
//   - last, the tenant's event_heads row, bumped by INSERT ... ON CONFLICT
//     DO UPDATE and held until commit: the tenant's next writer waits for
//     the commit and takes the next number, so event seqs are gapless and
//     in commit order, also across processes. A sequence would be neither:
//     nextval hands out numbers at call time, transactions commit in
//     another order (a reader could see 6 before 5 exists, move its cursor
//     past 5 and never read it) and a rolled-back transaction burns its
//     number.
//
// Reads, and the changes that are one statement (creating, claiming,
// advancing and deleting upload sessions), run outside an explicit
// transaction; the one read that combines two values that must agree
// (Events: the page and the head) is a single statement, so it sees one
// snapshot.
//
// # Text
//
// Package ids, file ids and paths have the "C" collation, so they sort
// bytewise (UTF-8 byte order is code point order) whatever the database's
// default collation, and the database must use the UTF8 encoding (Open
// checks). PostgreSQL text holds only valid UTF-8 without NUL: metadata
// values are stored as bytea so any Go string round-trips, and lookups by a
// string PostgreSQL could not hold simply find nothing.
//
// # Notifications
//
// Every transaction that writes an event also runs pg_notify on the channel
// artifactstore_events with the tenant as payload; PostgreSQL delivers it on
// commit. Listen receives them. They are hints (not durable, possibly
// coalesced): a listener re-reads Events from its cursor. PostgreSQL
// serializes the commits of notifying transactions on one database-wide
// lock, which bounds the database's rate of event-writing commits (in the
// thousands per second) before anything else does.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/artifactstore/artifactstore/catalog"
)

// Options configure a Catalog.
type Options struct {
	// Now is the catalog's clock; nil means time.Now.
	Now func() time.Time
}

// Catalog is a catalog.Catalog backed by a PostgreSQL database. It is safe
// for concurrent use, and many Catalogs (in many processes) may share one
// database.
type Catalog struct {
	pool   *pgxpool.Pool
	now    func() time.Time
	closed atomic.Bool

	mu        sync.Mutex
	listeners map[*struct{}]context.CancelFunc // running Listen calls, canceled by Close

	// onListen, when set (by tests), is called once Listen is listening.
	onListen func()
}

var _ catalog.Catalog = (*Catalog)(nil)

// NotifyChannel is the channel every event-writing transaction notifies,
// with the event's tenant as payload.
const NotifyChannel = "artifactstore_events"

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the pg_advisory_xact_lock key that serializes migrations
// ("artstore" in ASCII).
const migrationLock int64 = 0x61727473746f7265

// Open connects to the database at dsn (a postgres:// URL or a keyword/value
// string, as pgx parses them; pool settings such as pool_max_conns work too)
// and brings its schema up to date. Tables are created in the first schema
// of the connection's search_path. Several processes may Open the same
// database at once. The caller closes the Catalog.
func Open(ctx context.Context, dsn string, opts Options) (*Catalog, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("catalog/postgres: open: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("catalog/postgres: open: %w", err)
	}
	c := &Catalog{pool: pool, now: opts.Now, listeners: map[*struct{}]context.CancelFunc{}}
	if c.now == nil {
		c.now = time.Now
	}
	if err := c.init(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("catalog/postgres: open: %w", err)
	}
	return c, nil
}

// init checks the encoding and applies the migrations.
func (c *Catalog) init(ctx context.Context) error {
	var enc string
	if err := c.pool.QueryRow(ctx, `SHOW server_encoding`).Scan(&enc); err != nil {
		return err
	}
	if !strings.EqualFold(enc, "UTF8") {
		return fmt.Errorf("database encoding is %s, not UTF8", enc)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, name := range names {
		if err := c.migrate(ctx, name); err != nil {
			return fmt.Errorf("migration %s: %w", path.Base(name), err)
		}
	}
	return nil
}

// migrate applies one migration unless it was applied already, in one
// transaction that first takes a transaction-scoped advisory lock: replicas
// starting at once apply each migration once, in turn. The transaction is
// READ COMMITTED so the statements after the lock see what the previous
// holder committed (schema_migrations and its tables).
func (c *Catalog) migrate(ctx context.Context, name string) error {
	body, err := fs.ReadFile(migrations, name)
	if err != nil {
		return err
	}
	base := path.Base(name)
	return pgx.BeginTxFunc(ctx, c.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			name       text PRIMARY KEY,
			applied_at bigint NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var applied bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1)`, base).Scan(&applied); err != nil {
			return err
		}
		if applied {
			return nil
		}
		if _, err := tx.Exec(ctx, string(body)); err != nil { // no arguments: the simple protocol runs every statement
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)`, base, c.now().UnixMilli())
		return err
	})
}

// Close closes the connection pool and stops running Listen calls. Later
// calls return catalog.ErrClosed.
func (c *Catalog) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("catalog/postgres: Close: %w", catalog.ErrClosed)
	}
	c.mu.Lock()
	for _, cancel := range c.listeners {
		cancel()
	}
	c.mu.Unlock()
	c.pool.Close()
	return nil
}

// querier is what pgxpool.Pool and pgx.Tx have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// write runs fn in a READ COMMITTED transaction and commits it if fn
// succeeds. The clock is read once, before fn, so (unlike in SQLite, where
// the clock is read under the database's write lock) a change that waited
// for a lock may commit, and take its seq, after a change with a later
// time; with many processes, whose clocks differ anyway, event times are
// not ordered by seq.
func (c *Catalog) write(ctx context.Context, op string, fn func(tx pgx.Tx, now int64) error) error {
	if c.closed.Load() {
		return fmt.Errorf("catalog/postgres: %s: %w", op, catalog.ErrClosed)
	}
	tx, err := c.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return c.wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // after Commit: a no-op
	if err := fn(tx, c.now().UnixMilli()); err != nil {
		return c.wrap(op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return c.wrap(op, err)
	}
	return nil
}

// single runs fn on the pool: each of its statements is a transaction of
// its own. Reads that need one snapshot are one statement; so are the
// changes that need no lock beyond their statement's.
func (c *Catalog) single(ctx context.Context, op string, fn func(q querier, now int64) error) error {
	if c.closed.Load() {
		return fmt.Errorf("catalog/postgres: %s: %w", op, catalog.ErrClosed)
	}
	if err := fn(c.pool, c.now().UnixMilli()); err != nil {
		return c.wrap(op, err)
	}
	return nil
}

// buildError carries a BuildFunc's error through wrap unchanged.
type buildError struct{ err error }

func (e buildError) Error() string { return e.err.Error() }
func (e buildError) Unwrap() error { return e.err }

// wrap translates database errors into the catalog's sentinels.
func (c *Catalog) wrap(op string, err error) error {
	var (
		be buildError
		pe *pgconn.PgError
	)
	switch {
	case errors.As(err, &be):
		return fmt.Errorf("catalog/postgres: %s: build: %w", op, be.err)
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, catalog.ErrConflict),
		errors.Is(err, catalog.ErrFinalized), errors.Is(err, catalog.ErrClosed):
		return fmt.Errorf("catalog/postgres: %s: %w", op, err)
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("catalog/postgres: %s: %w", op, catalog.ErrNotFound)
	case errors.As(err, &pe) && pe.Code == "23505": // unique_violation
		return fmt.Errorf("catalog/postgres: %s: %w (%v)", op, catalog.ErrConflict, err)
	case c.closed.Load():
		// The pool closed under a running call.
		return fmt.Errorf("catalog/postgres: %s: %w (%v)", op, catalog.ErrClosed, err)
	}
	return fmt.Errorf("catalog/postgres: %s: %w", op, err)
}

// storable reports whether PostgreSQL text can hold every s: valid UTF-8
// without NUL. No stored row equals a string that is not.
func storable(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return false
		}
	}
	return true
}

func fromMS(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// blob returns b, or an empty (not NULL) slice for nil.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// args collects a query's arguments; arg returns the next placeholder.
type args []any

func (a *args) arg(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// compare returns the condition `col op v` on a "C"-collated column,
// bytewise for any v: a string text cannot hold is compared as bytes (which
// cannot use the column's index, but no well-formed input needs it).
func (a *args) compare(col, op, v string) string {
	if storable(v) {
		return col + " " + op + " " + a.arg(v)
	}
	return "convert_to(" + col + ", 'UTF8') " + op + " " + a.arg([]byte(v))
}

// Packages.

// packageRowColumns are the columns of a package row but its manifest.
const packageRowColumns = `p.id, p.tenant, p.producer, p.subject, p.retention_class, p.state,
	p.file_count, p.total_size, p.created_at, p.finalized_at, p.manifest_digest`

// packageColumns reads a package row and its metadata (keys and values in
// key order) from packages p.
const packageColumns = packageRowColumns + `,
	array(SELECT m.key FROM package_metadata m WHERE m.package_id = p.id ORDER BY m.key),
	array(SELECT m.value FROM package_metadata m WHERE m.package_id = p.id ORDER BY m.key)`

// scanPackage scans packageColumns (and extra destinations after them).
func scanPackage(row pgx.Row, extra ...any) (catalog.Package, error) {
	var (
		p            catalog.Package
		createdAt    int64
		finalizedAt  *int64
		digest       *string
		keys         []string
		values       [][]byte
		destinations = []any{&p.ID, &p.Tenant, &p.Producer, &p.Subject, &p.RetentionClass, &p.State,
			&p.FileCount, &p.TotalSize, &createdAt, &finalizedAt, &digest, &keys, &values}
	)
	if err := row.Scan(append(destinations, extra...)...); err != nil {
		return catalog.Package{}, err
	}
	if len(keys) != len(values) {
		return catalog.Package{}, fmt.Errorf("package %s: %d metadata keys, %d values", p.ID, len(keys), len(values))
	}
	p.CreatedAt = fromMS(createdAt)
	if finalizedAt != nil {
		p.FinalizedAt = fromMS(*finalizedAt)
	}
	if digest != nil {
		p.ManifestDigest = *digest
	}
	p.Metadata = make(map[string]string, len(keys))
	for i, k := range keys {
		p.Metadata[k] = string(values[i])
	}
	return p, nil
}

// CreatePackage implements catalog.Catalog.
func (c *Catalog) CreatePackage(ctx context.Context, p catalog.Package, ev catalog.NewEvent) (catalog.Package, error) {
	var out catalog.Package
	err := c.write(ctx, "CreatePackage", func(tx pgx.Tx, now int64) error {
		var err error
		out, err = createPackage(ctx, tx, p, now, ev)
		return err
	})
	return out, err
}

func createPackage(ctx context.Context, tx pgx.Tx, p catalog.Package, now int64, ev catalog.NewEvent) (catalog.Package, error) {
	out := catalog.Package{
		ID:             p.ID,
		Tenant:         p.Tenant,
		Producer:       p.Producer,
		Subject:        p.Subject,
		RetentionClass: p.RetentionClass,
		Metadata:       maps.Clone(p.Metadata),
		State:          catalog.StateOpen,
		CreatedAt:      fromMS(now),
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO packages
		(id, tenant, producer, subject, retention_class, state, file_count, total_size, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7)`,
		out.ID, out.Tenant, out.Producer, out.Subject, out.RetentionClass, out.State, now); err != nil {
		return catalog.Package{}, err
	}
	if len(out.Metadata) > 0 {
		keys := slices.Sorted(maps.Keys(out.Metadata))
		values := make([][]byte, len(keys))
		for i, k := range keys {
			values[i] = blob([]byte(out.Metadata[k]))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO package_metadata (tenant, package_id, key, value)
			SELECT $1, $2, k, v FROM unnest($3::text[], $4::bytea[]) AS kv (k, v)`,
			out.Tenant, out.ID, keys, values); err != nil {
			return catalog.Package{}, err
		}
	}
	if err := appendEvent(ctx, tx, out.Tenant, now, out.ID, "", ev); err != nil {
		return catalog.Package{}, err
	}
	return out, nil
}

// GetPackage implements catalog.Catalog.
func (c *Catalog) GetPackage(ctx context.Context, tenant, id string) (catalog.Package, error) {
	var p catalog.Package
	err := c.single(ctx, "GetPackage", func(q querier, _ int64) error {
		var err error
		p, err = getPackage(ctx, q, tenant, id, "")
		return err
	})
	return p, err
}

// getPackage reads a package of tenant (or any tenant), with suffix (a
// locking clause) appended to the query, and extra destinations for columns
// appended to packageColumns.
func getPackage(ctx context.Context, q querier, tenant, id, suffix string, extra ...string) (catalog.Package, error) {
	if !storable(tenant, id) {
		return catalog.Package{}, fmt.Errorf("package %s: %w", id, catalog.ErrNotFound)
	}
	var a args
	sql := `SELECT ` + packageColumns + ` FROM packages p WHERE p.id = ` + a.arg(id)
	if tenant != catalog.AnyTenant {
		sql += ` AND p.tenant = ` + a.arg(tenant)
	}
	p, err := scanPackage(q.QueryRow(ctx, sql+suffix, a...))
	if errors.Is(err, pgx.ErrNoRows) {
		return catalog.Package{}, fmt.Errorf("package %s: %w", id, catalog.ErrNotFound)
	}
	return p, err
}

// ListPackages implements catalog.Catalog.
func (c *Catalog) ListPackages(ctx context.Context, tenant string, f catalog.PackageFilter) ([]catalog.Package, error) {
	var out []catalog.Package
	err := c.single(ctx, "ListPackages", func(q querier, _ int64) error {
		var err error
		out, err = listPackages(ctx, q, tenant, f)
		return err
	})
	return out, err
}

func listPackages(ctx context.Context, q querier, tenant string, f catalog.PackageFilter) ([]catalog.Package, error) {
	if f.Limit <= 0 || !filterStorable(tenant, f) {
		return nil, nil
	}
	driver, err := chooseDriver(ctx, q, tenant, f)
	if err != nil {
		return nil, err
	}
	sql, a := listPackagesQuery(tenant, f, driver)
	// Unnamed statements (their descriptions cached) are planned for
	// their arguments every time: a cached generic plan could not know how
	// selective a filter is, nor the Limit.
	rows, err := q.Query(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, a...)...)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (catalog.Package, error) { return scanPackage(row) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// filterStorable reports whether every string f compares for equality could
// be stored; if one cannot, nothing matches.
func filterStorable(tenant string, f catalog.PackageFilter) bool {
	if !storable(tenant, f.Producer, f.Subject, f.RetentionClass, f.State) {
		return false
	}
	for _, m := range f.Metadata {
		if !storable(m.Key) {
			return false
		}
	}
	return true
}

// probeCap bounds how many index entries chooseDriver counts per filter.
const probeCap = 2000

// chooseDriver picks the metadata filter that drives ListPackages' query
// (an index into f.Metadata), or -1 for none: without a tenant, or without
// metadata filters, the query walks packages. Of several filters it takes
// the one with the fewest matching index entries (counting each, in one
// statement, up to probeCap), else the first key=value filter, else the
// first.
func chooseDriver(ctx context.Context, q querier, tenant string, f catalog.PackageFilter) (int, error) {
	if tenant == catalog.AnyTenant || len(f.Metadata) == 0 {
		return -1, nil
	}
	best := 0
	for i, m := range f.Metadata {
		if m.HasValue {
			best = i
			break
		}
	}
	if len(f.Metadata) == 1 {
		return best, nil
	}
	var (
		a     args
		cols  []string
		limit = a.arg(probeCap)
		tn    = a.arg(tenant)
	)
	for _, m := range f.Metadata {
		sub := `SELECT 1 FROM package_metadata WHERE tenant = ` + tn + ` AND key = ` + a.arg(m.Key)
		if m.HasValue {
			sub += ` AND value = ` + a.arg([]byte(m.Value))
		}
		if f.Before != "" {
			sub += ` AND ` + a.compare("package_id", "<", f.Before)
		}
		cols = append(cols, `(SELECT count(*) FROM (`+sub+` LIMIT `+limit+`) s)`)
	}
	counts := make([]int64, len(cols))
	dest := make([]any, len(cols))
	for i := range counts {
		dest[i] = &counts[i]
	}
	if err := q.QueryRow(ctx, `SELECT `+strings.Join(cols, ", "), a...).Scan(dest...); err != nil {
		return 0, err
	}
	bestN := int64(probeCap)
	for i, n := range counts {
		if n < bestN {
			best, bestN = i, n
		}
	}
	return best, nil
}

// listPackagesQuery builds ListPackages' query. Without a driver (-1) it
// walks packages backwards by id, through one of the packages_tenant_*
// indexes or (when the tenant is not selective, or for any tenant) the
// primary key, and filters. With one, the metadata filter f.Metadata[driver]
// drives the query: it walks that filter's package_metadata index backwards
// by package_id and, for each entry, looks the package up by primary key
// and checks the other filters there (the other metadata filters on
// package_metadata's primary key), so a page reads about Limit index
// entries when the other filters match often, whatever the table's size.
// The lookup is a LATERAL subquery with OFFSET 0, which the planner can
// neither flatten nor reorder: the index walk stays the outer loop whatever
// the statistics say (as CROSS JOIN fixes the order in SQLite).
func listPackagesQuery(tenant string, f catalog.PackageFilter, driver int) (string, []any) {
	var (
		dwhere, pwhere []string
		a              args
	)
	metas := f.Metadata
	if driver >= 0 {
		m := metas[driver]
		metas = slices.Delete(slices.Clone(metas), driver, driver+1)
		dwhere = append(dwhere, "d.tenant = "+a.arg(tenant), "d.key = "+a.arg(m.Key))
		if m.HasValue {
			dwhere = append(dwhere, "d.value = "+a.arg([]byte(m.Value)))
		}
		if f.Before != "" {
			dwhere = append(dwhere, a.compare("d.package_id", "<", f.Before))
		}
		pwhere = append(pwhere, "p.id = d.package_id")
	} else if f.Before != "" {
		pwhere = append(pwhere, a.compare("p.id", "<", f.Before))
	}
	if tenant != catalog.AnyTenant {
		pwhere = append(pwhere, "p.tenant = "+a.arg(tenant))
	}
	for _, c := range []struct{ col, v string }{
		{"p.producer", f.Producer},
		{"p.subject", f.Subject},
		{"p.retention_class", f.RetentionClass},
		{"p.state", f.State},
	} {
		if c.v != "" {
			pwhere = append(pwhere, c.col+" = "+a.arg(c.v))
		}
	}
	for i, m := range metas {
		t := "m" + strconv.Itoa(i)
		c := "EXISTS (SELECT 1 FROM package_metadata " + t + " WHERE " + t + ".package_id = p.id AND " + t + ".key = " + a.arg(m.Key)
		if m.HasValue {
			c += " AND " + t + ".value = " + a.arg([]byte(m.Value))
		}
		pwhere = append(pwhere, c+")")
	}
	var sql string
	if driver >= 0 {
		sql = "SELECT " + packageColumns + " FROM package_metadata d CROSS JOIN LATERAL (SELECT " + packageRowColumns +
			" FROM packages p WHERE " + strings.Join(pwhere, " AND ") + " OFFSET 0) p" +
			" WHERE " + strings.Join(dwhere, " AND ") + " ORDER BY d.package_id DESC"
	} else {
		sql = "SELECT " + packageColumns + " FROM packages p"
		if len(pwhere) > 0 {
			sql += " WHERE " + strings.Join(pwhere, " AND ")
		}
		sql += " ORDER BY p.id DESC"
	}
	return sql + " LIMIT " + a.arg(f.Limit), a
}

// Finalize implements catalog.Catalog.
func (c *Catalog) Finalize(ctx context.Context, tenant, id string, evType string, build catalog.BuildFunc) (catalog.Package, error) {
	var out catalog.Package
	err := c.write(ctx, "Finalize", func(tx pgx.Tx, now int64) error {
		var err error
		out, err = finalize(ctx, tx, tenant, id, now, evType, build)
		return err
	})
	return out, err
}

// finalize locks the package row (FOR NO KEY UPDATE, which conflicts with
// the row lock AddFile's UPDATE takes) before it reads the package and its
// files, and holds it until commit: every AddFile either committed before
// (and its file is read, by a later statement with a later snapshot) or
// waits and then finds the package finalized.
func finalize(ctx context.Context, tx pgx.Tx, tenant, id string, now int64, evType string, build catalog.BuildFunc) (catalog.Package, error) {
	p, err := getPackage(ctx, tx, tenant, id, " FOR NO KEY UPDATE OF p")
	if err != nil {
		return catalog.Package{}, err
	}
	if p.State == catalog.StateFinalized {
		return p, nil
	}
	files, err := packageFiles(ctx, tx, p.ID, catalog.FileFilter{})
	if err != nil {
		return catalog.Package{}, err
	}
	p.State, p.FinalizedAt = catalog.StateFinalized, fromMS(now)
	fin, err := build(p, files)
	if err != nil {
		return catalog.Package{}, buildError{err}
	}
	if _, err := tx.Exec(ctx, `UPDATE packages
		SET state = $1, finalized_at = $2, manifest_digest = $3, manifest = $4
		WHERE id = $5`, catalog.StateFinalized, now, fin.Digest, blob(fin.Manifest), p.ID); err != nil {
		return catalog.Package{}, err
	}
	if err := appendEvent(ctx, tx, p.Tenant, now, p.ID, "", catalog.NewEvent{Type: evType, Data: fin.EventData}); err != nil {
		return catalog.Package{}, err
	}
	p.ManifestDigest = fin.Digest
	return p, nil
}

// GetManifest implements catalog.Catalog.
func (c *Catalog) GetManifest(ctx context.Context, tenant, id string) (catalog.Package, []byte, error) {
	var (
		p        catalog.Package
		manifest []byte
	)
	err := c.single(ctx, "GetManifest", func(q querier, _ int64) error {
		if !storable(tenant, id) {
			return fmt.Errorf("package %s: %w", id, catalog.ErrNotFound)
		}
		var a args
		sql := `SELECT ` + packageColumns + `, p.manifest FROM packages p WHERE p.id = ` + a.arg(id)
		if tenant != catalog.AnyTenant {
			sql += ` AND p.tenant = ` + a.arg(tenant)
		}
		var err error
		if p, err = scanPackage(q.QueryRow(ctx, sql, a...), &manifest); err != nil {
			return err
		}
		if p.State != catalog.StateFinalized {
			return fmt.Errorf("package %s is open: %w", id, catalog.ErrConflict)
		}
		return nil
	})
	if err != nil {
		return catalog.Package{}, nil, err
	}
	return p, manifest, nil
}

// Files.

const fileColumns = `id, tenant, package_id, path, size, digest, media_type, created_at`

func scanFile(row pgx.Row) (catalog.File, error) {
	var (
		f  catalog.File
		ms int64
	)
	if err := row.Scan(&f.ID, &f.Tenant, &f.PackageID, &f.Path, &f.Size, &f.Digest, &f.MediaType, &ms); err != nil {
		return catalog.File{}, err
	}
	f.CreatedAt = fromMS(ms)
	return f, nil
}

// AddFile implements catalog.Catalog.
func (c *Catalog) AddFile(ctx context.Context, f catalog.File, ev catalog.NewEvent) (catalog.File, error) {
	var out catalog.File
	err := c.write(ctx, "AddFile", func(tx pgx.Tx, now int64) error {
		var err error
		out, err = addFile(ctx, tx, f, now, ev)
		return err
	})
	return out, err
}

// addFile adds f to its open package, counts it and writes ev. The UPDATE
// that counts the file locks the package row until commit and, if it had to
// wait for a Finalize, re-checks state = 'open' on the finalized row.
func addFile(ctx context.Context, tx pgx.Tx, f catalog.File, now int64, ev catalog.NewEvent) (catalog.File, error) {
	if !storable(f.Tenant, f.PackageID) {
		return catalog.File{}, fmt.Errorf("package %s: %w", f.PackageID, catalog.ErrNotFound)
	}
	tag, err := tx.Exec(ctx, `UPDATE packages SET file_count = file_count + 1, total_size = total_size + $1
		WHERE id = $2 AND tenant = $3 AND state = 'open'`, f.Size, f.PackageID, f.Tenant)
	if err != nil {
		return catalog.File{}, err
	}
	if tag.RowsAffected() == 0 {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM packages WHERE id = $1 AND tenant = $2`, f.PackageID, f.Tenant).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows) || err == nil && state == catalog.StateOpen: // created after the UPDATE began
			return catalog.File{}, fmt.Errorf("package %s: %w", f.PackageID, catalog.ErrNotFound)
		case err != nil:
			return catalog.File{}, err
		}
		return catalog.File{}, fmt.Errorf("package %s: %w", f.PackageID, catalog.ErrFinalized)
	}
	f.CreatedAt = fromMS(now)
	if _, err := tx.Exec(ctx, `INSERT INTO files (`+fileColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		f.ID, f.Tenant, f.PackageID, f.Path, f.Size, f.Digest, f.MediaType, now); err != nil {
		return catalog.File{}, err
	}
	if err := appendEvent(ctx, tx, f.Tenant, now, f.PackageID, f.ID, ev); err != nil {
		return catalog.File{}, err
	}
	return f, nil
}

// GetFile implements catalog.Catalog.
func (c *Catalog) GetFile(ctx context.Context, tenant, id string) (catalog.File, error) {
	var out catalog.File
	err := c.single(ctx, "GetFile", func(q querier, _ int64) error {
		var err error
		out, err = getFile(ctx, q, tenant, id)
		return err
	})
	return out, err
}

func getFile(ctx context.Context, q querier, tenant, id string) (catalog.File, error) {
	if !storable(tenant, id) {
		return catalog.File{}, fmt.Errorf("file %s: %w", id, catalog.ErrNotFound)
	}
	var a args
	sql := `SELECT ` + fileColumns + ` FROM files WHERE id = ` + a.arg(id)
	if tenant != catalog.AnyTenant {
		sql += ` AND tenant = ` + a.arg(tenant)
	}
	f, err := scanFile(q.QueryRow(ctx, sql, a...))
	if errors.Is(err, pgx.ErrNoRows) {
		return catalog.File{}, fmt.Errorf("file %s: %w", id, catalog.ErrNotFound)
	}
	return f, err
}

// ListFiles implements catalog.Catalog. The package check and the listing
// are two statements; packages are never deleted, so they agree.
func (c *Catalog) ListFiles(ctx context.Context, tenant, packageID string, f catalog.FileFilter) ([]catalog.File, error) {
	var out []catalog.File
	err := c.single(ctx, "ListFiles", func(q querier, _ int64) error {
		if !storable(tenant, packageID) {
			return fmt.Errorf("package %s: %w", packageID, catalog.ErrNotFound)
		}
		var a args
		sql := `SELECT EXISTS (SELECT 1 FROM packages WHERE id = ` + a.arg(packageID)
		if tenant != catalog.AnyTenant {
			sql += ` AND tenant = ` + a.arg(tenant)
		}
		var ok bool
		if err := q.QueryRow(ctx, sql+`)`, a...).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("package %s: %w", packageID, catalog.ErrNotFound)
		}
		if f.Limit <= 0 {
			return nil
		}
		var err error
		out, err = packageFiles(ctx, q, packageID, f)
		return err
	})
	return out, err
}

// packageFiles lists a package's files by path; a zero Limit lists all.
// path has the "C" collation, so the order and the comparisons are
// bytewise, and the query walks UNIQUE (package_id, path) from the prefix
// (or After) to the end of the prefix's range.
func packageFiles(ctx context.Context, q querier, packageID string, f catalog.FileFilter) ([]catalog.File, error) {
	var a args
	sql := `SELECT ` + fileColumns + ` FROM files WHERE package_id = ` + a.arg(packageID)
	if f.Prefix != "" {
		if storable(f.Prefix) {
			sql += ` AND path >= ` + a.arg(f.Prefix)
			if end, ok := prefixEnd(f.Prefix); ok {
				sql += ` AND path < ` + a.arg(end)
			}
		} else {
			// Not valid UTF-8 (or holding NUL): compare bytes. Paths
			// starting with a partial character's bytes can still match.
			sql += ` AND substr(convert_to(path, 'UTF8'), 1, ` + a.arg(len(f.Prefix)) + `) = ` + a.arg([]byte(f.Prefix))
		}
	}
	if f.After != "" {
		sql += ` AND ` + a.compare("path", ">", f.After)
	}
	sql += ` ORDER BY path`
	if f.Limit > 0 {
		sql += ` LIMIT ` + a.arg(f.Limit)
	}
	rows, err := q.Query(ctx, sql, a...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (catalog.File, error) { return scanFile(row) })
}

// prefixEnd returns the least valid UTF-8 string greater than every string
// with prefix p, or false if there is none (p is all U+10FFFF). p is valid
// UTF-8. It increments p's last code point that is not U+10FFFF (skipping
// the surrogates) and drops what follows; UTF-8 byte order being code point
// order, that is also the bytewise bound, and unlike incrementing the last
// byte it stays valid UTF-8 (which PostgreSQL insists on).
func prefixEnd(p string) (string, bool) {
	rs := []rune(p)
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i] >= utf8.MaxRune {
			continue
		}
		rs[i]++
		if rs[i] == 0xD800 {
			rs[i] = 0xE000
		}
		return string(rs[:i+1]), true
	}
	return "", false
}

// DigestReferenced implements catalog.Catalog.
func (c *Catalog) DigestReferenced(ctx context.Context, digest string) (bool, error) {
	var ok bool
	err := c.single(ctx, "DigestReferenced", func(q querier, _ int64) error {
		if !storable(digest) {
			return nil
		}
		return q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM files WHERE digest = $1)`, digest).Scan(&ok)
	})
	return ok, err
}

// Uploads.

const uploadColumns = `id, tenant, "offset", size, digest, hash_state, created_at, expires_at, file_id, package_id, path,
	claim_holder, claim_until`

type uploadRow struct {
	catalog.Upload
	packageID, path string
	claimHolder     *string // nil while unclaimed
	claimUntil      *int64
}

// claimedBy reports whether holder's claim on the session is live at now.
func (r uploadRow) claimedBy(holder string, now int64) bool {
	return r.claimHolder != nil && *r.claimHolder == holder && r.claimUntil != nil && *r.claimUntil > now
}

func scanUpload(row pgx.Row) (uploadRow, error) {
	var (
		r                        uploadRow
		created, expires         int64
		fileID, packageID, fpath *string
	)
	if err := row.Scan(&r.ID, &r.Tenant, &r.Offset, &r.Size, &r.Digest, &r.HashState, &created, &expires,
		&fileID, &packageID, &fpath, &r.claimHolder, &r.claimUntil); err != nil {
		return uploadRow{}, err
	}
	r.CreatedAt, r.ExpiresAt = fromMS(created), fromMS(expires)
	if fileID != nil {
		r.FileID = *fileID
	}
	if packageID != nil {
		r.packageID = *packageID
	}
	if fpath != nil {
		r.path = *fpath
	}
	return r, nil
}

// CreateUpload implements catalog.Catalog.
func (c *Catalog) CreateUpload(ctx context.Context, u catalog.Upload, ttl time.Duration) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.single(ctx, "CreateUpload", func(q querier, now int64) error {
		out = catalog.Upload{
			ID:        u.ID,
			Tenant:    u.Tenant,
			Size:      u.Size,
			Digest:    u.Digest,
			HashState: slices.Clone(u.HashState),
			CreatedAt: fromMS(now),
			ExpiresAt: fromMS(now + ttl.Milliseconds()),
		}
		_, err := q.Exec(ctx, `INSERT INTO uploads
			(id, tenant, "offset", size, digest, hash_state, created_at, expires_at)
			VALUES ($1, $2, 0, $3, $4, $5, $6, $7)`,
			out.ID, out.Tenant, out.Size, out.Digest, blob(out.HashState), now, now+ttl.Milliseconds())
		return err
	})
	return out, err
}

// GetUpload implements catalog.Catalog.
func (c *Catalog) GetUpload(ctx context.Context, tenant, id string) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.single(ctx, "GetUpload", func(q querier, now int64) error {
		r, err := getUpload(ctx, q, tenant, id, now, "")
		out = r.Upload
		return err
	})
	return out, err
}

// getUpload reads a session of tenant that has not expired at now, with
// suffix (a locking clause) appended to the query.
func getUpload(ctx context.Context, q querier, tenant, id string, now int64, suffix string) (uploadRow, error) {
	if !storable(tenant, id) {
		return uploadRow{}, fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
	}
	r, err := scanUpload(q.QueryRow(ctx, `SELECT `+uploadColumns+` FROM uploads
		WHERE id = $1 AND tenant = $2 AND expires_at > $3`+suffix, id, tenant, now))
	if errors.Is(err, pgx.ErrNoRows) {
		return uploadRow{}, fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
	}
	return r, err
}

// ClaimUpload implements catalog.Catalog. Like AdvanceUpload it is one
// UPDATE whose WHERE holds every condition: of concurrent claims (from any
// process) the first takes the row lock and sets the claim, and the others,
// re-checking the WHERE on the version it committed, match nothing. Claims
// run out by the catalog clock of the process that checks them, so the
// clocks of processes sharing the database must agree to well within a
// claim's ttl.
func (c *Catalog) ClaimUpload(ctx context.Context, tenant, id, holder string, offset int64, ttl time.Duration) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.single(ctx, "ClaimUpload", func(q querier, now int64) error {
		if !storable(tenant, id) {
			return fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
		}
		if !storable(holder) {
			return fmt.Errorf("upload %s: holder %q is not valid UTF-8 without NUL", id, holder)
		}
		r, err := scanUpload(q.QueryRow(ctx, `UPDATE uploads SET claim_holder = $1, claim_until = $2
			WHERE id = $3 AND tenant = $4 AND expires_at > $5 AND "offset" = $6 AND file_id IS NULL
				AND (claim_holder IS NULL OR claim_until <= $5 OR claim_holder = $1)
			RETURNING `+uploadColumns, holder, now+ttl.Milliseconds(), id, tenant, now, offset))
		if err == nil {
			out = r.Upload
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		r, err = getUpload(ctx, q, tenant, id, now, "")
		switch {
		case err != nil:
			return err
		case r.FileID != "":
			return fmt.Errorf("upload %s completed: %w", id, catalog.ErrConflict)
		case r.Offset != offset:
			return fmt.Errorf("upload %s is at offset %d, not %d: %w", id, r.Offset, offset, catalog.ErrConflict)
		default:
			return fmt.Errorf("upload %s is claimed by another holder: %w", id, catalog.ErrConflict)
		}
	})
	return out, err
}

// AdvanceUpload implements catalog.Catalog. It is one UPDATE whose WHERE
// holds every condition (re-checked on the newest row version if it had to
// wait for another change of the session); only when it matches nothing
// does a second statement find out why.
func (c *Catalog) AdvanceUpload(ctx context.Context, tenant, id, holder string, from, to int64, hashState []byte) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.single(ctx, "AdvanceUpload", func(q querier, now int64) error {
		if !storable(tenant, id) {
			return fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
		}
		if storable(holder) { // else no claim is holder's: find out why below
			r, err := scanUpload(q.QueryRow(ctx, `UPDATE uploads
				SET "offset" = $1, hash_state = $2, claim_holder = NULL, claim_until = NULL
				WHERE id = $3 AND tenant = $4 AND expires_at > $5 AND "offset" = $6 AND file_id IS NULL
					AND claim_holder = $7 AND claim_until > $5
				RETURNING `+uploadColumns, to, blob(hashState), id, tenant, now, from, holder))
			if err == nil {
				out = r.Upload
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		r, err := getUpload(ctx, q, tenant, id, now, "")
		switch {
		case err != nil:
			return err
		case r.FileID != "":
			return fmt.Errorf("upload %s completed: %w", id, catalog.ErrConflict)
		case !r.claimedBy(holder, now):
			return fmt.Errorf("upload %s is not claimed by this holder (the claim ran out or was taken over): %w", id, catalog.ErrConflict)
		default:
			return fmt.Errorf("upload %s is at offset %d, not %d: %w", id, r.Offset, from, catalog.ErrConflict)
		}
	})
	return out, err
}

// CompleteUpload implements catalog.Catalog. It locks the session row
// first (so two completions of one session serialize and the second sees
// the first's file), then adds the file like AddFile.
func (c *Catalog) CompleteUpload(ctx context.Context, uploadID string, f catalog.File, ev catalog.NewEvent) (catalog.File, error) {
	var out catalog.File
	err := c.write(ctx, "CompleteUpload", func(tx pgx.Tx, now int64) error {
		r, err := getUpload(ctx, tx, f.Tenant, uploadID, now, " FOR UPDATE")
		if err != nil {
			return err
		}
		if r.FileID != "" {
			if r.packageID != f.PackageID || r.path != f.Path {
				return fmt.Errorf("upload %s completed into another file: %w", uploadID, catalog.ErrConflict)
			}
			out, err = getFile(ctx, tx, f.Tenant, r.FileID)
			return err
		}
		if out, err = addFile(ctx, tx, f, now, ev); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE uploads SET file_id = $1, package_id = $2, path = $3 WHERE id = $4`,
			f.ID, f.PackageID, f.Path, uploadID)
		return err
	})
	return out, err
}

// DeleteUpload implements catalog.Catalog.
func (c *Catalog) DeleteUpload(ctx context.Context, tenant, id string) error {
	return c.single(ctx, "DeleteUpload", func(q querier, _ int64) error {
		if !storable(tenant, id) {
			return fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
		}
		tag, err := q.Exec(ctx, `DELETE FROM uploads WHERE id = $1 AND tenant = $2`, id, tenant)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
		}
		return nil
	})
}

// DeleteExpiredUploads implements catalog.Catalog. Sessions another
// transaction holds (a completion, or another replica's sweep) are skipped.
func (c *Catalog) DeleteExpiredUploads(ctx context.Context, limit int) ([]string, error) {
	var ids []string
	err := c.single(ctx, "DeleteExpiredUploads", func(q querier, now int64) error {
		if limit <= 0 {
			return nil
		}
		rows, err := q.Query(ctx, `DELETE FROM uploads WHERE id IN (
			SELECT id FROM uploads WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
		) RETURNING id`, now, limit)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// UploadExists implements catalog.Catalog.
func (c *Catalog) UploadExists(ctx context.Context, id string) (bool, error) {
	var ok bool
	err := c.single(ctx, "UploadExists", func(q querier, _ int64) error {
		if !storable(id) {
			return nil
		}
		return q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM uploads WHERE id = $1)`, id).Scan(&ok)
	})
	return ok, err
}

// Events.

// appendEvent writes ev as the tenant's next event and notifies
// NotifyChannel, in one statement. The upsert of the tenant's event_heads
// row keeps that row locked until the transaction ends: the tenant's next
// writer waits for this commit (or rollback) before it takes the next seq,
// so seqs are gapless and in commit order. Callers append the event last,
// so the lock is held only from here to the commit, and the tenant's writers
// queue only for that short tail.
func appendEvent(ctx context.Context, tx pgx.Tx, tenant string, now int64, packageID, fileID string, ev catalog.NewEvent) error {
	var seq int64
	err := tx.QueryRow(ctx, `WITH head AS (
			INSERT INTO event_heads AS h (tenant, seq) VALUES ($1, 1)
			ON CONFLICT (tenant) DO UPDATE SET seq = h.seq + 1
			RETURNING seq
		), ev AS (
			INSERT INTO events (tenant, seq, type, time, package_id, file_id, data)
			SELECT $1, seq, $2, $3, $4, $5, $6 FROM head
			RETURNING seq
		)
		SELECT seq, pg_notify('`+NotifyChannel+`', $1) FROM ev`,
		tenant, ev.Type, now, packageID, fileID, blob(ev.Data)).Scan(&seq, nil)
	if err != nil {
		return fmt.Errorf("event: %w", err)
	}
	return nil
}

// Events implements catalog.Catalog. The head and the page come from one
// statement, so from one snapshot: the page never holds a seq above head,
// and since seqs commit in order, a snapshot holds a gapless prefix.
func (c *Catalog) Events(ctx context.Context, tenant string, since uint64, limit int) ([]catalog.Event, uint64, error) {
	var (
		out  []catalog.Event
		head int64
	)
	err := c.single(ctx, "Events", func(q querier, _ int64) error {
		if !storable(tenant) {
			return nil
		}
		rows, err := q.Query(ctx, `SELECT h.seq, e.seq, e.type, e.time, e.package_id, e.file_id, e.data
			FROM (SELECT coalesce((SELECT seq FROM event_heads WHERE tenant = $1), 0) AS seq) h
			LEFT JOIN LATERAL (
				SELECT seq, type, time, package_id, file_id, data FROM events
				WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3
			) e ON true
			ORDER BY e.seq`, tenant, int64(min(since, math.MaxInt64)), max(limit, 0))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				seq                    *int64
				typ, packageID, fileID *string
				ms                     *int64
				data                   []byte
			)
			if err := rows.Scan(&head, &seq, &typ, &ms, &packageID, &fileID, &data); err != nil {
				return err
			}
			if seq == nil {
				continue // no events: the row only carries the head
			}
			out = append(out, catalog.Event{
				Seq:       uint64(*seq),
				Type:      *typ,
				Time:      fromMS(*ms),
				Tenant:    tenant,
				PackageID: *packageID,
				FileID:    *fileID,
				Data:      data,
			})
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, err
	}
	return out, uint64(head), nil
}

// Listen listens on NotifyChannel on a connection of its own and calls
// onEvent with the tenant of every notification, that is, after every
// committed transaction that wrote events of that tenant (several in one
// transaction notify once). Notifications are hints: none arrive for
// transactions that committed while no Listen was running, so a consumer
// reads Events from its cursor after (re)starting Listen and on each call.
// Listen returns when ctx ends (ctx.Err()), the Catalog closes
// (catalog.ErrClosed) or the connection fails. onEvent runs on Listen's
// goroutine; a slow onEvent delays the next (the server queues them).
func (c *Catalog) Listen(ctx context.Context, onEvent func(tenant string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := new(struct{})
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return fmt.Errorf("catalog/postgres: Listen: %w", catalog.ErrClosed)
	}
	c.listeners[key] = cancel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.listeners, key)
		c.mu.Unlock()
	}()

	fail := func(err error) error {
		if c.closed.Load() {
			return fmt.Errorf("catalog/postgres: Listen: %w", catalog.ErrClosed)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("catalog/postgres: Listen: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, c.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fail(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+NotifyChannel); err != nil {
		return fail(err)
	}
	if c.onListen != nil {
		c.onListen()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fail(err)
		}
		if n.Channel == NotifyChannel {
			onEvent(n.Payload)
		}
	}
}
