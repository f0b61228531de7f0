package artifactstore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/artifactstore/artifactstore"
)

// TestConcurrentPutAndFinalize: many goroutines put files into shared and
// separate packages, some racing for the same paths, while another goroutine
// finalizes the shared package. No acknowledged file may be lost, none may be
// added after the finalize, duplicate paths are conflicts, and the event log
// has exactly one event per change, gapless.
func TestConcurrentPutAndFinalize(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	shared := mustPackage(t, st, "acme", nil)
	const workers, perWorker = 8, 20

	var (
		mu        sync.Mutex
		acked     = map[string]artifactstore.File{} // by file ID
		conflicts int
		finalized int
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			own := mustPackage(t, st, "acme", nil)
			for i := range perWorker {
				content := []byte(fmt.Sprintf("worker %d file %d", w, i))
				// Two workers race for each shared path.
				f, err := st.PutFile(ctx, "acme", shared.ID, fmt.Sprintf("shared/%d-%d", w/2, i), bytes.NewReader(content), artifactstore.PutOptions{})
				mu.Lock()
				switch artifactstore.KindOf(err) {
				case artifactstore.Internal:
					if err == nil {
						acked[f.ID] = f
						break
					}
					t.Errorf("PutFile: %v", err)
				case artifactstore.Conflict:
					conflicts++
				case artifactstore.Finalized:
					finalized++
				default:
					t.Errorf("PutFile: %v", err)
				}
				mu.Unlock()
				f, err = st.PutFile(ctx, "acme", own.ID, fmt.Sprintf("own/%d", i), bytes.NewReader(content), artifactstore.PutOptions{})
				if err != nil {
					t.Errorf("PutFile into own package: %v", err)
					continue
				}
				mu.Lock()
				acked[f.ID] = f
				mu.Unlock()
			}
		})
	}
	var fin artifactstore.Package
	wg.Go(func() {
		// Let some files land first.
		for {
			p, err := st.GetPackage(ctx, "acme", shared.ID)
			if err != nil {
				t.Error(err)
				return
			}
			if p.FileCount >= workers*perWorker/8 {
				break
			}
		}
		var err error
		if fin, err = st.Finalize(ctx, "acme", shared.ID); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	if t.Failed() {
		return
	}

	mb, err := st.Manifest(ctx, "acme", shared.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := artifactstore.DecodeManifestCBOR(mb.CBOR)
	if err != nil {
		t.Fatal(err)
	}
	inManifest := map[string]string{}
	for _, f := range m.Files {
		inManifest[f.Path] = f.Digest
	}
	sharedAcked := 0
	for _, f := range acked {
		got, err := st.GetFile(ctx, "acme", f.ID)
		if err != nil || got.Digest != f.Digest {
			t.Errorf("acknowledged file %s: %+v, %v", f.Path, got, err)
		}
		if f.PackageID == shared.ID {
			sharedAcked++
			if inManifest[f.Path] != f.Digest {
				t.Errorf("acknowledged file %s is missing from the manifest", f.Path)
			}
		}
	}
	if sharedAcked != len(m.Files) || uint64(sharedAcked) != m.FileCount || int64(sharedAcked) != fin.FileCount {
		t.Errorf("shared package: %d acknowledged, %d in the manifest, file_count %d", sharedAcked, len(m.Files), fin.FileCount)
	}
	if conflicts == 0 || finalized == 0 {
		t.Logf("conflicts %d, finalized %d: the race did not exercise both outcomes this time", conflicts, finalized)
	}

	// Exactly one event per change: packages + acknowledged files + 1 finalize.
	evs := allEvents(t, st, "acme")
	want := (1 + workers) + len(acked) + 1
	if len(evs) != want {
		t.Errorf("%d events, want %d", len(evs), want)
	}
	seenFiles := map[string]bool{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: not gapless", i, e.Seq)
		}
		if e.Type == artifactstore.EventFileAdded {
			if _, ok := acked[e.FileID]; !ok || seenFiles[e.FileID] {
				t.Errorf("file.added for %s: unacknowledged or repeated", e.FileID)
			}
			seenFiles[e.FileID] = true
		}
	}
}

// TestConcurrentAppendsToOneUpload: appends racing on one session never
// interleave; each either lands at the offset it named or is refused.
func TestConcurrentAppendsToOneUpload(t *testing.T) {
	ctx := context.Background()
	st := mustOpen(t, "", artifactstore.Options{})
	u, err := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("z"), 64<<10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	landed := 0
	for range 8 {
		wg.Go(func() {
			for range 10 {
				cur, err := st.UploadStatus(ctx, "acme", u.ID)
				if err != nil {
					t.Error(err)
					return
				}
				_, err = st.AppendUpload(ctx, "acme", u.ID, cur.Offset, bytes.NewReader(chunk))
				switch artifactstore.KindOf(err) {
				case artifactstore.OffsetMismatch, artifactstore.Conflict:
				default:
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					landed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	got, err := st.UploadStatus(ctx, "acme", u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Offset != int64(landed*len(chunk)) {
		t.Errorf("offset %d after %d successful appends of %d bytes", got.Offset, landed, len(chunk))
	}
}
