package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore/internal/testbackend"
)

// TestReplicas runs three server processes on different ports over one
// PostgreSQL schema and one S3 prefix, and holds them to the invariants a
// single server keeps:
//
//   - an upload session begun on one replica is resumed (HEAD for the
//     offset) and completed on another;
//   - a long-poll on replica 0 wakes within 200 ms when a package is created
//     through replica 2 (LISTEN/NOTIFY);
//   - producers (six, two starting on each replica) spread their requests
//     over all replicas while a consumer tails /events through replica 0:
//     it sees every event exactly once, seqs gapless from 1 to the head,
//     and an event for every acknowledged change;
//   - replica 1 is killed with SIGKILL while the producers are busy and a
//     PATCH of its own is stalled mid-body: its in-flight requests fail,
//     the producers carry on through the others (resuming sessions from
//     the offset another replica reports, retrying completes and
//     finalizes), and nothing any replica acknowledged, before the kill or
//     after, is lost; the killed replica leaves no temp file behind;
//   - every file is downloadable with its digest through every replica
//     (replica 1 restarted), and manifests are the same bytes everywhere.
//
// It needs ARTIFACTSTORE_TEST_POSTGRES and ARTIFACTSTORE_TEST_S3 (see
// scripts/test-services.sh); without them it skips, unless
// ARTIFACTSTORE_TEST_REQUIRE names postgres or s3.
func TestReplicas(t *testing.T) {
	requireReplicaBackends(t)
	if testing.Short() {
		t.Skip("runs and kills several server processes; skipped with -short")
	}
	dsn := testbackend.PostgresDSN(t) // dropped after the servers are killed
	s3url := testbackend.S3URL(t)
	backendArgs := []string{"--catalog", dsn, "--blob", s3url}

	// The servers' temp files (s3blob spools PATCH bodies there) go to a
	// directory of the test's, checked at the end.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	h := &replicaHarness{t: t, client: &http.Client{Timeout: 2 * time.Minute}, led: newLedger()}
	t.Cleanup(h.client.CloseIdleConnections)
	for range 3 {
		p := startServerAt(t, t.TempDir(), "127.0.0.1:0", backendArgs...)
		h.procs = append(h.procs, p)
		h.urls = append(h.urls, p.url)
	}
	h.dead = make([]atomic.Bool, len(h.procs))
	h.inflight = make([]atomic.Int64, len(h.procs))
	t.Logf("replicas: %v", h.urls)

	// The consumer tails the whole test's events through replica 0.
	cons := h.startConsumer(7)

	// 1. An upload session across replicas.
	h.crossReplicaSession()

	// 2. Long-poll wake-up on replica 0 for a write through replica 2.
	h.longPollWakeUp(5)

	// 3. Producers on all replicas; replica 1 dies on the way, with a PATCH
	// to this session stalled mid-body.
	slow := h.newSlowSession(1)
	const producers, pkgsPer, filesPer = 6, 3, 6
	const killAfter = producers * pkgsPer * filesPer / 3
	start := time.Now()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() { h.produce(p, pkgsPer, filesPer) })
	}
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for h.led.fileCount() < killAfter+1 { // +1: the cross-replica file
			if h.t.Failed() {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		h.killMidRequest(1, slow)
		t.Logf("replica 1 killed with SIGKILL after %d acknowledged files, %v into the producers' work", h.led.fileCount(), time.Since(start).Round(time.Millisecond))
	}()
	wg.Wait()
	<-killed
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("producers done in %v: %d packages, %d files, %d finalized acknowledged; %d requests lost to the kill",
		time.Since(start).Round(time.Millisecond), len(h.led.pkgs), len(h.led.files), len(h.led.manifests), h.lost.Load())
	h.resumeSlowSession(slow, 0, 2)
	if h.lost.Load() == 0 {
		t.Error("no request failed although one was in flight on replica 1 when it was killed")
	} else {
		t.Logf("lost to the kill: %s", strings.Join(h.lostReqs, ", "))
	}

	// The consumer reads up to the head as it is now.
	head := h.head(2)
	cons.stopAt(head)
	events := cons.wait(t)
	if t.Failed() {
		t.FailNow()
	}

	// Replica 1 again, on the same backends, for the reads.
	p := startServerAt(t, t.TempDir(), "127.0.0.1:0", backendArgs...)
	h.mu.Lock()
	h.urls[1] = p.url
	h.mu.Unlock()
	h.dead[1].Store(false)

	h.verify(events, head)

	// Nothing the killed replica was spooling is left behind.
	if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) > 0 {
		t.Errorf("temp files left behind by the servers: %q", left)
	}
}

