package fsblob

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/artifactstore/artifactstore/blob"
)

// The flusher tests run in a synctest bubble: synctest.Wait returns once
// every goroutine is blocked (a waiter queued, a round inside a sync), and
// the bubble fails the test if the flusher's goroutine outlives it.

// syncLog records which syncs ran, in order.
type syncLog struct {
	mu  sync.Mutex
	ran []string
}

func (l *syncLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ran = append(l.ran, s)
}

func (l *syncLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ran)
}

// waitAsync starts f.wait on a goroutine and returns where its result goes.
func waitAsync(f *flusher, since uint64, own func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.wait(since, own) }()
	return done
}

func queued(f *flusher) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue)
}

func TestFlusherServesEveryWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var all, own atomic.Int64
		f := &flusher{syncAll: func() error { all.Add(1); return nil }}
		const n = 100
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				err := f.wait(f.epoch(), func() error { own.Add(1); return nil })
				if err != nil {
					t.Errorf("wait = %v", err)
				}
			})
		}
		wg.Wait()
		if got := f.waiters.Load(); got != n {
			t.Errorf("served %d waiters, want %d", got, n)
		}
		// Every round ran exactly one sync: a waiter's own, or one for all.
		if r := f.rounds.Load(); r != all.Load()+own.Load() || all.Load() != f.grouped.Load() {
			t.Errorf("%d rounds, %d group syncs (%d counted), %d own syncs", r, all.Load(), f.grouped.Load(), own.Load())
		}
		synctest.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.running || len(f.queue) > 0 {
			t.Errorf("idle flusher: running = %v, %d queued", f.running, len(f.queue))
		}
	})
}

func TestFlusherLaterRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log syncLog
		release := make(chan struct{})
		f := &flusher{syncAll: func() error { log.add("all"); <-release; return nil }}

		// A is alone: its round runs A's own sync, which blocks.
		errA := errors.New("A's own sync failed")
		a := waitAsync(f, 0, func() error { log.add("A"); <-release; return errA })
		synctest.Wait()
		// B and C queue while A's round is running.
		b := waitAsync(f, 0, func() error { log.add("B"); return nil })
		c := waitAsync(f, 0, func() error { log.add("C"); return nil })
		synctest.Wait()
		if n := queued(f); n != 2 {
			t.Fatalf("%d waiters queued behind the running round, want 2", n)
		}
		release <- struct{}{}
		if err := <-a; err != errA {
			t.Errorf("A: wait = %v, want %v", err, errA)
		}
		// The round that served A must not have served B or C: they wait
		// for the next round's sync, which is blocked.
		synctest.Wait()
		for name, ch := range map[string]<-chan error{"B": b, "C": c} {
			select {
			case err := <-ch:
				t.Fatalf("%s served (%v) before the round after the one it queued behind had synced", name, err)
			default:
			}
		}
		release <- struct{}{}
		if err := <-b; err != nil {
			t.Errorf("B: wait = %v", err)
		}
		if err := <-c; err != nil {
			t.Errorf("C: wait = %v", err)
		}
		if got, want := log.get(), []string{"A", "all"}; !slices.Equal(got, want) {
			t.Errorf("syncs ran = %q, want %q", got, want)
		}
	})
}

// blockedRound starts a waiter whose own sync blocks until the returned
// func is called, so that the waiters queued meanwhile make up the next
// round.
func blockedRound(f *flusher) (release func()) {
	ch := make(chan struct{})
	done := waitAsync(f, f.epoch(), func() error { <-ch; return nil })
	synctest.Wait()
	return func() { close(ch); <-done }
}

// boom is the error failingFlusher's group syncs return.
var boom = errors.New("syncfs: input/output error")

// failingFlusher returns a flusher whose group syncs fail with boom while
// fail is set (it starts set).
func failingFlusher() (*flusher, *atomic.Bool) {
	fail := new(atomic.Bool)
	fail.Store(true)
	return &flusher{syncAll: func() error {
		if fail.Load() {
			return boom
		}
		return nil
	}}, fail
}

func TestFlusherErrorToEveryWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, fail := failingFlusher()
		release := blockedRound(f)
		var dones []<-chan error
		for range 5 {
			dones = append(dones, waitAsync(f, f.epoch(), func() error { return nil }))
		}
		synctest.Wait()
		release()
		for i, done := range dones {
			if err := <-done; !errors.Is(err, boom) {
				t.Errorf("waiter %d: wait = %v, want %v", i, err, boom)
			}
		}
		// Commits that start after the failure are not failed by it.
		fail.Store(false)
		if err := f.wait(f.epoch(), func() error { return nil }); err != nil {
			t.Errorf("a later lone waiter: wait = %v", err)
		}
		release = blockedRound(f)
		d1 := waitAsync(f, f.epoch(), func() error { return nil })
		d2 := waitAsync(f, f.epoch(), func() error { return nil })
		synctest.Wait()
		release()
		if err1, err2 := <-d1, <-d2; err1 != nil || err2 != nil {
			t.Errorf("a later group: wait = %v, %v", err1, err2)
		}
	})
}

// A writeback error that a group sync reported before a commit queued may
// have been the commit's own pages' (the kernel reports it to one syncfs
// only): the commit must fail even if its own round succeeds.
func TestFlusherFailsCommitsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, fail := failingFlusher()
		inFlight := f.epoch() // a commit that started writing now

		release := blockedRound(f)
		p := waitAsync(f, f.epoch(), func() error { return nil })
		q := waitAsync(f, f.epoch(), func() error { return nil })
		synctest.Wait()
		release()
		if err1, err2 := <-p, <-q; !errors.Is(err1, boom) || !errors.Is(err2, boom) {
			t.Fatalf("the failing round: wait = %v, %v; want %v", err1, err2, boom)
		}
		fail.Store(false)

		if err := f.wait(inFlight, func() error { return nil }); !errors.Is(err, boom) {
			t.Errorf("a commit in flight across a failed group sync: wait = %v, want %v", err, boom)
		}
		if err := f.wait(f.epoch(), func() error { return nil }); err != nil {
			t.Errorf("a commit started after it: wait = %v", err)
		}
	})
}

func TestFlusherWithoutGroupSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flusher{syncAll: func() error { return errNoGroupSync }}
		errQ := errors.New("Q's own sync failed")
		release := blockedRound(f)
		p := waitAsync(f, 0, func() error { return nil })
		q := waitAsync(f, 0, func() error { return errQ })
		synctest.Wait()
		release()
		if err := <-p; err != nil {
			t.Errorf("P: wait = %v, want its own sync's nil", err)
		}
		if err := <-q; err != errQ {
			t.Errorf("Q: wait = %v, want its own sync's %v", err, errQ)
		}
	})
}

func TestSyncFSAfterClose(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no syncfs(2)")
	}
	s := mustOpen(t, t.TempDir())
	if err := s.syncFS(); err != nil {
		t.Fatalf("syncFS = %v", err)
	}
	s.Close()
	if err := s.syncFS(); !errors.Is(err, errNoGroupSync) {
		t.Errorf("syncFS after Close = %v, want errNoGroupSync", err)
	}
}

// smallBlob returns distinct content for worker i's j-th blob, of a few
// sizes up to groupSyncMax.
func smallBlob(i, j int) []byte {
	sizes := []int{0, 1, 100, 4 << 10, 64 << 10, groupSyncMax}
	b := make([]byte, sizes[(i+j)%len(sizes)])
	copy(b, fmt.Sprintf("worker %d blob %d;", i, j))
	for k := 32; k < len(b); k++ {
		b[k] = byte(i*31 + j*7 + k)
	}
	return b
}

