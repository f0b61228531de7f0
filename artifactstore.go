// Package artifactstore is a content-addressed store for build and data
// packages.
//
// A producer creates a package, puts files into it (streamed, digest
// verified) and finalizes it into an immutable, deterministic manifest.
// Consumers list packages, read files with ranges and tail an ordered,
// gapless per-tenant event log. Every rule of the store lives in this
// package; the HTTP server, the client and the CLI are thin layers over it.
//
// A Store runs over two backends chosen by the caller: a blob.Store for
// bytes and a catalog.Catalog for metadata. The embedded default (a SQLite
// catalog and files on disk under one data directory) is wired by the
// embedded package:
//
//	st, err := embedded.Open(ctx, "./artifactstore-data", artifactstore.Options{})
//
// Every operation is scoped to a tenant. A resource of another tenant is
// NotFound, exactly like a missing one.
package artifactstore

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/catalog"
)

// AllTenants, passed as the tenant of a read operation (GetPackage,
// ListPackages, GetFile, ListFiles, OpenFile, Manifest), reads every
// tenant's packages. It is meant for anonymous development reads; write
// operations and Events reject it.
const AllTenants = catalog.AnyTenant

// DefaultRetentionClasses are the retention classes a Store accepts unless
// Options.RetentionClasses says otherwise; DefaultRetentionClass is the one a
// package gets when it names none.
var DefaultRetentionClasses = []string{"ephemeral", "standard", "permanent"}

// DefaultRetentionClass is the retention class of a package that names none.
const DefaultRetentionClass = "standard"

// Defaults of Options.
const (
	DefaultMaxFileSize     = int64(1) << 40 // 1 TiB
	DefaultUploadTTL       = 24 * time.Hour
	DefaultUploadClaimTTL  = 10 * time.Second
	DefaultOrphanGrace     = time.Hour
	DefaultCleanupInterval = 10 * time.Minute
)

// Options configure a Store. The zero value of every field but Blobs and
// Catalog is a sensible default.
type Options struct {
	// Blobs holds file contents; Catalog holds metadata. Both are required;
	// the Store owns them from Open on and closes them in Close.
	Blobs   blob.Store
	Catalog catalog.Catalog

	// RetentionClasses a package may name (default DefaultRetentionClasses).
	RetentionClasses []string
	// MaxFileSize caps one file (default DefaultMaxFileSize).
	MaxFileSize int64
	// UploadTTL is how long an upload session lives after it is created
	// (default DefaultUploadTTL).
	UploadTTL time.Duration
	// UploadClaimTTL is how long an append or completion holds an upload
	// session without renewing its claim (default DefaultUploadClaimTTL):
	// after a process dies mid-append, the session can be appended to again
	// after this long.
	UploadClaimTTL time.Duration
	// OrphanGrace is how old an unreferenced blob must be before Cleanup
	// deletes it (default DefaultOrphanGrace). It must be longer than any
	// single PutFile takes between storing its bytes and recording the file.
	OrphanGrace time.Duration
	// CleanupInterval is how often the Store runs Cleanup in the background
	// (default DefaultCleanupInterval; negative disables it).
	CleanupInterval time.Duration
	// Logger receives internal errors of background work (default: discard).
	Logger *slog.Logger
}

// Store is an artifact store. It is safe for concurrent use.
type Store struct {
	blobs  blob.Store
	cat    catalog.Catalog
	opts   Options
	log    *slog.Logger
	notify *notifier
	files  *recent[File]
	pkgs   *recent[pkgHint] // what PutFile last saw of packages (see checkOpen)

	// gc is held shared from a blob's commit until its file is recorded,
	// and exclusively while Cleanup checks and deletes one orphan, so a
	// blob that is about to be referenced is never collected.
	gc sync.RWMutex

	ids struct {
		sync.Mutex
		entropy *ulid.MonotonicEntropy
	}

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open returns a Store over the backends in opts. It starts the background
// cleanup of expired upload sessions and orphaned bytes.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Blobs == nil || opts.Catalog == nil {
		return nil, errorf("Open", Invalid, "Options.Blobs and Options.Catalog are required")
	}
	if len(opts.RetentionClasses) == 0 {
		opts.RetentionClasses = DefaultRetentionClasses
	}
	opts.RetentionClasses = slices.Clone(opts.RetentionClasses)
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.UploadTTL <= 0 {
		opts.UploadTTL = DefaultUploadTTL
	}
	if opts.UploadClaimTTL <= 0 {
		opts.UploadClaimTTL = DefaultUploadClaimTTL
	}
	if opts.OrphanGrace <= 0 {
		opts.OrphanGrace = DefaultOrphanGrace
	}
	if opts.CleanupInterval == 0 {
		opts.CleanupInterval = DefaultCleanupInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		blobs:  opts.Blobs,
		cat:    opts.Catalog,
		opts:   opts,
		log:    log,
		notify: newNotifier(),
		files:  newRecent[File](fileCacheSize),
		pkgs:   newRecent[pkgHint](packageCacheSize),
	}
	s.ids.entropy = ulid.Monotonic(rand.Reader, 0)

	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	if opts.CleanupInterval > 0 {
		s.wg.Go(func() { s.cleanupLoop(bg) })
	}
	if l, ok := opts.Catalog.(catalog.Listener); ok {
		s.wg.Go(func() { s.listen(bg, l) })
	}
	return s, nil
}

