// Package catalog defines the metadata store of artifactstore: packages,
// files, upload sessions and the per-tenant event log.
//
// The root package validates every input before calling a Catalog, builds
// event payloads and manifests, and translates the sentinel errors below into
// its own error kinds. A Catalog's job is atomicity: every change and its
// event commit in one transaction, event sequence numbers are gapless per
// tenant and in commit order, and a finalized package never changes again.
// Times come from the catalog's own (injectable) clock and are truncated to
// milliseconds. The conformance suite in catalog/catalogtest holds every
// implementation to this contract.
package catalog

import (
	"context"
	"errors"
	"time"
)

// AnyTenant, passed as the tenant to a read method (GetPackage, ListPackages,
// GetFile, ListFiles, GetManifest), matches every tenant. Methods that change
// state and Events need a real tenant.
const AnyTenant = "*"

// Package states.
const (
	StateOpen      = "open"
	StateFinalized = "finalized"
)

// Sentinel errors every implementation returns (possibly wrapped).
var (
	// ErrNotFound: no such package, file or upload for that tenant (an
	// expired upload is not found).
	ErrNotFound = errors.New("catalog: not found")
	// ErrConflict: a unique rule was broken (a path taken in a package, an
	// id reused, an upload offset that moved, an upload completed into
	// another file).
	ErrConflict = errors.New("catalog: conflict")
	// ErrFinalized: the package is finalized and can no longer change.
	ErrFinalized = errors.New("catalog: package finalized")
	// ErrClosed: the catalog was closed.
	ErrClosed = errors.New("catalog: closed")
)

// Package is a package's catalog row. FinalizedAt is zero and ManifestDigest
// empty while the package is open.
type Package struct {
	ID             string
	Tenant         string
	Producer       string
	Subject        string
	RetentionClass string
	Metadata       map[string]string // never nil in results
	State          string
	FileCount      int64
	TotalSize      int64
	CreatedAt      time.Time
	FinalizedAt    time.Time
	ManifestDigest string
}

// File is a file's catalog row.
type File struct {
	ID        string
	Tenant    string
	PackageID string
	Path      string
	Size      int64
	Digest    string
	MediaType string
	CreatedAt time.Time
}

// Upload is an upload session's catalog row. Size is -1 when not declared;
// Digest is empty when not declared. HashState is the marshalled SHA-256
// state over exactly Offset bytes. FileID is set once the upload completed.
type Upload struct {
	ID        string
	Tenant    string
	Offset    int64
	Size      int64
	Digest    string
	HashState []byte
	CreatedAt time.Time
	ExpiresAt time.Time
	FileID    string
}

// Event is one entry of a tenant's event log. Data is an opaque payload
// (the root stores deterministic CBOR there).
type Event struct {
	Seq       uint64
	Type      string
	Time      time.Time
	Tenant    string
	PackageID string
	FileID    string
	Data      []byte
}

// NewEvent is what the caller supplies for an event; the catalog assigns
// Seq and Time and takes Tenant, PackageID and FileID from the change.
type NewEvent struct {
	Type string
	Data []byte
}

// MetaFilter matches packages whose metadata has Key (and, when HasValue,
// whose value equals Value).
type MetaFilter struct {
	Key      string
	Value    string
	HasValue bool
}

// PackageFilter selects packages. Empty strings match anything. Results are
// newest first (descending ID); Before, when set, is an exclusive upper bound
// on the ID (keyset pagination).
type PackageFilter struct {
	Producer       string
	Subject        string
	RetentionClass string
	State          string
	Metadata       []MetaFilter // all must match
	Before         string
	Limit          int // > 0
}

// FileFilter selects files of one package. Results are sorted by path,
// bytewise; After, when set, is an exclusive lower bound on the path.
type FileFilter struct {
	Prefix string
	After  string
	Limit  int // > 0
}

// Finalization is what a BuildFunc produces: the manifest's bytes and digest,
// and the payload of the package.finalized event.
type Finalization struct {
	Manifest  []byte
	Digest    string
	EventData []byte
}

// BuildFunc builds a package's manifest inside the finalizing transaction,
// from the package and all of its files sorted by path (bytewise). p has
// State finalized and FinalizedAt set. An error aborts the finalization.
type BuildFunc func(p Package, files []File) (Finalization, error)

