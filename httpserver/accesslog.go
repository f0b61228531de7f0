package httpserver

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// writeAccessLine writes one access-log line in slog's text format, as
// slog.TextHandler would write the same record (values quoted when slog
// would quote them), with one Write call.
func writeAccessLine(w io.Writer, start time.Time, id, method, path string, status int, bytes int64) {
	bp := lineBufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, "time="...)
	b = start.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, " level=INFO msg=request id="...)
	b = appendValue(b, id)
	b = append(b, " method="...)
	b = appendValue(b, method)
	b = append(b, " path="...)
	b = appendValue(b, path)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, bytes, 10)
	b = append(b, " took="...)
	b = append(b, time.Since(start).String()...)
	b = append(b, '\n')
	w.Write(b) // an access log that cannot be written has nowhere to report it
	*bp = b
	lineBufs.Put(bp)
}

// appendValue appends s as slog.TextHandler writes a string value: bare
// when it is a non-empty run of printable characters other than space, '"'
// and '=', quoted otherwise (so a crafted path cannot forge fields or
// lines).
func appendValue(b []byte, s string) []byte {
	if s == "" || needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuoting(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == '"' || c == '=' {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}