func TestCommitSmallConcurrent(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	const workers, each = 16, 24
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			for j := range each {
				data := smallBlob(i, j)
				if j%6 == 5 {
					data = []byte("shared by every worker") // equal content, committed concurrently
				}
				w, err := s.Create(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := w.Write(data); err != nil {
					t.Error(err)
					return
				}
				if err := w.Commit(digestOf(data)); err != nil {
					t.Errorf("worker %d, blob %d: Commit: %v", i, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range workers {
		for j := range each {
			data := smallBlob(i, j)
			if j%6 == 5 {
				data = []byte("shared by every worker")
			}
			r, err := s.Open(t.Context(), digestOf(data))
			if err != nil {
				t.Fatalf("worker %d, blob %d: %v", i, j, err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("worker %d, blob %d: read %d bytes (%v), want %d", i, j, len(got), err, len(data))
			}
		}
	}
	if got := leftovers(t, dir); len(got) > 0 {
		t.Errorf("leftovers: %q", got)
	}
	rounds, waiters, grouped := s.flush.rounds.Load(), s.flush.waiters.Load(), s.flush.grouped.Load()
	t.Logf("%d waits in %d rounds, %d of them grouped", waiters, rounds, grouped)
	if grouped == 0 {
		t.Errorf("%d concurrent committers never shared a round", workers)
	}
	// Closed and idle, the store leaves no flusher goroutine behind.
	s.Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		s.flush.mu.Lock()
		running := s.flush.running
		s.flush.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flusher is still running after Close")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCommitLargeSyncsAlone(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	put(t, s, bytes.Repeat([]byte{1}, groupSyncMax+1))
	if r := s.flush.rounds.Load(); r != 0 {
		t.Errorf("a blob over groupSyncMax went through %d flusher rounds, want 0", r)
	}
	d := put(t, s, bytes.Repeat([]byte{2}, groupSyncMax))
	// A lone small commit: one round, for its bytes and its name at once.
	if r, w := s.flush.rounds.Load(), s.flush.waiters.Load(); r != 1 || w != 1 {
		t.Errorf("a blob of groupSyncMax bytes: %d waits in %d rounds, want 1 in 1", w, r)
	}
	// Equal content is verified and refreshed without a sync.
	put(t, s, bytes.Repeat([]byte{2}, groupSyncMax))
	if r := s.flush.rounds.Load(); r != 1 {
		t.Errorf("recommitting %s: %d rounds in all, want still 1", d, r)
	}
}

// A small blob's name can reach the disk before its bytes (it is renamed
// into place before the sync that makes both durable), so a crash can leave
// a torn blob in place. A later commit of that content must not trust it.
func TestTornSmallBlobIsReplaced(t *testing.T) {
	for _, torn := range [][]byte{nil, []byte("half"), bytes.Repeat([]byte{0}, 4096)} {
		dir := t.TempDir()
		s := mustOpen(t, dir)
		data := bytes.Repeat([]byte("blob"), 1024)
		d := digestOf(data)
		target, err := s.path(d)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(target), 0o755)
		if err := os.WriteFile(target, torn, 0o644); err != nil {
			t.Fatal(err)
		}
		put(t, s, data)
		if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("torn blob of %d bytes: after a commit of its content the blob holds %d bytes (%v), want %d", len(torn), len(got), err, len(data))
		}

		// Through an upload session, which links rather than renames.
		if err := os.WriteFile(target, torn, 0o644); err != nil {
			t.Fatal(err)
		}
		u := s.Uploads()
		id := "01JDX0000000000000000000AB"
		if _, err := u.Append(t.Context(), id, 0, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if err := u.Commit(t.Context(), id, int64(len(data)), d); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("torn blob of %d bytes: after an upload of its content the blob holds %d bytes (%v), want %d", len(torn), len(got), err, len(data))
		}
	}
}

// A group sync that fails leaves no name behind for the commits it served:
// their bytes may never have reached the disk.
func TestFailedRoundRemovesBlobs(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	s.flush.syncAll = func() error { return errors.New("injected writeback error") }
	hold := make(chan struct{})
	held := waitAsync(&s.flush, s.flush.epoch(), func() error { <-hold; return nil })
	for queued(&s.flush) > 0 || s.flush.rounds.Load() == 0 && !flusherBusy(&s.flush) {
		runtime.Gosched()
	}
	datas := [][]byte{[]byte("first small blob"), []byte("second small blob")}
	errs := make(chan error, len(datas))
	for _, data := range datas {
		go func() {
			w, err := s.Create(t.Context())
			if err == nil {
				w.Write(data)
				err = w.Commit(digestOf(data))
			}
			errs <- err
		}()
	}
	for queued(&s.flush) < len(datas) {
		runtime.Gosched()
	}
	close(hold)
	<-held
	for range datas {
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "injected") {
			t.Errorf("a commit in the failed round: %v, want the injected error", err)
		}
	}
	for _, data := range datas {
		if _, err := s.Stat(t.Context(), digestOf(data)); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("blob %q after its failed round: Stat %v, want not found", data, err)
		}
	}
}

func flusherBusy(f *flusher) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// BenchmarkCommitSmallParallel commits 4 KiB blobs of distinct content from
// at least 8 goroutines, with the per-file fsyncs and with group syncs.
//
// Every run's store stays until the benchmark ends: on ext4 without a
// journal, creating a file skips the inodes deleted in the last minutes one
// by one, so removing a run's thousands of files would make the next run's
// creates cost more CPU than its syncs.
func BenchmarkCommitSmallParallel(b *testing.B) {
	parent := b.TempDir()
	for _, bc := range []struct {
		name      string
		threshold int64
	}{
		{"per-file", -1},
		{"grouped", groupSyncMax},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir, err := os.MkdirTemp(parent, bc.name+"-")
			if err != nil {
				b.Fatal(err)
			}
			s := mustOpen(b, dir)
			s.groupSyncThreshold = bc.threshold
			procs := runtime.GOMAXPROCS(0)
			b.SetParallelism((8 + procs - 1) / procs)
			var seq atomic.Uint64
			cpu := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				data := make([]byte, 4<<10)
				for k := range data {
					data[k] = byte(k * 7)
				}
				for pb.Next() {
					binary.LittleEndian.PutUint64(data, seq.Add(1))
					w, err := s.Create(context.Background())
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := w.Write(data); err != nil {
						b.Error(err)
						return
					}
					if err := w.Commit(digestOf(data)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			cpu = cpuTime() - cpu
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "files/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/file")
			if r := s.flush.rounds.Load(); r > 0 {
				b.ReportMetric(float64(s.flush.waiters.Load())/float64(r), "waits/round")
			}
		})
	}
}

