package sqlite

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
)

// Group commit. Every write transaction ends in a commit that SQLite makes
// durable with an fsync of the WAL; with many small concurrent writes (a
// CI job putting thousands of files) those fsyncs are most of the cost. So
// writes that arrive while a transaction is committing wait, and the next
// transaction runs all of them, each inside its own savepoint, and commits
// once: one fsync for the batch. Nothing is acknowledged before the commit
// is durable, and a write that fails is rolled back to its savepoint without
// touching the others. Events stay gapless: a failed write's event head
// update is rolled back with it.
//
// The first caller to find no batch running leads: it runs one batch (its
// own write and whatever queued meanwhile) on its goroutine and, when more
// writes queued while it did, hands the queue to a goroutine that runs
// batches until the queue is empty.

// maxBatch bounds the writes in one transaction, so one commit's latency
// stays bounded under any load.
const maxBatch = 128

// group serializes and batches the writes on the writer connection.
type group struct {
	db  *sqlx.DB
	now func() time.Time

	mu      sync.Mutex
	queue   []*groupWrite
	running bool

	batches atomic.Uint64 // transactions run, for tests
	writes  atomic.Uint64 // writes run, for tests
}

// groupWrite is one queued write and where its result goes.
type groupWrite struct {
	ctx  context.Context // the caller's values, without its cancellation
	fn   txFunc
	done chan groupResult
}

type groupResult struct {
	err      error
	panicked any // fn panicked: re-raised on the caller's goroutine
	stack    []byte
}

// do runs fn in a batch and waits for the batch's commit. It waits even if
// ctx is cancelled meanwhile: once fn has run, only the commit can tell
// whether its changes are in, so the caller hears the truth. A statement
// running for a cancelled caller must not interrupt (and with it roll back)
// the others' transaction, so fn's statements run without ctx's
// cancellation.
func (g *group) do(ctx context.Context, fn txFunc) error {
	w := &groupWrite{ctx: context.WithoutCancel(ctx), fn: fn, done: make(chan groupResult, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if lead {
		// Writers tend to arrive together (woken by one blob sync round):
		// letting them queue before the first batch starts makes it
		// larger and the commits fewer (2.0 → 2.7–3.0 writes per
		// transaction from 8 writers, BenchmarkPutSmallFiles).
		runtime.Gosched()
		if g.runNext() {
			go g.drain()
		}
	}
	r := <-w.done
	if r.panicked != nil {
		panic(fmt.Sprintf("%v\n\n(in a batched catalog write; its stack:)\n%s", r.panicked, r.stack))
	}
	return r.err
}

// drain runs batches until the queue is empty.
func (g *group) drain() {
	for g.runNext() {
	}
}

// runNext runs the next batch and reports whether writes queued behind it;
// when none did, the group is idle again.
func (g *group) runNext() bool {
	g.mu.Lock()
	n := min(len(g.queue), maxBatch)
	batch := make([]*groupWrite, n)
	copy(batch, g.queue)
	g.queue = append(g.queue[:0], g.queue[n:]...)
	g.mu.Unlock()
	if n > 0 {
		g.run(batch)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		g.running = false
		return false
	}
	return true
}

// run executes batch in one transaction and delivers every result.
func (g *group) run(batch []*groupWrite) {
	g.batches.Add(1)
	g.writes.Add(uint64(len(batch)))
	results := make([]groupResult, len(batch))
	defer func() {
		for i, w := range batch {
			w.done <- results[i]
		}
	}()
	fail := func(err error) {
		for i := range results {
			if results[i].err == nil && results[i].panicked == nil {
				results[i].err = err
			}
		}
	}
	tx, err := g.db.BeginTxx(context.Background(), nil)
	if err != nil {
		fail(err)
		return
	}
	defer tx.Rollback()
	// A lone write needs no savepoint: its failure rolls back the whole
	// transaction.
	single := len(batch) == 1
	ok := 0
	for i, w := range batch {
		if !single {
			if _, err := tx.ExecContext(w.ctx, `SAVEPOINT w`); err != nil {
				fail(err)
				return
			}
		}
		// The clock is read under the write lock, so times follow commit
		// order.
		results[i] = call(w, tx, g.now().UnixMilli())
		if results[i].err == nil && results[i].panicked == nil {
			ok++
		} else if single {
			return
		} else if _, err := tx.ExecContext(w.ctx, `ROLLBACK TO w`); err != nil {
			// SQLite rolled the whole transaction back (an I/O error, a
			// full disk): the writes before this one are gone too.
			fail(fmt.Errorf("batched write: rollback to savepoint: %w", err))
			return
		}
		if !single {
			if _, err := tx.ExecContext(w.ctx, `RELEASE w`); err != nil {
				fail(err)
				return
			}
		}
	}
	if ok == 0 {
		return
	}
	if err := tx.Commit(); err != nil {
		fail(err)
	}
}

// call runs one write's fn, turning a panic into a result.
func call(w *groupWrite, tx *sqlx.Tx, now int64) (r groupResult) {
	defer func() {
		if p := recover(); p != nil {
			r = groupResult{panicked: p, stack: debug.Stack(), err: errors.New("panic")}
		}
	}()
	return groupResult{err: w.fn(w.ctx, tx, now)}
}
