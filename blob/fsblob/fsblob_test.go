package fsblob

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/blob/blobtest"
)

func TestConformance(t *testing.T) {
	var dirs sync.Map // *Store -> dir
	blobtest.RunWithOptions(t, blobtest.Options{
		New: func(t *testing.T) blob.Store {
			dir := t.TempDir()
			s := mustOpen(t, dir)
			dirs.Store(s, dir)
			return s
		},
		Leftovers: func(t *testing.T, s blob.Store) []string {
			dir, ok := dirs.Load(s)
			if !ok {
				t.Fatalf("unknown store %p", s)
			}
			return leftovers(t, dir.(string))
		},
	})
}

func mustOpen(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// leftovers lists every file under dir that is neither a blob, an upload nor
// part of the layout.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var stray []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		ok := false
		switch {
		case rel == "." || rel == "LOCK" || rel == "blobs" || rel == "tmp" || rel == "uploads":
			ok = true
		case parts[0] == "blobs":
			ok = d.IsDir() && (rel == "blobs/sha256" || len(parts) == 3 && len(parts[2]) == 2) ||
				d.Type().IsRegular() && len(parts) == 4 && blob.IsDigestHex(parts[3]) && parts[3][:2] == parts[2]
		case parts[0] == "uploads":
			ok = d.Type().IsRegular() && len(parts) == 2 && validID(parts[1]) == nil
		}
		if !ok {
			stray = append(stray, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return stray
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func put(t *testing.T, s *Store, data []byte) string {
	t.Helper()
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	d := digestOf(data)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestOpenLocksDirectory(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a directory in use succeeded")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open: error %q does not say the directory is in use", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, blob.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	s3, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s3.Close()
}

func TestOpenRemovesTemps(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	d := put(t, s, []byte("kept"))
	n, err := s.Uploads().Append(t.Context(), "kept-upload", 0, strings.NewReader("staged"))
	if err != nil || n != 6 {
		t.Fatalf("Append = %d, %v", n, err)
	}
	// Simulate a crash in the middle of two staged writes.
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("half")); err != nil {
		t.Fatal(err)
	}
	if err := w.(*writer).bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "odd-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := leftovers(t, dir); len(got) != 2 {
		t.Fatalf("before reopening, leftovers = %q, want the temp file and dir", got)
	}

	s = mustOpen(t, dir)
	if got := leftovers(t, dir); len(got) != 0 {
		t.Errorf("Open left %q behind", got)
	}
	if _, err := s.Stat(t.Context(), d); err != nil {
		t.Errorf("Open removed a blob: %v", err)
	}
	rc, err := s.Uploads().Open(t.Context(), "kept-upload", 6)
	if err != nil {
		t.Fatalf("Open removed an upload: %v", err)
	}
	rc.Close()
	_ = w.Abort() // the old writer's file is gone already
}

func TestReaderUnwrapsToFile(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	data := []byte("served with sendfile")
	d := put(t, s, data)
	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	u, ok := r.(interface{ File() *os.File })
	if !ok {
		t.Fatalf("Open returned %T without File()", r)
	}
	f := u.File()
	if f == nil {
		t.Fatal("File() = nil")
	}
	// net's sendfile path type-asserts syscall.Conn, which the embedded
	// *os.File provides.
	if _, ok := r.(syscall.Conn); !ok {
		t.Errorf("%T does not implement syscall.Conn", r)
	}
	if _, ok := r.(io.WriterTo); !ok {
		t.Errorf("%T does not implement io.WriterTo", r)
	}
	if _, err := r.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f) // shares the offset with r
	if err != nil || string(got) != string(data[7:]) {
		t.Errorf("reading File() after Seek = %q, %v; want %q", got, err, data[7:])
	}
}

func TestLayout(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	data := []byte("layout")
	d := put(t, s, data)
	hexPart := strings.TrimPrefix(d, "sha256:")
	got, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", hexPart[:2], hexPart))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("blob file = %q, %v; want %q", got, err, data)
	}
	if _, err := s.Uploads().Append(t.Context(), "id_1", 0, strings.NewReader("up")); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(filepath.Join(dir, "uploads", "id_1"))
	if err != nil || string(got) != "up" {
		t.Errorf("upload file = %q, %v; want %q", got, err, "up")
	}
	if _, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil {
		t.Errorf("LOCK: %v", err)
	}
}

func TestAllSkipsStrayFiles(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	d := put(t, s, []byte("real"))
	hexPart := strings.TrimPrefix(d, "sha256:")
	stray := []string{
		filepath.Join("blobs", "sha256", hexPart[:2], "README"),
		filepath.Join("blobs", "sha256", hexPart[:2], strings.ToUpper(hexPart)),
		filepath.Join("blobs", "sha256", "zz", strings.Repeat("0", 64)), // wrong shard
		filepath.Join("uploads", "bad.name"),
	}
	for _, p := range stray {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for info, err := range s.All(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Digest)
	}
	if len(got) != 1 || got[0] != d {
		t.Errorf("All = %q, want [%s]", got, d)
	}
	for id, err := range s.Uploads().All(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("Uploads().All listed %q", id)
	}
}

