package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the artifactstore binary: with this variable
// set, TestMain runs Main with the test's arguments instead of the tests.
const runMainEnv = "ARTIFACTSTORE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if args := os.Getenv(runMainEnv); args != "" {
		ctx, stop := signalContext()
		code := Main(ctx, strings.Split(args, "\x1f"), os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

type serverProc struct {
	cmd  *exec.Cmd
	url  string
	data string
	// lines are the server's stdout lines after the "listening on" one
	// (the first 64; later ones are dropped).
	lines chan string
}

// startServer runs `artifactstore serve` as a child process on a free port.
func startServer(tb testing.TB, data string) *serverProc {
	tb.Helper()
	return startServerAt(tb, data, "127.0.0.1:0")
}

// startServerAt runs the server on addr; extra arguments follow the
// others (e.g. "--catalog", dsn, "--blob", url).
func startServerAt(tb testing.TB, data, addr string, extra ...string) *serverProc {
	tb.Helper()
	args := strings.Join(append([]string{"serve", "--addr", addr, "--data", data}, extra...), "\x1f")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runMainEnv+"="+args, "ARTIFACTSTORE_TOKENS=acme:secret")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if _, rest, ok := strings.Cut(line, "listening on "); ok {
			url, _, _ := strings.Cut(rest, " ")
			p := &serverProc{cmd: cmd, url: url, data: data, lines: make(chan string, 64)}
			go func() {
				for sc.Scan() {
					select {
					case p.lines <- sc.Text():
					default:
					}
				}
				close(p.lines)
			}()
			return p
		}
	}
	tb.Fatal("the server did not say where it listens")
	return nil
}

// line waits for the server's stdout line containing s and returns it.
func (p *serverProc) line(tb testing.TB, s string) string {
	tb.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				tb.Fatalf("the server's output ended without %q", s)
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-timeout:
			tb.Fatalf("the server did not print %q", s)
		}
	}
}

func (p *serverProc) request(tb testing.TB, method, path string, body io.Reader, hdr ...string) *http.Response {
	tb.Helper()
	req, err := http.NewRequest(method, p.url+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer secret")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

func (p *serverProc) json(tb testing.TB, method, path string, body io.Reader, want int, hdr ...string) map[string]any {
	tb.Helper()
	res := p.request(tb, method, path, body, hdr...)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		tb.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			tb.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return m
}

// peakRSS is the process's high-water resident set size, in bytes.
func peakRSS(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmHWM")
	return 0
}

// pattern yields n deterministic bytes without holding them.
type pattern struct{ off, n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		x := p.off + int64(i)
		b[i] = byte(x ^ x>>8 ^ x>>16)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// TestServerMemoryFlat uploads a 1 GiB file through multipart and another
// through an upload session in 64 MiB chunks, downloads one whole, and checks
// the server process's peak RSS stays under 64 MiB throughout.
func TestServerMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 3 GiB through a server process; skipped with -short")
	}
	if raceEnabled {
		t.Skip("memory is measured without the race detector (make test runs it so)")
	}
	const size = 1 << 30
	srv := startServer(t, t.TempDir())
	pkg := srv.json(t, "POST", "/packages", strings.NewReader(`{"producer":"ci","subject":"mem"}`), 201, "Content-Type", "application/json")["id"].(string)

	want := sha256.New()
	io.Copy(want, &pattern{n: size})
	wantDigest := "sha256:" + hex.EncodeToString(want.Sum(nil))

	// Multipart, streamed from a pipe.
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		mw.WriteField("path", "big.bin")
		fw, _ := mw.CreateFormFile("file", "big.bin")
		io.Copy(fw, &pattern{n: size})
		pw.CloseWithError(mw.Close())
	}()
	f := srv.json(t, "POST", "/packages/"+pkg+"/files", pr, 201, "Content-Type", mw.FormDataContentType())
	if f["digest"] != wantDigest {
		t.Fatalf("multipart digest %v, want %s", f["digest"], wantDigest)
	}

	// An upload session in 64 MiB chunks.
	up := srv.request(t, "POST", "/uploads", nil, "Upload-Length", strconv.Itoa(size))
	up.Body.Close()
	loc := up.Header.Get("Location")
	src := &pattern{n: size}
	for off := int64(0); off < size; off += 64 << 20 {
		res := srv.request(t, "PATCH", loc, io.LimitReader(src, 64<<20), "Upload-Offset", strconv.FormatInt(off, 10))
		res.Body.Close()
		if res.StatusCode != 204 {
			t.Fatalf("PATCH at %d: %d", off, res.StatusCode)
		}
	}
	f2 := srv.json(t, "POST", loc+"/complete", strings.NewReader(`{"package_id":"`+pkg+`","path":"big2.bin"}`), 201, "Content-Type", "application/json")
	if f2["digest"] != wantDigest {
		t.Fatalf("session digest %v, want %s", f2["digest"], wantDigest)
	}

	// Download it whole and check the bytes.
	res := srv.request(t, "GET", "/files/"+f["id"].(string)+"/download", nil)
	got := sha256.New()
	n, err := io.Copy(got, res.Body)
	res.Body.Close()
	if err != nil || n != size || "sha256:"+hex.EncodeToString(got.Sum(nil)) != wantDigest {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	rss := peakRSS(t, srv.cmd.Process.Pid)
	t.Logf("server peak RSS after 2 GiB in and 1 GiB out: %.1f MiB", float64(rss)/(1<<20))
	if rss > 64<<20 {
		t.Errorf("server peak RSS %.1f MiB, want under 64 MiB", float64(rss)/(1<<20))
	}
}

// TestGracefulShutdown: SIGTERM during a long-poll and an upload lets both
// finish, then the process exits 0; the data directory opens again.
func TestGracefulShutdown(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, data)
	srv.json(t, "POST", "/packages", strings.NewReader(`{"producer":"ci","subject":"s"}`), 201, "Content-Type", "application/json")

	polled := make(chan int, 1)
	go func() {
		res := srv.request(t, "GET", "/events?since=1&wait=30", nil, "Accept", "application/json")
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		polled <- res.StatusCode
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case code := <-polled:
		if code != 200 {
			t.Errorf("the long-poll answered %d during shutdown", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll was not released by the shutdown")
	}
	if err := srv.cmd.Wait(); err != nil {
		t.Fatalf("the server exited with %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	// The store closed cleanly: a new server opens the same data.
	again := startServer(t, data)
	list := again.json(t, "GET", "/packages", nil, 200)
	if n := len(list["packages"].([]any)); n != 1 {
		t.Errorf("%d packages after restart, want 1", n)
	}
}

func TestServeRefusesBadTokens(t *testing.T) {
	var out, errOut strings.Builder
	code := Main(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--tokens", "bad tenant:tok"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "tenant:token") || strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}
