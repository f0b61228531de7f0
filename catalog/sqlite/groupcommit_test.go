package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/artifactstore/artifactstore/catalog"
)

// holdWriter starts a write that blocks until release is closed, and
// returns once it is running: writes issued meanwhile queue behind it.
func holdWriter(t *testing.T, c *Catalog) (release chan struct{}, done chan error) {
	t.Helper()
	release, done = make(chan struct{}), make(chan error, 1)
	running := make(chan struct{})
	go func() {
		done <- c.write(context.Background(), "hold", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
			close(running)
			<-release
			return nil
		})
	}()
	<-running
	return release, done
}

// waitQueued waits until n writes are queued behind the running batch.
func waitQueued(t *testing.T, c *Catalog, n int) {
	t.Helper()
	for {
		c.group.mu.Lock()
		q := len(c.group.queue)
		c.group.mu.Unlock()
		if q >= n {
			return
		}
		runtime.Gosched()
	}
}

// Writes that queue behind a running transaction commit together, and a
// write that fails inside the batch leaves no trace while the others land.
func TestGroupCommitBatchesAndIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	c := openTest(t, filepath.Join(t.TempDir(), "catalog.db"), nil)
	if _, err := c.CreatePackage(ctx, catalog.Package{ID: "P", Tenant: "t"}, catalog.NewEvent{Type: "package.created"}); err != nil {
		t.Fatal(err)
	}
	before := c.group.batches.Load()
	release, held := holdWriter(t, c)

	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every fifth write takes a path another one took: a conflict.
			path := fmt.Sprintf("f%02d", i)
			if i%5 == 4 {
				path = fmt.Sprintf("f%02d", i-1)
			}
			_, errs[i] = c.AddFile(ctx, catalog.File{ID: fmt.Sprintf("F%02d", i), Tenant: "t", PackageID: "P", Path: path, Size: int64(i), Digest: "sha256:" + strings.Repeat("0", 64)}, catalog.NewEvent{Type: "file.added"})
		}()
	}
	waitQueued(t, c, n)
	close(release)
	wg.Wait()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if got := c.group.batches.Load() - before; got != 2 {
		t.Errorf("%d transactions for the held write and %d queued ones, want 2", got, n)
	}

	// Of each pair taking one path, exactly one landed.
	landed := 0
	for i := range n {
		pair := i
		if i%5 == 4 {
			pair = i - 1
		}
		switch {
		case errs[i] == nil:
			landed++
		case !errors.Is(errs[i], catalog.ErrConflict):
			t.Errorf("write %d: %v, want nil or a conflict", i, errs[i])
		case errs[pair] != nil && i != pair:
			t.Errorf("writes %d and %d for one path both failed", pair, i)
		}
	}
	if want := n - n/5; landed != want {
		t.Errorf("%d writes landed, want %d", landed, want)
	}
	files, err := c.ListFiles(ctx, "t", "P", catalog.FileFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.GetPackage(ctx, "t", "P")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != landed || p.FileCount != int64(landed) {
		t.Errorf("%d files listed, package counts %d, want %d", len(files), p.FileCount, landed)
	}
	// Events: the package's, then one per landed file, gapless.
	evs, head, err := c.Events(ctx, "t", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if head != uint64(landed+1) || len(evs) != landed+1 {
		t.Fatalf("head %d, %d events, want %d", head, len(evs), landed+1)
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: not gapless", i, e.Seq)
		}
	}
}

// A write whose caller gives up while it is queued or running does not take
// the batch down with it, and its caller still learns whether it landed.
func TestGroupCommitCancelledCallerDoesNotAbortBatch(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "catalog.db"), nil)
	release, held := holdWriter(t, c)

	cctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() {
		_, err := c.CreatePackage(cctx, catalog.Package{ID: "C", Tenant: "t"}, catalog.NewEvent{Type: "package.created"})
		cancelled <- err
	}()
	other := make(chan error, 1)
	go func() {
		_, err := c.CreatePackage(context.Background(), catalog.Package{ID: "O", Tenant: "t"}, catalog.NewEvent{Type: "package.created"})
		other <- err
	}()
	waitQueued(t, c, 2)
	cancel()
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if err := <-other; err != nil {
		t.Fatalf("the other write in the batch: %v", err)
	}
	// The cancelled caller queued before it gave up: its write ran, and it
	// is told so (nil), not an error for a change that is in.
	errC := <-cancelled
	_, getErr := c.GetPackage(context.Background(), "t", "C")
	if (errC == nil) != (getErr == nil) {
		t.Errorf("cancelled caller told %v, but GetPackage says %v", errC, getErr)
	}
}

// A panic in one write reaches its caller; the batch's other writes land.
func TestGroupCommitPanic(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "catalog.db"), nil)
	release, held := holdWriter(t, c)
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		c.write(context.Background(), "boom", func(ctx context.Context, tx *sqlx.Tx, _ int64) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO event_heads (tenant, seq) VALUES ('x', 7)`); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	other := make(chan error, 1)
	go func() {
		_, err := c.CreatePackage(context.Background(), catalog.Package{ID: "O", Tenant: "t"}, catalog.NewEvent{Type: "package.created"})
		other <- err
	}()
	waitQueued(t, c, 2)
	close(release)
	<-held
	if p := <-panicked; p == nil || !strings.Contains(fmt.Sprint(p), "boom") {
		t.Errorf("the panicking write's caller recovered %v, want the panic", p)
	}
	if err := <-other; err != nil {
		t.Errorf("the other write: %v", err)
	}
	var n int
	if err := c.reader.Get(&n, `SELECT count(*) FROM event_heads WHERE tenant = 'x'`); err != nil || n != 0 {
		t.Errorf("the panicking write's insert: %d rows (%v), want rolled back", n, err)
	}
}
