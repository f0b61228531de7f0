package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebugAddr: with --debug-addr, serve listens on a second port whose
// /debug/cpuprofile/start and stop take a CPU profile of the requests the
// main port serves in between, and answer 409 out of turn.
func TestDebugAddr(t *testing.T) {
	srv := startServerAt(t, t.TempDir(), "127.0.0.1:0", "--debug-addr", "127.0.0.1:0")
	_, rest, _ := strings.Cut(srv.line(t, "debug port is on at "), "debug port is on at ")
	debug, _, _ := strings.Cut(rest, " ")
	if !strings.HasPrefix(debug, "http://127.0.0.1:") {
		t.Fatalf("debug port %q", debug)
	}
	post := func(path string, want int) []byte {
		t.Helper()
		res, err := http.Post(debug+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("POST %s: %d %s, want %d", path, res.StatusCode, b, want)
		}
		return b
	}

	post("/debug/cpuprofile/stop", http.StatusConflict)
	post("/debug/cpuprofile/start", http.StatusNoContent)
	post("/debug/cpuprofile/start", http.StatusConflict)
	for i := range 20 {
		pkg := srv.json(t, "POST", "/packages", strings.NewReader(fmt.Sprintf(`{"producer":"ci","subject":"s%d"}`, i)), 201, "Content-Type", "application/json")["id"].(string)
		srv.json(t, "GET", "/packages/"+pkg, nil, 200)
	}
	prof := post("/debug/cpuprofile/stop", http.StatusOK)
	// A CPU profile is a gzipped protobuf.
	zr, err := gzip.NewReader(bytes.NewReader(prof))
	if err != nil {
		t.Fatalf("the profile (%d bytes) is not gzip: %v", len(prof), err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || len(raw) == 0 {
		t.Fatalf("the profile: %d bytes unzipped, %v", len(raw), err)
	}
	post("/debug/cpuprofile/stop", http.StatusConflict)

	// net/http/pprof is there, and only there.
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/cmdline"} {
		res, err := http.Get(debug + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("GET %s on the debug port: %d", path, res.StatusCode)
		}
	}
	res := srv.request(t, "GET", "/debug/pprof/", nil)
	res.Body.Close()
	if res.StatusCode == 200 {
		t.Error("the main port serves /debug/pprof/")
	}
	if n := listeningSockets(t, srv.cmd.Process.Pid); n != 2 {
		t.Errorf("the server listens on %d sockets, want 2", n)
	}
}

// TestServeWithoutDebugAddr: by default serve listens on its one port only.
func TestServeWithoutDebugAddr(t *testing.T) {
	srv := startServer(t, t.TempDir())
	if n := listeningSockets(t, srv.cmd.Process.Pid); n != 1 {
		t.Errorf("the server listens on %d sockets, want 1", n)
	}
}

// listeningSockets counts the TCP sockets in LISTEN state that process pid
// holds: its socket descriptors matched against /proc/net/tcp and tcp6.
func listeningSockets(tb testing.TB, pid int) int {
	tb.Helper()
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	if err != nil || len(fds) == 0 {
		tb.Skipf("no /proc/%d/fd: %v", pid, err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) > 9 && f[3] == "0A" && inodes[f[9]] {
				n++
			}
		}
	}
	return n
}
