package httpserver

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The hand-written access line is the line slog.TextHandler writes for the
// same record, quoting included.
func TestAccessLineMatchesSlog(t *testing.T) {
	start := time.Date(2026, 11, 27, 1, 2, 3, 456789000, time.UTC)
	for _, path := range []string{"/files/01ABC/download", "/a b", `/q"uote`, "/x=y", "/new\nline", "/ünicode", "/\x7fdel", "/bad\xffutf8", ""} {
		var got, want bytes.Buffer
		writeAccessLine(&got, start, "abc123", "GET", path, 200, 4096)
		// Its took= differs (measured at the call); compare up to it.
		h := slog.NewTextHandler(&want, nil)
		r := slog.NewRecord(start, slog.LevelInfo, "request", 0)
		r.AddAttrs(slog.String("id", "abc123"), slog.String("method", "GET"), slog.String("path", path),
			slog.Int("status", 200), slog.Int64("bytes", 4096))
		h.Handle(context.Background(), r)
		g, _, _ := strings.Cut(got.String(), " took=")
		if w := strings.TrimSuffix(want.String(), "\n"); g != w {
			t.Errorf("path %q:\n got %s\nwant %s", path, g, w)
		}
		if !strings.HasSuffix(got.String(), "\n") || strings.Count(got.String(), "\n") != 1 {
			t.Errorf("path %q: not one line: %q", path, got.String())
		}
	}
}
