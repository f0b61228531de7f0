package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/artifactstore/artifactstore"
)

// problemKinds is the one mapping from error kind to HTTP status and title.
// TestProblemTableComplete fails when a kind has no row.
var problemKinds = map[artifactstore.Kind]struct {
	status int
	title  string
}{
	artifactstore.Internal:            {http.StatusInternalServerError, "Internal server error"},
	artifactstore.Invalid:             {http.StatusUnprocessableEntity, "Validation failed"},
	artifactstore.Unauthorized:        {http.StatusUnauthorized, "Unauthorized"},
	artifactstore.Forbidden:           {http.StatusForbidden, "Forbidden"},
	artifactstore.NotFound:            {http.StatusNotFound, "Not found"},
	artifactstore.Conflict:            {http.StatusConflict, "Conflict"},
	artifactstore.Finalized:           {http.StatusConflict, "Package finalized"},
	artifactstore.DigestMismatch:      {http.StatusUnprocessableEntity, "Digest mismatch"},
	artifactstore.OffsetMismatch:      {http.StatusConflict, "Upload offset mismatch"},
	artifactstore.RangeNotSatisfiable: {http.StatusRequestedRangeNotSatisfiable, "Range not satisfiable"},
	artifactstore.TooLarge:            {http.StatusRequestEntityTooLarge, "Too large"},
	artifactstore.InsufficientStorage: {http.StatusInsufficientStorage, "Insufficient storage"},
}

// Problem is an RFC 7807 problem document.
type Problem struct {
	Type           string       `json:"type"`
	Title          string       `json:"title"`
	Status         int          `json:"status"`
	Detail         string       `json:"detail,omitempty"`
	Instance       string       `json:"instance,omitempty"`
	Errors         []FieldError `json:"errors,omitempty"`
	ExpectedOffset *int64       `json:"expected-offset,omitempty"`

	retryAfter time.Duration // sent as Retry-After
}

// FieldError names one bad input field of a validation problem.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// problemFor builds the problem document of err. Internal errors show a
// generic detail; their cause is logged by the caller, never sent.
func problemFor(err error, instance string) Problem {
	k := artifactstore.KindOf(err)
	row := problemKinds[k]
	p := Problem{Type: "/problems/" + k.String(), Title: row.title, Status: row.status, Instance: instance}
	e, ok := errors.AsType[*artifactstore.Error](err)
	if !ok || k == artifactstore.Internal {
		p.Detail = "the server could not complete the request; it has been logged"
		return p
	}
	p.Detail = e.Detail
	if p.Detail == "" {
		p.Detail = row.title
	}
	for _, f := range e.Fields {
		p.Errors = append(p.Errors, FieldError{Field: f.Field, Message: f.Message})
	}
	p.retryAfter = e.RetryAfter
	if k == artifactstore.OffsetMismatch {
		off := e.Offset
		p.ExpectedOffset = &off
	}
	return p
}

// badRequest is a validation error for a body that cannot be parsed at all
// (bad JSON, broken multipart): 400 rather than 422.
type badRequest struct{ err error }

func (b badRequest) Error() string { return b.err.Error() }
func (b badRequest) Unwrap() error { return b.err }

// writeProblem answers err as a problem document.
func writeProblem(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	p := problemOf(r.Context(), log, err, r.URL.Path)
	problemHeaders(w.Header(), p)
	writeProblemDoc(w, p)
}

// problemOf builds the problem of err and logs internal errors with their
// cause.
func problemOf(ctx context.Context, log *slog.Logger, err error, instance string) Problem {
	p := problemFor(err, instance)
	if _, ok := errors.AsType[badRequest](err); ok && p.Status == http.StatusUnprocessableEntity {
		p.Status = http.StatusBadRequest
	}
	if p.Status >= 500 {
		log.ErrorContext(ctx, "request failed", "path", instance, "err", err)
	}
	return p
}

// problemHeaders sets the headers a problem of that kind carries.
func problemHeaders(h http.Header, p Problem) {
	h.Set("Cache-Control", "no-store")
	if p.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="artifactstore"`)
	}
	if p.ExpectedOffset != nil {
		h.Set("Upload-Offset", strconv.FormatInt(*p.ExpectedOffset, 10))
	}
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((p.retryAfter+time.Second-1)/time.Second)))
	}
}

func writeProblemDoc(w http.ResponseWriter, p Problem) {
	b, _ := json.Marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	w.Write(b)
}
