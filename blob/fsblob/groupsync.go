package fsblob

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Group durability. A small blob's Commit is dominated by its flushes (the
// blob's bytes, and its name in the shard directory): an fsync costs far
// more CPU than writing a few KiB. So commits that need a flush at the
// same time wait for one: a flusher takes every waiter queued so far as a
// round and makes all of them durable with a single syncfs(2) of the store's
// file system. Nothing is acknowledged before the round that serves it has
// finished, and a round only serves waiters that were queued before it
// started, so its sync covers everything they wrote.
//
// A round with a single waiter runs that waiter's own, targeted sync instead
// (an fsync of its file or directory): one client alone keeps the latency of
// a plain fsync and does not flush unrelated dirty data.
//
// syncfs reports a writeback error once per descriptor: to the first syncfs
// on the store's descriptor after the error. A page of a commit's temp file
// can fail to write back (the kernel's own writeback) before that commit
// queues, and the error then goes to an earlier round, while the page is
// clean and the commit's own round succeeds. So a failed syncfs fails not
// only its round but every commit in flight when it returned: each waiter
// passes the epoch it read before writing anything, and a syncfs that failed
// after that epoch is its error too.

// errNoGroupSync is what a flusher's syncAll returns when it cannot sync the
// whole file system (the store was closed under waiting commits, or there is
// no syncfs(2) outside Linux); the round then runs each waiter's own sync.
var errNoGroupSync = errors.New("fsblob: no group sync")

// flusher batches the syncs of concurrent waiters. Its zero value is not
// usable: syncAll must be set.
type flusher struct {
	// syncAll makes everything written before it was called durable, for
	// every waiter at once.
	syncAll func() error

	mu       sync.Mutex
	queue    []*syncWaiter
	running  bool   // a loop goroutine is running rounds
	synced   uint64 // syncAll calls returned: the epoch
	failedAt uint64 // the epoch the last failed syncAll returned in, or 0
	failure  error  // its error

	rounds  atomic.Int64 // rounds run, for tests and benchmarks
	waiters atomic.Int64 // waiters served
	grouped atomic.Int64 // rounds that called syncAll
}

// syncWaiter is one queued wait and where its result goes.
type syncWaiter struct {
	sync func() error // the waiter's own sync, for a round of one
	done chan error
}

// epoch returns the number of group syncs that have returned. A committer
// reads it before writing, and passes it to every wait.
func (f *flusher) epoch() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

// wait blocks until a round that started after the call has made the
// caller's writes durable, and returns that round's error, or the error of a
// group sync that failed since since, the caller's epoch. own is the
// targeted sync that makes the caller's writes durable on its own (an fsync
// of the file or directory written); the round runs it when the caller is
// alone.
func (f *flusher) wait(since uint64, own func() error) error {
	w := &syncWaiter{sync: own, done: make(chan error, 1)}
	f.mu.Lock()
	f.queue = append(f.queue, w)
	if !f.running {
		f.running = true
		go f.loop()
	}
	f.mu.Unlock()
	err := <-w.done
	if err == nil {
		f.mu.Lock()
		if f.failedAt > since {
			err = f.failure
		}
		f.mu.Unlock()
	}
	return err
}

// loop runs rounds until the queue is empty, then ends: an idle store (or a
// closed one) has no flusher goroutine.
func (f *flusher) loop() {
	for {
		// Take the round under the lock, after the waiters appended
		// themselves, and sync only after taking it: whoever queues from
		// now on waits for the next round.
		f.mu.Lock()
		round := f.queue
		f.queue = nil
		if len(round) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		f.run(round)
	}
}

// run syncs for one round and hands every waiter its result.
func (f *flusher) run(round []*syncWaiter) {
	f.rounds.Add(1)
	f.waiters.Add(int64(len(round)))
	if len(round) > 1 {
		f.grouped.Add(1)
		err := f.syncAll()
		if !errors.Is(err, errNoGroupSync) {
			f.mu.Lock()
			f.synced++
			if err != nil {
				f.failedAt, f.failure = f.synced, err
			}
			f.mu.Unlock()
			// One flush for all: its error is every waiter's.
			for _, w := range round {
				w.done <- err
			}
			return
		}
	}
	for _, w := range round {
		w.done <- w.sync()
	}
}

// syncFS is the store's group sync: one syncfs(2) on the directory that Open
// opened writes back all the file system's dirty data and metadata and
// flushes the disk's cache. It reports the file system's writeback errors
// since the previous syncfs on that descriptor, or since Open opened it.
// Once Close has closed the descriptor, syncFS returns errNoGroupSync, so
// commits still waiting then sync on their own.
func (s *Store) syncFS() error {
	rc, err := s.fsDir.SyscallConn()
	if err != nil {
		return errNoGroupSync
	}
	var serr error
	// Control holds a reference to the descriptor, so a concurrent Close
	// cannot close it under syncfs, and fails once it is closed.
	if err := rc.Control(func(fd uintptr) { serr = syncfs(int(fd)) }); err != nil {
		return errNoGroupSync
	}
	if serr != nil {
		return fmt.Errorf("syncfs %s: %w", s.dir, serr)
	}
	return nil
}
