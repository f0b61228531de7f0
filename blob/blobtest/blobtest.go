// Package blobtest is the conformance suite that every blob.Store backend
// passes. A backend's test file is a few lines:
//
//	func TestConformance(t *testing.T) {
//		blobtest.Run(t, func(t *testing.T) blob.Store {
//			s, err := mybackend.Open(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// The suite reads back and re-hashes everything it writes, and checks the
// sentinel errors, idempotent commits, aborted and cancelled writes, ranges,
// concurrency, the upload staging area and Close.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore/blob"
)

// Options configures RunWithOptions.
type Options struct {
	// New returns a new, empty store that nothing else uses. Every sub-test
	// gets its own store, and sub-tests run in parallel. The suite closes the
	// store when the sub-test ends; if New also registers a Close, that second
	// Close may return blob.ErrClosed.
	New func(t *testing.T) blob.Store

	// Leftovers, if set, returns the names of whatever the backend keeps
	// besides committed blobs and staged uploads: temp files of staged
	// writes, orphaned parts. The suite requires it to be empty whenever no
	// write is in flight (after commits, aborts and cancelled writes). It may
	// be called after the store was closed.
	Leftovers func(t *testing.T, s blob.Store) []string
}

// Run runs the conformance suite against the stores newStore returns. See
// Options.New for what newStore must do.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	t.Helper()
	RunWithOptions(t, Options{New: newStore})
}

// RunWithOptions is Run with optional checks a backend can opt into.
func RunWithOptions(t *testing.T, opts Options) {
	t.Helper()
	if opts.New == nil {
		t.Fatal("blobtest: Options.New is nil")
	}
	h := &harness{opts: opts}
	tests := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"IdempotentCommit", testIdempotentCommit},
		{"NotFound", testNotFound},
		{"DoubleDelete", testDoubleDelete},
		{"Abort", testAbort},
		{"AbortAfterCommit", testAbortAfterCommit},
		{"CancelledWrite", testCancelledWrite},
		{"CancelledBeforeCreate", testCancelledBeforeCreate},
		{"LargeStream", testLargeStream},
		{"Concurrent", testConcurrent},
		{"UploadAppend", testUploadAppend},
		{"UploadTruncate", testUploadTruncate},
		{"UploadAppendPastEnd", testUploadAppendPastEnd},
		{"UploadMissing", testUploadMissing},
		{"UploadReadError", testUploadReadError},
		{"UploadEmpty", testUploadEmpty},
		{"UploadCommit", testUploadCommit},
		{"UploadCommitPrefix", testUploadCommitPrefix},
		{"UploadCommitExisting", testUploadCommitExisting},
		{"UploadsListing", testUploadsListing},
		{"ConcurrentUploads", testConcurrentUploads},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

type harness struct {
	opts Options
}

