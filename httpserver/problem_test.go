package httpserver

import (
	"testing"

	"github.com/artifactstore/artifactstore"
)

// Every kind must have a row: a new kind without one fails here, not in
// production.
func TestProblemTableComplete(t *testing.T) {
	for _, k := range artifactstore.Kinds() {
		row, ok := problemKinds[k]
		if !ok || row.status < 400 || row.title == "" {
			t.Errorf("kind %v has no usable problem row: %+v", k, row)
		}
	}
	if len(problemKinds) != len(artifactstore.Kinds()) {
		t.Errorf("%d rows for %d kinds", len(problemKinds), len(artifactstore.Kinds()))
	}
}

func TestProblemForHidesInternalDetail(t *testing.T) {
	err := &artifactstore.Error{Op: "PutFile", Kind: artifactstore.Internal, Detail: "secret path /var/x"}
	p := problemFor(err, "/x")
	if p.Status != 500 || p.Type != "/problems/internal" || p.Detail == err.Detail {
		t.Errorf("internal problem = %+v", p)
	}
	off := &artifactstore.Error{Kind: artifactstore.OffsetMismatch, Offset: 3, Detail: "at 3"}
	p = problemFor(off, "/uploads/x")
	if p.Status != 409 || p.ExpectedOffset == nil || *p.ExpectedOffset != 3 || p.Type != "/problems/offset-mismatch" {
		t.Errorf("offset problem = %+v", p)
	}
}
