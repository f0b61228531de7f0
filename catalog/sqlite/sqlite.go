// Package sqlite implements catalog.Catalog on a SQLite database file.
//
// The database runs in WAL mode with synchronous=FULL, so a write that
// returned has reached the disk, and readers never wait for the writer.
// Writes go through a pool of one connection whose transactions begin
// IMMEDIATE (they take the write lock at BEGIN and never fail to upgrade);
// reads go through a pool of query-only connections. Several processes may
// open the same file: busy_timeout makes them wait for each other.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net/url"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/mattn/go-sqlite3"

	"github.com/artifactstore/artifactstore/catalog"
)

// Options configure a Catalog.
type Options struct {
	// Now is the catalog's clock; nil means time.Now.
	Now func() time.Time
}

// Catalog is a catalog.Catalog backed by a SQLite database file. It is safe
// for concurrent use.
type Catalog struct {
	writer *sqlx.DB // one connection: writes are serialized
	reader *sqlx.DB // query-only connections
	group  *group   // batches the writes into shared transactions
	now    func() time.Time
	closed atomic.Bool
}

var _ catalog.Catalog = (*Catalog)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// busyTimeout is how long a connection waits for a lock another process
// holds, in milliseconds.
const busyTimeout = "10000"

// Open opens (creating it if needed) the database file at path and brings
// its schema up to date. The caller closes the Catalog.
func Open(ctx context.Context, path string, opts Options) (*Catalog, error) {
	c := &Catalog{now: opts.Now}
	if c.now == nil {
		c.now = time.Now
	}

	w, err := sqlx.Open("sqlite3", dsn(path, url.Values{
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"}, // in WAL mode: every commit is fsynced
		"_foreign_keys": {"1"},
		"_busy_timeout": {busyTimeout},
		// Prepared statements are kept per connection: re-preparing each
		// query cost a tenth of a small request.
		"_stmt_cache_size": {"64"},
		"_txlock":          {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("catalog/sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	c.writer = w
	c.group = &group{db: w, now: c.now}
	if err := c.init(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("catalog/sqlite: open %s: %w", path, err)
	}

	// Opened after the writer so the file exists and is in WAL mode.
	r, err := sqlx.Open("sqlite3", dsn(path, url.Values{
		"_query_only":   {"1"},
		"_synchronous":  {"FULL"}, // should a reader ever checkpoint
		"_foreign_keys": {"1"},
		"_busy_timeout": {busyTimeout},
		// Prepared statements are kept per connection: re-preparing each
		// query cost a tenth of a small request.
		"_stmt_cache_size": {"64"},
		"_txlock":          {"deferred"},
	}))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("catalog/sqlite: open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	c.reader = r
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("catalog/sqlite: open %s: %w", path, err)
	}
	return c, nil
}

// dsn returns a file: URI for path with the driver's connection parameters.
// Characters URI parsing would take are escaped, so any path works.
func dsn(path string, params url.Values) string {
	p := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	if strings.HasPrefix(p, "/") {
		p = "//" + p // file:///abs/path: an empty authority
	}
	return "file:" + p + "?" + params.Encode()
}

// init checks the journal mode and applies the migrations.
func (c *Catalog) init(ctx context.Context) error {
	var mode string
	if err := c.writer.GetContext(ctx, &mode, "PRAGMA journal_mode"); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL", mode)
	}
	if _, err := c.writer.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name       TEXT PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
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
// transaction (which, being IMMEDIATE, also keeps two processes from
// applying it at once).
func (c *Catalog) migrate(ctx context.Context, name string) error {
	body, err := fs.ReadFile(migrations, name)
	if err != nil {
		return err
	}
	tx, err := c.writer.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var applied bool
	if err := tx.GetContext(ctx, &applied, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = ?)`, path.Base(name)); err != nil {
		return err
	}
	if applied {
		return nil
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`, path.Base(name), c.now().UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

// Batching reports how many write transactions the catalog has committed
// and how many writes they carried (see groupcommit.go).
func (c *Catalog) Batching() (transactions, writes uint64) {
	return c.group.batches.Load(), c.group.writes.Load()
}

// Close closes the database. Later calls return catalog.ErrClosed.
func (c *Catalog) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("catalog/sqlite: Close: %w", catalog.ErrClosed)
	}
	// The writer closes last, so it checkpoints the WAL.
	return errors.Join(c.reader.Close(), c.writer.Close())
}

// txFunc is the body of a transaction. It gets the context to run its
// statements with (not the caller's: see write) and the transaction's clock
// in Unix milliseconds.
type txFunc func(ctx context.Context, tx *sqlx.Tx, now int64) error

// write runs fn in a write transaction, committed together with the write
// transactions of concurrent callers (see groupcommit.go). It returns once
// the commit is durable, or with fn's error and none of fn's changes.
func (c *Catalog) write(ctx context.Context, op string, fn txFunc) error {
	if c.closed.Load() {
		return fmt.Errorf("catalog/sqlite: %s: %w", op, catalog.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return c.wrap(op, err)
	}
	if err := c.group.do(ctx, fn); err != nil {
		return c.wrap(op, err)
	}
	return nil
}

// read runs fn in a read transaction, so it sees one snapshot.
func (c *Catalog) read(ctx context.Context, op string, fn txFunc) error {
	if c.closed.Load() {
		return fmt.Errorf("catalog/sqlite: %s: %w", op, catalog.ErrClosed)
	}
	tx, err := c.reader.BeginTxx(ctx, nil)
	if err != nil {
		return c.wrap(op, err)
	}
	defer tx.Rollback()
	if err := fn(ctx, tx, c.now().UnixMilli()); err != nil {
		return c.wrap(op, err)
	}
	if err := tx.Commit(); err != nil {
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
	var be buildError
	switch {
	case errors.As(err, &be):
		return fmt.Errorf("catalog/sqlite: %s: build: %w", op, be.err)
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, catalog.ErrConflict),
		errors.Is(err, catalog.ErrFinalized), errors.Is(err, catalog.ErrClosed):
		return fmt.Errorf("catalog/sqlite: %s: %w", op, err)
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("catalog/sqlite: %s: %w", op, catalog.ErrNotFound)
	case isUniqueViolation(err):
		return fmt.Errorf("catalog/sqlite: %s: %w (%v)", op, catalog.ErrConflict, err)
	case c.closed.Load():
		// The pools closed under a running call.
		return fmt.Errorf("catalog/sqlite: %s: %w (%v)", op, catalog.ErrClosed, err)
	}
	return fmt.Errorf("catalog/sqlite: %s: %w", op, err)
}

func isUniqueViolation(err error) bool {
	var se sqlite3.Error
	if !errors.As(err, &se) || se.Code != sqlite3.ErrConstraint {
		return false
	}
	return se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
}

func fromMS(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// blob returns b, or an empty (not NULL) blob for nil.
func blob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Packages.

const packageColumns = `p.id, p.tenant, p.producer, p.subject, p.retention_class, p.state,
	p.file_count, p.total_size, p.created_at, p.finalized_at, p.manifest_digest`

type packageRow struct {
	ID             string         `db:"id"`
	Tenant         string         `db:"tenant"`
	Producer       string         `db:"producer"`
	Subject        string         `db:"subject"`
	RetentionClass string         `db:"retention_class"`
	State          string         `db:"state"`
	FileCount      int64          `db:"file_count"`
	TotalSize      int64          `db:"total_size"`
	CreatedAt      int64          `db:"created_at"`
	FinalizedAt    sql.NullInt64  `db:"finalized_at"`
	ManifestDigest sql.NullString `db:"manifest_digest"`
}

func (r packageRow) pkg(meta map[string]string) catalog.Package {
	if meta == nil {
		meta = map[string]string{}
	}
	p := catalog.Package{
		ID:             r.ID,
		Tenant:         r.Tenant,
		Producer:       r.Producer,
		Subject:        r.Subject,
		RetentionClass: r.RetentionClass,
		Metadata:       meta,
		State:          r.State,
		FileCount:      r.FileCount,
		TotalSize:      r.TotalSize,
		CreatedAt:      fromMS(r.CreatedAt),
		ManifestDigest: r.ManifestDigest.String,
	}
	if r.FinalizedAt.Valid {
		p.FinalizedAt = fromMS(r.FinalizedAt.Int64)
	}
	return p
}

// CreatePackage implements catalog.Catalog.
func (c *Catalog) CreatePackage(ctx context.Context, p catalog.Package, ev catalog.NewEvent) (catalog.Package, error) {
	var out catalog.Package
	err := c.write(ctx, "CreatePackage", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		var err error
		out, err = createPackage(ctx, tx, p, now, ev)
		return err
	})
	return out, err
}

func createPackage(ctx context.Context, tx *sqlx.Tx, p catalog.Package, now int64, ev catalog.NewEvent) (catalog.Package, error) {
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
	if _, err := tx.ExecContext(ctx, `INSERT INTO packages
		(id, tenant, producer, subject, retention_class, state, file_count, total_size, created_at)
		VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)`,
		out.ID, out.Tenant, out.Producer, out.Subject, out.RetentionClass, out.State, now); err != nil {
		return catalog.Package{}, err
	}
	for _, k := range slices.Sorted(maps.Keys(out.Metadata)) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO package_metadata (tenant, package_id, key, value) VALUES (?, ?, ?, ?)`,
			out.Tenant, out.ID, k, out.Metadata[k]); err != nil {
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
	err := c.read(ctx, "GetPackage", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		var err error
		p, err = getPackage(ctx, tx, tenant, id)
		return err
	})
	return p, err
}

// getPackageRow reads a package row without its metadata.
func getPackageRow(ctx context.Context, tx *sqlx.Tx, tenant, id string) (packageRow, error) {
	q := `SELECT ` + packageColumns + ` FROM packages p WHERE p.id = ?`
	args := []any{id}
	if tenant != catalog.AnyTenant {
		q += ` AND p.tenant = ?`
		args = append(args, tenant)
	}
	var r packageRow
	if err := tx.GetContext(ctx, &r, q, args...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return packageRow{}, catalog.ErrNotFound
		}
		return packageRow{}, err
	}
	return r, nil
}

func getPackage(ctx context.Context, tx *sqlx.Tx, tenant, id string) (catalog.Package, error) {
	r, err := getPackageRow(ctx, tx, tenant, id)
	if err != nil {
		return catalog.Package{}, err
	}
	meta, err := loadMetadata(ctx, tx, []string{r.ID})
	if err != nil {
		return catalog.Package{}, err
	}
	return r.pkg(meta[r.ID]), nil
}

// loadMetadata returns the metadata of the packages ids, by package.
func loadMetadata(ctx context.Context, tx *sqlx.Tx, ids []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	if len(ids) == 0 {
		return out, nil
	}
	q, args, err := sqlx.In(`SELECT package_id, key, value FROM package_metadata WHERE package_id IN (?)`, ids)
	if err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, k, v string
		if err := rows.Scan(&id, &k, &v); err != nil {
			return nil, err
		}
		m := out[id]
		if m == nil {
			m = map[string]string{}
			out[id] = m
		}
		m[k] = v
	}
	return out, rows.Err()
}

// ListPackages implements catalog.Catalog.
func (c *Catalog) ListPackages(ctx context.Context, tenant string, f catalog.PackageFilter) ([]catalog.Package, error) {
	var out []catalog.Package
	err := c.read(ctx, "ListPackages", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		var err error
		out, err = listPackages(ctx, tx, tenant, f)
		return err
	})
	return out, err
}

func listPackages(ctx context.Context, tx *sqlx.Tx, tenant string, f catalog.PackageFilter) ([]catalog.Package, error) {
	if f.Limit <= 0 {
		return nil, nil
	}
	driver, err := chooseDriver(ctx, tx, tenant, f)
	if err != nil {
		return nil, err
	}
	q, args := listPackagesQuery(tenant, f, driver)
	var rows []packageRow
	if err := tx.SelectContext(ctx, &rows, q, args...); err != nil {
		return nil, err
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	meta, err := loadMetadata(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]catalog.Package, len(rows))
	for i, r := range rows {
		out[i] = r.pkg(meta[r.ID])
	}
	return out, nil
}

// probeCap bounds how many index entries chooseDriver counts per filter.
const probeCap = 2000

// chooseDriver picks the metadata filter that drives ListPackages' query
// (an index into f.Metadata), or -1 for none: without a tenant, or without
// metadata filters, the query walks packages. Of several filters it takes
// the one with the fewest matching index entries (counting each up to
// probeCap, which costs a few microseconds per thousand), else the first
// key=value filter, else the first.
func chooseDriver(ctx context.Context, tx *sqlx.Tx, tenant string, f catalog.PackageFilter) (int, error) {
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
	bestN := probeCap
	for i, m := range f.Metadata {
		q := `SELECT count(*) FROM (SELECT 1 FROM package_metadata WHERE tenant = ? AND key = ?`
		args := []any{tenant, m.Key}
		if m.HasValue {
			q += ` AND value = ?`
			args = append(args, m.Value)
		}
		if f.Before != "" {
			q += ` AND package_id < ?`
			args = append(args, f.Before)
		}
		q += ` LIMIT ?)`
		args = append(args, bestN)
		var n int
		if err := tx.GetContext(ctx, &n, q, args...); err != nil {
			return 0, err
		}
		if n < bestN {
			best, bestN = i, n
		}
		if n == 0 {
			break
		}
	}
	return best, nil
}

// listPackagesQuery builds ListPackages' query. Without a driver (-1) it
// walks one of the packages_tenant_* indexes backwards by id. With one, the
// metadata filter f.Metadata[driver] drives the query: it walks that
// filter's package_metadata index backwards by package_id, checks the other
// metadata filters on the entry's package_id and only then joins the package
// (CROSS JOIN fixes that order), so a page reads about Limit index entries
// when the other filters match often, whatever the table's size.
func listPackagesQuery(tenant string, f catalog.PackageFilter, driver int) (string, []any) {
	var (
		where []string
		args  []any
	)
	cond := func(c string, a ...any) {
		where = append(where, c)
		args = append(args, a...)
	}
	from, order, id := "packages p", "p.id DESC", "p.id"
	metas := f.Metadata
	if driver >= 0 {
		m := metas[driver]
		metas = slices.Delete(slices.Clone(metas), driver, driver+1)
		from, order, id = "package_metadata d CROSS JOIN packages p", "d.package_id DESC", "d.package_id"
		cond("d.tenant = ?", tenant)
		cond("d.key = ?", m.Key)
		if m.HasValue {
			cond("d.value = ?", m.Value)
		}
		if f.Before != "" {
			cond("d.package_id < ?", f.Before)
		}
	} else if f.Before != "" {
		cond("p.id < ?", f.Before)
	}
	for i, m := range metas {
		c := fmt.Sprintf("EXISTS (SELECT 1 FROM package_metadata m%d WHERE m%[1]d.package_id = %s AND m%[1]d.key = ?", i, id)
		if m.HasValue {
			cond(c+fmt.Sprintf(" AND m%d.value = ?)", i), m.Key, m.Value)
		} else {
			cond(c+")", m.Key)
		}
	}
	if driver >= 0 {
		cond("p.id = d.package_id")
	}
	if tenant != catalog.AnyTenant {
		cond("p.tenant = ?", tenant)
	}
	if f.Producer != "" {
		cond("p.producer = ?", f.Producer)
	}
	if f.Subject != "" {
		cond("p.subject = ?", f.Subject)
	}
	if f.RetentionClass != "" {
		cond("p.retention_class = ?", f.RetentionClass)
	}
	if f.State != "" {
		cond("p.state = ?", f.State)
	}
	q := "SELECT " + packageColumns + " FROM " + from
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + order + " LIMIT ?"
	args = append(args, f.Limit)
	return q, args
}

// Finalize implements catalog.Catalog.
func (c *Catalog) Finalize(ctx context.Context, tenant, id string, evType string, build catalog.BuildFunc) (catalog.Package, error) {
	var out catalog.Package
	err := c.write(ctx, "Finalize", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		var err error
		out, err = finalize(ctx, tx, tenant, id, now, evType, build)
		return err
	})
	return out, err
}

// finalize runs in the write transaction, which holds the database's write
// lock from BEGIN: no file can be added between reading the files and
// marking the package finalized.
func finalize(ctx context.Context, tx *sqlx.Tx, tenant, id string, now int64, evType string, build catalog.BuildFunc) (catalog.Package, error) {
	p, err := getPackage(ctx, tx, tenant, id)
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
	if _, err := tx.ExecContext(ctx, `UPDATE packages
		SET state = ?, finalized_at = ?, manifest_digest = ?, manifest = ?
		WHERE id = ?`, catalog.StateFinalized, now, fin.Digest, blob(fin.Manifest), p.ID); err != nil {
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
	err := c.read(ctx, "GetManifest", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		var err error
		if p, err = getPackage(ctx, tx, tenant, id); err != nil {
			return err
		}
		if p.State != catalog.StateFinalized {
			return fmt.Errorf("package %s is open: %w", id, catalog.ErrConflict)
		}
		return tx.GetContext(ctx, &manifest, `SELECT manifest FROM packages WHERE id = ?`, p.ID)
	})
	if err != nil {
		return catalog.Package{}, nil, err
	}
	return p, manifest, nil
}

// Files.

const fileColumns = `id, tenant, package_id, path, size, digest, media_type, created_at`

type fileRow struct {
	ID        string `db:"id"`
	Tenant    string `db:"tenant"`
	PackageID string `db:"package_id"`
	Path      string `db:"path"`
	Size      int64  `db:"size"`
	Digest    string `db:"digest"`
	MediaType string `db:"media_type"`
	CreatedAt int64  `db:"created_at"`
}

func (r fileRow) file() catalog.File {
	return catalog.File{
		ID:        r.ID,
		Tenant:    r.Tenant,
		PackageID: r.PackageID,
		Path:      r.Path,
		Size:      r.Size,
		Digest:    r.Digest,
		MediaType: r.MediaType,
		CreatedAt: fromMS(r.CreatedAt),
	}
}

// AddFile implements catalog.Catalog.
func (c *Catalog) AddFile(ctx context.Context, f catalog.File, ev catalog.NewEvent) (catalog.File, error) {
	var out catalog.File
	err := c.write(ctx, "AddFile", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		var err error
		out, err = addFile(ctx, tx, f, now, ev)
		return err
	})
	return out, err
}

// addFile adds f to its open package, counts it and writes ev. The count's
// UPDATE is also the check that the package is open, one statement fewer
// for every file; only when it matches nothing does a query tell why.
func addFile(ctx context.Context, tx *sqlx.Tx, f catalog.File, now int64, ev catalog.NewEvent) (catalog.File, error) {
	res, err := tx.ExecContext(ctx, `UPDATE packages SET file_count = file_count + 1, total_size = total_size + ?
		WHERE id = ? AND tenant = ? AND state = ?`, f.Size, f.PackageID, f.Tenant, catalog.StateOpen)
	if err != nil {
		return catalog.File{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return catalog.File{}, err
	} else if n == 0 {
		var state string
		err := tx.GetContext(ctx, &state, `SELECT state FROM packages WHERE id = ? AND tenant = ?`, f.PackageID, f.Tenant)
		if errors.Is(err, sql.ErrNoRows) {
			return catalog.File{}, fmt.Errorf("package %s: %w", f.PackageID, catalog.ErrNotFound)
		}
		if err != nil {
			return catalog.File{}, err
		}
		return catalog.File{}, fmt.Errorf("package %s: %w", f.PackageID, catalog.ErrFinalized)
	}
	f.CreatedAt = fromMS(now)
	if _, err := tx.ExecContext(ctx, `INSERT INTO files (`+fileColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
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
	err := c.read(ctx, "GetFile", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		var err error
		out, err = getFile(ctx, tx, tenant, id)
		return err
	})
	return out, err
}

func getFile(ctx context.Context, tx *sqlx.Tx, tenant, id string) (catalog.File, error) {
	q := `SELECT ` + fileColumns + ` FROM files WHERE id = ?`
	args := []any{id}
	if tenant != catalog.AnyTenant {
		q += ` AND tenant = ?`
		args = append(args, tenant)
	}
	var r fileRow
	if err := tx.GetContext(ctx, &r, q, args...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return catalog.File{}, fmt.Errorf("file %s: %w", id, catalog.ErrNotFound)
		}
		return catalog.File{}, err
	}
	return r.file(), nil
}

// ListFiles implements catalog.Catalog.
func (c *Catalog) ListFiles(ctx context.Context, tenant, packageID string, f catalog.FileFilter) ([]catalog.File, error) {
	var out []catalog.File
	err := c.read(ctx, "ListFiles", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		if _, err := getPackageRow(ctx, tx, tenant, packageID); err != nil {
			return err
		}
		if f.Limit <= 0 {
			return nil
		}
		var err error
		out, err = packageFiles(ctx, tx, packageID, f)
		return err
	})
	return out, err
}

// packageFiles lists a package's files by path; a zero Limit lists all.
// Strings bind as TEXT and path has the BINARY collation, so comparisons
// and the order are bytewise, and the query walks UNIQUE (package_id, path).
func packageFiles(ctx context.Context, tx *sqlx.Tx, packageID string, f catalog.FileFilter) ([]catalog.File, error) {
	q := `SELECT ` + fileColumns + ` FROM files WHERE package_id = ?`
	args := []any{packageID}
	if f.Prefix != "" {
		q += ` AND path >= ?`
		args = append(args, f.Prefix)
		if end, ok := prefixEnd(f.Prefix); ok {
			q += ` AND path < ?`
			args = append(args, end)
		}
	}
	if f.After != "" {
		q += ` AND path > ?`
		args = append(args, f.After)
	}
	q += ` ORDER BY path`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	var rows []fileRow
	if err := tx.SelectContext(ctx, &rows, q, args...); err != nil {
		return nil, err
	}
	out := make([]catalog.File, len(rows))
	for i, r := range rows {
		out[i] = r.file()
	}
	return out, nil
}

// prefixEnd returns the least string greater than every string with prefix
// p (bytewise), or false if there is none (p is all 0xff bytes).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// DigestReferenced implements catalog.Catalog.
func (c *Catalog) DigestReferenced(ctx context.Context, digest string) (bool, error) {
	var ok bool
	err := c.read(ctx, "DigestReferenced", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		return tx.GetContext(ctx, &ok, `SELECT EXISTS (SELECT 1 FROM files WHERE digest = ?)`, digest)
	})
	return ok, err
}

// Uploads.

const uploadColumns = `id, tenant, "offset", size, digest, hash_state, created_at, expires_at, file_id, package_id, path,
	claim_holder, claim_until`

type uploadRow struct {
	ID          string         `db:"id"`
	Tenant      string         `db:"tenant"`
	Offset      int64          `db:"offset"`
	Size        int64          `db:"size"`
	Digest      string         `db:"digest"`
	HashState   []byte         `db:"hash_state"`
	CreatedAt   int64          `db:"created_at"`
	ExpiresAt   int64          `db:"expires_at"`
	FileID      sql.NullString `db:"file_id"`
	PackageID   sql.NullString `db:"package_id"`
	Path        sql.NullString `db:"path"`
	ClaimHolder sql.NullString `db:"claim_holder"`
	ClaimUntil  sql.NullInt64  `db:"claim_until"`
}

// claimedBy reports whether holder's claim on the session is live at now.
func (r uploadRow) claimedBy(holder string, now int64) bool {
	return r.ClaimHolder.Valid && r.ClaimHolder.String == holder && r.ClaimUntil.Valid && r.ClaimUntil.Int64 > now
}

// claimedByOther reports whether another holder than holder has a live
// claim on the session at now.
func (r uploadRow) claimedByOther(holder string, now int64) bool {
	return r.ClaimHolder.Valid && r.ClaimHolder.String != holder && r.ClaimUntil.Valid && r.ClaimUntil.Int64 > now
}

func (r uploadRow) upload() catalog.Upload {
	return catalog.Upload{
		ID:        r.ID,
		Tenant:    r.Tenant,
		Offset:    r.Offset,
		Size:      r.Size,
		Digest:    r.Digest,
		HashState: r.HashState,
		CreatedAt: fromMS(r.CreatedAt),
		ExpiresAt: fromMS(r.ExpiresAt),
		FileID:    r.FileID.String,
	}
}

// CreateUpload implements catalog.Catalog.
func (c *Catalog) CreateUpload(ctx context.Context, u catalog.Upload, ttl time.Duration) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.write(ctx, "CreateUpload", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		out = catalog.Upload{
			ID:        u.ID,
			Tenant:    u.Tenant,
			Size:      u.Size,
			Digest:    u.Digest,
			HashState: slices.Clone(u.HashState),
			CreatedAt: fromMS(now),
			ExpiresAt: fromMS(now + ttl.Milliseconds()),
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO uploads
			(id, tenant, "offset", size, digest, hash_state, created_at, expires_at)
			VALUES (?, ?, 0, ?, ?, ?, ?, ?)`,
			out.ID, out.Tenant, out.Size, out.Digest, blob(out.HashState), now, now+ttl.Milliseconds())
		return err
	})
	return out, err
}

// GetUpload implements catalog.Catalog.
func (c *Catalog) GetUpload(ctx context.Context, tenant, id string) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.read(ctx, "GetUpload", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		r, err := getUpload(ctx, tx, tenant, id, now)
		if err != nil {
			return err
		}
		out = r.upload()
		return nil
	})
	return out, err
}

// getUpload reads a session of tenant that has not expired at now.
func getUpload(ctx context.Context, tx *sqlx.Tx, tenant, id string, now int64) (uploadRow, error) {
	var r uploadRow
	err := tx.GetContext(ctx, &r, `SELECT `+uploadColumns+` FROM uploads WHERE id = ? AND tenant = ? AND expires_at > ?`, id, tenant, now)
	if errors.Is(err, sql.ErrNoRows) {
		return uploadRow{}, fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
	}
	return r, err
}

// ClaimUpload implements catalog.Catalog. Write transactions are
// serialized (across processes too, by the database's write lock), so the
// checks and the update are atomic.
func (c *Catalog) ClaimUpload(ctx context.Context, tenant, id, holder string, offset int64, ttl time.Duration) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.write(ctx, "ClaimUpload", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		r, err := getUpload(ctx, tx, tenant, id, now)
		if err != nil {
			return err
		}
		switch {
		case r.FileID.Valid:
			return fmt.Errorf("upload %s completed: %w", id, catalog.ErrConflict)
		case r.Offset != offset:
			return fmt.Errorf("upload %s is at offset %d, not %d: %w", id, r.Offset, offset, catalog.ErrConflict)
		case r.claimedByOther(holder, now):
			return fmt.Errorf("upload %s is claimed by another holder until %v: %w", id, fromMS(r.ClaimUntil.Int64), catalog.ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE uploads SET claim_holder = ?, claim_until = ? WHERE id = ?`,
			holder, now+ttl.Milliseconds(), id); err != nil {
			return err
		}
		out = r.upload()
		return nil
	})
	return out, err
}

// AdvanceUpload implements catalog.Catalog.
func (c *Catalog) AdvanceUpload(ctx context.Context, tenant, id, holder string, from, to int64, hashState []byte) (catalog.Upload, error) {
	var out catalog.Upload
	err := c.write(ctx, "AdvanceUpload", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		r, err := getUpload(ctx, tx, tenant, id, now)
		if err != nil {
			return err
		}
		switch {
		case r.FileID.Valid:
			return fmt.Errorf("upload %s completed: %w", id, catalog.ErrConflict)
		case !r.claimedBy(holder, now):
			return fmt.Errorf("upload %s is not claimed by this holder (the claim ran out or was taken over): %w", id, catalog.ErrConflict)
		case r.Offset != from:
			return fmt.Errorf("upload %s is at offset %d, not %d: %w", id, r.Offset, from, catalog.ErrConflict)
		}
		r.Offset, r.HashState = to, slices.Clone(hashState)
		if _, err := tx.ExecContext(ctx, `UPDATE uploads SET "offset" = ?, hash_state = ?, claim_holder = NULL, claim_until = NULL WHERE id = ?`,
			to, blob(r.HashState), id); err != nil {
			return err
		}
		out = r.upload()
		return nil
	})
	return out, err
}

// CompleteUpload implements catalog.Catalog.
func (c *Catalog) CompleteUpload(ctx context.Context, uploadID string, f catalog.File, ev catalog.NewEvent) (catalog.File, error) {
	var out catalog.File
	err := c.write(ctx, "CompleteUpload", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		r, err := getUpload(ctx, tx, f.Tenant, uploadID, now)
		if err != nil {
			return err
		}
		if r.FileID.Valid {
			if r.PackageID.String != f.PackageID || r.Path.String != f.Path {
				return fmt.Errorf("upload %s completed into another file: %w", uploadID, catalog.ErrConflict)
			}
			out, err = getFile(ctx, tx, f.Tenant, r.FileID.String)
			return err
		}
		if out, err = addFile(ctx, tx, f, now, ev); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE uploads SET file_id = ?, package_id = ?, path = ? WHERE id = ?`,
			f.ID, f.PackageID, f.Path, uploadID)
		return err
	})
	return out, err
}

