// Package fsblob is a blob.Store on a local file system.
//
// A store owns one directory:
//
//	dir/LOCK                          flock(2)ed while a Store has the directory open
//	dir/blobs/sha256/<2 hex>/<64 hex> committed blobs, named by digest
//	dir/tmp/<random>                  staged writes; emptied by Open
//	dir/uploads/<id>                  resumable upload sessions
//
// A staged write goes to a temp file in dir/tmp, which is on the same file
// system as dir/blobs, so that Commit can rename it into place atomically.
// Commit returns only once the blob's bytes and its name are durable; a
// crash leaves at most temp files, which the next Open removes, and, for
// small blobs, possibly a torn blob (below), which is never trusted.
//
// How Commit makes a blob durable depends on its size:
//
//   - A blob larger than 1 MiB: fsync of the temp file, close, rename, fsync
//     of the shard directory dir/blobs/sha256/<2 hex>. Such a blob is never
//     in place without its bytes.
//   - A smaller one is renamed into place first, then made durable, bytes
//     and name at once, by one round of the store's flusher. A round serves
//     the commits that queued before it started. With just one it runs that
//     commit's own fsyncs (the file, then the shard directory); with several
//     it runs one syncfs(2) on a descriptor of dir, which writes back all
//     the file system's dirty data and metadata (committing the journal, if
//     it has one) and flushes the disk's cache, and its result, success or
//     error, is every one's. (Outside Linux, which has no syncfs, every
//     commit in a round runs its own fsyncs.) A commit whose round fails
//     removes the blob's name again.
//
// Small blobs are grouped because their cost is the flushes, not the
// writing: with many concurrent small commits (a CI job uploading thousands
// of files) one syncfs per round replaces two fsyncs per file, and renaming
// first halves the waits. The price of renaming first: a crash before the
// round can leave a small blob's name on disk without its bytes. Nothing
// refers to such a blob (Commit had not returned), and the only way to
// adopt a blob without writing it, the shortcut for content already stored,
// verifies a small blob's bytes against its name first (see refresh); a
// torn one is removed and written again, and the garbage collector removes
// the rest like any unreferenced blob. The trade-off of grouping: once two or
// more commits wait together, their round flushes the dirty data of the
// whole file system, other files of the store (a large blob or an upload
// being written) and other programs' alike, so they may wait for unrelated
// writes, and a writeback error anywhere on the file system fails them.
// Large blobs keep their own fsync, which dominates their commit anyway and
// would otherwise hold up the small ones' rounds. A failed syncfs also fails
// the commits that were in flight when it returned, since it may have been
// their pages' error (see groupsync.go).
//
// Uploads.Commit hard-links the staged file into place when the whole staged
// file is being committed (copying where the file system has no hard links),
// and copies the prefix into a temp file otherwise. After a link the
// upload and the blob share an inode, so the upload must not be appended to
// again; Append refuses to write to a staged file that has more than one link.
//
// Readers are plain files (io.Copy to a socket uses sendfile), and a closed
// Reader's file is kept open for the blob's next reader, up to 128 of them
// in the store (see handles.go): reading a blob again costs an lseek, not an
// open, an fstat and a close.
//
// Open takes an exclusive lock on dir/LOCK, so only one Store (in any
// process) uses a directory at a time; the lock is released by Close or when
// the process exits.
package fsblob

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/artifactstore/artifactstore/blob"
)

const (
	writeBufferSize = 256 << 10 // Writer's bufio size; measured to help multipart uploads

	// groupSyncMax is the largest staged write whose Commit waits for a
	// group sync rather than syncing on its own (see the package comment).
	groupSyncMax = 1 << 20
)

// Store is a blob.Store in a local directory. It is safe for concurrent use.
type Store struct {
	dir     string
	blobs   string // dir/blobs/sha256
	tmp     string // dir/tmp
	uploads string // dir/uploads
	lock    *os.File
	closed  atomic.Bool

	fsDir   *os.File // dir, open for the group syncs' syncfs(2)
	shards  sync.Map // shard directories known to exist (see ensureShard)
	landing landing  // blobs renamed into place, not yet durably
	flush   flusher  // group syncs for small commits
	handles handles  // read handles kept open between reads

	// groupSyncThreshold is the largest staged write that is committed
	// with group syncs, groupSyncMax; a benchmark sets it to -1 to measure
	// the per-file path.
	groupSyncThreshold int64
}

