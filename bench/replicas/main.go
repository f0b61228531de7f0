// Command replicas measures artifactstore on PostgreSQL+S3 beside the
// embedded default, and two replicas beside one, in one run: large ingest
// and download, 4 KiB ingest from 8 clients, and event delivery latency.
// bench/replicas.sh starts the servers and runs it. Standard library only.
//
//	replicas -emb URL -pg1 URL -pg2 URL -emb-pid N -pg1-pid N -pg2-pid N -vgw-pid N -pg-pid N -md FILE
//	replicas mkbucket ENDPOINT BUCKET REGION   (SigV4 PUT bucket; AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/artifactstore/artifactstore/bench/internal/benchkit"
)

var (
	embURL  = flag.String("emb", "", "embedded server base URL")
	pg1URL  = flag.String("pg1", "", "first PostgreSQL+S3 replica base URL")
	pg2URL  = flag.String("pg2", "", "second PostgreSQL+S3 replica base URL")
	token   = flag.String("token", "bench-token", "bearer token")
	embPID  = flag.Int("emb-pid", 0, "embedded server PID")
	pg1PID  = flag.Int("pg1-pid", 0, "replica 1 PID")
	pg2PID  = flag.Int("pg2-pid", 0, "replica 2 PID")
	vgwPID  = flag.Int("vgw-pid", 0, "versitygw PID")
	pgPID   = flag.Int("pg-pid", 0, "postmaster PID (its backends are its children)")
	bigMiB  = flag.Int64("big", 256, "large file size in MiB")
	reps    = flag.Int("reps", 3, "repetitions of the large ingest and download (median)")
	smallN  = flag.Int("small", 2000, "number of 4 KiB files")
	workers = flag.Int("workers", 8, "concurrent clients for the small files")
	nEvents = flag.Int("events", 200, "events per latency run")
	evEvery = flag.Duration("every", 20*time.Millisecond, "producer interval")
	mdPath  = flag.String("md", "", "append the markdown tables to this file")
	perfDir = flag.String("perf", "", "after the measured runs, record one extra run of some workloads with `perf record -a` into this directory")
)

const clkTck = 100.0 // sysconf(_SC_CLK_TCK) on Linux

func main() {
	if len(os.Args) > 1 && os.Args[1] == "mkbucket" {
		if len(os.Args) != 5 {
			log.Fatal("usage: replicas mkbucket ENDPOINT BUCKET REGION")
		}
		if err := mkbucket(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			log.Fatal(err)
		}
		return
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	run()
}

// ---------------------------------------------------------------------------
// S3 bucket creation (SigV4, empty payload)

func hmacSHA(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

func mkbucket(endpoint, bucket, region string) error {
	ak, sk := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	req, err := http.NewRequest("PUT", strings.TrimRight(endpoint, "/")+"/"+bucket, nil)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	amzDate, day := now.Format("20060102T150405Z"), now.Format("20060102")
	empty := hex.EncodeToString(sha256.New().Sum(nil))
	req.Header.Set("x-amz-date", amzDate)
	req.Header.Set("x-amz-content-sha256", empty)
	signed := "host;x-amz-content-sha256;x-amz-date"
	canon := strings.Join([]string{"PUT", "/" + bucket, "",
		"host:" + req.URL.Host, "x-amz-content-sha256:" + empty, "x-amz-date:" + amzDate, "",
		signed, empty}, "\n")
	ch := sha256.Sum256([]byte(canon))
	scope := day + "/" + region + "/s3/aws4_request"
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(ch[:])
	k := hmacSHA([]byte("AWS4"+sk), day)
	k = hmacSHA(k, region)
	k = hmacSHA(k, "s3")
	k = hmacSHA(k, "aws4_request")
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		ak, scope, signed, hex.EncodeToString(hmacSHA(k, sts))))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 && !bytes.Contains(b, []byte("BucketAlreadyOwnedByYou")) {
		return fmt.Errorf("PUT bucket %s: %d %s", bucket, res.StatusCode, b)
	}
	return nil
}

// ---------------------------------------------------------------------------
// /proc: CPU seconds

// cpu is utime+stime of pid; with kids, also of its live direct children
// and the reaped ones (cutime+cstime): PostgreSQL's backends.
func cpu(pid int, kids bool) float64 {
	if pid == 0 {
		return 0
	}
	if !kids {
		return benchkit.CPUSeconds(clkTck, false, pid)
	}
	return benchkit.CPUSeconds(clkTck, true, pid) + benchkit.CPUSeconds(clkTck, false, benchkit.Children(pid)...)
}

type cpuSnap struct{ emb, pg1, pg2, vgw, pg float64 }