// listen relays the catalog's change notifications (other replicas'
// commits) to this Store's long-polls, listening again after a failure.
func (s *Store) listen(ctx context.Context, l catalog.Listener) {
	for ctx.Err() == nil {
		err := l.Listen(ctx, func(string) { s.notify.broadcast() })
		if ctx.Err() != nil || errors.Is(err, catalog.ErrClosed) {
			return
		}
		s.log.Warn("artifactstore: catalog notifications stopped; listening again", "err", err)
		// Whatever committed meanwhile: wake the waiters to re-read.
		s.notify.broadcast()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Close stops background work and closes both backends. Operations after
// Close fail.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.wg.Wait()
		s.notify.close()
		s.closeErr = errors.Join(s.cat.Close(), s.blobs.Close())
	})
	return s.closeErr
}

// newID returns a new time-ordered, URL-safe identifier (a ULID). IDs issued
// by one Store are strictly increasing.
func (s *Store) newID() string {
	s.ids.Lock()
	defer s.ids.Unlock()
	return ulid.MustNew(ulid.Now(), s.ids.entropy).String()
}

func (s *Store) cleanupLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.CleanupInterval)
	defer t.Stop()
	for {
		if err := s.Cleanup(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("artifactstore: background cleanup", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Cleanup deletes expired upload sessions with their bytes, staged bytes
// that no session owns, and blobs that no file references and that are older
// than Options.OrphanGrace. Orphans come from crashes and from writes that
// lost a race (a path taken, a package finalized meanwhile); they are never
// served, since only files recorded in the catalog are.
func (s *Store) Cleanup(ctx context.Context) error {
	const op = "Cleanup"
	for {
		ids, err := s.cat.DeleteExpiredUploads(ctx, 500)
		if err != nil {
			return wrap(op, err)
		}
		for _, id := range ids {
			if err := s.blobs.Uploads().Delete(ctx, id); err != nil && !errors.Is(err, blob.ErrNotFound) {
				return wrap(op, err)
			}
		}
		if len(ids) < 500 {
			break
		}
	}
	for id, err := range s.blobs.Uploads().All(ctx) {
		if err != nil {
			return wrap(op, err)
		}
		ok, err := s.cat.UploadExists(ctx, id)
		if err != nil {
			return wrap(op, err)
		}
		if !ok {
			if err := s.blobs.Uploads().Delete(ctx, id); err != nil && !errors.Is(err, blob.ErrNotFound) {
				return wrap(op, err)
			}
		}
	}
	cutoff := time.Now().Add(-s.opts.OrphanGrace)
	for info, err := range s.blobs.All(ctx) {
		if err != nil {
			return wrap(op, err)
		}
		if info.ModTime.After(cutoff) {
			continue
		}
		ok, err := s.cat.DigestReferenced(ctx, info.Digest)
		if err != nil {
			return wrap(op, err)
		}
		if ok {
			continue
		}
		if err := s.collect(ctx, info.Digest, cutoff); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}

// collect deletes an unreferenced blob unless a write touched it since the
// listing. Writes in this process are excluded by s.gc; writes elsewhere by
// the refreshed modification time.
func (s *Store) collect(ctx context.Context, digest string, cutoff time.Time) error {
	s.gc.Lock()
	defer s.gc.Unlock()
	cur, err := s.blobs.Stat(ctx, digest)
	if err != nil || cur.ModTime.After(cutoff) {
		return nil
	}
	if ok, err := s.cat.DigestReferenced(ctx, digest); err != nil || ok {
		return err
	}
	if err := s.blobs.Delete(ctx, digest); err != nil && !errors.Is(err, blob.ErrNotFound) {
		return err
	}
	return nil
}

// Options returns the options the Store runs with, defaults filled in.
func (s *Store) Options() Options {
	o := s.opts
	o.RetentionClasses = slices.Clone(o.RetentionClasses)
	return o
}