func TestInvalidUploadID(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	u := s.Uploads()
	for _, id := range []string{"", "../escape", "a/b", "a.b", "spa ce", strings.Repeat("x", 129), "é"} {
		if _, err := u.Append(t.Context(), id, 0, strings.NewReader("x")); err == nil {
			t.Errorf("Append(%q) succeeded", id)
		}
		if rc, err := u.Open(t.Context(), id, 0); err == nil {
			rc.Close()
			t.Errorf("Open(%q) succeeded", id)
		}
		if err := u.Delete(t.Context(), id); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Delete(%q) = %v, want an invalid-id error", id, err)
		}
	}
	if _, err := u.Append(t.Context(), strings.Repeat("x", 128), 0, strings.NewReader("x")); err != nil {
		t.Errorf("Append with a 128-byte id: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an invalid id escaped the uploads directory: %v", err)
	}
}

func TestAppendAfterLinkedCommitCopies(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	u := s.Uploads()
	data := []byte("linked into place")
	if _, err := u.Append(t.Context(), "lnk", 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	d := digestOf(data)
	if err := u.Commit(t.Context(), "lnk", int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	// Appending again (the caller could not record the file and the
	// session goes on) gives the upload its own copy: the blob never
	// changes.
	for _, off := range []int64{int64(len(data)), 5, 0} {
		n, err := u.Append(t.Context(), "lnk", off, strings.NewReader("more"))
		if err != nil || n != 4 {
			t.Fatalf("Append at %d after a linked commit = %d, %v", off, n, err)
		}
		rc, err := u.Open(t.Context(), "lnk", off+4)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if want := string(data[:off]) + "more"; string(got) != want {
			t.Errorf("upload after Append at %d = %q, want %q", off, got, want)
		}
	}

	r, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, _ := io.ReadAll(r); !bytes.Equal(got, data) {
		t.Errorf("blob = %q, want %q", got, data)
	}
	// Once the upload is deleted the id can start over without touching
	// the blob.
	if err := u.Delete(t.Context(), "lnk"); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(t.Context(), "lnk", 0, strings.NewReader("fresh")); err != nil {
		t.Fatalf("Append to a reused id: %v", err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); !bytes.Equal(got, data) {
		t.Errorf("blob = %q after reusing the upload id, want %q", got, data)
	}
}

func TestCommitAfterClose(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := w.Commit(digestOf([]byte("late"))); !errors.Is(err, blob.ErrClosed) {
		t.Errorf("Commit after Close = %v, want ErrClosed", err)
	}
	if got := leftovers(t, dir); len(got) != 0 {
		t.Errorf("leftovers = %q", got)
	}
}

func TestNoSpaceMapping(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		err := mapErr(&fs.PathError{Op: "write", Path: "x", Err: errno})
		if !errors.Is(err, blob.ErrNoSpace) || !errors.Is(err, errno) {
			t.Errorf("mapErr(%v) = %v, want it to wrap ErrNoSpace and the errno", errno, err)
		}
	}
	if err := mapErr(syscall.EIO); errors.Is(err, blob.ErrNoSpace) {
		t.Errorf("mapErr(EIO) = %v wraps ErrNoSpace", err)
	}
	// A real ENOSPC from the kernel, where /dev/full exists.
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer f.Close()
	if _, werr, _ := blob.CopyStream(t.Context(), f, strings.NewReader("x")); !errors.Is(mapErr(werr), blob.ErrNoSpace) {
		t.Errorf("writing to /dev/full: %v, want ErrNoSpace", err)
	}
}

const benchSize = 64 << 20

// benchData returns benchSize bytes and the chunk size callers write them in
// (what io.Copy from a request body hands over).
func benchData() ([]byte, int) {
	data := make([]byte, benchSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return data, 32 << 10
}

func BenchmarkCommit(b *testing.B) {
	s := mustOpen(b, b.TempDir())
	data, chunk := benchData()
	b.SetBytes(benchSize)
	i := 0
	for b.Loop() {
		w, err := s.Create(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(data); off += chunk {
			if _, err := w.Write(data[off : off+chunk]); err != nil {
				b.Fatal(err)
			}
		}
		// The backend trusts the digest; a fresh one per iteration
		// measures a new blob, not a ModTime refresh.
		d := digestOf([]byte(fmt.Sprint(i)))
		i++
		if err := w.Commit(d); err != nil {
			b.Fatal(err)
		}
		if err := s.Delete(b.Context(), d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselineWriteFsync is the floor for BenchmarkCommit: the same
// bytes in the same chunks straight to a file, fsync, rename, fsync the
// directory.
func BenchmarkBaselineWriteFsync(b *testing.B) {
	dir := b.TempDir()
	data, chunk := benchData()
	b.SetBytes(benchSize)
	target := filepath.Join(dir, "target")
	for b.Loop() {
		f, err := os.CreateTemp(dir, "tmp-*")
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(data); off += chunk {
			if _, err := f.Write(data[off : off+chunk]); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(f.Name(), target); err != nil {
			b.Fatal(err)
		}
		if err := syncDir(dir); err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(target); err != nil {
			b.Fatal(err)
		}
	}
}
