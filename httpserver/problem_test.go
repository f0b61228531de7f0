package httpserver

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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

func TestRecoverTurnsPanicsIntoProblems(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), mux: http.NewServeMux()}
	s.mux.HandleFunc("/panics", func(http.ResponseWriter, *http.Request) { panic("boom") })
	s.mux.HandleFunc("/abort", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/panics", nil))
	if rec.Code != 500 || rec.Header().Get("Content-Type") != "application/problem+json" || strings.Contains(rec.Body.String(), "boom") {
		t.Errorf("panic answered %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	// http.ErrAbortHandler still aborts the connection.
	defer func() {
		if recover() != http.ErrAbortHandler {
			t.Error("ErrAbortHandler was swallowed")
		}
	}()
	s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/abort", nil))
}
