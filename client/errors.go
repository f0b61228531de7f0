package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/artifactstore/artifactstore"
)

// Problem is an RFC 7807 problem document as the server sent it. The client
// returns it as the Err of the *artifactstore.Error it builds from it, so
// errors.As gives access to the HTTP status and the other raw fields.
type Problem struct {
	Type           string
	Title          string
	Status         int
	Detail         string
	Instance       string
	Errors         []artifactstore.FieldError
	ExpectedOffset *int64
}

func (p *Problem) Error() string {
	if p.Title != "" {
		return fmt.Sprintf("HTTP %d (%s)", p.Status, p.Title)
	}
	return fmt.Sprintf("HTTP %d", p.Status)
}

// ResponseError is an error answer that is not a problem document, such as
// a proxy's HTML error page. Its Kind is Internal.
type ResponseError struct {
	StatusCode  int
	ContentType string
	Body        string // the start of the body
}

func (e *ResponseError) Error() string {
	msg := fmt.Sprintf("the server answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// maxProblemBytes caps how much of an error body is read.
const maxProblemBytes = 64 << 10

// wireProblem is the JSON of a problem document. Every field is optional
// here: a problem that lacks one is still a problem.
type wireProblem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`
	Errors   []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
	ExpectedOffset *int64 `json:"expected-offset"`
}

// responseError reverses the server's one mapping (httpserver/problem.go):
// the Kind comes from the last segment of the problem's type; when there is
// no usable document (a HEAD answer has no body) it comes from the status
// code.
func responseError(req *http.Request, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblemBytes))
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	isProblem := mt == "application/problem+json"
	if !isProblem && req.Method != http.MethodHead {
		return &ResponseError{StatusCode: resp.StatusCode, ContentType: ct, Body: snippet(body)}
	}
	var w wireProblem
	parsed := len(body) > 0 && json.Unmarshal(body, &w) == nil
	if !parsed && req.Method != http.MethodHead {
		return &ResponseError{StatusCode: resp.StatusCode, ContentType: ct, Body: snippet(body)}
	}
	p := &Problem{Type: w.Type, Title: w.Title, Status: resp.StatusCode, Detail: w.Detail, Instance: w.Instance,
		ExpectedOffset: w.ExpectedOffset}
	for _, f := range w.Errors {
		p.Errors = append(p.Errors, artifactstore.FieldError{Field: f.Field, Message: f.Message})
	}
	if p.ExpectedOffset == nil {
		if v, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64); err == nil && resp.StatusCode == http.StatusConflict {
			p.ExpectedOffset = &v
		}
	}
	kind := kindOfProblem(p)
	e := &artifactstore.Error{Kind: kind, Detail: p.Detail, Fields: p.Errors, Err: p}
	if e.Detail == "" {
		e.Detail = p.Title
	}
	if kind == artifactstore.OffsetMismatch && p.ExpectedOffset != nil {
		e.Offset = *p.ExpectedOffset
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

// kindOfProblem names the problem's kind: its type's last path segment, or
// failing that the kind its status stands for.
func kindOfProblem(p *Problem) artifactstore.Kind {
	name := p.Type
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if k := artifactstore.ParseKind(name); k != artifactstore.Internal || name == artifactstore.Internal.String() {
		return k
	}
	return kindOfStatus(p.Status, p.ExpectedOffset != nil)
}

// kindOfStatus is the reverse of the server's status table, for answers
// without a readable type. 409 is ambiguous (conflict, finalized,
// offset-mismatch): an offset names the last, anything else is Conflict.
func kindOfStatus(status int, hasOffset bool) artifactstore.Kind {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusMethodNotAllowed:
		return artifactstore.Invalid
	case http.StatusUnauthorized:
		return artifactstore.Unauthorized
	case http.StatusForbidden:
		return artifactstore.Forbidden
	case http.StatusNotFound, http.StatusGone:
		return artifactstore.NotFound
	case http.StatusConflict:
		if hasOffset {
			return artifactstore.OffsetMismatch
		}
		return artifactstore.Conflict
	case http.StatusRequestedRangeNotSatisfiable:
		return artifactstore.RangeNotSatisfiable
	case http.StatusRequestEntityTooLarge:
		return artifactstore.TooLarge
	case http.StatusInsufficientStorage:
		return artifactstore.InsufficientStorage
	}
	return artifactstore.Internal
}

func snippet(b []byte) string {
	const max = 200
	s := strings.ToValidUTF8(strings.TrimSpace(string(b)), "?")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// transient reports whether an attempt that failed with err may succeed
// when repeated: broken connections, 5xx answers and the server's internal
// errors. busyOK also counts Conflict as transient: an upload session stays
// busy for a moment after a broken append while the server winds it up.
func transient(err error, busyOK bool) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if re, ok := errors.AsType[*ResponseError](err); ok {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusRequestTimeout
	}
	if e, ok := errors.AsType[*artifactstore.Error](err); ok {
		if _, fromServer := errors.AsType[*Problem](err); !fromServer {
			return false // decided on this side
		}
		switch e.Kind {
		case artifactstore.Internal:
			return true
		case artifactstore.Conflict:
			return busyOK
		}
		return false
	}
	return true // the transport failed
}