// DeleteUpload implements catalog.Catalog.
func (c *Catalog) DeleteUpload(ctx context.Context, tenant, id string) error {
	return c.write(ctx, "DeleteUpload", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE id = ? AND tenant = ?`, id, tenant)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("upload %s: %w", id, catalog.ErrNotFound)
		}
		return nil
	})
}

// DeleteExpiredUploads implements catalog.Catalog.
func (c *Catalog) DeleteExpiredUploads(ctx context.Context, limit int) ([]string, error) {
	var ids []string
	err := c.write(ctx, "DeleteExpiredUploads", func(ctx context.Context, tx *sqlx.Tx, now int64) error {
		if limit <= 0 {
			return nil
		}
		return tx.SelectContext(ctx, &ids, `DELETE FROM uploads WHERE id IN (
			SELECT id FROM uploads WHERE expires_at <= ? ORDER BY expires_at LIMIT ?
		) RETURNING id`, now, limit)
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// UploadExists implements catalog.Catalog.
func (c *Catalog) UploadExists(ctx context.Context, id string) (bool, error) {
	var ok bool
	err := c.read(ctx, "UploadExists", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		return tx.GetContext(ctx, &ok, `SELECT EXISTS (SELECT 1 FROM uploads WHERE id = ?)`, id)
	})
	return ok, err
}

// Events.

// appendEvent writes ev as the tenant's next event. The head row of the
// tenant stays write-locked until the transaction ends, so seqs are gapless
// and in commit order.
func appendEvent(ctx context.Context, tx *sqlx.Tx, tenant string, now int64, packageID, fileID string, ev catalog.NewEvent) error {
	var seq int64
	if err := tx.QueryRowxContext(ctx, `INSERT INTO event_heads (tenant, seq) VALUES (?, 1)
		ON CONFLICT (tenant) DO UPDATE SET seq = seq + 1
		RETURNING seq`, tenant).Scan(&seq); err != nil {
		return fmt.Errorf("event head: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO events (tenant, seq, type, time, package_id, file_id, data)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, tenant, seq, ev.Type, now, packageID, fileID, blob(ev.Data))
	return err
}

type eventRow struct {
	Seq       int64  `db:"seq"`
	Type      string `db:"type"`
	Time      int64  `db:"time"`
	Tenant    string `db:"tenant"`
	PackageID string `db:"package_id"`
	FileID    string `db:"file_id"`
	Data      []byte `db:"data"`
}

// Events implements catalog.Catalog.
func (c *Catalog) Events(ctx context.Context, tenant string, since uint64, limit int) ([]catalog.Event, uint64, error) {
	var (
		out  []catalog.Event
		head int64
	)
	err := c.read(ctx, "Events", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
		err := tx.GetContext(ctx, &head, `SELECT seq FROM event_heads WHERE tenant = ?`, tenant)
		if errors.Is(err, sql.ErrNoRows) {
			head = 0
		} else if err != nil {
			return err
		}
		if limit <= 0 || since >= uint64(head) {
			return nil
		}
		var rows []eventRow
		if err := tx.SelectContext(ctx, &rows, `SELECT seq, type, time, tenant, package_id, file_id, data
			FROM events WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?`, tenant, int64(min(since, math.MaxInt64)), limit); err != nil {
			return err
		}
		out = make([]catalog.Event, len(rows))
		for i, r := range rows {
			out[i] = catalog.Event{
				Seq:       uint64(r.Seq),
				Type:      r.Type,
				Time:      fromMS(r.Time),
				Tenant:    r.Tenant,
				PackageID: r.PackageID,
				FileID:    r.FileID,
				Data:      r.Data,
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, uint64(head), nil
}
