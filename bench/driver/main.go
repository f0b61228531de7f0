// Command driver is the load driver of the benchmark harness (bench/run.sh
// starts the servers and runs it). It runs every workload against
// artifactstore, its limit baselines (bench/ideal, http.ServeContent, nginx)
// and its peer (the CNCF distribution registry), in one run, and prints
// every artifactstore figure as a ratio to its baseline and its peer.
//
// Server CPU seconds come from /proc/PID/stat (utime+stime) before and after
// each operation; peak RSS from /proc/PID/status VmHWM, reset before each
// phase through /proc/PID/clear_refs so that each phase has its own peak.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/artifactstore/artifactstore/bench/internal/benchkit"
)

// ---------------------------------------------------------------------------
// Configuration

type config struct {
	quick bool

	asURL, asToken string
	asPIDs         []int
	listURL        string
	listPIDs       []int
	idealURL       string
	idealPIDs      []int
	nginxURL       string
	nginxPIDs      []int
	regURL         string
	regPIDs        []int
	regRepo        string
	profURL        string
	listProfURL    string
	profDir        string
	scratch        string
	clkTck         float64
	only           map[string]bool

	bigSize   int64
	chunkSize int64
	reps      int // of each large upload
	dlReps    int // of each large download
	smallN    int
	smallSize int64
	clients   int
	loadDur   time.Duration
	listReqs  int
	listN     int
	listDB    string
	events    int
	evEvery   time.Duration

	outMD, outJSON string
}

var cfg config

func pids(s string) []int {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			log.Fatalf("bad pid %q", f)
		}
		out = append(out, n)
	}
	return out
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("driver: ")
	var asP, listP, idealP, nginxP, regP, only string
	flag.BoolVar(&cfg.quick, "quick", false, "small sizes for a smoke run")
	flag.StringVar(&cfg.asURL, "as", "", "artifactstore base URL")
	flag.StringVar(&cfg.asToken, "token", "bench-token", "artifactstore bearer token")
	flag.StringVar(&asP, "as-pid", "", "artifactstore server PID")
	flag.StringVar(&cfg.listURL, "list", "", "artifactstore serving the pre-built large catalog")
	flag.StringVar(&listP, "list-pid", "", "its PID")
	flag.IntVar(&cfg.listN, "list-n", 0, "packages in the large catalog")
	flag.StringVar(&cfg.listDB, "list-db", "", "its catalog.db (evicted from, then read into, the page cache)")
	flag.StringVar(&cfg.idealURL, "ideal", "", "bench/ideal base URL")
	flag.StringVar(&idealP, "ideal-pid", "", "its PID")
	flag.StringVar(&cfg.nginxURL, "nginx", "", "nginx base URL (serving bench/ideal's files directory)")
	flag.StringVar(&nginxP, "nginx-pid", "", "nginx master PID (workers are found from it)")
	flag.StringVar(&cfg.regURL, "registry", "", "docker-registry base URL")
	flag.StringVar(&regP, "registry-pid", "", "its PID")
	flag.StringVar(&cfg.regRepo, "registry-repo", "bench/blobs", "repository name used in the registry")
	flag.StringVar(&cfg.profURL, "prof", "", "debug port (serve --debug-addr) of the artifactstore under test: one CPU profile per artifactstore workload")
	flag.StringVar(&cfg.listProfURL, "list-prof", "", "debug port of the artifactstore serving the large catalog")
	flag.StringVar(&cfg.profDir, "prof-dir", ".", "where CPU profiles are written, as <workload>.<n>.pprof")
	flag.StringVar(&cfg.scratch, "scratch", os.TempDir(), "directory for the disk baseline (same file system as the servers)")
	flag.Float64Var(&cfg.clkTck, "clk-tck", 100, "CLK_TCK of /proc/PID/stat")
	flag.StringVar(&only, "only", "", "comma-separated phases to run (baseline,ingest,session,download,get4k,small,finalize,list,events); default all")
	flag.StringVar(&cfg.outMD, "out", "", "also write the markdown tables here")
	flag.StringVar(&cfg.outJSON, "json", "", "also write every measurement as JSON here")
	flag.Parse()
	cfg.asPIDs, cfg.listPIDs, cfg.idealPIDs, cfg.regPIDs = pids(asP), pids(listP), pids(idealP), pids(regP)
	cfg.nginxPIDs = withChildren(pids(nginxP))
	if only != "" {
		cfg.only = map[string]bool{}
		for _, o := range strings.Split(only, ",") {
			cfg.only[strings.TrimSpace(o)] = true
		}
	}
	if cfg.quick {
		cfg.bigSize, cfg.chunkSize, cfg.reps, cfg.dlReps = 64<<20, 4<<20, 2, 3
		cfg.smallN, cfg.loadDur, cfg.listReqs, cfg.events = 1000, 2*time.Second, 200, 100
	} else {
		cfg.bigSize, cfg.chunkSize, cfg.reps, cfg.dlReps = 1<<30, 64<<20, 5, 15
		cfg.smallN, cfg.loadDur, cfg.listReqs, cfg.events = 10000, 5*time.Second, 500, 200
	}
	cfg.smallSize, cfg.clients, cfg.evEvery = 4096, 8, 20*time.Millisecond
	if cfg.asURL == "" || cfg.idealURL == "" {
		log.Fatal("-as and -ideal are required")
	}
	run()
}

func want(phase string) bool { return cfg.only == nil || cfg.only[phase] }

// ---------------------------------------------------------------------------
// /proc

// withChildren adds the direct children of each pid (nginx's workers).
func withChildren(ps []int) []int {
	if len(ps) == 0 {
		return ps
	}
	return append(slices.Clone(ps), benchkit.Children(ps...)...)
}

// cpuSeconds is utime+stime of the processes.
func cpuSeconds(ps []int) float64 { return benchkit.CPUSeconds(cfg.clkTck, false, ps...) }

// hwmKB is the summed VmHWM of the processes, in KiB.
func hwmKB(ps []int) int64 {
	var sum int64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				sum += n
			}
		}
	}
	return sum
}

// resetHWM makes VmHWM the current RSS (Linux ≥ 4.0).
func resetHWM(ps []int) {
	for _, p := range ps {
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p), []byte("5"), 0)
	}
}

// ---------------------------------------------------------------------------
// Measurements