var (
	_ blob.Store   = (*Store)(nil)
	_ blob.Uploads = (*uploads)(nil)
	_ blob.Writer  = (*writer)(nil)
	_ blob.Reader  = (*Reader)(nil)
)

// Open opens the store in dir, creating the directory layout if needed, and
// locks it against other Stores. It removes temp files that a crashed
// process left behind in dir/tmp.
func Open(dir string) (*Store, error) {
	s := &Store{
		dir:                dir,
		blobs:              filepath.Join(dir, "blobs", "sha256"),
		tmp:                filepath.Join(dir, "tmp"),
		uploads:            filepath.Join(dir, "uploads"),
		groupSyncThreshold: groupSyncMax,
	}
	s.flush.syncAll = s.syncFS
	for _, d := range []string{s.blobs, s.tmp, s.uploads} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("fsblob: open %s: %w", dir, mapErr(err))
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fsblob: open %s: %w", dir, mapErr(err))
	}
	if err := flock(lock); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("fsblob: open %s: directory is in use by another store (%s is locked)", dir, lock.Name())
		}
		return nil, fmt.Errorf("fsblob: open %s: lock: %w", dir, err)
	}
	s.lock = lock
	if err := s.removeTemps(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("fsblob: open %s: %w", dir, err)
	}
	// Make the layout itself durable.
	for _, d := range []string{filepath.Join(dir, "blobs"), dir} {
		if err := syncDir(d); err != nil {
			lock.Close()
			return nil, fmt.Errorf("fsblob: open %s: %w", dir, err)
		}
	}
	// Opened after the syncs above: syncfs on it reports the writeback
	// errors from now on.
	if s.fsDir, err = os.Open(dir); err != nil {
		lock.Close()
		return nil, fmt.Errorf("fsblob: open %s: %w", dir, err)
	}
	return s, nil
}

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// removeTemps removes the staged writes of a process that did not finish
// them; holding the lock, no one else is writing there.
func (s *Store) removeTemps() error {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return fmt.Errorf("cleaning %s: %w", s.tmp, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil {
			return fmt.Errorf("cleaning %s: %w", s.tmp, err)
		}
	}
	return nil
}

// Close releases the directory lock. Readers opened before stay usable;
// every later call on the store returns blob.ErrClosed, as does a second
// Close. A Commit that found the store open finishes, syncing on its own if
// it is still waiting for a group sync.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return blob.ErrClosed
	}
	s.handles.drop("")
	err := s.fsDir.Close()
	// Closing the descriptor releases the flock.
	if lerr := s.lock.Close(); lerr != nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("fsblob: close: %w", err)
	}
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return blob.ErrClosed
	}
	return ctx.Err()
}

// path returns the file name of a blob. Callers pass well-formed digests;
// a malformed one is refused rather than turned into a path.
func (s *Store) path(digest string) (string, error) {
	hexPart, ok := blob.DigestHex(digest)
	if !ok {
		return "", fmt.Errorf("fsblob: malformed digest %q", digest)
	}
	return filepath.Join(s.blobs, hexPart[:2], hexPart), nil
}

// Create starts a staged write into a temp file in dir/tmp.
func (s *Store) Create(ctx context.Context) (blob.Writer, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("fsblob: create: %w", err)
	}
	f, err := os.CreateTemp(s.tmp, "write-*")
	if err != nil {
		return nil, fmt.Errorf("fsblob: create: %w", mapErr(err))
	}
	bw := writeBufs.Get().(*bufio.Writer)
	bw.Reset(f)
	return &writer{s: s, ctx: ctx, f: f, bw: bw, epoch: s.flush.epoch()}, nil
}

// writeBufs recycles the writers' buffers: a fresh 256 KiB per small blob
// cost more than writing the blob.
var writeBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}

