// Package benchkit is what the benchmark programs (bench/driver,
// bench/replicas) share: generated upload content, the multipart body
// artifactstore's client sends, the HTTP client, per-process CPU from /proc,
// and the statistics every table is made of.
package benchkit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ---------------------------------------------------------------------------
// Content: distinct per upload (nothing deduplicates), cheap to generate.

// Pattern is the 1 MiB of pseudo-random bytes every Content repeats.
var Pattern = func() []byte {
	b := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1, 2, 3}).Read(b)
	return b
}()

var (
	nonce = time.Now().UnixNano()
	seq   atomic.Int64
)

// Seq returns a number unique within this process and run: for names.
func Seq() int64 { return seq.Add(1) }

// Content is Size bytes of Pattern with a tag unique to this Content first.
type Content struct {
	Tag  [16]byte
	Size int64
}

// NewContent returns size bytes of content no other Content of this run has.
func NewContent(size int64) Content {
	var c Content
	copy(c.Tag[:], fmt.Sprintf("%08x%08x", uint32(nonce), uint32(Seq())))
	c.Size = size
	return c
}

// Reader yields the bytes [off, Size).
func (c Content) Reader(off int64) io.Reader { return &genReader{c: c, off: off} }

// Section yields the n bytes from off.
func (c Content) Section(off, n int64) io.Reader { return io.LimitReader(c.Reader(off), n) }

// Digest is the content's sha256: digest.
func (c Content) Digest() string {
	h := sha256.New()
	io.CopyBuffer(h, c.Reader(0), make([]byte, 1<<20))
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

type genReader struct {
	c   Content
	off int64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.c.Size {
		return 0, io.EOF
	}
	if rem := g.c.Size - g.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n := 0
	for n < len(p) {
		n += copy(p[n:], Pattern[(g.off+int64(n))%int64(len(Pattern)):])
	}
	if g.off < int64(len(g.c.Tag)) {
		copy(p, g.c.Tag[g.off:])
	}
	g.off += int64(n)
	return n, nil
}

// Multipart builds a multipart/form-data body with the path field first,
// then the file part: what artifactstore's client sends. It returns the
// body, its length and its Content-Type.
func Multipart(path string, body io.Reader, size int64) (io.Reader, int64, string) {
	boundary := fmt.Sprintf("benchboundary%016x%08x", nonce, Seq())
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n" + path + "\r\n" +
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filepath.Base(path) + "\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n"
	tail := "\r\n--" + boundary + "--\r\n"
	return io.MultiReader(strings.NewReader(head), body, strings.NewReader(tail)),
		int64(len(head)) + size + int64(len(tail)), "multipart/form-data; boundary=" + boundary
}

// HTTPClient is a client for many concurrent transfers to a few servers.
var HTTPClient = &http.Client{Transport: &http.Transport{
	MaxIdleConns:        256,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     90 * time.Second,
	DisableCompression:  true,
	WriteBufferSize:     256 << 10,
	ReadBufferSize:      256 << 10,
}}

// ---------------------------------------------------------------------------
// /proc

// Stat returns the fields of /proc/PID/stat after the command name (state
// first, so utime is index 11), or nil when the process is gone.
func Stat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
}

// CPUSeconds is the summed utime+stime of the processes; clkTck is
// getconf CLK_TCK. With reaped, the CPU of their reaped children
// (cutime+cstime) counts too.
func CPUSeconds(clkTck float64, reaped bool, pids ...int) float64 {
	var t float64
	for _, p := range pids {
		f := Stat(p)
		if len(f) < 15 {
			continue
		}
		idx := []int{11, 12}
		if reaped {
			idx = append(idx, 13, 14)
		}
		for _, i := range idx {
			v, _ := strconv.ParseFloat(f[i], 64)
			t += v / clkTck
		}
	}
	return t
}

// Children returns the live direct children of the processes.
func Children(pids ...int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := Stat(pid); len(f) > 2 {
			if pp, _ := strconv.Atoi(f[1]); slices.Contains(pids, pp) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// statistics

// Median is the median of xs, 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PercentileMS is the q-quantile of ds (nearest rank), in milliseconds; 0
// for none.
func PercentileMS(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i]) / float64(time.Millisecond)
}

// ---------------------------------------------------------------------------
// event delivery

// Events describes one event-latency measurement: a producer creates a
// package every Every, N times, while a consumer long-polls the event
// stream.
type Events struct {
	// Get fetches a URL of the consumer's server (with its credentials and
	// Accept: application/json) and fails unless it answers 200.
	Get func(url string) ([]byte, error)
	// Consumer is the base URL of the server the consumer long-polls.
	Consumer string
	// Create creates one package on the producer's server and returns its id.
	Create func() (string, error)
	Every  time.Duration
	N      int
}

// EventTimes is what MeasureEvents saw.
type EventTimes struct {
	// Latency is, per event received, the time from the producer's 201 to
	// the consumer holding the event (0 when the consumer had it first);
	// FromSend the time from the producer's request start.
	Latency, FromSend []time.Duration
	Early             int // events the consumer held before the producer's 201
	Missing           int // events never received within 5 s of the last one
}

// MeasureEvents runs e.
func MeasureEvents(e Events) (EventTimes, error) {
	b, err := e.Get(e.Consumer + "/events?wait=0&limit=1")
	if err != nil {
		return EventTimes{}, err
	}
	var head struct {
		Head uint64 `json:"head"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return EventTimes{}, err
	}
	var (
		mu       sync.Mutex
		received = map[string]time.Time{}
		done     = make(chan struct{})
	)
	go func() { // the consumer; it ends at its next answer after done
		since := head.Head
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := e.Get(fmt.Sprintf("%s/events?since=%d&wait=2&limit=1000", e.Consumer, since))
			now := time.Now()
			if err != nil {
				log.Printf("consumer: %v", err)
				return
			}
			var page struct {
				Events []struct {
					Type      string `json:"type"`
					PackageID string `json:"package_id"`
				} `json:"events"`
				Next uint64 `json:"next"`
			}
			if err := json.Unmarshal(b, &page); err != nil {
				log.Printf("consumer: %v", err)
				return
			}
			mu.Lock()
			for _, ev := range page.Events {
				if ev.Type == "package.created" {
					received[ev.PackageID] = now
				}
			}
			mu.Unlock()
			since = page.Next
		}
	}()
	defer close(done)
	time.Sleep(50 * time.Millisecond) // the consumer is waiting
	type sent struct {
		id       string
		t0, t201 time.Time
	}
	var ss []sent
	tick := time.NewTicker(e.Every)
	for range e.N {
		<-tick.C
		t0 := time.Now()
		id, err := e.Create()
		if err != nil {
			tick.Stop()
			return EventTimes{}, err
		}
		ss = append(ss, sent{id, t0, time.Now()})
	}
	tick.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := 0
		for _, s := range ss {
			if _, ok := received[s.id]; ok {
				got++
			}
		}
		mu.Unlock()
		if got == len(ss) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var t EventTimes
	mu.Lock()
	defer mu.Unlock()
	for _, s := range ss {
		rt, ok := received[s.id]
		if !ok {
			t.Missing++
			continue
		}
		d := rt.Sub(s.t201)
		if d < 0 {
			t.Early++
			d = 0
		}
		t.Latency = append(t.Latency, d)
		t.FromSend = append(t.FromSend, rt.Sub(s.t0))
	}
	return t, nil
}