// M is one measurement.
type M struct {
	Key    string  `json:"key"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	CPU    float64 `json:"server_cpu_s,omitempty"` // server CPU seconds (median op)
	CPUGiB float64 `json:"server_cpu_s_per_gib,omitempty"`
	P50    float64 `json:"p50_ms,omitempty"`
	P99    float64 `json:"p99_ms,omitempty"`
	N      int     `json:"n,omitempty"`
	Note   string  `json:"note,omitempty"`
}

var (
	results   = map[string]*M{}
	order     []string
	phaseRSS  = map[string]map[string]int64{} // phase → system → peak KiB
	phaseList []string
	notes     []string
)

func record(m *M) {
	if _, ok := results[m.Key]; !ok {
		order = append(order, m.Key)
	}
	results[m.Key] = m
	extra := ""
	if m.CPU > 0 {
		extra += fmt.Sprintf(" cpu=%.2fs", m.CPU)
	}
	if m.P99 > 0 {
		extra += fmt.Sprintf(" p50=%.2fms p99=%.2fms", m.P50, m.P99)
	}
	log.Printf("%-40s %12.2f %-6s%s", m.Key, m.Value, m.Unit, extra)
}

func get(key string) *M { return results[key] }

type system struct {
	name string
	pids []int
}

func systems() []system {
	out := []system{{"artifactstore", cfg.asPIDs}, {"ideal", cfg.idealPIDs}}
	if len(cfg.nginxPIDs) > 0 {
		out = append(out, system{"nginx", cfg.nginxPIDs})
	}
	if len(cfg.regPIDs) > 0 {
		out = append(out, system{"registry", cfg.regPIDs})
	}
	if len(cfg.listPIDs) > 0 {
		out = append(out, system{"artifactstore (1M catalog)", cfg.listPIDs})
	}
	return out
}

// phase runs fn with every server's peak RSS reset before and read after.
func phase(name string, fn func()) {
	if !want(name) {
		return
	}
	log.Printf("== %s", name)
	for _, s := range systems() {
		resetHWM(s.pids)
	}
	fn()
	phaseRSS[name] = map[string]int64{}
	phaseList = append(phaseList, name)
	for _, s := range systems() {
		phaseRSS[name][s.name] = hwmKB(s.pids)
	}
}

// ---------------------------------------------------------------------------
// HTTP

var copyBuf = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

type req struct {
	method, url string
	body        io.Reader
	size        int64 // -1: unknown
	hdr         map[string]string
	auth        bool
	discard     bool // count the answer's bytes without keeping them
}

type resp struct {
	status int
	hdr    http.Header
	body   []byte // small bodies only
	n      int64  // bytes read
}

func do(r req, want ...int) (resp, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, r.method, r.url, r.body)
	if err != nil {
		return resp{}, err
	}
	if r.body != nil {
		hr.ContentLength = r.size
		if r.size == 0 {
			hr.Body = http.NoBody
		}
	}
	for k, v := range r.hdr {
		hr.Header.Set(k, v)
	}
	if r.auth {
		hr.Header.Set("Authorization", "Bearer "+cfg.asToken)
	}
	res, err := benchkit.HTTPClient.Do(hr)
	if err != nil {
		return resp{}, fmt.Errorf("%s %s: %w", r.method, r.url, err)
	}
	defer res.Body.Close()
	out := resp{status: res.StatusCode, hdr: res.Header}
	if !r.discard {
		out.body, err = io.ReadAll(res.Body)
		out.n = int64(len(out.body))
	} else {
		bp := copyBuf.Get().(*[]byte)
		out.n, err = io.CopyBuffer(io.Discard, res.Body, *bp)
		copyBuf.Put(bp)
	}
	if err != nil {
		return out, fmt.Errorf("%s %s: reading the answer: %w", r.method, r.url, err)
	}
	if len(want) > 0 && !slices.Contains(want, res.StatusCode) {
		return out, fmt.Errorf("%s %s: status %d, want %v: %.300s", r.method, r.url, res.StatusCode, want, out.body)
	}
	return out, nil
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func resolve(base, loc string) string {
	b := must(url.Parse(base))
	l := must(url.Parse(loc))
	return b.ResolveReference(l).String()
}

func addQuery(u, k, v string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + url.QueryEscape(k) + "=" + url.QueryEscape(v)
}

// ---------------------------------------------------------------------------
// Profiling (serve --debug-addr): one CPU profile per artifactstore
// operation, written to -prof-dir as <workload>.<n>.pprof.

var (
	profSeq  atomic.Int64
	profName string // of the running profile; profStart and profStop are called in turn
)

func profStart(name string) {
	if cfg.profURL == "" {
		return
	}
	profName = fmt.Sprintf("%s.%03d", name, profSeq.Add(1))
	if _, err := do(req{method: "POST", url: cfg.profURL + "/debug/cpuprofile/start"}, 204); err != nil {
		log.Printf("profile start: %v", err)
	}
}

func profStop() {
	if cfg.profURL == "" {
		return
	}
	r, err := do(req{method: "POST", url: cfg.profURL + "/debug/cpuprofile/stop"}, 200)
	if err != nil {
		log.Printf("profile stop: %v", err)
		return
	}
	if err := os.WriteFile(filepath.Join(cfg.profDir, profName+".pprof"), r.body, 0o644); err != nil {
		log.Printf("profile stop: %v", err)
	}
}

// ---------------------------------------------------------------------------
// artifactstore, ideal and registry operations

func asCreatePackage(meta map[string]string) (string, error) {
	np := map[string]any{"producer": "bench", "subject": "bench"}
	if meta != nil {
		np["metadata"] = meta
	}
	b, _ := json.Marshal(np)
	r, err := do(req{method: "POST", url: cfg.asURL + "/packages", body: bytes.NewReader(b), size: int64(len(b)),
		hdr: map[string]string{"Content-Type": "application/json"}, auth: true}, 201)
	if err != nil {
		return "", err
	}
	var p struct{ ID string }
	if err := json.Unmarshal(r.body, &p); err != nil {
		return "", err
	}
	return p.ID, nil
}

type asFile struct {
	ID     string `json:"id"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

func asPutMultipart(pkg, path string, c benchkit.Content) (asFile, error) {
	body, n, ct := benchkit.Multipart(path, c.Reader(0), c.Size)
	r, err := do(req{method: "POST", url: cfg.asURL + "/packages/" + pkg + "/files", body: body, size: n,
		hdr: map[string]string{"Content-Type": ct}, auth: true}, 201)
	if err != nil {
		return asFile{}, err
	}
	var f asFile
	return f, json.Unmarshal(r.body, &f)
}

func asSession(pkg, path string, c benchkit.Content, chunk int64) (asFile, error) {
	r, err := do(req{method: "POST", url: cfg.asURL + "/uploads", hdr: map[string]string{"Upload-Length": strconv.FormatInt(c.Size, 10)}, auth: true}, 201)
	if err != nil {
		return asFile{}, err
	}
	loc := resolve(cfg.asURL, r.hdr.Get("Location"))
	for off := int64(0); off < c.Size; off += chunk {
		n := min(chunk, c.Size-off)
		if _, err := do(req{method: "PATCH", url: loc, body: c.Section(off, n), size: n, auth: true, hdr: map[string]string{
			"Content-Type":  "application/offset+octet-stream",
			"Content-Range": fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, c.Size),
		}}, 204); err != nil {
			return asFile{}, err
		}
	}
	b, _ := json.Marshal(map[string]string{"package_id": pkg, "path": path})
	r, err = do(req{method: "POST", url: loc + "/complete", body: bytes.NewReader(b), size: int64(len(b)), auth: true,
		hdr: map[string]string{"Content-Type": "application/json"}}, 200, 201)
	if err != nil {
		return asFile{}, err
	}
	var f asFile
	return f, json.Unmarshal(r.body, &f)
}

