// Package blob defines the content-addressed byte store that artifactstore
// keeps file contents in, and the staging area that resumable upload sessions
// append to.
//
// A backend is deliberately narrow and trusts its caller: the root package
// validates inputs and computes every SHA-256 digest. A backend only has to
// make bytes durable before it says so, never expose half-written bytes, and
// speak the sentinel errors below. The conformance suite in blob/blobtest
// holds every backend to this contract.
//
// Digests are strings of the form "sha256:<64 lowercase hex>"; callers always
// pass well-formed digests.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync"
	"time"
)

// Sentinel errors every backend returns (possibly wrapped).
var (
	// ErrNotFound: no blob or staged upload under that name.
	ErrNotFound = errors.New("blob: not found")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("blob: store closed")
	// ErrNoSpace: the backing storage is full.
	ErrNoSpace = errors.New("blob: no space left")
)

// Info describes a stored blob.
type Info struct {
	Digest  string
	Size    int64
	ModTime time.Time // last write or re-commit; used for the orphan grace period
}

// Store is a content-addressed blob store. Implementations are safe for
// concurrent use.
type Store interface {
	// Create starts a staged write. Nothing written to the Writer is visible
	// through Open, Stat or All until Commit returns nil. The caller must call
	// exactly one of Commit or Abort. If ctx is cancelled before Commit, the
	// write fails and nothing is left behind.
	Create(ctx context.Context) (Writer, error)

	// Open returns a reader over the whole blob. The caller closes it. The
	// reader supports Seek so callers can serve ranges; for local files it
	// wraps an *os.File (and implements syscall.Conn) so that the kernel's
	// sendfile path stays available.
	Open(ctx context.Context, digest string) (Reader, error)

	// Stat reports the blob's size and modification time, or ErrNotFound.
	Stat(ctx context.Context, digest string) (Info, error)

	// Delete removes a blob. Deleting a missing blob returns ErrNotFound.
	Delete(ctx context.Context, digest string) error

	// All iterates over every committed blob, in no particular order. Staged
	// writes and uploads are not listed.
	All(ctx context.Context) iter.Seq2[Info, error]

	// Uploads returns the staging area of resumable upload sessions.
	Uploads() Uploads

	// Close releases the store. Using it afterwards returns ErrClosed.
	Close() error
}

// Reader reads a blob. Size is the blob's length in bytes.
type Reader interface {
	io.ReadSeekCloser
	Size() int64
}

// Writer receives the bytes of a staged write.
type Writer interface {
	io.Writer

	// Commit makes the bytes written so far durable (written, synced, moved
	// into place) and visible under digest. The caller has verified that
	// digest is the SHA-256 of exactly those bytes. If a blob with that digest
	// exists already, the staged bytes are discarded and the existing blob's
	// ModTime is refreshed (equal content is stored once). Commit fails if ctx
	// was cancelled, leaving nothing behind.
	Commit(digest string) error

	// Abort discards the staged bytes. It is safe to call after Commit (it
	// then does nothing) and more than once.
	Abort() error
}

// Uploads is the staging area of resumable upload sessions: one growing byte
// sequence per session id. Session ids are opaque, URL-safe strings chosen by
// the caller. The catalog, not the backend, is the authority on how many bytes
// an upload has: the backend may hold more bytes than were acknowledged (a
// crash after writing, before the catalog recorded them); Append at an offset
// discards anything past it.
type Uploads interface {
	// Append writes the bytes of r at offset, first discarding anything
	// stored beyond offset. It returns how many bytes of r it made durable,
	// even when it also returns an error: a read error from r (a client that
	// went away) still leaves the bytes that arrived durable and counted. An
	// error that is not r's (the disk, the network to the backend) makes the
	// count unreliable; callers then do not advance their offset. r's error
	// is returned as is or wrapped (errors.Is finds it). Append on a missing
	// upload creates it when offset is 0 and returns ErrNotFound otherwise;
	// an offset beyond the stored bytes is an error (a gap would be
	// corruption). Callers serialize Appends to one id and never Append
	// after Commit.
	Append(ctx context.Context, id string, offset int64, r io.Reader) (int64, error)

	// Open reads the first size bytes of the staged upload (for re-deriving
	// the hash state). The caller closes it.
	Open(ctx context.Context, id string, size int64) (io.ReadCloser, error)

	// Commit promotes the first size bytes of the staged upload into the blob
	// store under digest, durably, like Writer.Commit. The staged bytes stay
	// until Delete, so Commit can be retried after a crash; if the blob
	// exists already, Commit succeeds even when the staged bytes are gone.
	// ErrNotFound if neither exists.
	Commit(ctx context.Context, id string, size int64, digest string) error

	// Delete removes the staged upload. Deleting a missing one returns
	// ErrNotFound.
	Delete(ctx context.Context, id string) error

	// All lists the ids of the staged uploads, for collecting orphans.
	All(ctx context.Context) iter.Seq2[string, error]
}

// CopyStream copies r to w until r ends, r fails or ctx is done, through a
// pooled 1 MiB buffer (io.Copy would hand the copy to an *os.File's
// ReadFrom and its 32 KiB buffer), and returns the bytes written. It tells
// the two sides' failures apart, for a backend must not blame its own
// storage on the caller's stream: writeErr is w's error; readErr is r's (not
// io.EOF) or ctx's.
func CopyStream(ctx context.Context, w io.Writer, r io.Reader) (n int64, writeErr, readErr error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		if err := ctx.Err(); err != nil {
			return n, nil, err
		}
		nr, rerr := r.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr, nil
			}
		}
		if rerr == io.EOF {
			return n, nil, nil
		}
		if rerr != nil {
			return n, nil, rerr
		}
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// DigestPrefix starts every digest: the store addresses blobs by SHA-256.
const DigestPrefix = "sha256:"

// DigestHex returns the 64 lowercase hex digits of digest, and whether
// digest is well formed: DigestPrefix followed by them. Backends name blobs
// by these digits; they check a digest with it before turning it into a
// path or key.
func DigestHex(digest string) (string, bool) {
	h, ok := strings.CutPrefix(digest, DigestPrefix)
	return h, ok && IsDigestHex(h)
}

// IsDigestHex reports whether s is 64 lowercase hex digits: the name a
// backend gives a blob.
func IsDigestHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// MaxUploadIDLen is the longest upload session id a backend accepts.
const MaxUploadIDLen = 128

// CheckUploadID reports whether id is a usable upload session id: 1 to
// MaxUploadIDLen characters of [A-Za-z0-9_-], safe as a file name and as an
// object key segment. Backends check ids with it before touching storage.
func CheckUploadID(id string) error {
	if len(id) == 0 || len(id) > MaxUploadIDLen {
		return fmt.Errorf("invalid upload id %q: length must be 1..%d", id, MaxUploadIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("invalid upload id %q: only [A-Za-z0-9_-] allowed", id)
		}
	}
	return nil
}