// requireReplicaBackends skips the test without PostgreSQL and S3, or fails
// it when ARTIFACTSTORE_TEST_REQUIRE names either of them.
func requireReplicaBackends(t *testing.T) {
	t.Helper()
	pg, s3 := os.Getenv(testbackend.PostgresEnv), os.Getenv(testbackend.S3Env)
	if pg != "" && s3 != "" {
		return
	}
	for s := range strings.SplitSeq(os.Getenv("ARTIFACTSTORE_TEST_REQUIRE"), ",") {
		if s = strings.TrimSpace(s); s == "postgres" || s == "s3" {
			t.Fatalf("ARTIFACTSTORE_TEST_REQUIRE=%q, but %s=%q and %s=%q: the replica test needs both",
				os.Getenv("ARTIFACTSTORE_TEST_REQUIRE"), testbackend.PostgresEnv, pg, testbackend.S3Env, s3)
		}
	}
	t.Skipf("the replica test needs %s and %s (scripts/test-services.sh starts both)", testbackend.PostgresEnv, testbackend.S3Env)
}

type replicaHarness struct {
	t        *testing.T
	client   *http.Client
	procs    []*serverProc
	dead     []atomic.Bool
	inflight []atomic.Int64 // requests under way, per replica
	lost     atomic.Int64   // requests that failed because their replica was killed
	led      *ledger

	lostMu   sync.Mutex
	lostReqs []string // what they were

	mu   sync.Mutex
	urls []string // replica i's base URL; replaced when it restarts
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

func (r reply) obj() map[string]any {
	var m map[string]any
	json.Unmarshal(r.body, &m)
	return m
}

// call sends one request to replica i; it reports transport errors (and
// does not fail the test), for the caller to tell a killed replica from a
// bug.
func (h *replicaHarness) call(i int, method, path string, body []byte, hdr ...string) (reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	return h.callBody(context.Background(), i, method, path, rd, hdr...)
}

// callWaiting is call that, like a well-behaved client, waits out a 409 with
// Retry-After: a session whose claim a killed replica held stays busy until
// the claim runs out.
func (h *replicaHarness) callWaiting(i int, method, path string, body []byte, hdr ...string) (reply, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := h.call(i, method, path, body, hdr...)
		secs, perr := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || r.status != http.StatusConflict || perr != nil || time.Now().After(deadline) {
			return r, err
		}
		time.Sleep(time.Duration(secs) * time.Second)
	}
}

// callBody is call with a context and a streamed body.
func (h *replicaHarness) callBody(ctx context.Context, i int, method, path string, rd io.Reader, hdr ...string) (reply, error) {
	h.mu.Lock()
	base := h.urls[i]
	h.mu.Unlock()
	h.inflight[i].Add(1)
	defer h.inflight[i].Add(-1)
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer secret")
	for k := 0; k+1 < len(hdr); k += 2 {
		req.Header.Set(hdr[k], hdr[k+1])
	}
	res, err := h.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{res.StatusCode, res.Header, b}, nil
}

// must is call for the main goroutine, where every replica is alive.
func (h *replicaHarness) must(i int, method, path string, body []byte, want int, hdr ...string) reply {
	h.t.Helper()
	r, err := h.call(i, method, path, body, hdr...)
	if err != nil {
		h.t.Fatalf("replica %d: %s %s: %v", i, method, path, err)
	}
	if r.status != want {
		h.t.Fatalf("replica %d: %s %s: %s, want %d", i, method, path, r, want)
	}
	return r
}

// mustWaiting is must through callWaiting: a session the killed replica was
// writing stays claimed (409 with Retry-After) until its claim runs out.
func (h *replicaHarness) mustWaiting(i int, method, path string, body []byte, want int, hdr ...string) reply {
	h.t.Helper()
	r, err := h.callWaiting(i, method, path, body, hdr...)
	if err != nil {
		h.t.Fatalf("replica %d: %s %s: %v", i, method, path, err)
	}
	if r.status != want {
		h.t.Fatalf("replica %d: %s %s: %s, want %d", i, method, path, r, want)
	}
	return r
}

// pick returns the first live replica from pref on, round robin.
func (h *replicaHarness) pick(pref int) int {
	n := len(h.dead)
	for d := range n {
		if i := (pref + d) % n; !h.dead[i].Load() {
			return i
		}
	}
	panic("no live replica")
}