func idealRaw(name string, c benchkit.Content) (string, error) {
	r, err := do(req{method: "PUT", url: cfg.idealURL + "/raw/" + name, body: c.Reader(0), size: c.Size}, 201)
	return string(r.body), err
}

func idealMultipart(name string, c benchkit.Content) (string, error) {
	body, n, ct := benchkit.Multipart(name, c.Reader(0), c.Size)
	r, err := do(req{method: "POST", url: cfg.idealURL + "/multipart/" + name, body: body, size: n, hdr: map[string]string{"Content-Type": ct}}, 201)
	return string(r.body), err
}

func idealSession(name string, c benchkit.Content, chunk int64) (string, error) {
	r, err := do(req{method: "POST", url: cfg.idealURL + "/session"}, 201)
	if err != nil {
		return "", err
	}
	loc := resolve(cfg.idealURL, r.hdr.Get("Location"))
	for off := int64(0); off < c.Size; off += chunk {
		n := min(chunk, c.Size-off)
		if _, err := do(req{method: "PATCH", url: loc, body: c.Section(off, n), size: n, hdr: map[string]string{
			"Content-Range": fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, c.Size),
		}}, 204); err != nil {
			return "", err
		}
	}
	r, err = do(req{method: "PUT", url: loc + "?name=" + url.QueryEscape(name)}, 201)
	return string(r.body), err
}

func regStart() (string, error) {
	r, err := do(req{method: "POST", url: cfg.regURL + "/v2/" + cfg.regRepo + "/blobs/uploads/"}, 202)
	if err != nil {
		return "", err
	}
	return resolve(cfg.regURL, r.hdr.Get("Location")), nil
}

// regMonolithic is the OCI monolithic upload in two requests: POST for a
// session, PUT ?digest= with the whole body.
func regMonolithic(c benchkit.Content, digest string) error {
	loc, err := regStart()
	if err != nil {
		return err
	}
	_, err = do(req{method: "PUT", url: addQuery(loc, "digest", digest), body: c.Reader(0), size: c.Size,
		hdr: map[string]string{"Content-Type": "application/octet-stream"}}, 201)
	return err
}

// regChunked: POST, PATCH each chunk with Content-Range (following the
// Location each answer gives), PUT ?digest= with no body.
func regChunked(c benchkit.Content, digest string, chunk int64) error {
	loc, err := regStart()
	if err != nil {
		return err
	}
	for off := int64(0); off < c.Size; off += chunk {
		n := min(chunk, c.Size-off)
		r, err := do(req{method: "PATCH", url: loc, body: c.Section(off, n), size: n, hdr: map[string]string{
			"Content-Type":  "application/octet-stream",
			"Content-Range": fmt.Sprintf("%d-%d", off, off+n-1),
		}}, 202)
		if err != nil {
			return err
		}
		loc = resolve(cfg.regURL, r.hdr.Get("Location"))
	}
	_, err = do(req{method: "PUT", url: addQuery(loc, "digest", digest), body: http.NoBody, size: 0}, 201)
	return err
}

// ---------------------------------------------------------------------------
// Timed operations

// timed runs fn, returning its wall time and the CPU seconds the processes
// spent meanwhile.
func timed(ps []int, fn func() error) (time.Duration, float64, error) {
	c0 := cpuSeconds(ps)
	t0 := time.Now()
	err := fn()
	d := time.Since(t0)
	return d, cpuSeconds(ps) - c0, err
}

type sample struct {
	d   time.Duration
	cpu float64
}

// bigOp records one throughput measurement over reps samples: the median
// MB/s, the median server CPU and CPU per GiB.
func bigResult(key string, size int64, ss []sample, note string) {
	var mbs, cpu []float64
	for _, s := range ss {
		mbs = append(mbs, float64(size)/s.d.Seconds()/1e6)
		cpu = append(cpu, s.cpu)
	}
	m := &M{Key: key, Value: benchkit.Median(mbs), Unit: "MB/s", CPU: benchkit.Median(cpu), N: len(ss), Note: note}
	m.CPUGiB = m.CPU / (float64(size) / (1 << 30))
	if len(ss) > 1 {
		lo, hi := slices.Min(mbs), slices.Max(mbs)
		m.Note = strings.TrimSpace(fmt.Sprintf("%s range %.0f–%.0f", note, lo, hi))
	}
	record(m)
}

// ---------------------------------------------------------------------------
// The run

type dlTargets struct {
	asID, idealName, regDigest string
	size                       int64
}

var (
	bigFiles   dlTargets // the 1 GiB file in each system
	smallFiles dlTargets // a 4 KiB file in each system
	smallPkg   string    // the package the small-file load filled
)

func run() {
	start := time.Now()
	phase("baseline", baselines)
	phase("ingest", ingest)
	phase("session", session)
	phase("download", download)
	phase("get4k", get4k)
	phase("small", small)
	phase("finalize", finalize)
	phase("list", list)
	phase("events", events)
	log.Printf("all phases in %s", time.Since(start).Round(time.Second))
	report()
}