// release returns the buffer to the pool once the writer is done with it.
func (w *writer) release() {
	if w.bw != nil {
		w.bw.Reset(nil)
		writeBufs.Put(w.bw)
		w.bw = nil
	}
}

// writer is a staged write. It is not safe for concurrent use.
type writer struct {
	s     *Store
	ctx   context.Context
	f     *os.File
	bw    *bufio.Writer
	n     int64  // bytes written
	epoch uint64 // s.flush's epoch before the first write
	done  bool   // committed, aborted or failed; the temp file is gone or in place
	err   error
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("fsblob: write after commit or abort")
	}
	if w.err != nil {
		return 0, w.err
	}
	if err := w.ctx.Err(); err != nil {
		w.err = fmt.Errorf("fsblob: write: %w", err)
		return 0, w.err
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("fsblob: write: %w", mapErr(err))
		return n, w.err
	}
	return n, nil
}

// Commit flushes, syncs and closes the temp file, then either refreshes an
// existing blob's ModTime or renames the temp file into place and syncs the
// shard directory. A write of at most s.groupSyncThreshold bytes waits for
// group syncs instead of syncing the file and the directory itself (see the
// package comment). On any failure the temp file is removed.
func (w *writer) Commit(digest string) (err error) {
	if w.done {
		return errors.New("fsblob: commit after commit or abort")
	}
	w.done = true
	defer w.release()
	name := w.f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				w.f.Close()
			}
			os.Remove(name)
			err = fmt.Errorf("fsblob: commit %s: %w", digest, err)
		}
	}()
	if w.err != nil {
		return w.err
	}
	if w.s.closed.Load() {
		return blob.ErrClosed
	}
	target, err := w.s.path(digest)
	if err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		return mapErr(err)
	}
	// Like gocloud's fileblob: a write cancelled before Commit must not land.
	if err := w.ctx.Err(); err != nil {
		return err
	}
	// Equal content is stored once: when the blob exists (durably: see
	// refresh), drop the staged copy without paying for its fsync.
	if ok, err := w.s.refresh(target); err != nil {
		return err
	} else if ok {
		closed = true
		w.f.Close()
		return os.Remove(name)
	}
	if w.n > w.s.groupSyncThreshold {
		// A large blob syncs on its own: its fsync dominates its commit
		// anyway, and in a group sync the small commits would wait for
		// its dirty pages.
		if err := w.f.Sync(); err != nil {
			return mapErr(err)
		}
		closed = true
		if err := w.f.Close(); err != nil {
			return mapErr(err)
		}
		return w.s.place(name, target)
	}
	// A small blob is renamed into place first and made durable, data and
	// name together, by one wait: a group sync, or, when this commit is
	// alone, its own fsyncs of the file and the shard directory (so the
	// file stays open until then). Until that returns, the blob is visible
	// but not durable: a crash can leave its name without its bytes, which
	// is why a blob found in place is verified before it is trusted (see
	// refresh). An equal blob that landed since the refresh above is
	// replaced by the same bytes: this commit's own rename is the one its
	// wait makes durable.
	shard := filepath.Dir(target)
	defer w.s.landing.add(target)()
	if err := w.s.renameInto(name, target); err != nil {
		return err
	}
	f := w.f
	closed = true // f is closed below, not by the deferred cleanup
	err = w.s.flush.wait(w.epoch, func() error {
		if err := f.Sync(); err != nil {
			return err
		}
		return syncDir(shard)
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Not durable, perhaps not even on disk (a failed writeback leaves
		// clean pages behind): the name must go, or a later commit of equal
		// content would trust it; unless another commit of equal content
		// is landing there too, whose own wait decides.
		if w.s.landing.count(target) == 1 {
			os.Remove(target)
			w.s.handles.drop(target)
		}
		return mapErr(err)
	}
	return nil
}

// place moves the synced temp file tmpName into place as target, or, when
// target exists, drops tmpName and refreshes target's ModTime. It removes
// tmpName on failure.
func (s *Store) place(tmpName, target string) error {
	if ok, err := s.refresh(target); err != nil {
		os.Remove(tmpName)
		return err
	} else if ok {
		if err := os.Remove(tmpName); err != nil {
			return err
		}
		return nil
	}
	shard := filepath.Dir(target)
	defer s.landing.add(target)()
	if err := s.renameInto(tmpName, target); err != nil {
		os.Remove(tmpName)
		return err
	}
	return syncDir(shard)
}

// landing counts, per target path, the renames (and links) into place whose
// directory sync has not returned yet: a blob found at such a path is
// visible but could still vanish in a crash.
type landing struct {
	mu sync.Mutex
	m  map[string]int
}

// add records a landing at target until the returned func is called.
func (l *landing) add(target string) (done func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]int{}
	}
	l.m[target]++
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		if l.m[target]--; l.m[target] == 0 {
			delete(l.m, target)
		}
		l.mu.Unlock()
	}
}

