package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	rpprof "runtime/pprof"
	"strconv"
	"sync"
	"time"
)

// startDebugServer listens on addr (--debug-addr) and serves, on a mux of its
// own, what profiles the running server:
//
//	/debug/pprof/…               net/http/pprof (index, cmdline, profile, symbol, trace, named profiles)
//	POST /debug/cpuprofile/start starts a CPU profile into memory; 409 if one runs
//	POST /debug/cpuprofile/stop  stops it and answers its bytes; 409 if none runs
//
// bench/run.sh --profile takes one CPU profile per workload through the last
// two. Nothing here is authenticated: keeping addr on loopback is the
// caller's business. The caller closes the returned server.
func startDebugServer(addr string, log *slog.Logger) (*http.Server, net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("debug address: %w", err)
	}
	var cpu cpuProfile
	mux := http.NewServeMux()
	// Registered here, not through DefaultServeMux (which net/http/pprof
	// also fills, and which nothing serves).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /debug/cpuprofile/start", cpu.start)
	mux.HandleFunc("POST /debug/cpuprofile/stop", cpu.stop)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: /debug/pprof/profile and trace answer after
		// ?seconds=N, and refuse N beyond a write timeout.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug server", "err", err)
		}
	}()
	return hs, ln.Addr(), nil
}

// cpuProfile is the CPU profile of /debug/cpuprofile/start, gathered in
// memory until /debug/cpuprofile/stop answers it.
type cpuProfile struct {
	mu  sync.Mutex
	buf *bytes.Buffer // nil: none runs
}

func (c *cpuProfile) start(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf != nil {
		http.Error(w, "a CPU profile is running: stop it first", http.StatusConflict)
		return
	}
	buf := new(bytes.Buffer)
	if err := rpprof.StartCPUProfile(buf); err != nil {
		// The runtime takes one CPU profile at a time: most likely
		// /debug/pprof/profile is taking one.
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	c.buf = buf
	w.WriteHeader(http.StatusNoContent)
}

func (c *cpuProfile) stop(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		http.Error(w, "no CPU profile is running", http.StatusConflict)
		return
	}
	// StopCPUProfile returns once the profile is written out whole.
	rpprof.StopCPUProfile()
	b := c.buf.Bytes()
	c.buf = nil
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}
