package fsblob

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/artifactstore/artifactstore/blob"
)

// openRead opens d and reads it whole, leaving the Reader open.
func openRead(t *testing.T, s *Store, d string) (*Reader, string) {
	t.Helper()
	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*Reader), string(b)
}

func TestReadHandleReused(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	data := "a blob read twice"
	d := put(t, s, []byte(data))

	r1, got := openRead(t, s, d)
	if got != data {
		t.Fatalf("first read = %q", got)
	}
	fd := r1.File().Fd()
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if n := s.handles.idleCount(); n != 1 {
		t.Fatalf("idle handles after Close = %d, want 1", n)
	}
	// The handle was left at the end of the blob: the next reader must
	// start at 0 all the same, and get the same descriptor.
	r2, got := openRead(t, s, d)
	if got != data {
		t.Errorf("second read = %q, want %q (the reused handle was not rewound)", got, data)
	}
	if r2.File().Fd() != fd {
		t.Errorf("second Open opened a new descriptor %d, want the idle %d", r2.File().Fd(), fd)
	}
	if r2.Size() != int64(len(data)) {
		t.Errorf("Size = %d, want %d", r2.Size(), len(data))
	}
	if n := s.handles.idleCount(); n != 0 {
		t.Errorf("idle handles while checked out = %d, want 0", n)
	}
	r2.Close()
	if err := r2.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close = %v, want os.ErrClosed", err)
	}
	if n := s.handles.idleCount(); n != 1 {
		t.Errorf("idle handles after a double Close = %d, want 1", n)
	}
}

func TestReadHandlesDroppedOnDelete(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	d := put(t, s, []byte("deleted while read"))
	other := put(t, s, []byte("kept"))

	idle, _ := openRead(t, s, d)
	idle.Close()
	busy, _ := openRead(t, s, d) // takes the idle one
	spare, _ := openRead(t, s, d)
	spare.Close()
	keep, _ := openRead(t, s, other)
	keep.Close()
	if n := s.handles.idleCount(); n != 2 {
		t.Fatalf("idle handles = %d, want 2", n)
	}

	if err := s.Delete(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if n := s.handles.idleCount(); n != 1 {
		t.Errorf("idle handles after Delete = %d, want 1 (the other blob's)", n)
	}
	// A reader that had the blob open keeps reading it, and its handle is
	// closed, not kept, when it comes back.
	if _, err := busy.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(busy); err != nil || string(b) != "deleted while read" {
		t.Errorf("read after Delete = %q, %v", b, err)
	}
	f := busy.File()
	busy.Close()
	if n := s.handles.idleCount(); n != 1 {
		t.Errorf("idle handles after the deleted blob's reader closed = %d, want 1", n)
	}
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the deleted blob's handle after Close: Stat = %v, want os.ErrClosed", err)
	}
	if _, err := s.Open(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open after Delete = %v, want not found", err)
	}
}

func TestReadHandlesBounded(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	var first *os.File
	for i := range maxIdleHandles + 10 {
		d := put(t, s, fmt.Appendf(nil, "blob %d", i))
		r, _ := openRead(t, s, d)
		if i == 0 {
			first = r.File()
		}
		r.Close()
	}
	if n := s.handles.idleCount(); n != maxIdleHandles {
		t.Errorf("idle handles = %d, want the bound %d", n, maxIdleHandles)
	}
	if _, err := first.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("least recently used handle: Stat = %v, want os.ErrClosed (evicted)", err)
	}
}

func TestReadHandlesClosedWithStore(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := put(t, s, []byte("outlives the store"))
	idle, _ := openRead(t, s, d)
	busy, _ := openRead(t, s, d)
	f, g := idle.File(), busy.File()
	idle.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("idle handle after Store.Close: Stat = %v, want os.ErrClosed", err)
	}
	// Readers opened before Close stay usable, and are closed for good
	// when they come back.
	if _, err := g.Stat(); err != nil {
		t.Errorf("open reader after Store.Close: Stat = %v", err)
	}
	busy.Close()
	if _, err := g.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("reader closed after Store.Close: Stat = %v, want os.ErrClosed", err)
	}
	if n := s.handles.idleCount(); n != 0 {
		t.Errorf("idle handles after Store.Close = %d", n)
	}
}

// TestReadHandlesConcurrent reads a few blobs from many goroutines while
// one of them is deleted and written again, over and over: every read gets
// the whole blob or not-found, never another blob's bytes or a short read.
func TestReadHandlesConcurrent(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	var blobs [][]byte
	var digests []string
	for i := range 4 {
		b := bytes.Repeat(fmt.Appendf(nil, "blob %d;", i), 100+i)
		blobs = append(blobs, b)
		digests = append(digests, put(t, s, b))
	}
	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Add(1)
	go func() {
		defer churn.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Delete(t.Context(), digests[0]); err != nil && !errors.Is(err, blob.ErrNotFound) {
				t.Error(err)
				return
			}
			w, err := s.Create(t.Context())
			if err != nil {
				t.Error(err)
				return
			}
			w.Write(blobs[0])
			if err := w.Commit(digests[0]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var readers sync.WaitGroup
	for g := range 8 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := range 300 {
				k := (g + i) % len(digests)
				r, err := s.Open(t.Context(), digests[k])
				if errors.Is(err, blob.ErrNotFound) && k == 0 {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					// Leave some handles mid-blob.
					r.Read(make([]byte, 7))
				} else if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, blobs[k]) {
					t.Errorf("blob %d: read %d bytes, %v; want its %d bytes", k, len(got), err, len(blobs[k]))
				}
				r.Close()
			}
		}()
	}
	readers.Wait()
	close(stop)
	churn.Wait()
	if n := s.handles.idleCount(); n > maxIdleHandles {
		t.Errorf("idle handles = %d, over the bound", n)
	}
}