func (l *landing) has(target string) bool { return l.count(target) > 0 }

// count returns the landings in progress at target.
func (l *landing) count(target string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[target]
}

// refresh sets target's ModTime to now and reports whether target exists,
// durably and whole. A blob another commit has renamed into place but not
// yet made durable is made durable here (with the flusher) before it is
// reported. A small blob is verified against its name first: small blobs
// are renamed into place before they are durable (see Commit), so after a
// crash one may be there without its bytes; such a blob is removed and
// reported absent, to be written again.
func (s *Store) refresh(target string) (bool, error) {
	now := time.Now()
	err := os.Chtimes(target, now, now)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, mapErr(err)
	}
	if s.landing.has(target) {
		err := s.flush.wait(s.flush.epoch(), func() error {
			f, err := os.Open(target)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := f.Sync(); err != nil {
				return err
			}
			return syncDir(filepath.Dir(target))
		})
		return err == nil, mapErr(err)
	}
	ok, err := verify(target, s.groupSyncThreshold)
	if err != nil || ok {
		return ok, err
	}
	err = os.Remove(target)
	s.handles.drop(target)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, mapErr(err)
	}
	return false, nil
}

// verify reports whether the blob at target, when it is no larger than max,
// hashes to its name; larger blobs are durable before they are renamed into
// place and are not read.
func verify(target string, max int64) (bool, error) {
	f, err := os.Open(target)
	if err != nil {
		return false, mapErr(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, mapErr(err)
	}
	if fi.Size() > max {
		return true, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, mapErr(err)
	}
	return hex.EncodeToString(h.Sum(nil)) == filepath.Base(target), nil
}

// renameInto renames name to target, creating target's shard directory if
// needed.
func (s *Store) renameInto(name, target string) error {
	shard := filepath.Dir(target)
	if err := s.ensureShard(shard); err != nil {
		return err
	}
	err := os.Rename(name, target)
	if errors.Is(err, fs.ErrNotExist) {
		// The shard vanished since it was seen (or the source did: then
		// the retry fails the same way).
		s.shards.Delete(shard)
		if err := s.ensureShard(shard); err != nil {
			return err
		}
		err = os.Rename(name, target)
	}
	return mapErr(err)
}

// ensureShard creates a shard directory if needed, remembering the shards
// known to exist: the store never removes one, and a mkdir that fails with
// EEXIST on every commit cost a syscall per blob. Should one vanish anyway
// (removed by hand), renameInto forgets it and creates it again.
func (s *Store) ensureShard(dir string) error {
	if _, ok := s.shards.Load(dir); ok {
		return nil
	}
	switch err := os.Mkdir(dir, 0o755); {
	case err == nil:
		// Synced, so that a rename into the new shard survives a crash.
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrExist):
		return mapErr(err)
	}
	s.shards.Store(dir, struct{}{})
	return nil
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.release()
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fsblob: abort: %w", err)
	}
	return nil
}

// Reader is a blob opened for reading. Read, Seek and the rest are the
// underlying *os.File's, so io.Copy to a TCP connection can use sendfile(2).
// Close hands the file back to the store for the blob's next reader (see
// handles); the Reader must not be used after it.
type Reader struct {
	*osFile
	size  int64
	store *Store
	path  string // the blob's file name, its key in store.handles
	gen   uint64
}

