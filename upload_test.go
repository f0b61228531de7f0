package artifactstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
)

func TestUploadSession(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	content := bytes.Repeat([]byte("0123456789"), 100_000)
	size := int64(len(content))
	u, err := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{Size: &size, Digest: sha(content)})
	if err != nil {
		t.Fatal(err)
	}
	if u.Offset != 0 || u.Size != size || !u.ExpiresAt.After(time.Now()) {
		t.Fatalf("new upload = %+v", u)
	}

	half := int64(len(content) / 2)
	u, err = st.AppendUpload(ctx, "acme", u.ID, 0, bytes.NewReader(content[:half]))
	if err != nil || u.Offset != half {
		t.Fatalf("first append = %+v, %v", u, err)
	}
	// A wrong offset changes nothing and names the current one.
	_, err = st.AppendUpload(ctx, "acme", u.ID, half+1, bytes.NewReader(content[half:]))
	wantKind(t, err, artifactstore.OffsetMismatch)
	var e *artifactstore.Error
	if !errors.As(err, &e) || e.Offset != half {
		t.Fatalf("offset mismatch carries %+v", e)
	}
	_, err = st.AppendUpload(ctx, "acme", u.ID, 0, bytes.NewReader(content))
	wantKind(t, err, artifactstore.OffsetMismatch)
	// Completing early: the declared size is not reached.
	_, err = st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "big"})
	wantKind(t, err, artifactstore.Invalid)

	st2 := u
	if st2, err = st.UploadStatus(ctx, "acme", u.ID); err != nil || st2.Offset != half {
		t.Fatalf("status = %+v, %v", st2, err)
	}
	// Past the declared size: TooLarge, nothing changes.
	_, err = st.AppendUpload(ctx, "acme", u.ID, half, io.MultiReader(bytes.NewReader(content[half:]), strings.NewReader("!")))
	wantKind(t, err, artifactstore.TooLarge)
	if st2, _ = st.UploadStatus(ctx, "acme", u.ID); st2.Offset != half {
		t.Fatalf("offset after a refused append = %d, want %d", st2.Offset, half)
	}
	u, err = st.AppendUpload(ctx, "acme", u.ID, artifactstore.AtCurrentOffset, bytes.NewReader(content[half:]))
	if err != nil || u.Offset != size {
		t.Fatalf("second append = %+v, %v", u, err)
	}

	// A wrong digest at completion is refused and changes nothing.
	_, err = st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "big", Digest: sha([]byte("x"))})
	wantKind(t, err, artifactstore.DigestMismatch)
	f, err := st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "big", MediaType: "application/x-tar"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Digest != sha(content) || f.Size != size || f.MediaType != "application/x-tar" {
		t.Fatalf("completed file = %+v", f)
	}
	if got := readAll(t, st, "acme", f.ID); !bytes.Equal(got, content) {
		t.Fatal("the completed file reads other bytes")
	}
	// A retry after a lost response answers the same file.
	f2, err := st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "big"})
	if err != nil || f2.ID != f.ID {
		t.Fatalf("retry = %+v, %v; want file %s", f2, err, f.ID)
	}
	_, err = st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "elsewhere"})
	wantKind(t, err, artifactstore.Conflict)
	_, err = st.AppendUpload(ctx, "acme", u.ID, size, strings.NewReader("more"))
	wantKind(t, err, artifactstore.Conflict)
	if pk, _ := st.GetPackage(ctx, "acme", p.ID); pk.FileCount != 1 {
		t.Errorf("package has %d files after retries, want 1", pk.FileCount)
	}
	if n := len(allEvents(t, st, "acme")); n != 2 {
		t.Errorf("%d events, want 2 (created, one file.added)", n)
	}
}