// lostTo reports whether err, from a request (what) to replica i, is the
// kill's doing: the replica is marked dead (before it is killed).
func (h *replicaHarness) lostTo(i int, err error, what string) bool {
	if err == nil || !h.dead[i].Load() {
		return false
	}
	h.lost.Add(1)
	h.lostMu.Lock()
	h.lostReqs = append(h.lostReqs, what)
	h.lostMu.Unlock()
	return true
}

func (h *replicaHarness) kill(i int) {
	h.dead[i].Store(true) // first: every error from i after this is the kill's
	p := h.procs[i]
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		h.t.Errorf("kill replica %d: %v", i, err)
	}
	p.cmd.Wait()
}

// slowSession is an upload session whose PATCH is under way when its
// replica is killed.
type slowSession struct {
	pkg, loc string
	data     []byte
	sent     int // bytes of the PATCH the client had handed over at the kill
}

// newSlowSession creates a package and an upload session on replica i.
func (h *replicaHarness) newSlowSession(i int) *slowSession {
	s := &slowSession{data: content("slow", 200_000)}
	s.pkg = h.must(i, "POST", "/packages", []byte(`{"producer":"replicas","subject":"slow"}`), 201, "Content-Type", "application/json").obj()["id"].(string)
	h.led.addPackage(s.pkg)
	s.loc = h.must(i, "POST", "/uploads", fmt.Appendf(nil, `{"size":%d}`, len(s.data)), 201, "Content-Type", "application/json").header.Get("Location")
	return s
}