func baselines() {
	// SHA-256 of 1 GiB (of bigSize in quick mode) in 1 MiB strides.
	var best float64
	for rep := 0; rep < 3; rep++ {
		h := sha256.New()
		t0 := time.Now()
		var n int64
		for n < cfg.bigSize {
			h.Write(benchkit.Pattern)
			n += int64(len(benchkit.Pattern))
		}
		best = max(best, float64(n)/time.Since(t0).Seconds()/1e6)
	}
	record(&M{Key: "sha256", Value: best, Unit: "MB/s", Note: "Go crypto/sha256 in the driver, 1 MiB writes, best of 3"})

	// The disk: write + fsync of the same size, 1 MiB writes.
	f, err := os.CreateTemp(cfg.scratch, "disk-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	t0 := time.Now()
	for off := int64(0); off < cfg.bigSize; off += int64(len(benchkit.Pattern)) {
		if _, err := f.Write(benchkit.Pattern); err != nil {
			log.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		log.Fatal(err)
	}
	f.Close()
	d := time.Since(t0)
	record(&M{Key: "disk.write+fsync", Value: float64(cfg.bigSize) / d.Seconds() / 1e6, Unit: "MB/s", Note: "1 MiB writes then fsync, in the driver"})
	// fsync latency of a 4 KiB write, 200 times.
	f, _ = os.CreateTemp(cfg.scratch, "fsync-*")
	defer os.Remove(f.Name())
	var ds []time.Duration
	for i := 0; i < 200; i++ {
		t := time.Now()
		f.WriteAt(benchkit.Pattern[:4096], 0)
		f.Sync()
		ds = append(ds, time.Since(t))
	}
	f.Close()
	record(&M{Key: "disk.fsync4k", Value: benchkit.PercentileMS(ds, 0.5), Unit: "ms", P50: benchkit.PercentileMS(ds, 0.5), P99: benchkit.PercentileMS(ds, 0.99), N: len(ds), Note: "4 KiB pwrite + fsync"})
}

// rotate returns fns starting at i (so each rep starts with another system).
func rotate[T any](xs []T, i int) []T {
	i %= len(xs)
	return append(slices.Clone(xs[i:]), xs[:i]...)
}

type target struct {
	key string
	ps  []int
	op  func(c benchkit.Content, digest string) error
	as  bool
}

func runBig(group string, targets []target) {
	ss := map[string][]sample{}
	for rep := 0; rep < cfg.reps; rep++ {
		for _, t := range rotate(targets, rep) {
			c := benchkit.NewContent(cfg.bigSize)
			digest := c.Digest()
			// Start every transfer with no dirty pages of earlier ones
			// (the registry never fsyncs; its writeback would land on
			// whoever comes next).
			syscall.Sync()
			if t.as {
				profStart(group)
			}
			d, cpu, err := timed(t.ps, func() error { return t.op(c, digest) })
			if t.as {
				profStop()
			}
			if err != nil {
				log.Fatalf("%s %s: %v", group, t.key, err)
			}
			ss[t.key] = append(ss[t.key], sample{d, cpu})
		}
	}
	for _, t := range targets {
		bigResult(group+"."+t.key, cfg.bigSize, ss[t.key], "")
	}
}

func checkDigest(what, got, want string) error {
	if got != want {
		return fmt.Errorf("%s: digest %s, want %s", what, got, want)
	}
	return nil
}

func ingest() {
	pkg := must(asCreatePackage(nil))
	var i atomic.Int64
	targets := []target{
		{key: "ideal-raw", ps: cfg.idealPIDs, op: func(c benchkit.Content, digest string) error {
			name := fmt.Sprintf("big-raw-%d", i.Add(1))
			got, err := idealRaw(name, c)
			if err == nil {
				bigFiles.idealName, bigFiles.size = name, c.Size
			}
			return errors.Join(err, checkDigest("ideal raw", got, digest))
		}},
		{key: "ideal-multipart", ps: cfg.idealPIDs, op: func(c benchkit.Content, digest string) error {
			got, err := idealMultipart(fmt.Sprintf("big-mp-%d", i.Add(1)), c)
			return errors.Join(err, checkDigest("ideal multipart", got, digest))
		}},
		{key: "artifactstore-multipart", ps: cfg.asPIDs, as: true, op: func(c benchkit.Content, digest string) error {
			f, err := asPutMultipart(pkg, fmt.Sprintf("big/mp-%d", i.Add(1)), c)
			if err == nil {
				bigFiles.asID = f.ID
			}
			return errors.Join(err, checkDigest("artifactstore multipart", f.Digest, digest))
		}},
	}
	if cfg.regURL != "" {
		targets = append(targets, target{key: "registry-monolithic", ps: cfg.regPIDs, op: func(c benchkit.Content, digest string) error {
			err := regMonolithic(c, digest)
			if err == nil {
				bigFiles.regDigest = digest
			}
			return err
		}})
	}
	runBig("ingest", targets)
}

func session() {
	pkg := must(asCreatePackage(nil))
	var i atomic.Int64
	targets := []target{
		{key: "ideal-session", ps: cfg.idealPIDs, op: func(c benchkit.Content, digest string) error {
			got, err := idealSession(fmt.Sprintf("big-sess-%d", i.Add(1)), c, cfg.chunkSize)
			return errors.Join(err, checkDigest("ideal session", got, digest))
		}},
		{key: "artifactstore-session", ps: cfg.asPIDs, as: true, op: func(c benchkit.Content, digest string) error {
			f, err := asSession(pkg, fmt.Sprintf("big/sess-%d", i.Add(1)), c, cfg.chunkSize)
			return errors.Join(err, checkDigest("artifactstore session", f.Digest, digest))
		}},
	}
	if cfg.regURL != "" {
		targets = append(targets, target{key: "registry-chunked", ps: cfg.regPIDs, op: func(c benchkit.Content, digest string) error {
			return regChunked(c, digest, cfg.chunkSize)
		}})
	}
	runBig("session", targets)
}

// ensureFiles puts one file of size into each system (for the download
// phases when the ingest phase did not run).
func ensureFiles(t *dlTargets, size int64) {
	if t.asID != "" && t.idealName != "" && (t.regDigest != "" || cfg.regURL == "") && t.size == size {
		return
	}
	pkg := must(asCreatePackage(nil))
	c := benchkit.NewContent(size)
	t.size = size
	t.asID = must(asPutMultipart(pkg, "dl/file", c)).ID
	t.idealName = fmt.Sprintf("dl-%d-%d", size, benchkit.Seq())
	must(idealRaw(t.idealName, c))
	if cfg.regURL != "" {
		t.regDigest = c.Digest()
		if err := regMonolithic(c, t.regDigest); err != nil {
			log.Fatal(err)
		}
	}
}

type getTarget struct {
	key  string
	ps   []int
	url  string
	auth bool
	as   bool
}

func getTargets(t dlTargets) []getTarget {
	out := []getTarget{
		{key: "artifactstore", ps: cfg.asPIDs, url: cfg.asURL + "/files/" + t.asID + "/download", auth: true, as: true},
		{key: "servecontent", ps: cfg.idealPIDs, url: cfg.idealURL + "/files/" + t.idealName},
	}
	if cfg.nginxURL != "" {
		out = append(out, getTarget{key: "nginx", ps: cfg.nginxPIDs, url: cfg.nginxURL + "/" + t.idealName})
	}
	if cfg.regURL != "" {
		out = append(out, getTarget{key: "registry", ps: cfg.regPIDs, url: cfg.regURL + "/v2/" + cfg.regRepo + "/blobs/" + t.regDigest})
	}
	return out
}

// load runs workers that call fn until d passes; it returns the calls'
// latencies and the bytes they moved.
func load(workers int, d time.Duration, fn func(w int, rng *rand.Rand) (int64, error)) ([]time.Duration, int64, time.Duration, error) {
	var (
		mu    sync.Mutex
		lats  []time.Duration
		bytes int64
		first error
		wg    sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var my []time.Duration
			var b int64
			for time.Now().Before(deadline) {
				t := time.Now()
				n, err := fn(w, rng)
				if err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
					return
				}
				my = append(my, time.Since(t))
				b += n
			}
			mu.Lock()
			lats = append(lats, my...)
			bytes += b
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lats, bytes, time.Since(t0), first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func download() {
	ensureFiles(&bigFiles, cfg.bigSize)
	ts := getTargets(bigFiles)
	// Full downloads.
	ss := map[string][]sample{}
	for rep := 0; rep < cfg.dlReps; rep++ {
		for _, t := range rotate(ts, rep) {
			if t.as {
				profStart("download-full")
			}
			d, cpu, err := timed(t.ps, func() error {
				r, err := do(req{method: "GET", url: t.url, auth: t.auth, discard: true}, 200)
				if err == nil && r.n != cfg.bigSize {
					err = fmt.Errorf("%s: %d bytes, want %d", t.url, r.n, cfg.bigSize)
				}
				return err
			})
			if t.as {
				profStop()
			}
			if err != nil {
				log.Fatal(err)
			}
			ss[t.key] = append(ss[t.key], sample{d, cpu})
		}
	}
	for _, t := range ts {
		bigResult("download."+t.key, cfg.bigSize, ss[t.key], "")
	}
	// Ranged 64 KiB GETs at random offsets, 8 clients.
	const rlen = 64 << 10
	getLoads("range64k", "download-range64k", ts, func(t getTarget, rng *rand.Rand) (int64, error) {
		off := rng.Int64N(cfg.bigSize - rlen)
		r, err := do(req{method: "GET", url: t.url, auth: t.auth, discard: true, hdr: map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", off, off+rlen-1)}}, 206)
		if err == nil && r.n != rlen {
			err = fmt.Errorf("%s: range answered %d bytes", t.url, r.n)
		}
		return r.n, err
	})
}

func get4k() {
	ensureFiles(&smallFiles, cfg.smallSize)
	getLoads("get4k", "get4k", getTargets(smallFiles), func(t getTarget, _ *rand.Rand) (int64, error) {
		r, err := do(req{method: "GET", url: t.url, auth: t.auth, discard: true}, 200)
		if err == nil && r.n != cfg.smallSize {
			err = fmt.Errorf("%s: %d bytes", t.url, r.n)
		}
		return r.n, err
	})
}

// getLoads runs op from 8 clients against each target for loadDur in all,
// in two rounds (the targets in order, then in reverse), so that a drift of
// the machine hits every system alike.
func getLoads(group, prof string, ts []getTarget, op func(t getTarget, rng *rand.Rand) (int64, error)) {
	type acc struct {
		lats []time.Duration
		n    int64
		d    time.Duration
		cpu  float64
	}
	accs := map[string]*acc{}
	for round := 0; round < 2; round++ {
		order := slices.Clone(ts)
		if round == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			a := accs[t.key]
			if a == nil {
				a = &acc{}
				accs[t.key] = a
			}
			if t.as {
				profStart(prof)
			}
			c0 := cpuSeconds(t.ps)
			lats, n, d, err := load(cfg.clients, cfg.loadDur/2, func(_ int, rng *rand.Rand) (int64, error) { return op(t, rng) })
			a.cpu += cpuSeconds(t.ps) - c0
			if t.as {
				profStop()
			}
			if err != nil {
				log.Fatal(err)
			}
			a.lats = append(a.lats, lats...)
			a.n += n
			a.d += d
		}
	}
	for _, t := range ts {
		a := accs[t.key]
		record(&M{Key: group + "." + t.key, Value: float64(len(a.lats)) / a.d.Seconds(), Unit: "req/s", CPU: a.cpu,
			P50: benchkit.PercentileMS(a.lats, 0.5), P99: benchkit.PercentileMS(a.lats, 0.99), N: len(a.lats),
			Note: fmt.Sprintf("%d clients, %.0f MB/s", cfg.clients, float64(a.n)/a.d.Seconds()/1e6)})
	}
}

// many runs fn for i in [lo, hi) from workers goroutines.
func many(lo, hi, workers int, fn func(i int) error) ([]time.Duration, time.Duration, error) {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		lats  []time.Duration
		first error
		wg    sync.WaitGroup
	)
	next.Store(int64(lo))
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var my []time.Duration
			for {
				i := int(next.Add(1) - 1)
				if i >= hi {
					break
				}
				t := time.Now()
				if err := fn(i); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
					return
				}
				my = append(my, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, my...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lats, time.Since(t0), first
}

func smallOps(pkg string) []target {
	ts := []target{
		{key: "ideal-fsync-each", ps: cfg.idealPIDs},
		{key: "artifactstore", ps: cfg.asPIDs, as: true},
	}
	if cfg.regURL != "" {
		ts = append(ts, target{key: "registry", ps: cfg.regPIDs})
	}
	_ = pkg
	return ts
}

func smallOne(key, pkg string, i int) error {
	c := benchkit.NewContent(cfg.smallSize)
	switch key {
	case "ideal-fsync-each":
		_, err := idealRaw(fmt.Sprintf("s-%x-%d", c.Tag, i), c)
		return err
	case "artifactstore":
		_, err := asPutMultipart(pkg, fmt.Sprintf("f/%06d", i), c)
		return err
	case "registry":
		return regMonolithic(c, c.Digest())
	}
	return fmt.Errorf("unknown %s", key)
}

// small puts smallN files of 4 KiB from 8 clients into one package, in four
// interleaved quarters per system (ideal, artifactstore, registry, then the
// reverse order, and again), so slow drifts of the disk hit every system
// alike.
func small() {
	pkg := must(asCreatePackage(map[string]string{"bench": "small"}))
	smallPkg = pkg
	ts := smallOps(pkg)
	type acc struct {
		lats []time.Duration
		d    time.Duration
		cpu  float64
	}
	accs := map[string]*acc{}
	const nRounds = 4
	var rounds [][2]int
	for r := 0; r < nRounds; r++ {
		rounds = append(rounds, [2]int{cfg.smallN * r / nRounds, cfg.smallN * (r + 1) / nRounds})
	}
	for ri, rg := range rounds {
		order := slices.Clone(ts)
		if ri%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			a := accs[t.key]
			if a == nil {
				a = &acc{}
				accs[t.key] = a
			}
			syscall.Sync()
			if t.as {
				profStart("small4k")
			}
			c0 := cpuSeconds(t.ps)
			lats, d, err := many(rg[0], rg[1], cfg.clients, func(i int) error { return smallOne(t.key, pkg, i) })
			a.cpu += cpuSeconds(t.ps) - c0
			if t.as {
				profStop()
			}
			if err != nil {
				log.Fatalf("small %s: %v", t.key, err)
			}
			a.lats = append(a.lats, lats...)
			a.d += d
		}
	}
	for _, t := range ts {
		a := accs[t.key]
		record(&M{Key: "small4k." + t.key, Value: float64(len(a.lats)) / a.d.Seconds(), Unit: "files/s", CPU: a.cpu,
			P50: benchkit.PercentileMS(a.lats, 0.5), P99: benchkit.PercentileMS(a.lats, 0.99), N: len(a.lats), Note: fmt.Sprintf("%d clients", cfg.clients)})
	}
}

func finalize() {
	pkg := smallPkg
	n := cfg.smallN
	if pkg == "" {
		// The small phase did not run: fill a package first (not timed).
		pkg = must(asCreatePackage(nil))
		if _, _, err := many(0, n, cfg.clients, func(i int) error { return smallOne("artifactstore", pkg, i) }); err != nil {
			log.Fatal(err)
		}
	}
	profStart("finalize")
	d, cpu, err := timed(cfg.asPIDs, func() error {
		_, err := do(req{method: "POST", url: cfg.asURL + "/packages/" + pkg + "/finalize", auth: true}, 200)
		return err
	})
	profStop()
	if err != nil {
		log.Fatal(err)
	}
	r := must(do(req{method: "GET", url: cfg.asURL + "/packages/" + pkg + "/manifest", auth: true, discard: true}, 200))
	record(&M{Key: "finalize.artifactstore", Value: float64(d) / float64(time.Millisecond), Unit: "ms", CPU: cpu, N: n,
		Note: fmt.Sprintf("%d files, manifest %d bytes", n, r.n)})
}

type pkgList struct {
	Packages []struct {
		ID string `json:"id"`
	} `json:"packages"`
	NextCursor string `json:"next_cursor"`
}

func list() {
	if cfg.listURL == "" {
		return
	}
	saved := cfg.profURL
	cfg.profURL = cfg.listProfURL
	defer func() { cfg.profURL = saved }()
	getPage := func(q string) (pkgList, time.Duration, error) {
		t := time.Now()
		r, err := do(req{method: "GET", url: cfg.listURL + "/packages?" + q, auth: true}, 200)
		d := time.Since(t)
		var pl pkgList
		if err == nil {
			err = json.Unmarshal(r.body, &pl)
		}
		if err == nil && len(pl.Packages) != 100 {
			err = fmt.Errorf("%s: %d packages, want 100", q, len(pl.Packages))
		}
		return pl, d, err
	}
	rng := rand.New(rand.NewPCG(42, 42))
	team := func() string { return fmt.Sprintf("t%03d", rng.IntN(100)) }
	run := func(key, note string, n int, q func(i int, prev pkgList) string) {
		profStart("list-" + key)
		var lats []time.Duration
		var prev pkgList
		c0 := cpuSeconds(cfg.listPIDs)
		for i := 0; i < n; i++ {
			pl, d, err := getPage(q(i, prev))
			if err != nil {
				log.Fatal(err)
			}
			lats = append(lats, d)
			prev = pl
		}
		cpu := cpuSeconds(cfg.listPIDs) - c0
		profStop()
		record(&M{Key: "list." + key, Value: benchkit.PercentileMS(lats, 0.99), Unit: "ms p99", P50: benchkit.PercentileMS(lats, 0.5), P99: benchkit.PercentileMS(lats, 0.99), CPU: cpu, N: n, Note: note})
	}
	deep := min(cfg.listReqs, cfg.listN/100/100-1) // pages of one team's packages
	all := func(suffix, how string) {
		run("first-page"+suffix, "metadata=team=tNNN (1% of packages), limit=100, random team"+how, cfg.listReqs, func(int, pkgList) string {
			return "limit=100&metadata=team%3D" + team()
		})
		t := team()
		run("deep-pages"+suffix, fmt.Sprintf("metadata=team=%s, following next_cursor %d pages%s", t, deep, how), deep, func(i int, prev pkgList) string {
			q := "limit=100&metadata=team%3D" + t
			if i > 0 {
				q += "&cursor=" + url.QueryEscape(prev.NextCursor)
			}
			return q
		})
		run("two-filters"+suffix, "metadata=team=tNNN&metadata=env=prod (0.33%), limit=100"+how, cfg.listReqs, func(int, pkgList) string {
			return "limit=100&metadata=team%3D" + team() + "&metadata=env%3Dprod"
		})
	}
	// Cold: the catalog file dropped from the page cache (as after the
	// gigabytes of blobs of the earlier phases), then warm: the file read
	// once, as a server that has been listing for a while has it.
	if cfg.listDB != "" {
		if err := dropCache(cfg.listDB); err != nil {
			log.Printf("cannot drop %s from the page cache: %v", cfg.listDB, err)
		} else {
			for i := 0; i < 3; i++ { // the connections, not the cache
				must2(getPage("limit=100&metadata=team%3D" + team()))
			}
			all(".cold", "; catalog evicted from the page cache first (posix_fadvise DONTNEED)")
		}
		if err := readFile(cfg.listDB); err != nil {
			log.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ { // the connections and the server's caches
		must2(getPage("limit=100&metadata=team%3D" + team()))
	}
	all("", "; catalog file in the page cache")
}

// dropCache evicts a file's clean pages from the page cache.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	syscall.Sync()
	const fadvDontneed = 4
	if _, _, e := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontneed, 0, 0); e != 0 {
		return e
	}
	return nil
}

// readFile reads a file once, leaving it in the page cache.
func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bp := copyBuf.Get().(*[]byte)
	defer copyBuf.Put(bp)
	_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, *bp)
	return err
}

func must2[A, B any](a A, b B, err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// events measures write → long-polling consumer latency: a producer creates
// a package every evEvery; the consumer long-polls /events (JSON); latency is
// the time from the producer's 201 to the consumer's receipt of that event
// (0 when the consumer had it first).
func events() {
	measure := func(key, note string) {
		t, err := benchkit.MeasureEvents(benchkit.Events{
			Get: func(url string) ([]byte, error) {
				r, err := do(req{method: "GET", url: url, auth: true, hdr: map[string]string{"Accept": "application/json"}}, 200)
				return r.body, err
			},
			Consumer: cfg.asURL,
			Create:   func() (string, error) { return asCreatePackage(map[string]string{"bench": "events"}) },
			Every:    cfg.evEvery,
			N:        cfg.events,
		})
		if err != nil {
			log.Fatal(err)
		}
		if t.Missing > 0 {
			log.Fatalf("events %s: %d of %d events never reached the consumer", key, t.Missing, cfg.events)
		}
		lat := t.Latency
		record(&M{Key: "events." + key, Value: benchkit.PercentileMS(lat, 0.99), Unit: "ms p99", P50: benchkit.PercentileMS(lat, 0.5), P99: benchkit.PercentileMS(lat, 0.99), N: len(lat),
			Note: fmt.Sprintf("%s; %d of %d seen before the producer's 201; from request start p50 %.2f ms, p99 %.2f ms",
				note, t.Early, len(lat), benchkit.PercentileMS(t.FromSend, 0.5), benchkit.PercentileMS(t.FromSend, 0.99))})
	}
	profStart("events-idle")
	measure("idle", fmt.Sprintf("one package every %s", cfg.evEvery))
	profStop()

	// Under the small-file load: 8 clients putting 4 KiB files into another
	// package for as long as the producer runs.
	pkg := must(asCreatePackage(map[string]string{"bench": "events-load"}))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var files atomic.Int64
	var loadErr atomic.Value
	t0 := time.Now()
	for w := 0; w < cfg.clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(files.Add(1))
				if err := smallOne("artifactstore", pkg, i); err != nil {
					loadErr.Store(err)
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	profStart("events-load")
	measure("load", fmt.Sprintf("one package every %s while %d clients put 4 KiB files", cfg.evEvery, cfg.clients))
	profStop()
	close(stop)
	wg.Wait()
	if err, _ := loadErr.Load().(error); err != nil {
		log.Fatal(err)
	}
	notes = append(notes, fmt.Sprintf("During the event test under load, %d 4 KiB files went in at %.0f files/s.",
		files.Load(), float64(files.Load())/time.Since(t0).Seconds()))
}

// ---------------------------------------------------------------------------
// Report

type cmp struct {
	label      string
	key        string // artifactstore's measurement
	field      string // "value" (default) or "cpugib"
	base, peer string // keys
	baseMin    float64
	peerMin    float64
	baseMax    float64 // for lower-is-better ratios (CPU)
}

func val(m *M, field string) float64 {
	if field == "cpugib" {
		return m.CPUGiB
	}
	return m.Value
}

func fmtVal(m *M, field string) string {
	if m == nil {
		return "—"
	}
	if field == "cpugib" {
		return fmt.Sprintf("%.2f CPU-s/GiB", m.CPUGiB)
	}
	return fmtNum(m.Value) + " " + m.Unit
}

func fmtNum(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func report() {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	size := humanSize(cfg.bigSize)
	chunk := humanSize(cfg.chunkSize)
	p("### artifactstore against its limit and its peer\n\n")
	p("Ratios are artifactstore ÷ the other system, measured in this run (%s transfers: medians of %d uploads and %d downloads per system, rotating which system goes first, with a sync(2) before each upload). Higher is better except CPU. *baseline ÷ peer* is what the baseline itself achieves against the peer: a peer target above it cannot be met by any server on this machine.\n\n", size, cfg.reps, cfg.dlReps)
	p("| workload | artifactstore | baseline | ratio | target | peer | ratio | target | baseline ÷ peer | |\n|---|---|---|---|---|---|---|---|---|---|\n")
	cmps := []cmp{
		{label: size + " single-shot multipart ingest", key: "ingest.artifactstore-multipart", base: "ingest.ideal-multipart", baseMin: 0.9, peer: "ingest.registry-monolithic", peerMin: 1.6},
		{label: size + " multipart ingest vs raw-body ideal", key: "ingest.artifactstore-multipart", base: "ingest.ideal-raw"},
		{label: "server CPU per GiB, single-shot", key: "ingest.artifactstore-multipart", field: "cpugib", base: "ingest.ideal-multipart", baseMax: 1.5, peer: "ingest.registry-monolithic"},
		{label: size + " upload session, " + chunk + " chunks", key: "session.artifactstore-session", base: "session.ideal-session", baseMin: 0.85, peer: "session.registry-chunked", peerMin: 1.6},
		{label: "server CPU per GiB, session", key: "session.artifactstore-session", field: "cpugib", base: "session.ideal-session", baseMax: 1.5, peer: "session.registry-chunked"},
		{label: "4 KiB ingest, 8 clients", key: "small4k.artifactstore", base: "small4k.ideal-fsync-each", baseMin: 1.0, peer: "small4k.registry", peerMin: 5},
		{label: size + " download", key: "download.artifactstore", base: "download.servecontent", baseMin: 0.95, peer: "download.registry"},
		{label: size + " download vs nginx", key: "download.artifactstore", base: "download.nginx"},
		{label: "64 KiB ranged GETs, 8 clients", key: "range64k.artifactstore", base: "range64k.servecontent", baseMin: 0.85, peer: "range64k.registry", peerMin: 20},
		{label: "64 KiB ranged GETs vs nginx", key: "range64k.artifactstore", base: "range64k.nginx"},
		{label: "4 KiB GETs, 8 clients", key: "get4k.artifactstore", base: "get4k.servecontent", baseMin: 0.7, peer: "get4k.registry"},
		{label: "4 KiB GETs vs nginx", key: "get4k.artifactstore", base: "get4k.nginx"},
	}
	var misses []string
	for _, c := range cmps {
		m := get(c.key)
		if m == nil {
			continue
		}
		mv := val(m, c.field)
		verdict := ""
		cell := func(other string, minR, maxR float64) (string, string, string) {
			o := get(other)
			if other == "" || o == nil || val(o, c.field) == 0 {
				return "—", "", ""
			}
			r := mv / val(o, c.field)
			tgt := ""
			switch {
			case minR > 0:
				tgt = fmt.Sprintf("≥ %.2f", minR)
				if r < minR {
					verdict = "**MISS**"
					misses = append(misses, fmt.Sprintf("%s: %.2f× %s (target ≥ %.2f)", c.label, r, other, minR))
				}
			case maxR > 0:
				tgt = fmt.Sprintf("≤ %.2f", maxR)
				if r > maxR {
					verdict = "**MISS**"
					misses = append(misses, fmt.Sprintf("%s: %.2f× %s (target ≤ %.2f)", c.label, r, other, maxR))
				}
			}
			return fmtVal(o, c.field) + " (" + strings.SplitN(other, ".", 2)[1] + ")", fmt.Sprintf("%.2f", r), tgt
		}
		bv, br, bt := cell(c.base, c.baseMin, c.baseMax)
		pv, pr, pt := cell(c.peer, c.peerMin, 0)
		if verdict == "" && (bt != "" || pt != "") {
			verdict = "ok"
		}
		ceiling := ""
		if b, pe := get(c.base), get(c.peer); b != nil && pe != nil && val(pe, c.field) > 0 {
			ceiling = fmt.Sprintf("%.2f", val(b, c.field)/val(pe, c.field))
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.label, fmtVal(m, c.field), bv, br, bt, pv, pr, pt, ceiling, verdict)
	}

	// Absolute targets.
	p("\n### Absolute targets\n\n| measurement | value | target | |\n|---|---|---|---|\n")
	abs := func(label, value string, ok bool, target string) {
		v := "ok"
		if !ok {
			v = "**MISS**"
			misses = append(misses, fmt.Sprintf("%s: %s (target %s)", label, value, target))
		}
		p("| %s | %s | %s | %s |\n", label, value, target, v)
	}
	if m := get("events.idle"); m != nil {
		abs("event delivery, idle (p50 / p99)", fmt.Sprintf("%.2f / %.2f ms", m.P50, m.P99), m.P99 < 5, "p99 < 5 ms")
	}
	if m := get("events.load"); m != nil {
		abs("event delivery under the 4 KiB load (p50 / p99)", fmt.Sprintf("%.2f / %.2f ms", m.P50, m.P99), m.P99 < 50, "p99 < 50 ms")
	}
	for _, k := range []string{"first-page", "deep-pages", "two-filters"} {
		if m := get("list." + k); m != nil {
			abs(fmt.Sprintf("list %s over %s packages, catalog in the page cache (p50 / p99)", k, humanCount(cfg.listN)), fmt.Sprintf("%.2f / %.2f ms", m.P50, m.P99), m.P99 < 10, "p99 < 10 ms")
		}
	}
	for _, k := range []string{"first-page", "deep-pages", "two-filters"} {
		if m := get("list." + k + ".cold"); m != nil {
			p("| list %s over %s packages, catalog evicted first (p50 / p99) | %.2f / %.2f ms | — (information) | |\n", k, humanCount(cfg.listN), m.P50, m.P99)
		}
	}
	var peak int64
	peakPhase := ""
	for _, ph := range phaseList {
		if v := phaseRSS[ph]["artifactstore"]; v > peak {
			peak, peakPhase = v, ph
		}
	}
	if peak > 0 {
		abs("artifactstore peak RSS, whole run", fmt.Sprintf("%.1f MiB (in phase %s)", float64(peak)/1024, peakPhase), peak < 64*1024, "< 64 MiB")
	}
	if cfg.listN > 0 {
		var lp int64
		for _, ph := range phaseList {
			lp = max(lp, phaseRSS[ph]["artifactstore (1M catalog)"])
		}
		if lp > 0 {
			abs("artifactstore peak RSS, serving the "+humanCount(cfg.listN)+" catalog", fmt.Sprintf("%.1f MiB", float64(lp)/1024), lp < 64*1024, "< 64 MiB")
		}
	}
	if m := get("finalize.artifactstore"); m != nil {
		p("| finalize of a %d-file package | %.0f ms (server CPU %.2f s; %s) | — (no target) | |\n", m.N, m.Value, m.CPU, m.Note)
	}

	// Every raw figure.
	p("\n### Every measurement\n\n| measurement | value | server CPU | CPU-s/GiB | p50 | p99 | n | note |\n|---|---|---|---|---|---|---|---|\n")
	for _, k := range order {
		m := results[k]
		cpu, cg, p50, p99 := "", "", "", ""
		if m.CPU > 0 {
			cpu = fmt.Sprintf("%.2f s", m.CPU)
		}
		if m.CPUGiB > 0 {
			cg = fmt.Sprintf("%.2f", m.CPUGiB)
		}
		if m.P99 > 0 {
			p50, p99 = fmt.Sprintf("%.2f ms", m.P50), fmt.Sprintf("%.2f ms", m.P99)
		}
		p("| %s | %s %s | %s | %s | %s | %s | %d | %s |\n", k, fmtNum(m.Value), m.Unit, cpu, cg, p50, p99, m.N, m.Note)
	}
	p("\nServer CPU of a transfer is the median over its repetitions (utime+stime of the server process, nginx: master and workers); for GET loads and the small-file load it is the total of the phase.\n")

	// Peak RSS per phase.
	if len(phaseList) > 0 {
		var names []string
		for _, s := range systems() {
			names = append(names, s.name)
		}
		p("\n### Peak RSS per phase (MiB, VmHWM reset at each phase start)\n\n| phase | %s |\n|---|%s\n", strings.Join(names, " | "), strings.Repeat("---|", len(names)))
		for _, ph := range phaseList {
			var cells []string
			for _, n := range names {
				cells = append(cells, fmt.Sprintf("%.1f", float64(phaseRSS[ph][n])/1024))
			}
			p("| %s | %s |\n", ph, strings.Join(cells, " | "))
		}
	}
	for _, n := range notes {
		p("\n%s\n", n)
	}
	p("\n### Targets missed: %d\n\n", len(misses))
	for _, m := range misses {
		p("- %s\n", m)
	}
	out := b.String()
	fmt.Print(out)
	if cfg.outMD != "" {
		if err := os.WriteFile(cfg.outMD, []byte(out), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if cfg.outJSON != "" {
		var ms []*M
		for _, k := range order {
			ms = append(ms, results[k])
		}
		j, _ := json.MarshalIndent(map[string]any{"measurements": ms, "peak_rss_kib": phaseRSS, "misses": misses}, "", "  ")
		os.WriteFile(cfg.outJSON, j, 0o644)
	}
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}

func humanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}