// cpuTime returns the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// landing counts concurrent landings per target: the first to finish must
// not clear the mark the other still needs.
func TestLandingCounts(t *testing.T) {
	var l landing
	done1 := l.add("a")
	done2 := l.add("a")
	if !l.has("a") || l.has("b") {
		t.Fatal("has: wrong before any done")
	}
	done1()
	if !l.has("a") {
		t.Error("one landing's end cleared the other's mark")
	}
	done2()
	if l.has("a") || len(l.m) != 0 {
		t.Errorf("after both: has %v, %d entries", l.has("a"), len(l.m))
	}
}

// The store remembers the shard directories it has seen; one removed by
// hand is created again, for small and large blobs alike.
func TestShardRemovedByHand(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir)
	for _, data := range [][]byte{[]byte("small blob in a shard"), bytes.Repeat([]byte{7}, groupSyncMax+1)} {
		d := put(t, s, data)
		target, _ := s.path(d)
		if err := os.RemoveAll(filepath.Dir(target)); err != nil {
			t.Fatal(err)
		}
		// Other content for the same shard: find some.
		var other []byte
		for i := 0; ; i++ {
			c := append(slices.Clone(data), byte(i), byte(i>>8))
			if p, _ := s.path(digestOf(c)); filepath.Dir(p) == filepath.Dir(target) {
				other = c
				break
			}
		}
		od := put(t, s, other)
		got, err := s.Open(t.Context(), od)
		if err != nil {
			t.Fatalf("after its shard was removed: %v", err)
		}
		got.Close()
	}
}