// killMidRequest starts a PATCH of s on replica i that sends 64 KiB and then
// stalls, waits (up to half a second) until producers have requests under
// way there too, and kills the replica. The PATCH then trickles out the rest
// of its body, as a slow client would, and must fail.
func (h *replicaHarness) killMidRequest(i int, s *slowSession) {
	pr, pw := io.Pipe()
	patched := make(chan error, 1)
	go func() {
		r, err := h.callBody(context.Background(), i, "PATCH", s.loc, pr, "Content-Type", "application/octet-stream", "Upload-Offset", "0")
		if err == nil {
			err = fmt.Errorf("answered %s", r)
		}
		pr.CloseWithError(errors.New("the request is over"))
		patched <- err
	}()
	s.sent = 64 << 10
	if _, err := pw.Write(s.data[:s.sent]); err != nil {
		h.t.Errorf("replica %d: the stalled PATCH: %v", i, err)
	}
	time.Sleep(50 * time.Millisecond) // the bytes reach the server
	for deadline := time.Now().Add(500 * time.Millisecond); h.inflight[i].Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
	n := h.inflight[i].Load()
	h.kill(i)
	// The client notices the dead connection when it writes again (a body
	// that never comes back from Read holds any Go request up).
	go func() {
		for off := s.sent; off < len(s.data); off += 1024 {
			if _, err := pw.Write(s.data[off:min(off+1024, len(s.data))]); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		pw.Close()
	}()
	select {
	case err := <-patched:
		if !h.lostTo(i, err, "PATCH stalled at the kill") {
			h.t.Errorf("the PATCH in flight on the killed replica: %v, want it to fail", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Errorf("the PATCH in flight on the killed replica did not fail within 30s")
	}
	h.t.Logf("replica %d killed with %d requests under way (one a PATCH stalled after %d bytes)", i, n, s.sent)
}

// resumeSlowSession asks replica at how far s got, sends the rest there
// and completes it on replica done.
func (h *replicaHarness) resumeSlowSession(s *slowSession, at, done int) {
	t := h.t
	r := h.must(at, "HEAD", s.loc, nil, 204)
	off, err := strconv.Atoi(r.header.Get("Upload-Offset"))
	if err != nil || off < 0 || off > s.sent {
		t.Fatalf("replica %d: HEAD of the session whose PATCH was cut by the kill: Upload-Offset %q, want 0..%d", at, r.header.Get("Upload-Offset"), s.sent)
	}
	start := time.Now()
	h.mustWaiting(at, "PATCH", s.loc, s.data[off:], 204, "Content-Type", "application/octet-stream", "Upload-Offset", strconv.Itoa(off))
	r = h.must(done, "POST", s.loc+"/complete", fmt.Appendf(nil, `{"package_id":%q,"path":"slow.bin","digest":%q}`, s.pkg, digestOf(s.data)), 201, "Content-Type", "application/json")
	if _, ok := h.checkFile("complete the resumed session", r.obj(), s.pkg, "slow.bin", s.data); !ok {
		t.FailNow()
	}
	t.Logf("the session cut by the kill (%d bytes sent) was at %d on replica %d, resumed there (after %v, the dead replica's claim) and completed on replica %d", s.sent, off, at, time.Since(start).Round(time.Millisecond), done)
}

// ledger records what the replicas acknowledged.
type ledger struct {
	mu        sync.Mutex
	pkgs      map[string]bool      // package id
	files     map[string]ackedFile // by file id
	manifests map[string]string    // package id → manifest digest
}

type ackedFile struct {
	pkg, path, digest string
	size              int
}

func newLedger() *ledger {
	return &ledger{pkgs: map[string]bool{}, files: map[string]ackedFile{}, manifests: map[string]string{}}
}

func (l *ledger) fileCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.files)
}

func (l *ledger) addPackage(id string) {
	l.mu.Lock()
	l.pkgs[id] = true
	l.mu.Unlock()
}

func (l *ledger) addFile(id string, f ackedFile) {
	l.mu.Lock()
	l.files[id] = f
	l.mu.Unlock()
}

func (l *ledger) addManifest(pkg, digest string) {
	l.mu.Lock()
	l.manifests[pkg] = digest
	l.mu.Unlock()
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// content returns n bytes determined by name.
func content(name string, n int) []byte {
	seed := sha256.Sum256([]byte(name))
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// checkFile compares a File document with what was sent.
func (h *replicaHarness) checkFile(where string, f map[string]any, pkg, path string, data []byte) (string, bool) {
	id, _ := f["id"].(string)
	if id == "" || f["package_id"] != pkg || f["path"] != path || f["digest"] != digestOf(data) || f["size"] != float64(len(data)) {
		h.t.Errorf("%s: file %v, want package %s, path %s, digest %s, size %d", where, f, pkg, path, digestOf(data), len(data))
		return "", false
	}
	h.led.addFile(id, ackedFile{pkg: pkg, path: path, digest: digestOf(data), size: len(data)})
	return id, true
}

// crossReplicaSession begins an upload session on replica 1, sends half the
// bytes there, asks replica 2 how far it got, sends the rest and completes
// it there, and downloads the file through all three.
func (h *replicaHarness) crossReplicaSession() {
	t := h.t
	pkg := h.must(0, "POST", "/packages", []byte(`{"producer":"replicas","subject":"cross"}`), 201, "Content-Type", "application/json").obj()["id"].(string)
	h.led.addPackage(pkg)
	data := content("cross-replica", 300_000)
	half := len(data) / 2
	up := h.must(1, "POST", "/uploads", fmt.Appendf(nil, `{"size":%d}`, len(data)), 201, "Content-Type", "application/json")
	loc := up.header.Get("Location")
	if loc == "" {
		t.Fatalf("POST /uploads: no Location: %v", up.header)
	}
	r := h.must(1, "PATCH", loc, data[:half], 204, "Content-Type", "application/octet-stream", "Upload-Offset", "0")
	if r.header.Get("Upload-Offset") != strconv.Itoa(half) {
		t.Fatalf("replica 1: PATCH: Upload-Offset %q, want %d", r.header.Get("Upload-Offset"), half)
	}
	r = h.must(2, "HEAD", loc, nil, 204)
	if r.header.Get("Upload-Offset") != strconv.Itoa(half) || r.header.Get("Upload-Length") != strconv.Itoa(len(data)) {
		t.Fatalf("replica 2: HEAD of replica 1's session: %v, want Upload-Offset %d, Upload-Length %d", r.header, half, len(data))
	}
	r = h.must(2, "PATCH", loc, data[half:], 204, "Content-Type", "application/octet-stream", "Upload-Offset", strconv.Itoa(half))
	if r.header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		t.Fatalf("replica 2: PATCH: Upload-Offset %q, want %d", r.header.Get("Upload-Offset"), len(data))
	}
	r = h.must(2, "POST", loc+"/complete", fmt.Appendf(nil, `{"package_id":%q,"path":"cross/blob.bin","digest":%q}`, pkg, digestOf(data)), 201, "Content-Type", "application/json")
	id, ok := h.checkFile("replica 2: complete", r.obj(), pkg, "cross/blob.bin", data)
	if !ok {
		t.FailNow()
	}
	for i := range h.urls {
		r := h.must(i, "GET", "/files/"+id+"/download", nil, 200)
		if digestOf(r.body) != digestOf(data) {
			t.Fatalf("replica %d: the cross-replica file downloads as %d other bytes", i, len(r.body))
		}
	}
	t.Logf("upload session: created and half sent on replica 1, resumed at %d and completed on replica 2, downloaded through all", half)
}

// head returns the newest seq, through replica i.
func (h *replicaHarness) head(i int) uint64 {
	h.t.Helper()
	var page eventPage
	r := h.must(i, "GET", "/events?since=0&limit=1&wait=0", nil, 200, "Accept", "application/json")
	if err := json.Unmarshal(r.body, &page); err != nil {
		h.t.Fatalf("events: %v", err)
	}
	return page.Head
}

// longPollWakeUp parks a long-poll on replica 0 at the head, creates a
// package through replica 2, and measures how soon the poll answers.
func (h *replicaHarness) longPollWakeUp(trials int) {
	t := h.t
	const limit = 200 * time.Millisecond
	var fromSend, fromAck []time.Duration
	for trial := range trials {
		head := h.head(0)
		type polled struct {
			at   time.Time
			page eventPage
			err  error
		}
		done := make(chan polled, 1)
		go func() {
			r, err := h.call(0, "GET", fmt.Sprintf("/events?since=%d&wait=30", head), nil, "Accept", "application/json")
			p := polled{at: time.Now(), err: err}
			if err == nil && r.status != 200 {
				p.err = fmt.Errorf("%s", r)
			}
			if p.err == nil {
				p.err = json.Unmarshal(r.body, &p.page)
			}
			done <- p
		}()
		time.Sleep(300 * time.Millisecond) // the poll is parked by now
		select {
		case p := <-done:
			t.Fatalf("trial %d: the long-poll answered before anything was written: %+v", trial, p)
		default:
		}
		sent := time.Now()
		pkg := h.must(2, "POST", "/packages", []byte(`{"producer":"replicas","subject":"wake"}`), 201, "Content-Type", "application/json").obj()["id"].(string)
		acked := time.Now()
		h.led.addPackage(pkg)
		var p polled
		select {
		case p = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("trial %d: the long-poll on replica 0 did not wake within 10s of a write through replica 2", trial)
		}
		if p.err != nil {
			t.Fatalf("trial %d: long-poll: %v", trial, p.err)
		}
		if !slices.ContainsFunc(p.page.Events, func(e event) bool { return e.Type == "package.created" && e.PackageID == pkg }) {
			t.Fatalf("trial %d: the long-poll answered %+v, without the new package %s", trial, p.page, pkg)
		}
		fromSend = append(fromSend, p.at.Sub(sent))
		fromAck = append(fromAck, max(0, p.at.Sub(acked)))
	}
	t.Logf("long-poll on replica 0 woken by a create through replica 2: %v after the request was sent (%v after it was acknowledged)", fromSend, fromAck)
	if worst := slices.Max(fromSend); worst > limit {
		t.Errorf("the slowest wake-up took %v from the create request, want under %v", worst, limit)
	}
}

type event struct {
	Seq       uint64         `json:"seq"`
	Type      string         `json:"type"`
	Tenant    string         `json:"tenant"`
	PackageID string         `json:"package_id"`
	FileID    string         `json:"file_id"`
	Data      map[string]any `json:"data"`
}

type eventPage struct {
	Events []event `json:"events"`
	Next   uint64  `json:"next"`
	Head   uint64  `json:"head"`
}

type consumer struct {
	target atomic.Uint64 // stop once the cursor reaches it (0: keep going)
	events []event
	done   chan struct{}
	cancel context.CancelFunc
}

// startConsumer tails /events through replica 0 with long-polls, from 0,
// in pages of limit, checking that every page continues at the cursor.
func (h *replicaHarness) startConsumer(limit int) *consumer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{done: make(chan struct{}), cancel: cancel}
	// Before the servers go away (Cleanup runs last in, first out), also
	// when the test stops early.
	h.t.Cleanup(func() {
		cancel()
		<-c.done
	})
	go func() {
		defer close(c.done)
		var since uint64
		deadline := time.Now().Add(5 * time.Minute)
		for {
			if tgt := c.target.Load(); tgt > 0 && since >= tgt {
				return
			}
			if time.Now().After(deadline) {
				h.t.Errorf("consumer: still at seq %d after 5 minutes", since)
				return
			}
			r, err := h.callBody(ctx, 0, "GET", fmt.Sprintf("/events?since=%d&limit=%d&wait=5", since, limit), nil, "Accept", "application/json")
			if ctx.Err() != nil {
				return
			}
			if err != nil || r.status != 200 {
				h.t.Errorf("consumer: GET /events?since=%d: %v %v", since, r, err)
				return
			}
			var page eventPage
			if err := json.Unmarshal(r.body, &page); err != nil {
				h.t.Errorf("consumer: %v", err)
				return
			}
			for k, e := range page.Events {
				if e.Seq != since+uint64(k)+1 {
					h.t.Errorf("consumer: the page after %d has seq %d at index %d: the stream skipped or repeated", since, e.Seq, k)
					return
				}
			}
			c.events = append(c.events, page.Events...)
			if n := len(page.Events); n > 0 {
				since = page.Events[n-1].Seq
			}
			if page.Next != since || page.Head < since || len(page.Events) > limit {
				h.t.Errorf("consumer: page of %d after cursor %d: next %d, head %d", len(page.Events), since, page.Next, page.Head)
				return
			}
		}
	}()
	return c
}

func (c *consumer) stopAt(head uint64) { c.target.Store(head) }

func (c *consumer) wait(t *testing.T) []event {
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		t.Fatal("the consumer did not reach the head within a minute")
	}
	return c.events
}