func snap() cpuSnap {
	return cpuSnap{cpu(*embPID, false), cpu(*pg1PID, false), cpu(*pg2PID, false), cpu(*vgwPID, false), cpu(*pgPID, true)}
}

func (a cpuSnap) sub(b cpuSnap) cpuSnap {
	return cpuSnap{a.emb - b.emb, a.pg1 - b.pg1, a.pg2 - b.pg2, a.vgw - b.vgw, a.pg - b.pg}
}

// ---------------------------------------------------------------------------
// content and HTTP

func do(method, url string, body io.Reader, size int64, hdr map[string]string, discard bool, want int) ([]byte, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		r.ContentLength = size
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	r.Header.Set("Authorization", "Bearer "+*token)
	res, err := benchkit.HTTPClient.Do(r)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer res.Body.Close()
	var b []byte
	var n int64
	if discard && res.StatusCode == want {
		n, err = io.CopyBuffer(io.Discard, res.Body, make([]byte, 1<<20))
	} else {
		b, err = io.ReadAll(res.Body)
		n = int64(len(b))
	}
	if err != nil {
		return b, n, err
	}
	if res.StatusCode != want {
		return b, n, fmt.Errorf("%s %s: status %d, want %d: %.300s", method, url, res.StatusCode, want, b)
	}
	return b, n, nil
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func createPackage(base string, meta map[string]string) (string, error) {
	b, _ := json.Marshal(map[string]any{"producer": "bench", "subject": "bench", "metadata": meta})
	out, _, err := do("POST", base+"/packages", bytes.NewReader(b), int64(len(b)), map[string]string{"Content-Type": "application/json"}, false, 201)
	if err != nil {
		return "", err
	}
	var p struct{ ID string }
	return p.ID, json.Unmarshal(out, &p)
}

type file struct {
	ID, Digest string
	Size       int64
}

func putFile(base, pkg, path string, c benchkit.Content) (file, error) {
	body, n, ct := benchkit.Multipart(path, c.Reader(0), c.Size)
	out, _, err := do("POST", base+"/packages/"+pkg+"/files", body, n, map[string]string{"Content-Type": ct}, false, 201)
	if err != nil {
		return file{}, err
	}
	var f file
	return f, json.Unmarshal(out, &f)
}

// ---------------------------------------------------------------------------
// results

type row struct {
	name, unit string
	emb, pg    float64 // embedded; PG+S3 (one replica)
	two        float64 // PG+S3 over two replicas (0: not measured)
	better     string  // "higher" or "lower"
}

type cpuRow struct {
	workload string
	c        cpuSnap
	per      string
}

var rows []row
var cpuRows []cpuRow
var notes []string

// ---------------------------------------------------------------------------
// workloads

func run() {
	type sys struct {
		key, url string
	}
	systems := []sys{{"embedded", *embURL}, {"pg+s3", *pg1URL}}

	// 1. large ingest and download.
	size := *bigMiB << 20
	ing := map[string][]float64{}
	dl := map[string][]float64{}
	ingCPU := map[string]cpuSnap{}
	dlCPU := map[string]cpuSnap{}
	fileIDs := map[string]string{}
	for i := 0; i < *reps; i++ {
		order := systems
		if i%2 == 1 {
			order = []sys{systems[1], systems[0]}
		}
		for _, s := range order {
			pkg := must(createPackage(s.url, map[string]string{"bench": "big"}))
			g := benchkit.NewContent(size)
			want := g.Digest()
			c0 := snap()
			t0 := time.Now()
			f := must(putFile(s.url, pkg, "big.bin", g))
			d := time.Since(t0)
			c := snap().sub(c0)
			if f.Digest != want || f.Size != size {
				log.Fatalf("%s: digest %s size %d, want %s %d", s.key, f.Digest, f.Size, want, size)
			}
			ing[s.key] = append(ing[s.key], float64(size)/1e6/d.Seconds())
			ic := ingCPU[s.key]
			ingCPU[s.key] = cpuSnap{ic.emb + c.emb, ic.pg1 + c.pg1, ic.pg2 + c.pg2, ic.vgw + c.vgw, ic.pg + c.pg}
			fileIDs[s.key] = f.ID
			log.Printf("ingest %s: %.0f MB/s", s.key, float64(size)/1e6/d.Seconds())
		}
	}
	for i := 0; i < *reps; i++ {
		order := systems
		if i%2 == 1 {
			order = []sys{systems[1], systems[0]}
		}
		for _, s := range order {
			c0 := snap()
			t0 := time.Now()
			_, n, err := do("GET", s.url+"/files/"+fileIDs[s.key]+"/download", nil, 0, nil, true, 200)
			if err != nil {
				log.Fatal(err)
			}
			d := time.Since(t0)
			c := snap().sub(c0)
			if n != size {
				log.Fatalf("%s download: %d bytes, want %d", s.key, n, size)
			}
			dl[s.key] = append(dl[s.key], float64(size)/1e6/d.Seconds())
			dc := dlCPU[s.key]
			dlCPU[s.key] = cpuSnap{dc.emb + c.emb, dc.pg1 + c.pg1, dc.pg2 + c.pg2, dc.vgw + c.vgw, dc.pg + c.pg}
			log.Printf("download %s: %.0f MB/s", s.key, float64(size)/1e6/d.Seconds())
		}
	}
	bigName := fmt.Sprintf("%d MiB multipart ingest", *bigMiB)
	rows = append(rows, row{bigName, "MB/s", benchkit.Median(ing["embedded"]), benchkit.Median(ing["pg+s3"]), 0, "higher"})
	rows = append(rows, row{fmt.Sprintf("%d MiB download", *bigMiB), "MB/s", benchkit.Median(dl["embedded"]), benchkit.Median(dl["pg+s3"]), 0, "higher"})
	gib := float64(*reps) * float64(size) / (1 << 30)
	scale := func(c cpuSnap, f float64) cpuSnap {
		return cpuSnap{c.emb / f, c.pg1 / f, c.pg2 / f, c.vgw / f, c.pg / f}
	}
	cpuRows = append(cpuRows,
		cpuRow{"large ingest, embedded", scale(ingCPU["embedded"], gib), "s/GiB"},
		cpuRow{"large ingest, PG+S3", scale(ingCPU["pg+s3"], gib), "s/GiB"},
		cpuRow{"large download, embedded", scale(dlCPU["embedded"], gib), "s/GiB"},
		cpuRow{"large download, PG+S3", scale(dlCPU["pg+s3"], gib), "s/GiB"})

	// 2. small files: embedded, PG+S3 one replica, PG+S3 two replicas.
	smallRun := func(key string, targets []string) (float64, cpuSnap) {
		pkg := must(createPackage(targets[0], map[string]string{"bench": "small"}))
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr error
		var once sync.Once
		c0 := snap()
		t0 := time.Now()
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				base := targets[w%len(targets)]
				for {
					i := next.Add(1) - 1
					if i >= int64(*smallN) {
						return
					}
					if _, err := putFile(base, pkg, fmt.Sprintf("small/%05d.bin", i), benchkit.NewContent(4096)); err != nil {
						once.Do(func() { firstErr = err })
						return
					}
				}
			}(w)
		}
		wg.Wait()
		d := time.Since(t0)
		c := snap().sub(c0)
		if firstErr != nil {
			log.Fatalf("small %s: %v", key, firstErr)
		}
		rate := float64(*smallN) / d.Seconds()
		log.Printf("small %s: %.0f files/s", key, rate)
		return rate, scale(c, float64(*smallN)/1000)
	}
	// Interleave two halves each so a drift of the disk hits all alike.
	half := *smallN / 2
	*smallN = half
	var se, s1, s2 []float64
	var ce, c1, c2 cpuSnap
	add := func(a, b cpuSnap) cpuSnap {
		return cpuSnap{a.emb + b.emb, a.pg1 + b.pg1, a.pg2 + b.pg2, a.vgw + b.vgw, a.pg + b.pg}
	}
	for i := 0; i < 2; i++ {
		r, c := smallRun("embedded", []string{*embURL})
		se, ce = append(se, r), add(ce, c)
		r, c = smallRun("pg+s3 ×1", []string{*pg1URL})
		s1, c1 = append(s1, r), add(c1, c)
		r, c = smallRun("pg+s3 ×2", []string{*pg1URL, *pg2URL})
		s2, c2 = append(s2, r), add(c2, c)
	}
	hm := func(xs []float64) float64 { // files/s over both halves: harmonic mean
		return 2 / (1/xs[0] + 1/xs[1])
	}
	rows = append(rows, row{fmt.Sprintf("4 KiB ingest, %d clients, %d files", *workers, 2*half), "files/s", hm(se), hm(s1), hm(s2), "higher"})
	cpuRows = append(cpuRows,
		cpuRow{"4 KiB ingest, embedded", scale(ce, 2), "s/1000 files"},
		cpuRow{"4 KiB ingest, PG+S3 ×1", scale(c1, 2), "s/1000 files"},
		cpuRow{"4 KiB ingest, PG+S3 ×2", scale(c2, 2), "s/1000 files"})

	// 3. events.
	evE, nE := eventLatency(*embURL, *embURL)
	evS, nS := eventLatency(*pg1URL, *pg1URL)
	evX, nX := eventLatency(*pg1URL, *pg2URL)
	rows = append(rows,
		row{"event latency p50 (same server)", "ms", benchkit.PercentileMS(evE, .5), benchkit.PercentileMS(evS, .5), 0, "lower"},
		row{"event latency p99 (same server)", "ms", benchkit.PercentileMS(evE, .99), benchkit.PercentileMS(evS, .99), 0, "lower"},
		row{"event latency p50, producer on replica 1, consumer on replica 2", "ms", benchkit.PercentileMS(evE, .5), benchkit.PercentileMS(evX, .5), 0, "lower"},
		row{"event latency p99, producer on replica 1, consumer on replica 2", "ms", benchkit.PercentileMS(evE, .99), benchkit.PercentileMS(evX, .99), 0, "lower"})
	notes = append(notes, fmt.Sprintf("events: %d created every %v; embedded %s, PG+S3 same replica %s, PG+S3 across replicas %s (latency from the producer's 201 to the consumer holding the event; 0 when it had it first)",
		*nEvents, *evEvery, nE, nS, nX))

	report()

	// 4. where the time goes: one extra, unmeasured run of each under perf.
	if *perfDir != "" {
		*smallN = 1000
		record := func(name string, fn func()) {
			cmd := exec.Command("perf", "record", "-a", "-F", "999", "-o", *perfDir+"/"+name+".data")
			cmd.Stderr = io.Discard
			cmd.Stdout = io.Discard
			if err := cmd.Start(); err != nil {
				log.Printf("perf: %v", err)
				return
			}
			time.Sleep(500 * time.Millisecond)
			fn()
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
		big := func(base string) func() {
			return func() {
				pkg := must(createPackage(base, map[string]string{"bench": "perf"}))
				must(putFile(base, pkg, "big.bin", benchkit.NewContent(size)))
			}
		}
		record("ingest-embedded", big(*embURL))
		record("ingest-pgs3", big(*pg1URL))
		record("small-embedded", func() { smallRun("embedded", []string{*embURL}) })
		record("small-pgs3", func() { smallRun("pg+s3 ×1", []string{*pg1URL}) })
	}
}

