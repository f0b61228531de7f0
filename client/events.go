package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/api/oas"
)

// Events returns up to limit (0: the server's default) of the tenant's
// events with Seq greater than since (0 reads from the start), oldest first.
// When there are none, the server waits up to wait (whole seconds, rounded
// up; at most artifactstore.MaxEventWait) for the next one before answering
// an empty page; 0 answers at once. Pass the page's Next as since to read
// on. since beyond the newest event is Invalid.
//
// Event.Data holds strings and, for integral numbers, uint64 (int64 when
// negative), as the Store gives them in-process.
func (c *Client) Events(ctx context.Context, since uint64, limit int, wait time.Duration) (artifactstore.EventPage, error) {
	const op = "Events"
	params := oas.ListEventsParams{
		Since:  oas.NewOptInt64(int64(min(since, math.MaxInt64))),
		Wait:   oas.NewOptInt(waitSeconds(wait)),
		Accept: oas.NewOptString("application/json"),
	}
	if limit != 0 {
		params.Limit = oas.NewOptInt(limit)
	}
	res, err := c.api.ListEvents(ctx, params)
	if err != nil {
		return artifactstore.EventPage{}, fail(op, err)
	}
	raw, ok := res.(*oas.ListEventsOKApplicationJSON)
	if !ok {
		return artifactstore.EventPage{}, fail(op, fmt.Errorf("the server answered %T to a request for JSON", res))
	}
	page, err := decodeEvents(*raw)
	if err != nil {
		return artifactstore.EventPage{}, fail(op, err)
	}
	return page, nil
}

// waitSeconds rounds a wait up to whole seconds; a negative wait stays
// negative, for the server to refuse like the Store does.
func waitSeconds(d time.Duration) int {
	switch {
	case d < 0:
		return -1
	case d > time.Hour:
		return int(time.Hour / time.Second)
	}
	return int((d + time.Second - 1) / time.Second)
}

type wireEvent struct {
	Seq       uint64                     `json:"seq"`
	Type      string                     `json:"type"`
	Time      string                     `json:"time"`
	Tenant    string                     `json:"tenant"`
	PackageID string                     `json:"package_id"`
	FileID    string                     `json:"file_id"`
	Data      map[string]json.RawMessage `json:"data"`
}

type wireEventPage struct {
	Events []wireEvent `json:"events"`
	Next   uint64      `json:"next"`
	Head   uint64      `json:"head"`
}

// decodeEvents decodes the JSON event page {events, next, head}.
func decodeEvents(b []byte) (artifactstore.EventPage, error) {
	var w wireEventPage
	if err := json.Unmarshal(b, &w); err != nil {
		return artifactstore.EventPage{}, fmt.Errorf("decoding the event page: %w", err)
	}
	page := artifactstore.EventPage{Events: make([]artifactstore.Event, len(w.Events)), Next: w.Next, Head: w.Head}
	for i, e := range w.Events {
		t, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil {
			return artifactstore.EventPage{}, fmt.Errorf("event %d: time: %w", e.Seq, err)
		}
		data := make(map[string]any, len(e.Data))
		for k, raw := range e.Data {
			v, err := decodeValue(raw)
			if err != nil {
				return artifactstore.EventPage{}, fmt.Errorf("event %d: data %q: %w", e.Seq, k, err)
			}
			data[k] = v
		}
		page.Events[i] = artifactstore.Event{
			Seq: e.Seq, Type: e.Type, Time: t, Tenant: e.Tenant,
			PackageID: e.PackageID, FileID: e.FileID, Data: data,
		}
	}
	return page, nil
}

// decodeValue decodes a JSON value the way the Store's CBOR decoding gives
// it: integral numbers as uint64 (int64 when negative), other numbers as
// float64, objects as map[string]any.
func decodeValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if u, err := strconv.ParseUint(v.String(), 10, 64); err == nil {
			return u
		}
		if i, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case map[string]any:
		for k, x := range v {
			v[k] = numbers(x)
		}
	case []any:
		for i, x := range v {
			v[i] = numbers(x)
		}
	}
	return v
}

// Health reports whether the server is up: nil when it answers
// {"status":"ok"}.
func (c *Client) Health(ctx context.Context) error {
	const op = "Health"
	res, err := c.api.Health(ctx)
	if err != nil {
		return fail(op, err)
	}
	if res.Status != "ok" {
		return fail(op, fmt.Errorf("the server reports status %q", res.Status))
	}
	return nil
}