// produce creates pkgs packages, each with files files (multipart and upload
// sessions alternately), finalizing every other one; successive requests go
// to successive replicas, and to the next live one when a replica is dead.
func (h *replicaHarness) produce(p, pkgs, files int) {
	for k := range pkgs {
		pref := p + k
		pkg, ok := h.createPackage(pref, fmt.Sprintf("producer-%d", p))
		if !ok {
			return
		}
		for j := range files {
			name := fmt.Sprintf("%d/%d/%d", p, k, j)
			size := 1000 + 997*j
			if j%3 == 2 {
				size = 200_000 + j
			}
			data := content(name, size)
			path := fmt.Sprintf("d%d/f%02d.bin", j%2, j)
			if j%2 == 0 {
				ok = h.putMultipart(pref+j, pkg, path, data)
			} else {
				ok = h.putSession(pref+j, pkg, path, data)
			}
			if !ok {
				return
			}
		}
		if k%2 == 0 && !h.finalize(pref+1, pkg) {
			return
		}
	}
}

// attempts bounds the retries of one step: each failure is a killed
// replica, of which there is one.
const attempts = 4

func (h *replicaHarness) createPackage(pref int, subject string) (string, bool) {
	for a := range attempts {
		i := h.pick(pref + a)
		r, err := h.call(i, "POST", "/packages", fmt.Appendf(nil, `{"producer":"replicas","subject":%q}`, subject), "Content-Type", "application/json")
		if h.lostTo(i, err, "create package") {
			continue // it may exist: its event, if any, is checked against it
		}
		if err != nil || r.status != 201 {
			h.t.Errorf("replica %d: create package: %v %v", i, r, err)
			return "", false
		}
		id, _ := r.obj()["id"].(string)
		h.led.addPackage(id)
		return id, true
	}
	h.t.Errorf("create package: %d attempts failed", attempts)
	return "", false
}

