package artifactstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/artifactstore/artifactstore/catalog"
)

// Event is one entry of a tenant's event log. Seq counts 1, 2, 3 … per
// tenant without gaps, in commit order; every change has exactly one event,
// written in the same transaction. Data holds a few facts of the change
// (strings and unsigned integers).
type Event struct {
	Seq       uint64
	Type      string // EventPackageCreated, EventFileAdded, EventPackageFinalized
	Time      time.Time
	Tenant    string
	PackageID string
	FileID    string // for file.added
	Data      map[string]any
}

// EventPage is one read of the event log. Next is the cursor to pass as
// since next time (the last event's Seq, or since itself when there were no
// events); Head is the tenant's newest Seq.
type EventPage struct {
	Events []Event
	Next   uint64
	Head   uint64
}

// Limits of WaitEvents' wait.
const (
	DefaultEventWait = 20 * time.Second
	MaxEventWait     = 60 * time.Second
)

// Events returns up to limit (default DefaultPageSize, at most MaxPageSize)
// events of tenant with Seq greater than since (0 reads from the start).
// since beyond the tenant's head is Invalid.
func (s *Store) Events(ctx context.Context, tenant string, since uint64, limit int) (EventPage, error) {
	return s.WaitEvents(ctx, tenant, since, limit, 0)
}

// WaitEvents is Events that, when there is nothing after since, waits up to
// wait for the next event instead of answering empty at once: the long-poll
// primitive. It wakes as soon as a change commits in this Store (no
// polling). It answers an empty page when wait passes, and ctx's error when
// ctx ends first.
func (s *Store) WaitEvents(ctx context.Context, tenant string, since uint64, limit int, wait time.Duration) (EventPage, error) {
	const op = "Events"
	var errs []FieldError
	if tenant == AllTenants || validTenant(tenant) != nil {
		errs = append(errs, FieldError{"tenant", "is not a valid tenant"})
	}
	limit, fe := pageLimit(limit)
	if fe != nil {
		errs = append(errs, *fe)
	}
	if wait < 0 || wait > MaxEventWait {
		errs = append(errs, FieldError{"wait", fmt.Sprintf("must be between 0 and %d seconds", int(MaxEventWait/time.Second))})
	}
	if len(errs) > 0 {
		return EventPage{}, invalid(op, errs...)
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		// Take the wake-up channel before reading, so an event committed
		// between the read and the wait is not missed.
		changed := s.notify.wait()
		evs, head, err := s.cat.Events(ctx, tenant, since, limit)
		if err != nil {
			return EventPage{}, wrap(op, err)
		}
		if since > head {
			return EventPage{}, invalid(op, FieldError{"since", fmt.Sprintf("is %d, beyond the newest event %d", since, head)})
		}
		if len(evs) > 0 || timeout == nil {
			return eventPage(op, evs, since, head)
		}
		select {
		case <-changed:
		case <-timeout:
			return EventPage{Events: []Event{}, Next: since, Head: head}, nil
		case <-ctx.Done():
			return EventPage{}, wrap(op, ctx.Err())
		}
	}
}

func eventPage(op string, evs []catalog.Event, since, head uint64) (EventPage, error) {
	page := EventPage{Events: make([]Event, len(evs)), Next: since, Head: head}
	for i, e := range evs {
		var data map[string]any
		if len(e.Data) > 0 {
			if err := strictDec.Unmarshal(e.Data, &data); err != nil {
				return EventPage{}, wrap(op, fmt.Errorf("event %d data: %w", e.Seq, err))
			}
		}
		if data == nil {
			data = map[string]any{}
		}
		page.Events[i] = Event{
			Seq:       e.Seq,
			Type:      e.Type,
			Time:      e.Time,
			Tenant:    e.Tenant,
			PackageID: e.PackageID,
			FileID:    e.FileID,
			Data:      data,
		}
		page.Next = e.Seq
	}
	return page, nil
}

// eventData encodes an event payload as deterministic CBOR.
func eventData(m map[string]any) ([]byte, error) {
	return detEnc.Marshal(m)
}

// wireEvent is the encoded form of an Event: text time, unsigned integers.
type wireEvent struct {
	Seq       uint64         `cbor:"seq" json:"seq"`
	Type      string         `cbor:"type" json:"type"`
	Time      string         `cbor:"time" json:"time"`
	Tenant    string         `cbor:"tenant" json:"tenant"`
	PackageID string         `cbor:"package_id" json:"package_id"`
	FileID    string         `cbor:"file_id,omitempty" json:"file_id,omitempty"`
	Data      map[string]any `cbor:"data" json:"data"`
}

type wirePage struct {
	Events []wireEvent `cbor:"events" json:"events"`
	Next   uint64      `cbor:"next" json:"next"`
	Head   uint64      `cbor:"head" json:"head"`
}

func (e Event) wire() wireEvent {
	w := wireEvent{
		Seq: e.Seq, Type: e.Type, Time: FormatTime(e.Time), Tenant: e.Tenant,
		PackageID: e.PackageID, FileID: e.FileID, Data: e.Data,
	}
	if w.Data == nil {
		w.Data = map[string]any{}
	}
	return w
}

func (p EventPage) wire() wirePage {
	w := wirePage{Events: make([]wireEvent, len(p.Events)), Next: p.Next, Head: p.Head}
	for i, e := range p.Events {
		w.Events[i] = e.wire()
	}
	return w
}

// MarshalJCS encodes one event as JCS (RFC 8785) JSON, as it appears in an
// event page.
func (e Event) MarshalJCS() ([]byte, error) { return canonicalJSON(e.wire()) }

// MarshalCBOR encodes the page {events, next, head} as deterministic CBOR,
// the way the manifest is encoded.
func (p EventPage) MarshalCBOR() ([]byte, error) { return detEnc.Marshal(p.wire()) }

// MarshalJCS encodes the page as JCS (RFC 8785) JSON.
func (p EventPage) MarshalJCS() ([]byte, error) { return canonicalJSON(p.wire()) }

// notifier wakes every waiter when any change commits: waiters take the
// current channel, and broadcast closes it and installs a fresh one.
type notifier struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) broadcast() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	close(n.ch)
	n.ch = make(chan struct{})
}

// close wakes every waiter for good (the Store is closing).
func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		close(n.ch)
	}
}
