// Command mkcatalog builds the SQLite catalog of a data directory holding N
// packages of one tenant, for the listing benchmark: creating a million
// packages through the API would take hours.
//
// It opens the catalog with catalog/sqlite (which creates the schema from
// its migrations), closes it, and then bulk-inserts rows with plain SQL into
// the same tables, in large transactions, with the secondary indexes dropped
// during the load and recreated from their own definitions afterwards. Every
// package gets the rows the store itself would write: the package row (open,
// no files), its metadata rows and its package.created event (with the same
// deterministic-CBOR data), and event_heads holds the tenant's newest seq, so
// the data directory is a valid store.
//
// Package i (0-based, oldest first) has producer ci-(i%10), subject
// svc-(i%1000) and the metadata team=t(i%100, 3 digits), env=(prod, staging,
// dev)[i%3] and git.sha=<40 hex>; IDs are ULIDs 1 ms apart.
package main

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/jmoiron/sqlx"
	_ "github.com/mattn/go-sqlite3"
	"github.com/oklog/ulid/v2"

	"github.com/artifactstore/artifactstore/catalog/sqlite"
)

func main() {
	dir := flag.String("dir", "", "data directory (catalog.db is created in it)")
	n := flag.Int("n", 1_000_000, "number of packages")
	tenant := flag.String("tenant", "bench", "tenant of every package")
	batch := flag.Int("batch", 100_000, "packages per transaction")
	flag.Parse()
	if *dir == "" {
		log.Fatal("mkcatalog: -dir is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	if err := build(filepath.Join(*dir, "catalog.db"), *tenant, *n, *batch); err != nil {
		log.Fatal("mkcatalog: ", err)
	}
	fmt.Fprintf(os.Stderr, "mkcatalog: %d packages in %s\n", *n, time.Since(start).Round(time.Millisecond))
}

func build(path, tenant string, n, batch int) error {
	ctx := context.Background()
	// The schema, exactly as the store creates it.
	c, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}

	q := url.Values{
		"_journal_mode": {"WAL"}, // the store requires WAL; keep it
		"_synchronous":  {"OFF"},
		"_foreign_keys": {"0"},
		"_busy_timeout": {"10000"},
	}
	db, err := sqlx.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, p := range []string{"PRAGMA cache_size = -262144", "PRAGMA temp_store = MEMORY"} {
		if _, err := db.Exec(p); err != nil {
			return err
		}
	}
	var existing int
	if err := db.Get(&existing, `SELECT count(*) FROM packages`); err != nil {
		return err
	}
	if existing != 0 {
		return fmt.Errorf("%s already holds %d packages", path, existing)
	}

	// Secondary indexes are rebuilt from their own definitions after the
	// load (sorting once is much faster than inserting into them).
	type index struct{ Name, SQL string }
	var idx []index
	if err := db.Select(&idx, `SELECT name, sql FROM sqlite_master
		WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ('packages', 'package_metadata', 'events')`); err != nil {
		return err
	}
	for _, ix := range idx {
		if _, err := db.Exec(`DROP INDEX "` + ix.Name + `"`); err != nil {
			return err
		}
	}

	em, err := func() (cbor.EncMode, error) {
		o := cbor.CoreDetEncOptions()
		o.Time = cbor.TimeRFC3339Nano
		return o.EncMode()
	}()
	if err != nil {
		return err
	}
	base := time.Now().Add(-time.Duration(n) * time.Millisecond).Add(-time.Hour).UnixMilli()
	entropy := ulid.Monotonic(rand.New(rand.NewSource(1)), 0)
	envs := []string{"prod", "staging", "dev"}

	for lo := 0; lo < n; lo += batch {
		hi := min(n, lo+batch)
		tx, err := db.Beginx()
		if err != nil {
			return err
		}
		pkg, err := tx.Preparex(`INSERT INTO packages
			(id, tenant, producer, subject, retention_class, state, file_count, total_size, created_at)
			VALUES (?, ?, ?, ?, 'standard', 'open', 0, 0, ?)`)
		if err != nil {
			return err
		}
		md, err := tx.Preparex(`INSERT INTO package_metadata (tenant, package_id, key, value) VALUES (?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		ev, err := tx.Preparex(`INSERT INTO events (tenant, seq, type, time, package_id, file_id, data)
			VALUES (?, ?, 'package.created', ?, ?, '', ?)`)
		if err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			ms := base + int64(i)
			id := ulid.MustNew(uint64(ms), entropy).String()
			producer, subject := fmt.Sprintf("ci-%d", i%10), fmt.Sprintf("svc-%d", i%1000)
			if _, err := pkg.Exec(id, tenant, producer, subject, ms); err != nil {
				return err
			}
			sum := sha1.Sum([]byte(fmt.Sprint(i)))
			// Keys in sorted order, as the store inserts them.
			for _, kv := range [][2]string{
				{"env", envs[i%3]},
				{"git.sha", hex.EncodeToString(sum[:])},
				{"team", fmt.Sprintf("t%03d", i%100)},
			} {
				if _, err := md.Exec(tenant, id, kv[0], kv[1]); err != nil {
					return err
				}
			}
			data, err := em.Marshal(map[string]any{"producer": producer, "subject": subject, "retention_class": "standard"})
			if err != nil {
				return err
			}
			if _, err := ev.Exec(tenant, i+1, ms, id, data); err != nil {
				return err
			}
		}
		pkg.Close()
		md.Close()
		ev.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	if _, err := db.Exec(`INSERT INTO event_heads (tenant, seq) VALUES (?, ?)
		ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq`, tenant, n); err != nil {
		return err
	}
	for _, ix := range idx {
		if _, err := db.Exec(ix.SQL); err != nil {
			return fmt.Errorf("recreating %s: %w", ix.Name, err)
		}
	}
	_, err = db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}