type osFile = os.File

// Size returns the blob's length in bytes.
func (r *Reader) Size() int64 { return r.size }

// File returns the underlying file.
func (r *Reader) File() *os.File { return r.osFile }

// Close releases the Reader; a second Close returns os.ErrClosed.
func (r *Reader) Close() error {
	f := r.osFile
	if f == nil {
		return os.ErrClosed
	}
	r.osFile = nil
	r.store.handles.put(r.path, f, r.size, r.gen)
	return nil
}

// Open opens a blob for reading; the returned blob.Reader is a *Reader.
func (s *Store) Open(ctx context.Context, digest string) (blob.Reader, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("fsblob: open %s: %w", digest, err)
	}
	p, err := s.path(digest)
	if err != nil {
		return nil, err
	}
	if f, size, gen := s.handles.get(p); f != nil {
		return &Reader{osFile: f, size: size, store: s, path: p, gen: gen}, nil
	}
	gen := s.handles.generation()
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("fsblob: open %s: %w", digest, notFound(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fsblob: open %s: %w", digest, err)
	}
	return &Reader{osFile: f, size: fi.Size(), store: s, path: p, gen: gen}, nil
}

// Stat reports a blob's size and ModTime.
func (s *Store) Stat(ctx context.Context, digest string) (blob.Info, error) {
	if err := s.check(ctx); err != nil {
		return blob.Info{}, fmt.Errorf("fsblob: stat %s: %w", digest, err)
	}
	p, err := s.path(digest)
	if err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return blob.Info{}, fmt.Errorf("fsblob: stat %s: %w", digest, notFound(err))
	}
	return blob.Info{Digest: digest, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete removes a blob. Readers that have it open keep reading it.
func (s *Store) Delete(ctx context.Context, digest string) error {
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("fsblob: delete %s: %w", digest, err)
	}
	p, err := s.path(digest)
	if err != nil {
		return err
	}
	// The name goes first: a handle opened before then is checked out or
	// idle, and either way dropped.
	err = os.Remove(p)
	s.handles.drop(p)
	if err != nil {
		return fmt.Errorf("fsblob: delete %s: %w", digest, notFound(err))
	}
	return nil
}

// All walks dir/blobs/sha256 lazily, a directory batch at a time.
func (s *Store) All(ctx context.Context) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		if err := s.check(ctx); err != nil {
			yield(blob.Info{}, fmt.Errorf("fsblob: list: %w", err))
			return
		}
		for shard, err := range readDir(ctx, s.blobs) {
			if err != nil {
				yield(blob.Info{}, fmt.Errorf("fsblob: list: %w", err))
				return
			}
			if !shard.IsDir() || len(shard.Name()) != 2 {
				continue
			}
			shardDir := filepath.Join(s.blobs, shard.Name())
			for e, err := range readDir(ctx, shardDir) {
				if errors.Is(err, fs.ErrNotExist) {
					break // shard removed while listing
				}
				if err != nil {
					yield(blob.Info{}, fmt.Errorf("fsblob: list: %w", err))
					return
				}
				name := e.Name()
				if !e.Type().IsRegular() || !blob.IsDigestHex(name) || name[:2] != shard.Name() {
					continue
				}
				fi, err := e.Info()
				if errors.Is(err, fs.ErrNotExist) {
					continue // deleted while listing
				}
				if err != nil {
					yield(blob.Info{}, fmt.Errorf("fsblob: list: %w", err))
					return
				}
				info := blob.Info{Digest: blob.DigestPrefix + name, Size: fi.Size(), ModTime: fi.ModTime()}
				if !yield(info, nil) {
					return
				}
			}
		}
	}
}