// Catalog is the metadata store. Implementations are safe for concurrent use
// by many goroutines (and, for networked databases, many processes).
type Catalog interface {
	// CreatePackage stores p (its ID and fields chosen by the caller) as
	// open, with CreatedAt from the catalog clock, together with an event of
	// type ev.Type. ErrConflict if the ID exists.
	CreatePackage(ctx context.Context, p Package, ev NewEvent) (Package, error)

	// GetPackage returns a package of tenant, or ErrNotFound.
	GetPackage(ctx context.Context, tenant, id string) (Package, error)

	// ListPackages returns up to f.Limit packages of tenant matching f,
	// newest first.
	ListPackages(ctx context.Context, tenant string, f PackageFilter) ([]Package, error)

	// AddFile adds f (ID chosen by the caller, CreatedAt from the catalog
	// clock) to the open package f.PackageID of f.Tenant, updates the
	// package's file count and total size, and writes ev, all at once.
	// ErrNotFound if the package does not exist, ErrFinalized if it is
	// finalized, ErrConflict if the path is taken.
	AddFile(ctx context.Context, f File, ev NewEvent) (File, error)

	// GetFile returns a file of tenant, or ErrNotFound.
	GetFile(ctx context.Context, tenant, id string) (File, error)

	// ListFiles returns up to f.Limit files of a package of tenant, sorted
	// by path. ErrNotFound if the package does not exist.
	ListFiles(ctx context.Context, tenant, packageID string, f FileFilter) ([]File, error)

	// Finalize freezes an open package: inside one transaction it calls
	// build with the package and all its files, stores the manifest and
	// digest, marks the package finalized at the catalog clock's time and
	// writes an event of type evType with the built payload. No file can be
	// added to the package once Finalize has begun reading its files. If the
	// package is finalized already, Finalize returns it unchanged without
	// calling build or writing an event. ErrNotFound if it does not exist.
	Finalize(ctx context.Context, tenant, id string, evType string, build BuildFunc) (Package, error)

	// GetManifest returns a finalized package and its manifest bytes.
	// ErrNotFound if the package does not exist; ErrConflict if it is open.
	GetManifest(ctx context.Context, tenant, id string) (Package, []byte, error)

	// CreateUpload stores a new session u (ID, Tenant, Size, Digest and
	// HashState chosen by the caller, Offset 0) that expires ttl after now.
	CreateUpload(ctx context.Context, u Upload, ttl time.Duration) (Upload, error)

	// GetUpload returns an unexpired session, or ErrNotFound.
	GetUpload(ctx context.Context, tenant, id string) (Upload, error)

	// ClaimUpload gives holder the right to append to an unexpired,
	// uncompleted session at offset, until ttl from now: appends to one
	// session are exclusive across every process sharing the catalog. The
	// same holder may claim again to extend its claim. ErrConflict if the
	// session's offset is not offset, it has completed, or another holder's
	// claim has not run out; ErrNotFound if missing or expired.
	ClaimUpload(ctx context.Context, tenant, id, holder string, offset int64, ttl time.Duration) (Upload, error)

	// AdvanceUpload moves a session that holder has claimed from offset
	// from to offset to (to == from just gives the claim up) with the given
	// hash state, and ends the claim. ErrConflict if holder's claim ran out
	// or was taken over, its offset is not from, or it has completed;
	// ErrNotFound if missing or expired.
	AdvanceUpload(ctx context.Context, tenant, id, holder string, from, to int64, hashState []byte) (Upload, error)

	// CompleteUpload turns a session into file f of an open package, like
	// AddFile, and records f's ID on the session, all at once. If the
	// session completed already into a file with the same package and
	// path, that file is returned and nothing changes; into another one,
	// ErrConflict. ErrNotFound if the session is missing or expired.
	CompleteUpload(ctx context.Context, uploadID string, f File, ev NewEvent) (File, error)

	// DeleteUpload removes a session (expired or not). ErrNotFound if
	// missing.
	DeleteUpload(ctx context.Context, tenant, id string) error

	// DeleteExpiredUploads removes up to limit sessions whose expiry has
	// passed and returns their IDs.
	DeleteExpiredUploads(ctx context.Context, limit int) ([]string, error)

	// UploadExists reports whether a session row exists for id, of any
	// tenant, expired or not.
	UploadExists(ctx context.Context, id string) (bool, error)

	// DigestReferenced reports whether any file has this digest.
	DigestReferenced(ctx context.Context, digest string) (bool, error)

	// Events returns up to limit events of tenant with Seq > since, in Seq
	// order, and head, the tenant's newest Seq (0 when it has none).
	Events(ctx context.Context, tenant string, since uint64, limit int) ([]Event, uint64, error)

	// Close releases the catalog. Using it afterwards returns ErrClosed.
	Close() error
}

// Listener is implemented by catalogs shared by several processes (a
// networked database): Listen calls onEvent with a tenant after every
// committed transaction of another process (or this one) that wrote that
// tenant's events, so long-polls wake up across replicas without polling.
// Notifications are hints; readers always re-read Events from their cursor.
// Listen blocks until ctx ends, the catalog closes, or its connection fails
// (the caller then listens again).
type Listener interface {
	Listen(ctx context.Context, onEvent func(tenant string)) error
}
