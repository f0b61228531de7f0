package httpserver

import (
	"errors"
	"strconv"
	"strings"
)

// byteRange is a resolved range of a representation: Start and Length in
// bytes, never empty.
type byteRange struct {
	Start, Length int64
}

// Outcomes of parseRange.
var (
	// errRangeIgnored: the header is absent, malformed, names another unit or
	// several ranges; RFC 9110 §14.2 lets the server answer 200 with the
	// whole representation.
	errRangeIgnored = errors.New("range ignored")
	// errRangeUnsatisfiable: syntactically valid, but no range overlaps the
	// representation: 416.
	errRangeUnsatisfiable = errors.New("range not satisfiable")
)

// parseRange resolves a Range header (RFC 9110 §14.1.2) against a
// representation of size bytes. Only a single range of unit "bytes" is
// served; anything else is errRangeIgnored.
func parseRange(h string, size int64) (byteRange, error) {
	unit, spec, ok := strings.Cut(strings.TrimSpace(h), "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return byteRange{}, errRangeIgnored
	}
	spec = strings.TrimSpace(spec)
	if spec == "" || strings.Contains(spec, ",") {
		return byteRange{}, errRangeIgnored
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return byteRange{}, errRangeIgnored
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// A suffix range: the last n bytes.
		n, ok := parseDigits(last)
		if !ok {
			return byteRange{}, errRangeIgnored
		}
		if n == 0 || size == 0 {
			return byteRange{}, errRangeUnsatisfiable
		}
		n = min(n, size)
		return byteRange{Start: size - n, Length: n}, nil
	}
	start, ok := parseDigits(first)
	if !ok {
		return byteRange{}, errRangeIgnored
	}
	end := size - 1
	if last != "" {
		e, ok := parseDigits(last)
		if !ok || e < start {
			return byteRange{}, errRangeIgnored
		}
		end = min(e, size-1)
	}
	if start >= size {
		return byteRange{}, errRangeUnsatisfiable
	}
	return byteRange{Start: start, Length: end - start + 1}, nil
}

// parseDigits parses a non-empty run of ASCII digits (no sign, no spaces)
// that fits in an int64.
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// contentRange is a parsed Content-Range request header of an upload append:
// bytes First through Last (inclusive) of a whole of Total bytes (-1 when
// "*").
type contentRange struct {
	First, Last, Total int64
}

// parseContentRange parses "bytes a-b/total" or "bytes a-b/*" (RFC 9110
// §14.4). An empty body can name no range, so "bytes */total" (used to
// declare the total without content) is accepted with First = -1.
func parseContentRange(h string) (contentRange, error) {
	bad := errors.New(`Content-Range must be "bytes first-last/total" or "bytes first-last/*"`)
	unit, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return contentRange{}, bad
	}
	rng, total, ok := strings.Cut(strings.TrimSpace(rest), "/")
	if !ok {
		return contentRange{}, bad
	}
	cr := contentRange{First: -1, Last: -1, Total: -1}
	if total != "*" {
		t, ok := parseDigits(total)
		if !ok {
			return contentRange{}, bad
		}
		cr.Total = t
	}
	if rng == "*" {
		if cr.Total < 0 {
			return contentRange{}, bad
		}
		return cr, nil
	}
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return contentRange{}, bad
	}
	f, ok1 := parseDigits(first)
	l, ok2 := parseDigits(last)
	if !ok1 || !ok2 || l < f {
		return contentRange{}, bad
	}
	if cr.Total >= 0 && l >= cr.Total {
		return contentRange{}, errors.New("Content-Range ends beyond its total")
	}
	cr.First, cr.Last = f, l
	return cr, nil
}

// etagMatches implements the weak comparison of If-None-Match (RFC 9110
// §13.1.2): true when the header is "*" or lists etag, with or without a W/
// prefix. etag is quoted, e.g. `"sha256:…"`.
func etagMatches(header, etag string) bool {
	for _, tag := range splitETags(header) {
		if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
			return true
		}
	}
	return false
}

// ifRangeMatches implements If-Range (RFC 9110 §13.1.5) for a strong etag:
// the range is served only when the header is exactly that (strong) etag. A
// date or a weak tag never matches, so the whole representation is sent.
func ifRangeMatches(header, etag string) bool {
	return strings.TrimSpace(header) == etag
}

// splitETags splits an entity-tag list, keeping quoted commas intact.
func splitETags(h string) []string {
	var tags []string
	for h = strings.TrimSpace(h); h != ""; h = strings.TrimLeft(h, " \t,") {
		if h[0] == '*' {
			tags = append(tags, "*")
			h = h[1:]
			continue
		}
		start := 0
		if strings.HasPrefix(h, "W/") {
			start = 2
		}
		if len(h) <= start || h[start] != '"' {
			return tags // malformed: stop; what was read stands
		}
		end := strings.IndexByte(h[start+1:], '"')
		if end < 0 {
			return tags
		}
		end += start + 2
		tags = append(tags, h[:end])
		h = h[end:]
	}
	return tags
}