// store returns a fresh store that is checked for leftovers and closed when
// the sub-test ends.
func (h *harness) store(t *testing.T) blob.Store {
	t.Helper()
	s := h.opts.New(t)
	if s == nil {
		t.Fatal("blobtest: New returned nil")
	}
	t.Cleanup(func() {
		h.noLeftovers(t, s)
		if err := s.Close(); err != nil && !errors.Is(err, blob.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// noLeftovers fails the test if the backend reports stray temp files.
func (h *harness) noLeftovers(t *testing.T, s blob.Store) {
	t.Helper()
	if h.opts.Leftovers == nil {
		return
	}
	if got := h.opts.Leftovers(t, s); len(got) > 0 {
		t.Errorf("leftovers after all writes finished: %q", got)
	}
}

// digestOf returns the "sha256:<hex>" digest of b.
func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func hashDigest(h hash.Hash) string {
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// missingDigest is a well-formed digest no test ever writes.
var missingDigest = digestOf([]byte("blobtest: never written"))

// mustPut stores data through a staged write and returns its digest.
func mustPut(t *testing.T, s blob.Store, data []byte) string {
	t.Helper()
	d := digestOf(data)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if n, err := w.Write(data); err != nil || n != len(data) {
		_ = w.Abort()
		t.Fatalf("Write(%d bytes) = %d, %v", len(data), n, err)
	}
	if err := w.Commit(d); err != nil {
		_ = w.Abort()
		t.Fatalf("Commit(%s): %v", d, err)
	}
	return d
}

// mustRead reads the whole blob, checks Size against its length and the
// content against its digest, and returns it.
func mustRead(t *testing.T, s blob.Store, digest string) []byte {
	t.Helper()
	r, err := s.Open(t.Context(), digest)
	if err != nil {
		t.Fatalf("Open(%s): %v", digest, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading %s: %v", digest, err)
	}
	if r.Size() != int64(len(got)) {
		t.Errorf("Open(%s).Size() = %d, read %d bytes", digest, r.Size(), len(got))
	}
	if d := digestOf(got); d != digest {
		t.Errorf("Open(%s) read bytes hashing to %s", digest, d)
	}
	if err := r.Close(); err != nil {
		t.Errorf("closing reader of %s: %v", digest, err)
	}
	return got
}

// listBlobs returns what All yields, by digest, failing on errors and
// duplicates.
func listBlobs(t *testing.T, s blob.Store) map[string]blob.Info {
	t.Helper()
	m := make(map[string]blob.Info)
	var iterErr error
	for info, err := range s.All(t.Context()) {
		if err != nil {
			iterErr = err
			break
		}
		if _, dup := m[info.Digest]; dup {
			t.Errorf("All yielded %s twice", info.Digest)
		}
		m[info.Digest] = info
	}
	if iterErr != nil {
		t.Fatalf("All: %v", iterErr)
	}
	return m
}

// listUploads returns the sorted ids that Uploads().All yields.
func listUploads(t *testing.T, s blob.Store) []string {
	t.Helper()
	var ids []string
	var iterErr error
	for id, err := range s.Uploads().All(t.Context()) {
		if err != nil {
			iterErr = err
			break
		}
		ids = append(ids, id)
	}
	if iterErr != nil {
		t.Fatalf("Uploads().All: %v", iterErr)
	}
	slices.Sort(ids)
	return ids
}

// wantBlobs fails unless All lists exactly the given blobs with their sizes.
func wantBlobs(t *testing.T, s blob.Store, want map[string][]byte) {
	t.Helper()
	got := listBlobs(t, s)
	for d, data := range want {
		info, ok := got[d]
		switch {
		case !ok:
			t.Errorf("All does not list %s", d)
		case info.Size != int64(len(data)):
			t.Errorf("All lists %s with Size %d, want %d", d, info.Size, len(data))
		case info.ModTime.IsZero():
			t.Errorf("All lists %s with a zero ModTime", d)
		}
	}
	for d := range got {
		if _, ok := want[d]; !ok {
			t.Errorf("All lists unexpected blob %s", d)
		}
	}
}

func wantErrIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// mustAppend appends data at offset and requires all of it to be taken.
func mustAppend(t *testing.T, s blob.Store, id string, offset int64, data []byte) {
	t.Helper()
	n, err := s.Uploads().Append(t.Context(), id, offset, bytes.NewReader(data))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("Append(%s, %d, %d bytes) = %d, %v", id, offset, len(data), n, err)
	}
}

// readUpload returns the first size bytes of a staged upload, requiring
// exactly size bytes.
func readUpload(t *testing.T, s blob.Store, id string, size int64) []byte {
	t.Helper()
	rc, err := s.Uploads().Open(t.Context(), id, size)
	if err != nil {
		t.Fatalf("Uploads().Open(%s, %d): %v", id, size, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading upload %s: %v", id, err)
	}
	if int64(len(got)) != size {
		t.Errorf("Uploads().Open(%s, %d) read %d bytes", id, size, len(got))
	}
	if err := rc.Close(); err != nil {
		t.Errorf("closing upload reader %s: %v", id, err)
	}
	return got
}

func testRoundTrip(t *testing.T, h *harness) {
	s := h.store(t)
	data := randBytes(1, 100_003)
	d := mustPut(t, s, data)

	if got := mustRead(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes that differ from the %d written", len(got), len(data))
	}

	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	if got, want := r.Size(), int64(len(data)); got != want {
		t.Errorf("Size() = %d, want %d", got, want)
	}
	mid := int64(len(data) / 2)
	if pos, err := r.Seek(mid, io.SeekStart); err != nil || pos != mid {
		t.Fatalf("Seek(%d, SeekStart) = %d, %v", mid, pos, err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("reading range at %d: %v", mid, err)
	}
	if !bytes.Equal(buf, data[mid:mid+1000]) {
		t.Errorf("range [%d, %d) differs from what was written", mid, mid+1000)
	}
	if pos, err := r.Seek(0, io.SeekCurrent); err != nil || pos != mid+1000 {
		t.Errorf("Seek(0, SeekCurrent) = %d, %v; want %d", pos, err, mid+1000)
	}
	if pos, err := r.Seek(-10, io.SeekEnd); err != nil || pos != int64(len(data))-10 {
		t.Fatalf("Seek(-10, SeekEnd) = %d, %v; want %d", pos, err, len(data)-10)
	}
	tail, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(tail, data[len(data)-10:]) {
		t.Errorf("tail = %x, %v; want %x", tail, err, data[len(data)-10:])
	}
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read at end = %d, %v; want 0, io.EOF", n, err)
	}
	if pos, err := r.Seek(0, io.SeekStart); err != nil || pos != 0 {
		t.Fatalf("Seek(0, SeekStart) = %d, %v", pos, err)
	}
	h256 := sha256.New()
	if _, err := io.Copy(h256, r); err != nil {
		t.Fatalf("re-reading after Seek: %v", err)
	}
	if got := hashDigest(h256); got != d {
		t.Errorf("re-read after Seek hashes to %s, want %s", got, d)
	}

	before := time.Now()
	info, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Digest != d || info.Size != int64(len(data)) {
		t.Errorf("Stat = {%s, %d}, want {%s, %d}", info.Digest, info.Size, d, len(data))
	}
	if info.ModTime.IsZero() || info.ModTime.After(before.Add(time.Hour)) || info.ModTime.Before(before.Add(-time.Hour)) {
		t.Errorf("Stat ModTime = %v, want about %v", info.ModTime, before)
	}
	wantBlobs(t, s, map[string][]byte{d: data})
}

func testEmpty(t *testing.T, h *harness) {
	s := h.store(t)
	d := mustPut(t, s, nil)
	if d != "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("digestOf(empty) = %s", d)
	}
	if got := mustRead(t, s, d); len(got) != 0 {
		t.Errorf("empty blob read back %d bytes", len(got))
	}
	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if r.Size() != 0 {
		t.Errorf("Size() = %d, want 0", r.Size())
	}
	if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("Read = %d, %v; want 0, io.EOF", n, err)
	}
	r.Close()
	info, err := s.Stat(t.Context(), d)
	if err != nil || info.Size != 0 {
		t.Errorf("Stat = %+v, %v; want Size 0", info, err)
	}
	wantBlobs(t, s, map[string][]byte{d: nil})
}

func testIdempotentCommit(t *testing.T, h *harness) {
	s := h.store(t)
	data := randBytes(2, 4097)
	d := mustPut(t, s, data)
	first, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	if got := mustPut(t, s, data); got != d {
		t.Fatalf("second put digest %s, want %s", got, d)
	}
	second, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat after second commit: %v", err)
	}
	if second.ModTime.Before(first.ModTime) {
		t.Errorf("ModTime went back on re-commit: %v, then %v", first.ModTime, second.ModTime)
	}
	// A backend with sub-second timestamps must show the refresh; one with
	// whole seconds (S3's LastModified) cannot within 20ms.
	if first.ModTime.Nanosecond() != 0 && !second.ModTime.After(first.ModTime) {
		t.Errorf("re-commit did not refresh ModTime: %v, then %v", first.ModTime, second.ModTime)
	}
	if second.Size != int64(len(data)) {
		t.Errorf("Size after re-commit = %d, want %d", second.Size, len(data))
	}
	if got := mustRead(t, s, d); !bytes.Equal(got, data) {
		t.Errorf("content changed by re-commit")
	}
	other := randBytes(3, 10)
	d2 := mustPut(t, s, other)
	wantBlobs(t, s, map[string][]byte{d: data, d2: other})
}

func testNotFound(t *testing.T, h *harness) {
	s := h.store(t)
	mustPut(t, s, []byte("present"))
	r, err := s.Open(t.Context(), missingDigest)
	if err == nil {
		r.Close()
	}
	wantErrIs(t, "Open(missing)", err, blob.ErrNotFound)
	_, err = s.Stat(t.Context(), missingDigest)
	wantErrIs(t, "Stat(missing)", err, blob.ErrNotFound)
	wantErrIs(t, "Delete(missing)", s.Delete(t.Context(), missingDigest), blob.ErrNotFound)
}

func testDoubleDelete(t *testing.T, h *harness) {
	s := h.store(t)
	keep := []byte("keep me")
	dk := mustPut(t, s, keep)
	d := mustPut(t, s, []byte("delete me"))
	if err := s.Delete(t.Context(), d); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantErrIs(t, "second Delete", s.Delete(t.Context(), d), blob.ErrNotFound)
	r, err := s.Open(t.Context(), d)
	if err == nil {
		r.Close()
	}
	wantErrIs(t, "Open after Delete", err, blob.ErrNotFound)
	_, err = s.Stat(t.Context(), d)
	wantErrIs(t, "Stat after Delete", err, blob.ErrNotFound)
	wantBlobs(t, s, map[string][]byte{dk: keep})
	if got := mustRead(t, s, dk); !bytes.Equal(got, keep) {
		t.Errorf("other blob changed by Delete")
	}
}

func testAbort(t *testing.T, h *harness) {
	s := h.store(t)
	data := randBytes(4, 70_000)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("second Abort: %v", err)
	}
	// Abort of a writer that never wrote.
	w2, err := s.Create(t.Context())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := w2.Abort(); err != nil {
		t.Errorf("Abort of empty writer: %v", err)
	}
	_, err = s.Stat(t.Context(), digestOf(data))
	wantErrIs(t, "Stat of aborted blob", err, blob.ErrNotFound)
	wantBlobs(t, s, nil)
	h.noLeftovers(t, s)
}

func testAbortAfterCommit(t *testing.T, h *harness) {
	s := h.store(t)
	data := []byte("committed, then aborted")
	d := digestOf(data)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Commit(d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("second Abort after Commit: %v", err)
	}
	if got := mustRead(t, s, d); !bytes.Equal(got, data) {
		t.Errorf("Abort after Commit changed the blob")
	}
	wantBlobs(t, s, map[string][]byte{d: data})
	h.noLeftovers(t, s)
}

func testCancelledWrite(t *testing.T, h *harness) {
	for _, writeAfter := range []bool{false, true} {
		t.Run(fmt.Sprintf("writeAfterCancel=%v", writeAfter), func(t *testing.T) {
			s := h.store(t)
			data := randBytes(5, 300_000)
			d := digestOf(data)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			w, err := s.Create(ctx)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := w.Write(data[:100_000]); err != nil {
				t.Fatalf("Write before cancel: %v", err)
			}
			cancel()
			if writeAfter {
				_, _ = w.Write(data[100_000:]) // may fail already
			} else {
				d = digestOf(data[:100_000])
			}
			if err := w.Commit(d); err == nil {
				t.Errorf("Commit after cancel succeeded")
			}
			if err := w.Abort(); err != nil {
				t.Errorf("Abort after failed Commit: %v", err)
			}
			_, err = s.Stat(t.Context(), d)
			wantErrIs(t, "Stat of cancelled write", err, blob.ErrNotFound)
			r, err := s.Open(t.Context(), d)
			if err == nil {
				r.Close()
			}
			wantErrIs(t, "Open of cancelled write", err, blob.ErrNotFound)
			wantBlobs(t, s, nil)
			h.noLeftovers(t, s)
		})
	}
}

func testCancelledBeforeCreate(t *testing.T, h *harness) {
	s := h.store(t)
	data := []byte("never stored")
	d := digestOf(data)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	w, err := s.Create(ctx)
	if err == nil {
		_, _ = w.Write(data)
		if err := w.Commit(d); err == nil {
			t.Errorf("Commit with a context cancelled before Create succeeded")
		}
		if err := w.Abort(); err != nil {
			t.Errorf("Abort: %v", err)
		}
	}
	_, err = s.Stat(t.Context(), d)
	wantErrIs(t, "Stat of cancelled write", err, blob.ErrNotFound)
	wantBlobs(t, s, nil)
	h.noLeftovers(t, s)
}

func testLargeStream(t *testing.T, h *harness) {
	s := h.store(t)
	const size = 8<<20 + 13
	data := randBytes(6, size)
	d := digestOf(data)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	chunks := []int{1, 7, 4093, 65537, 1<<20 + 1, 333_333, 262_143, 262_145}
	for off, i := 0, 0; off < size; i++ {
		n := min(chunks[i%len(chunks)], size-off)
		m, err := w.Write(data[off : off+n])
		if err != nil || m != n {
			_ = w.Abort()
			t.Fatalf("Write(%d bytes at %d) = %d, %v", n, off, m, err)
		}
		off += n
	}
	if err := w.Commit(d); err != nil {
		t.Fatalf("Commit: %v", err)
	}

	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	if r.Size() != size {
		t.Errorf("Size() = %d, want %d", r.Size(), size)
	}
	h256 := sha256.New()
	n, err := io.Copy(h256, r)
	if err != nil || n != size {
		t.Fatalf("streaming read = %d, %v; want %d bytes", n, err, size)
	}
	if got := hashDigest(h256); got != d {
		t.Errorf("streamed blob hashes to %s, want %s", got, d)
	}
	// A range near the end, across a chunk boundary.
	off := int64(size - 300_000)
	if _, err := r.Seek(off, io.SeekStart); err != nil {
		t.Fatalf("Seek: %v", err)
	}
	buf := make([]byte, 200_000)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("reading range: %v", err)
	}
	if !bytes.Equal(buf, data[off:off+200_000]) {
		t.Errorf("range at %d differs", off)
	}
	wantBlobs(t, s, map[string][]byte{d: data})
}

func testConcurrent(t *testing.T, h *harness) {
	s := h.store(t)
	const workers = 16
	const distinct = 6 // workers i and i+distinct write equal content
	contents := make([][]byte, distinct)
	for i := range contents {
		contents[i] = randBytes(uint64(100+i), 64<<10+i*4099)
	}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			data := contents[i%distinct]
			d := digestOf(data)
			w, err := s.Create(t.Context())
			if err != nil {
				t.Errorf("worker %d: Create: %v", i, err)
				return
			}
			// Write in pieces so that writers interleave.
			for off := 0; off < len(data); off += 8191 {
				if _, err := w.Write(data[off:min(off+8191, len(data))]); err != nil {
					t.Errorf("worker %d: Write: %v", i, err)
					_ = w.Abort()
					return
				}
			}
			if err := w.Commit(d); err != nil {
				t.Errorf("worker %d: Commit: %v", i, err)
				_ = w.Abort()
				return
			}
			r, err := s.Open(t.Context(), d)
			if err != nil {
				t.Errorf("worker %d: Open after Commit: %v", i, err)
				return
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("worker %d: read back %d bytes (%v), differ from %d written", i, len(got), err, len(data))
			}
		})
	}
	wg.Wait()
	want := make(map[string][]byte)
	for _, data := range contents {
		d := digestOf(data)
		want[d] = data
		if got := mustRead(t, s, d); !bytes.Equal(got, data) {
			t.Errorf("%s differs after concurrent commits", d)
		}
	}
	wantBlobs(t, s, want)
}