func multipartBody(path, digest string, data []byte) ([]byte, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("path", path)
	mw.WriteField("digest", digest)
	fw, _ := mw.CreateFormFile("file", "f.bin")
	fw.Write(data)
	mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

func (h *replicaHarness) putMultipart(pref int, pkg, path string, data []byte) bool {
	body, ct := multipartBody(path, digestOf(data), data)
	for a := range attempts {
		i := h.pick(pref + a)
		r, err := h.call(i, "POST", "/packages/"+pkg+"/files", body, "Content-Type", ct)
		if h.lostTo(i, err, "multipart put") {
			continue
		}
		switch {
		case err != nil:
		case r.status == 201:
			_, ok := h.checkFile(fmt.Sprintf("replica %d: put %s", i, path), r.obj(), pkg, path, data)
			return ok
		case r.status == 409 && a > 0:
			// The lost attempt committed before its replica died.
			return h.findFile(pkg, path, data)
		}
		h.t.Errorf("replica %d: put %s: %v %v", i, path, r, err)
		return false
	}
	h.t.Errorf("put %s: %d attempts failed", path, attempts)
	return false
}

// findFile looks path up in pkg's file list and records it.
func (h *replicaHarness) findFile(pkg, path string, data []byte) bool {
	i := h.pick(0)
	r, err := h.call(i, "GET", "/packages/"+pkg+"/files?prefix="+path, nil)
	if err != nil || r.status != 200 {
		h.t.Errorf("replica %d: list files of %s: %v %v", i, pkg, r, err)
		return false
	}
	var list struct {
		Files []map[string]any `json:"files"`
	}
	json.Unmarshal(r.body, &list)
	for _, f := range list.Files {
		if f["path"] == path {
			h.t.Logf("put %s: answered 409 on a retry; the lost attempt had committed it", path)
			_, ok := h.checkFile("the file a killed replica added", f, pkg, path, data)
			return ok
		}
	}
	h.t.Errorf("put %s answered 409 after a lost attempt, but the package has no such file: %s", path, r.body)
	return false
}

// putSession sends data through an upload session: created on one replica,
// appended in three chunks through the next ones, completed on another. A
// killed replica's chunk is resumed from the offset another replica reports.
func (h *replicaHarness) putSession(pref int, pkg, path string, data []byte) bool {
	var loc string
	for a := range attempts {
		i := h.pick(pref + a)
		r, err := h.call(i, "POST", "/uploads", fmt.Appendf(nil, `{"size":%d}`, len(data)), "Content-Type", "application/json")
		if h.lostTo(i, err, "create upload session") {
			continue
		}
		if err != nil || r.status != 201 || r.header.Get("Location") == "" {
			h.t.Errorf("replica %d: create upload: %v %v", i, r, err)
			return false
		}
		loc = r.header.Get("Location")
		break
	}
	if loc == "" {
		h.t.Errorf("create upload: %d attempts failed", attempts)
		return false
	}
	chunk := (len(data) + 2) / 3
	off, step := 0, 1
	for off < len(data) {
		if step > 3+attempts {
			h.t.Errorf("%s: still at %d after %d PATCHes", loc, off, step-1)
			return false
		}
		i := h.pick(pref + step)
		step++
		end := min(len(data), off+chunk)
		r, err := h.callWaiting(i, "PATCH", loc, data[off:end], "Content-Type", "application/octet-stream", "Upload-Offset", strconv.Itoa(off))
		if h.lostTo(i, err, "PATCH upload session") {
			off0 := off
			// Resume from wherever the session got, as told by a live replica.
			j := h.pick(i + 1)
			r, err := h.call(j, "HEAD", loc, nil)
			if err != nil || r.status != 204 {
				h.t.Errorf("replica %d: HEAD %s: %v %v", j, loc, r, err)
				return false
			}
			if off, err = strconv.Atoi(r.header.Get("Upload-Offset")); err != nil {
				h.t.Errorf("replica %d: HEAD %s: Upload-Offset %q", j, loc, r.header.Get("Upload-Offset"))
				return false
			}
			h.t.Logf("%s: a PATCH of %d..%d to the killed replica was lost; replica %d says the session is at %d", loc, off0, end, j, off)
			continue
		}
		if err != nil || r.status != 204 || r.header.Get("Upload-Offset") != strconv.Itoa(end) {
			h.t.Errorf("replica %d: PATCH %s at %d: %v %v", i, loc, off, r, err)
			return false
		}
		off = end
	}
	body := fmt.Appendf(nil, `{"package_id":%q,"path":%q,"digest":%q}`, pkg, path, digestOf(data))
	for a := range attempts {
		i := h.pick(pref + step + a)
		r, err := h.callWaiting(i, "POST", loc+"/complete", body, "Content-Type", "application/json")
		if h.lostTo(i, err, "complete upload session") {
			continue // a retry after a lost response answers the same file
		}
		if err != nil || r.status != 201 {
			h.t.Errorf("replica %d: complete %s: %v %v", i, loc, r, err)
			return false
		}
		_, ok := h.checkFile(fmt.Sprintf("replica %d: complete %s", i, path), r.obj(), pkg, path, data)
		return ok
	}
	h.t.Errorf("complete %s: %d attempts failed", loc, attempts)
	return false
}

func (h *replicaHarness) finalize(pref int, pkg string) bool {
	for a := range attempts {
		i := h.pick(pref + a)
		r, err := h.call(i, "POST", "/packages/"+pkg+"/finalize", nil)
		if h.lostTo(i, err, "finalize") {
			continue // finalizing is idempotent
		}
		if err != nil || r.status != 200 {
			h.t.Errorf("replica %d: finalize %s: %v %v", i, pkg, r, err)
			return false
		}
		m := r.obj()
		d, _ := m["manifest_digest"].(string)
		if m["state"] != "finalized" || !strings.HasPrefix(d, "sha256:") {
			h.t.Errorf("replica %d: finalize %s: %s", i, pkg, r.body)
			return false
		}
		h.led.addManifest(pkg, d)
		return true
	}
	h.t.Errorf("finalize %s: %d attempts failed", pkg, attempts)
	return false
}

// verify checks the consumed events against the acknowledged changes and
// reads everything back through every replica.
func (h *replicaHarness) verify(events []event, head uint64) {
	t := h.t
	if uint64(len(events)) != head {
		t.Fatalf("the consumer read %d events, the head is %d", len(events), head)
	}
	type key struct{ typ, pkg, file string }
	seen := map[key]int{}
	added := map[string]event{}   // file id → its event
	fileCount := map[string]int{} // package id → file.added events
	for k, e := range events {
		if e.Seq != uint64(k)+1 {
			t.Fatalf("event %d has seq %d", k, e.Seq)
		}
		if e.Tenant != "acme" {
			t.Errorf("event %d: tenant %q", e.Seq, e.Tenant)
		}
		seen[key{e.Type, e.PackageID, e.FileID}]++
		if e.Type == "file.added" {
			added[e.FileID] = e
			fileCount[e.PackageID]++
		}
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%d events %s of package %s, file %q; want 1", n, k.typ, k.pkg, k.file)
		}
	}

	// No event without its change: every package and file named exists.
	var pkgs []string
	for k := range seen {
		if k.typ == "package.created" {
			pkgs = append(pkgs, k.pkg)
		}
	}
	for _, id := range pkgs {
		r := h.must(0, "GET", "/packages/"+id, nil, 200)
		if got := r.obj()["file_count"]; got != float64(fileCount[id]) {
			t.Errorf("package %s: file_count %v, but %d file.added events", id, got, fileCount[id])
		}
	}
	var unacked int
	for id, e := range added {
		h.must(0, "GET", "/files/"+id, nil, 200)
		if _, ok := h.led.files[id]; !ok {
			unacked++
			t.Logf("file %s (%v) was added by a request whose answer was lost", id, e.Data["path"])
		}
	}

	// Every acknowledged change has its event.
	for id := range h.led.pkgs {
		if seen[key{"package.created", id, ""}] != 1 {
			t.Errorf("acknowledged package %s has no package.created event", id)
		}
	}
	for id := range h.led.manifests {
		if seen[key{"package.finalized", id, ""}] != 1 {
			t.Errorf("acknowledged finalize of %s has no package.finalized event", id)
		}
	}
	for id, f := range h.led.files {
		e, ok := added[id]
		if !ok {
			t.Errorf("acknowledged file %s (%s in %s) has no file.added event", id, f.path, f.pkg)
			continue
		}
		if e.PackageID != f.pkg || e.Data["path"] != f.path || e.Data["digest"] != f.digest || e.Data["size"] != float64(f.size) {
			t.Errorf("file.added event %d = %+v, want %+v", e.Seq, e, f)
		}
	}

	// Every acknowledged file downloads through every replica, and every
	// manifest is the same bytes everywhere.
	for i := range h.urls {
		for id, f := range h.led.files {
			r := h.must(i, "GET", "/files/"+id+"/download", nil, 200)
			if got := digestOf(r.body); got != f.digest || r.header.Get("ETag") != `"`+f.digest+`"` {
				t.Errorf("replica %d: %s downloads as %s (ETag %s), want %s", i, f.path, got, r.header.Get("ETag"), f.digest)
			}
		}
		for pkg, d := range h.led.manifests {
			r := h.must(i, "GET", "/packages/"+pkg+"/manifest", nil, 200)
			if digestOf(r.body) != d || r.header.Get("ETag") == "" || !strings.Contains(r.header.Get("ETag"), d) {
				t.Errorf("replica %d: manifest of %s hashes to %s (ETag %s), want %s", i, pkg, digestOf(r.body), r.header.Get("ETag"), d)
			}
		}
	}
	t.Logf("%d events, gapless and each once; %d packages, %d files (%d added by a lost request), %d manifests checked through all %d replicas",
		len(events), len(h.led.pkgs), len(h.led.files), unacked, len(h.led.manifests), len(h.urls))
}