func TestUploadEmptyAndUndeclared(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	u, err := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	if err != nil || u.Size != -1 {
		t.Fatalf("upload = %+v, %v", u, err)
	}
	f, err := st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "empty", Digest: sha(nil)})
	if err != nil || f.Size != 0 || f.Digest != sha(nil) {
		t.Fatalf("empty upload completed as %+v, %v", f, err)
	}
	if got := readAll(t, st, "acme", f.ID); len(got) != 0 {
		t.Errorf("empty file reads %d bytes", len(got))
	}
}

// flakyReader delivers its bytes and then fails, like a client whose
// connection drops mid-body.
type flakyReader struct {
	r io.Reader
}

func (f *flakyReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset by peer")
	}
	return n, err
}

func TestUploadInterruptedKeepsBytesAndSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := mustOpen(t, dir, artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	content := bytes.Repeat([]byte("abcdefgh"), 300_000)
	u, err := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	if err != nil {
		t.Fatal(err)
	}
	cut := int64(1_000_003)
	got, err := st.AppendUpload(ctx, "acme", u.ID, 0, &flakyReader{bytes.NewReader(content[:cut])})
	wantKind(t, err, artifactstore.Invalid)
	if got.Offset != cut {
		t.Fatalf("after the interrupted append the offset is %d, want %d", got.Offset, cut)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The session, its offset and its hash state survive a restart.
	st = mustOpen(t, dir, artifactstore.Options{})
	s, err := st.UploadStatus(ctx, "acme", u.ID)
	if err != nil || s.Offset != cut {
		t.Fatalf("status after restart = %+v, %v", s, err)
	}
	if _, err := st.AppendUpload(ctx, "acme", u.ID, cut, bytes.NewReader(content[cut:])); err != nil {
		t.Fatal(err)
	}
	f, err := st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "resumed", Digest: sha(content)})
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, st, "acme", f.ID); !bytes.Equal(b, content) {
		t.Fatal("resumed upload reads other bytes")
	}
	// The staged bytes are gone once the file is recorded.
	for id := range st.blobs.Uploads().All(ctx) {
		t.Errorf("staged upload %s left after completion", id)
	}
}

func TestUploadAbortAndExpiry(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{UploadTTL: 200 * time.Millisecond})
	p := mustPackage(t, st, "acme", nil)

	u, _ := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	if _, err := st.AppendUpload(ctx, "acme", u.ID, 0, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	if err := st.AbortUpload(ctx, "acme", u.ID); err != nil {
		t.Fatal(err)
	}
	_, err := st.UploadStatus(ctx, "acme", u.ID)
	wantKind(t, err, artifactstore.NotFound)
	wantKind(t, st.AbortUpload(ctx, "acme", u.ID), artifactstore.NotFound)

	exp, _ := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	if _, err := st.AppendUpload(ctx, "acme", exp.ID, 0, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	_, err = st.UploadStatus(ctx, "acme", exp.ID)
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.AppendUpload(ctx, "acme", exp.ID, 3, strings.NewReader("d"))
	wantKind(t, err, artifactstore.NotFound)
	_, err = st.CompleteUpload(ctx, "acme", exp.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "x"})
	wantKind(t, err, artifactstore.NotFound)
	if err := st.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for id := range st.blobs.Uploads().All(ctx) {
		t.Errorf("staged bytes of %s survived the cleanup of expired sessions", id)
	}
}

func TestUploadIntoFinalizedOrTakenPath(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	p := mustPackage(t, st, "acme", nil)
	mustPut(t, st, "acme", p.ID, "taken", []byte("x"))
	u, _ := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	st.AppendUpload(ctx, "acme", u.ID, 0, strings.NewReader("payload"))
	_, err := st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "taken"})
	wantKind(t, err, artifactstore.Conflict)
	if _, err := st.Finalize(ctx, "acme", p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p.ID, Path: "new"})
	wantKind(t, err, artifactstore.Finalized)
	// The session is intact and can complete into another package.
	p2 := mustPackage(t, st, "acme", nil)
	f, err := st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: p2.ID, Path: "taken"})
	if err != nil || f.Digest != sha([]byte("payload")) {
		t.Fatalf("complete into another package = %+v, %v", f, err)
	}
}