// eventLatency: a producer creates a package every evEvery on prod while a
// consumer long-polls /events on cons.
func eventLatency(prod, cons string) ([]time.Duration, string) {
	t := must(benchkit.MeasureEvents(benchkit.Events{
		Get: func(url string) ([]byte, error) {
			b, _, err := do("GET", url, nil, 0, map[string]string{"Accept": "application/json"}, false, 200)
			return b, err
		},
		Consumer: cons,
		Create:   func() (string, error) { return createPackage(prod, map[string]string{"bench": "events"}) },
		Every:    *evEvery,
		N:        *nEvents,
	}))
	log.Printf("events %s → %s: p50 %.2f ms p99 %.2f ms, %d early, %d missing", prod, cons,
		benchkit.PercentileMS(t.Latency, .5), benchkit.PercentileMS(t.Latency, .99), t.Early, t.Missing)
	return t.Latency, fmt.Sprintf("%d early/%d missing", t.Early, t.Missing)
}

// ---------------------------------------------------------------------------
// report

func f(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func report() {
	var md strings.Builder
	md.WriteString("| workload | unit | embedded | PG+S3, 1 replica | PG+S3 ÷ embedded | PG+S3, 2 replicas | 2 replicas ÷ 1 |\n|---|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		ratio := "–"
		if r.emb > 0 {
			ratio = fmt.Sprintf("%.2f×", r.pg/r.emb)
		}
		two, tr := "", ""
		if r.two > 0 {
			two, tr = f(r.two), fmt.Sprintf("%.2f×", r.two/r.pg)
		}
		fmt.Fprintf(&md, "| %s | %s (%s is better) | %s | %s | %s | %s | %s |\n", r.name, r.unit, r.better, f(r.emb), f(r.pg), ratio, two, tr)
	}
	md.WriteString("\nServer CPU (utime+stime from /proc; PostgreSQL = postmaster and its backends):\n\n")
	md.WriteString("| workload | per | embedded server | replica 1 | replica 2 | versitygw | PostgreSQL | total |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range cpuRows {
		t := c.c.emb + c.c.pg1 + c.c.pg2 + c.c.vgw + c.c.pg
		fmt.Fprintf(&md, "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", c.workload, c.per, c.c.emb, c.c.pg1, c.c.pg2, c.c.vgw, c.c.pg, t)
	}
	md.WriteString("\n")
	for _, n := range notes {
		md.WriteString("- " + n + "\n")
	}
	fmt.Print(md.String())
	if *mdPath != "" {
		fh := must(os.OpenFile(*mdPath, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644))
		fh.WriteString(md.String())
		fh.Close()
	}
}