// readDir yields the entries of dir in batches, checking ctx between them.
func readDir(ctx context.Context, dir string) iter.Seq2[fs.DirEntry, error] {
	return func(yield func(fs.DirEntry, error) bool) {
		f, err := os.Open(dir)
		if err != nil {
			yield(nil, err)
			return
		}
		defer f.Close()
		for {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			entries, err := f.ReadDir(256)
			for _, e := range entries {
				if !yield(e, nil) {
					return
				}
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
		}
	}
}

// Uploads returns the upload staging area in dir/uploads.
func (s *Store) Uploads() blob.Uploads { return (*uploads)(s) }

type uploads Store

func validID(id string) error {
	if err := blob.CheckUploadID(id); err != nil {
		return fmt.Errorf("fsblob: %w", err)
	}
	return nil
}

func (u *uploads) path(id string) (string, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	return filepath.Join(u.uploads, id), nil
}

// Append writes r at offset in dir/uploads/<id>, first truncating anything
// past offset. Whatever happens, it syncs what it wrote and counts it.
func (u *uploads) Append(ctx context.Context, id string, offset int64, r io.Reader) (n int64, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("fsblob: append to upload %s at %d: %w", id, offset, err)
		}
	}()
	if err := (*Store)(u).check(ctx); err != nil {
		return 0, err
	}
	p, err := u.path(id)
	if err != nil {
		return 0, err
	}
	if offset < 0 {
		return 0, errors.New("negative offset")
	}
	flags := os.O_WRONLY
	if offset == 0 {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(p, flags, 0o600)
	if err != nil {
		return 0, notFound(err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = mapErr(cerr)
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		// Uploads.Commit linked this file into the blob store (and the
		// caller then could not record the file: a path taken, a package
		// finalized). Writing would change a committed blob: give the
		// upload its own copy first.
		f.Close()
		if err := u.unlink(p, offset); err != nil {
			return 0, err
		}
		if f, err = os.OpenFile(p, os.O_WRONLY, 0o600); err != nil {
			return 0, notFound(err)
		}
		if fi, err = f.Stat(); err != nil {
			return 0, err
		}
	}
	if fi.Size() < offset {
		return 0, fmt.Errorf("upload shorter than offset: has %d bytes", fi.Size())
	}
	if offset == 0 && fi.Size() == 0 {
		// A new upload: make its name durable.
		if err := syncDir(u.uploads); err != nil {
			return 0, err
		}
	}
	if fi.Size() > offset {
		if err := f.Truncate(offset); err != nil {
			return 0, mapErr(err)
		}
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	n, werr, err := blob.CopyStream(ctx, f, r)
	if werr != nil {
		err = mapErr(werr)
	}
	// Sync on every outcome: the bytes that arrived before a read error
	// are counted, so they must be durable.
	if serr := f.Sync(); serr != nil {
		return n, mapErr(serr)
	}
	return n, err
}

// Open reads the first size bytes of an upload.
func (u *uploads) Open(ctx context.Context, id string, size int64) (io.ReadCloser, error) {
	if err := (*Store)(u).check(ctx); err != nil {
		return nil, fmt.Errorf("fsblob: open upload %s: %w", id, err)
	}
	p, err := u.path(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("fsblob: open upload %s: %w", id, notFound(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fsblob: open upload %s: %w", id, err)
	}
	if fi.Size() < size {
		f.Close()
		return nil, fmt.Errorf("fsblob: open upload %s: has %d bytes, want %d", id, fi.Size(), size)
	}
	return &limitedFile{Reader: io.LimitReader(f, size), f: f}, nil
}

type limitedFile struct {
	io.Reader
	f *os.File
}

func (l *limitedFile) Close() error { return l.f.Close() }

// Commit promotes the first size bytes of an upload to the blob digest: by
// hard link when that is the whole staged file, else by copying into a temp
// file that is committed like a staged write.
func (u *uploads) Commit(ctx context.Context, id string, size int64, digest string) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("fsblob: commit upload %s as %s: %w", id, digest, err)
		}
	}()
	s := (*Store)(u)
	if err := s.check(ctx); err != nil {
		return err
	}
	p, err := u.path(id)
	if err != nil {
		return err
	}
	target, err := s.path(digest)
	if err != nil {
		return err
	}
	if ok, err := s.refresh(target); err != nil || ok {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return notFound(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	switch {
	case fi.Size() < size:
		return fmt.Errorf("upload has %d bytes, want %d", fi.Size(), size)
	case fi.Size() == size:
		return s.link(ctx, f, size, target)
	default:
		return s.copyPrefix(ctx, f, size, target)
	}
}

// link hard-links the staged file f, of the given size, to target. The
// staged file is never written again (Append refuses files with several
// links), so sharing the inode is safe, and deleting the upload later leaves
// the blob. Where hard links are not available it copies instead.
func (s *Store) link(ctx context.Context, f *os.File, size int64, target string) error {
	// Append already synced, but the catalog may be retrying after a
	// crash in between; syncing clean data is cheap.
	if err := f.Sync(); err != nil {
		return mapErr(err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	shard := filepath.Dir(target)
	if err := s.ensureShard(shard); err != nil {
		return err
	}
	defer s.landing.add(target)()
	err := os.Link(f.Name(), target)
	switch {
	case err == nil || errors.Is(err, fs.ErrExist):
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		return mapErr(err)
	default: // EPERM, EXDEV, ENOTSUP, EMLINK...: no hard links here
		return s.copyPrefix(ctx, f, size, target)
	}
	// A new link carries the upload's ModTime; an existing blob (a
	// concurrent commit of equal content) gets refreshed like any re-commit.
	if _, err := s.refresh(target); err != nil {
		return err
	}
	return syncDir(shard)
}

// copyPrefix copies the first size bytes of f into a temp file and commits
// that as digest.
func (s *Store) copyPrefix(ctx context.Context, f *os.File, size int64, target string) (err error) {
	tmp, err := os.CreateTemp(s.tmp, "upload-*")
	if err != nil {
		return mapErr(err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// With an *io.LimitedReader over an *os.File, ReadFrom can use
	// copy_file_range(2).
	n, err := io.Copy(tmp, io.LimitReader(f, size))
	if err != nil {
		return mapErr(err)
	}
	if n != size {
		return fmt.Errorf("copied %d bytes, want %d", n, size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return mapErr(err)
	}
	if err := tmp.Close(); err != nil {
		return mapErr(err)
	}
	return s.place(tmp.Name(), target) // removes the temp file on failure
}

// Delete removes an upload's staged file.
func (u *uploads) Delete(ctx context.Context, id string) error {
	if err := (*Store)(u).check(ctx); err != nil {
		return fmt.Errorf("fsblob: delete upload %s: %w", id, err)
	}
	p, err := u.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("fsblob: delete upload %s: %w", id, notFound(err))
	}
	return nil
}

// All lists dir/uploads lazily.
func (u *uploads) All(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if err := (*Store)(u).check(ctx); err != nil {
			yield("", fmt.Errorf("fsblob: list uploads: %w", err))
			return
		}
		for e, err := range readDir(ctx, u.uploads) {
			if err != nil {
				yield("", fmt.Errorf("fsblob: list uploads: %w", err))
				return
			}
			if !e.Type().IsRegular() || validID(e.Name()) != nil {
				continue
			}
			if !yield(e.Name(), nil) {
				return
			}
		}
	}
}

// syncDir fsyncs a directory so that entries created or renamed in it
// survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// notFound wraps blob.ErrNotFound around a missing file's error.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", blob.ErrNotFound, err)
	}
	return mapErr(err)
}

// mapErr wraps blob.ErrNoSpace around a full disk's or quota's error.
func mapErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", blob.ErrNoSpace, err)
	}
	return err
}

// unlink replaces the staged upload at p, which shares its inode with a
// committed blob, by a private copy of its first size bytes.
func (u *uploads) unlink(p string, size int64) error {
	src, err := os.Open(p)
	if err != nil {
		return notFound(err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(u.uploads, ".copy-*")
	if err != nil {
		return mapErr(err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if _, err := io.Copy(tmp, io.LimitReader(src, size)); err != nil {
		tmp.Close()
		return mapErr(err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return mapErr(err)
	}
	if err := tmp.Close(); err != nil {
		return mapErr(err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return mapErr(err)
	}
	return syncDir(u.uploads)
}
