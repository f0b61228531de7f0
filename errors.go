package artifactstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/catalog"
)

// Kind classifies an error. The kinds are a small closed set; each one maps
// to exactly one HTTP problem type (DESIGN §4), and KindOf gives the same
// answer in-process and over HTTP.
type Kind int

// The error kinds. Anything unclassified is Internal.
const (
	Internal            Kind = iota // something broke on our side; details are logged, not shown
	Invalid                         // input breaks a rule ("validation")
	Unauthorized                    // no or bad credentials
	Forbidden                       // credentials valid, operation not allowed
	NotFound                        // no such resource for this tenant
	Conflict                        // the resource's state forbids it (path taken, package open)
	Finalized                       // the package is finalized and cannot change
	DigestMismatch                  // bytes do not match the declared digest
	OffsetMismatch                  // an upload append did not start at the upload's offset
	RangeNotSatisfiable             // a byte range lies outside the file
	TooLarge                        // a body or file exceeds a limit
	InsufficientStorage             // the storage is full
)

var kindNames = [...]string{
	Internal:            "internal",
	Invalid:             "validation",
	Unauthorized:        "unauthorized",
	Forbidden:           "forbidden",
	NotFound:            "not-found",
	Conflict:            "conflict",
	Finalized:           "finalized",
	DigestMismatch:      "digest-mismatch",
	OffsetMismatch:      "offset-mismatch",
	RangeNotSatisfiable: "range-not-satisfiable",
	TooLarge:            "too-large",
	InsufficientStorage: "insufficient-storage",
}

// Kinds lists every kind, for tables that must cover them all.
func Kinds() []Kind {
	ks := make([]Kind, len(kindNames))
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

// String returns the kind's stable name, the last segment of its problem type
// ("not-found", "digest-mismatch", ...).
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "internal"
	}
	return kindNames[k]
}

// ParseKind is the inverse of Kind.String; unknown names are Internal.
func ParseKind(s string) Kind {
	for i, n := range kindNames {
		if n == s {
			return Kind(i)
		}
	}
	return Internal
}

// FieldError names one input field that broke a rule.
type FieldError struct {
	Field   string
	Message string
}

// Error is the error type of every Store operation.
type Error struct {
	Op     string       // the operation, e.g. "PutFile"
	Kind   Kind         // the class of error
	Detail string       // a human-readable explanation safe to show callers
	Fields []FieldError // for Invalid: every bad field
	Offset int64        // for OffsetMismatch: the upload's current offset
	// RetryAfter, for a Conflict with a resource that is busy for a moment
	// (an upload another request is appending to), says when to try again.
	RetryAfter time.Duration
	Err        error // the underlying error, if any (not shown to callers for Internal)
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	b.WriteString(e.Kind.String())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the Kind of err: the kind of the outermost *Error in its
// chain, Internal for any other non-nil error.
func KindOf(err error) Kind {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Kind
	}
	return Internal
}

// errorf builds an *Error with a formatted detail.
func errorf(op string, k Kind, format string, args ...any) *Error {
	return &Error{Op: op, Kind: k, Detail: fmt.Sprintf(format, args...)}
}

// invalid builds an Invalid error naming the bad fields.
func invalid(op string, fields ...FieldError) *Error {
	msgs := make([]string, len(fields))
	for i, f := range fields {
		msgs[i] = f.Field + ": " + f.Message
	}
	return &Error{Op: op, Kind: Invalid, Detail: strings.Join(msgs, "; "), Fields: fields}
}

// wrap classifies an error from a backend (blob, catalog, context) once, in
// the root. Errors already of type *Error keep their kind.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		if e.Op == "" {
			e.Op = op
		}
		return e
	}
	k := Internal
	detail := ""
	switch {
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, blob.ErrNotFound):
		k, detail = NotFound, "not found"
	case errors.Is(err, catalog.ErrFinalized):
		k, detail = Finalized, "the package is finalized"
	case errors.Is(err, catalog.ErrConflict):
		k, detail = Conflict, "conflict"
	case errors.Is(err, blob.ErrNoSpace):
		k, detail = InsufficientStorage, "the storage is full"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// Not the caller's fault nor ours; Internal keeps it out of the
		// vocabulary but the cause stays in the chain.
	}
	return &Error{Op: op, Kind: k, Detail: detail, Err: err}
}
