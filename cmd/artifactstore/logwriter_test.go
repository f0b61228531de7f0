package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the flusher and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogWriterBatchesAndFlushes(t *testing.T) {
	var out syncBuffer
	l := newLogWriter(&out)
	l.Write([]byte("one\n"))
	if got := out.String(); got != "" {
		t.Errorf("a line went out at once (%q): not batched", got)
	}
	// The timer flushes within a few periods.
	deadline := time.Now().Add(20 * logFlushEvery)
	for out.String() != "one\n" && time.Now().Before(deadline) {
		time.Sleep(logFlushEvery / 10)
	}
	if got := out.String(); got != "one\n" {
		t.Fatalf("after the flush period: %q, want the line", got)
	}
	// A full buffer goes out without waiting.
	big := strings.Repeat("x", logBufferSize) + "\n"
	l.Write([]byte(big))
	if got := out.String(); got != "one\n"+big {
		t.Errorf("a full buffer was held back (%d bytes out)", len(got))
	}
	// Close flushes the rest; later lines go straight through.
	l.Write([]byte("two\n"))
	l.Close()
	l.Write([]byte("three\n"))
	if got := out.String(); !strings.HasSuffix(got, big+"two\nthree\n") {
		t.Errorf("after Close: ...%q", got[max(0, len(got)-20):])
	}
}