func testUploadAppend(t *testing.T, h *harness) {
	s := h.store(t)
	u := s.Uploads()
	id := "up-Append_1"
	mustAppend(t, s, id, 0, []byte("hello"))
	mustAppend(t, s, id, 5, []byte(" world"))
	if got := readUpload(t, s, id, 11); string(got) != "hello world" {
		t.Errorf("upload = %q, want %q", got, "hello world")
	}
	if got := readUpload(t, s, id, 5); string(got) != "hello" {
		t.Errorf("first 5 bytes = %q, want %q", got, "hello")
	}
	// Append at 0 on an existing upload starts it over.
	mustAppend(t, s, id, 0, []byte("new"))
	if got := readUpload(t, s, id, 3); string(got) != "new" {
		t.Errorf("restarted upload = %q, want %q", got, "new")
	}
	mustAppend(t, s, id, 3, []byte("er"))
	if got := readUpload(t, s, id, 5); string(got) != "newer" {
		t.Errorf("upload = %q, want %q", got, "newer")
	}
	if err := u.Delete(t.Context(), id); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

func testUploadTruncate(t *testing.T, h *harness) {
	s := h.store(t)
	id := "trunc"
	// Ten bytes reached the backend but the catalog acknowledged only five.
	mustAppend(t, s, id, 0, []byte("0123456789"))
	mustAppend(t, s, id, 5, []byte("XY"))
	want := []byte("01234XY")
	if got := readUpload(t, s, id, 7); !bytes.Equal(got, want) {
		t.Errorf("upload = %q, want %q", got, want)
	}
	// The surplus "789" is gone: appending at 7 continues right after "XY",
	// and appending past the new end is refused.
	n, err := s.Uploads().Append(t.Context(), id, 9, bytes.NewReader([]byte("!")))
	if err == nil {
		t.Errorf("Append at 9 after truncation to 7 = %d, nil; want an error (surplus not discarded?)", n)
	}
	mustAppend(t, s, id, 7, []byte("Z"))
	want = []byte("01234XYZ")
	if got := readUpload(t, s, id, 8); !bytes.Equal(got, want) {
		t.Errorf("upload = %q, want %q", got, want)
	}
	d := digestOf(want)
	if err := s.Uploads().Commit(t.Context(), id, 8, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := mustRead(t, s, d); !bytes.Equal(got, want) {
		t.Errorf("committed blob = %q, want %q", got, want)
	}
}

func testUploadAppendPastEnd(t *testing.T, h *harness) {
	s := h.store(t)
	id := "short"
	mustAppend(t, s, id, 0, []byte("abc"))
	// A hole in the upload would be corruption.
	if n, err := s.Uploads().Append(t.Context(), id, 10, bytes.NewReader([]byte("x"))); err == nil {
		t.Errorf("Append at 10 on a 3-byte upload = %d, nil; want an error", n)
	}
	if got := readUpload(t, s, id, 3); string(got) != "abc" {
		t.Errorf("upload = %q after refused Append, want %q", got, "abc")
	}
}

func testUploadMissing(t *testing.T, h *harness) {
	s := h.store(t)
	u := s.Uploads()
	n, err := u.Append(t.Context(), "missing", 5, bytes.NewReader([]byte("abc")))
	wantErrIs(t, "Append(missing, 5)", err, blob.ErrNotFound)
	if n != 0 {
		t.Errorf("Append(missing, 5) = %d bytes, want 0", n)
	}
	if ids := listUploads(t, s); len(ids) != 0 {
		t.Errorf("Append at 5 on a missing upload created %q", ids)
	}
	rc, err := u.Open(t.Context(), "missing", 0)
	if err == nil {
		rc.Close()
	}
	wantErrIs(t, "Uploads().Open(missing)", err, blob.ErrNotFound)
	wantErrIs(t, "Uploads().Delete(missing)", u.Delete(t.Context(), "missing"), blob.ErrNotFound)
	wantErrIs(t, "Uploads().Commit(missing)",
		u.Commit(t.Context(), "missing", 3, digestOf([]byte("abc"))), blob.ErrNotFound)
	wantBlobs(t, s, nil)

	mustAppend(t, s, "present", 0, []byte("abc"))
	if err := u.Delete(t.Context(), "present"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantErrIs(t, "second Uploads().Delete", u.Delete(t.Context(), "present"), blob.ErrNotFound)
	_, err = u.Append(t.Context(), "present", 3, bytes.NewReader([]byte("def")))
	wantErrIs(t, "Append after Delete", err, blob.ErrNotFound)
}

var errBoom = errors.New("blobtest: client went away")

// failingReader returns its data in pieces, then err. With together set the
// last piece comes with the error in the same Read call.
type failingReader struct {
	data     []byte
	piece    int
	together bool
	err      error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data[:min(r.piece, len(r.data))])
	r.data = r.data[n:]
	if len(r.data) == 0 && r.together {
		return n, r.err
	}
	return n, nil
}

func testUploadReadError(t *testing.T, h *harness) {
	for _, together := range []bool{false, true} {
		t.Run(fmt.Sprintf("together=%v", together), func(t *testing.T) {
			s := h.store(t)
			u := s.Uploads()
			id := "flaky"
			mustAppend(t, s, id, 0, []byte("head:"))
			arrived := randBytes(7, 300_001)
			n, err := u.Append(t.Context(), id, 5, &failingReader{
				data: arrived, piece: 65_536, together: together, err: errBoom,
			})
			if n != int64(len(arrived)) {
				t.Errorf("Append with a failing reader counted %d bytes, want %d", n, len(arrived))
			}
			if !errors.Is(err, errBoom) {
				t.Errorf("Append with a failing reader returned %v, want the reader's error", err)
			}
			size := 5 + int64(len(arrived))
			want := append([]byte("head:"), arrived...)
			if got := readUpload(t, s, id, size); !bytes.Equal(got, want) {
				t.Errorf("bytes that arrived before the read error were not kept")
			}
			// The client resumes where the count said.
			mustAppend(t, s, id, size, []byte(":tail"))
			want = append(want, ":tail"...)
			if got := readUpload(t, s, id, int64(len(want))); !bytes.Equal(got, want) {
				t.Errorf("resumed upload differs")
			}
		})
	}
}

func testUploadEmpty(t *testing.T, h *harness) {
	s := h.store(t)
	u := s.Uploads()
	n, err := u.Append(t.Context(), "empty", 0, bytes.NewReader(nil))
	if err != nil || n != 0 {
		t.Fatalf("Append(empty, 0, no bytes) = %d, %v", n, err)
	}
	if ids := listUploads(t, s); !slices.Equal(ids, []string{"empty"}) {
		t.Errorf("Uploads().All = %q, want [empty]", ids)
	}
	if got := readUpload(t, s, "empty", 0); len(got) != 0 {
		t.Errorf("empty upload read %d bytes", len(got))
	}
	d := digestOf(nil)
	if err := u.Commit(t.Context(), "empty", 0, d); err != nil {
		t.Fatalf("Commit of empty upload: %v", err)
	}
	if got := mustRead(t, s, d); len(got) != 0 {
		t.Errorf("empty blob has %d bytes", len(got))
	}
}

func testUploadCommit(t *testing.T, h *harness) {
	s := h.store(t)
	u := s.Uploads()
	id := "01J9ZKQ4M1XWSN3E5CP0V8RTYB"
	data := randBytes(8, 700_001)
	mustAppend(t, s, id, 0, data[:100_000])
	mustAppend(t, s, id, 100_000, data[100_000:650_000])
	mustAppend(t, s, id, 650_000, data[650_000:])
	size := int64(len(data))

	// The caller re-derives the hash state from the staged bytes.
	rc, err := u.Open(t.Context(), id, size)
	if err != nil {
		t.Fatalf("Uploads().Open: %v", err)
	}
	h256 := sha256.New()
	if _, err := io.Copy(h256, rc); err != nil {
		t.Fatalf("reading upload: %v", err)
	}
	rc.Close()
	d := hashDigest(h256)
	if d != digestOf(data) {
		t.Fatalf("upload hashes to %s, want %s", d, digestOf(data))
	}

	if _, err := s.Stat(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob visible before Commit: Stat = %v", err)
	}
	if err := u.Commit(t.Context(), id, size, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := mustRead(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("committed blob differs from the upload")
	}
	// Retry after a crash that lost the Commit's acknowledgement.
	if err := u.Commit(t.Context(), id, size, d); err != nil {
		t.Errorf("second Commit: %v", err)
	}
	// The staged bytes stay until Delete.
	if ids := listUploads(t, s); !slices.Equal(ids, []string{id}) {
		t.Errorf("Uploads().All after Commit = %q, want [%s]", ids, id)
	}
	if got := readUpload(t, s, id, size); !bytes.Equal(got, data) {
		t.Errorf("staged bytes changed by Commit")
	}
	wantBlobs(t, s, map[string][]byte{d: data})
	if err := u.Delete(t.Context(), id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ids := listUploads(t, s); len(ids) != 0 {
		t.Errorf("Uploads().All after Delete = %q", ids)
	}
	wantErrIs(t, "second Delete", u.Delete(t.Context(), id), blob.ErrNotFound)
	// The blob outlives its upload.
	if got := mustRead(t, s, d); !bytes.Equal(got, data) {
		t.Errorf("blob changed by deleting its upload")
	}
	wantBlobs(t, s, map[string][]byte{d: data})
}

func testUploadCommitPrefix(t *testing.T, h *harness) {
	s := h.store(t)
	u := s.Uploads()
	id := "prefix"
	// More bytes reached the backend than the catalog acknowledged.
	data := randBytes(9, 50_000)
	mustAppend(t, s, id, 0, data)
	const size = 30_011
	d := digestOf(data[:size])
	if err := u.Commit(t.Context(), id, size, d); err != nil {
		t.Fatalf("Commit(%d of %d bytes): %v", size, len(data), err)
	}
	if got := mustRead(t, s, d); !bytes.Equal(got, data[:size]) {
		t.Errorf("committed blob has %d bytes, want the first %d", len(got), size)
	}
	if err := u.Commit(t.Context(), id, size, d); err != nil {
		t.Errorf("second Commit: %v", err)
	}
	wantBlobs(t, s, map[string][]byte{d: data[:size]})
}

func testUploadCommitExisting(t *testing.T, h *harness) {
	s := h.store(t)
	u := s.Uploads()
	data := randBytes(10, 12_345)
	d := mustPut(t, s, data)
	first, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	mustAppend(t, s, "dup", 0, data)
	time.Sleep(20 * time.Millisecond)
	if err := u.Commit(t.Context(), "dup", int64(len(data)), d); err != nil {
		t.Fatalf("Commit of content already stored: %v", err)
	}
	second, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if second.ModTime.Before(first.ModTime) ||
		(first.ModTime.Nanosecond() != 0 && !second.ModTime.After(first.ModTime)) {
		t.Errorf("Commit of existing content did not refresh ModTime: %v, then %v", first.ModTime, second.ModTime)
	}
	if err := u.Delete(t.Context(), "dup"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := mustRead(t, s, d); !bytes.Equal(got, data) {
		t.Errorf("blob changed")
	}
	wantBlobs(t, s, map[string][]byte{d: data})
}

func testUploadsListing(t *testing.T, h *harness) {
	s := h.store(t)
	want := []string{"a", "B-2", "c_3", "01J9ZKQ4M1XWSN3E5CP0V8RTYB"}
	for i, id := range want {
		mustAppend(t, s, id, 0, randBytes(uint64(20+i), 1000*i))
	}
	// A staged write in flight is not listed either.
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := w.Write(randBytes(30, 5000)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	slices.Sort(want)
	if got := listUploads(t, s); !slices.Equal(got, want) {
		t.Errorf("Uploads().All = %q, want %q", got, want)
	}
	wantBlobs(t, s, nil)
	if err := w.Abort(); err != nil {
		t.Errorf("Abort: %v", err)
	}

	// Committing one upload lists exactly one blob and still all uploads.
	data := randBytes(uint64(20+1), 1000)
	d := digestOf(data)
	if err := s.Uploads().Commit(t.Context(), "B-2", 1000, d); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	wantBlobs(t, s, map[string][]byte{d: data})
	if got := listUploads(t, s); !slices.Equal(got, want) {
		t.Errorf("Uploads().All after Commit = %q, want %q", got, want)
	}
	for _, id := range want {
		if err := s.Uploads().Delete(t.Context(), id); err != nil {
			t.Errorf("Delete(%s): %v", id, err)
		}
	}
	if got := listUploads(t, s); len(got) != 0 {
		t.Errorf("Uploads().All after deleting all = %q", got)
	}
	wantBlobs(t, s, map[string][]byte{d: data})
}

func testConcurrentUploads(t *testing.T, h *harness) {
	s := h.store(t)
	const workers = 8
	datas := make([][]byte, workers)
	for i := range datas {
		// Workers i and i+4 upload equal content under different ids.
		datas[i] = randBytes(uint64(40+i%4), 200_000+i%4)
	}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			u := s.Uploads()
			id := fmt.Sprintf("conc-%d", i)
			data := datas[i]
			var off int64
			for len(data) > 0 {
				piece := data[:min(len(data), 30_000+i)]
				n, err := u.Append(t.Context(), id, off, bytes.NewReader(piece))
				if err != nil || n != int64(len(piece)) {
					t.Errorf("worker %d: Append at %d = %d, %v", i, off, n, err)
					return
				}
				off += n
				data = data[len(piece):]
			}
			if err := u.Commit(t.Context(), id, off, digestOf(datas[i])); err != nil {
				t.Errorf("worker %d: Commit: %v", i, err)
				return
			}
			if err := u.Delete(t.Context(), id); err != nil {
				t.Errorf("worker %d: Delete: %v", i, err)
			}
		})
	}
	wg.Wait()
	want := make(map[string][]byte)
	for _, data := range datas {
		want[digestOf(data)] = data
	}
	for d, data := range want {
		if got := mustRead(t, s, d); !bytes.Equal(got, data) {
			t.Errorf("%s differs after concurrent uploads", d)
		}
	}
	wantBlobs(t, s, want)
	if ids := listUploads(t, s); len(ids) != 0 {
		t.Errorf("uploads left after Delete: %q", ids)
	}
}

func testClose(t *testing.T, h *harness) {
	s := h.store(t)
	d := mustPut(t, s, []byte("before close"))
	mustAppend(t, s, "open-upload", 0, []byte("staged"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := t.Context()
	_, err := s.Create(ctx)
	wantErrIs(t, "Create after Close", err, blob.ErrClosed)
	r, err := s.Open(ctx, d)
	if err == nil {
		r.Close()
	}
	wantErrIs(t, "Open after Close", err, blob.ErrClosed)
	_, err = s.Stat(ctx, d)
	wantErrIs(t, "Stat after Close", err, blob.ErrClosed)
	wantErrIs(t, "Delete after Close", s.Delete(ctx, d), blob.ErrClosed)
	var allErr error
	for _, err := range s.All(ctx) {
		if err != nil {
			allErr = err
			break
		}
	}
	wantErrIs(t, "All after Close", allErr, blob.ErrClosed)

	u := s.Uploads()
	_, err = u.Append(ctx, "open-upload", 6, bytes.NewReader([]byte("more")))
	wantErrIs(t, "Uploads().Append after Close", err, blob.ErrClosed)
	_, err = u.Append(ctx, "new-upload", 0, bytes.NewReader([]byte("more")))
	wantErrIs(t, "Uploads().Append(new) after Close", err, blob.ErrClosed)
	rc, err := u.Open(ctx, "open-upload", 6)
	if err == nil {
		rc.Close()
	}
	wantErrIs(t, "Uploads().Open after Close", err, blob.ErrClosed)
	wantErrIs(t, "Uploads().Commit after Close",
		u.Commit(ctx, "open-upload", 6, digestOf([]byte("staged"))), blob.ErrClosed)
	wantErrIs(t, "Uploads().Delete after Close", u.Delete(ctx, "open-upload"), blob.ErrClosed)
	allErr = nil
	for _, err := range u.All(ctx) {
		if err != nil {
			allErr = err
			break
		}
	}
	wantErrIs(t, "Uploads().All after Close", allErr, blob.ErrClosed)

	if err := s.Close(); err != nil && !errors.Is(err, blob.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}
