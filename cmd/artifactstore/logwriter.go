package main

import (
	"io"
	"sync"
	"time"
)

// logWriter batches log lines: writing each access-log line with its own
// write(2) cost a twentieth of a small request. Lines are handed to the
// underlying writer when 32 KiB have gathered and at least every
// logFlushEvery, and on Close; a process killed outright loses at most that
// last fraction of a second of log lines, never data.
type logWriter struct {
	mu     sync.Mutex
	w      io.Writer
	buf    []byte
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

const (
	logFlushEvery = 100 * time.Millisecond
	logBufferSize = 32 << 10
)

func newLogWriter(w io.Writer) *logWriter {
	l := &logWriter{w: w, stop: make(chan struct{}), done: make(chan struct{})}
	go l.loop()
	return l
}

func (l *logWriter) loop() {
	defer close(l.done)
	t := time.NewTicker(logFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.Flush()
		case <-l.stop:
			return
		}
	}
}

// Write buffers p (slog writes one whole line per call).
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.w.Write(p)
	}
	l.buf = append(l.buf, p...)
	if len(l.buf) >= logBufferSize {
		l.flushLocked()
	}
	return len(p), nil
}

// Flush writes out what is buffered.
func (l *logWriter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

func (l *logWriter) flushLocked() {
	if len(l.buf) > 0 {
		l.w.Write(l.buf) // a log that cannot be written has nowhere to report it
		l.buf = l.buf[:0]
	}
}

// Close flushes and stops the timer; later writes go straight through.
func (l *logWriter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.flushLocked()
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	return nil
}
