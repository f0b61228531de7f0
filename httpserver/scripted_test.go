package httpserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
)

// scriptDo sends a request and reports transport errors instead of failing
// the test, so that goroutines other than the test's may use it.
func (ts *testServer) scriptDo(ctx context.Context, method, path, token string, body io.Reader, hdr ...string) (resp, error) {
	req, err := http.NewRequestWithContext(ctx, method, ts.URL+path, body)
	if err != nil {
		return resp{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{res.StatusCode, res.Header, b}, nil
}

// scEvent and scEventPage are the JSON (JCS) shapes of GET /events.
type scEvent struct {
	Seq       uint64         `json:"seq"`
	Type      string         `json:"type"`
	Time      string         `json:"time"`
	Tenant    string         `json:"tenant"`
	PackageID string         `json:"package_id"`
	FileID    string         `json:"file_id"`
	Data      map[string]any `json:"data"`
}

type scEventPage struct {
	Events []scEvent `json:"events"`
	Next   uint64    `json:"next"`
	Head   uint64    `json:"head"`
}

func decodeEventPage(r resp) (scEventPage, error) {
	var p scEventPage
	if r.status != 200 {
		return p, fmt.Errorf("events: %d %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return p, fmt.Errorf("events: Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		return p, fmt.Errorf("events %s: %v", r.body, err)
	}
	if p.Events == nil {
		return p, fmt.Errorf("events: no events list in %s", r.body)
	}
	return p, nil
}

// scContent is deterministic, distinct content for seed.
func scContent(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type scFile struct {
	path      string
	data      []byte
	via       string // "form path first", "form file first", "session"
	chunks    int    // for sessions
	mediaType string // sent; "" lets the server default
	id        string // as answered
}

// putScripted stores f in pkg the way f.via says and returns the File the
// server answered.
func (ts *testServer) putScripted(t *testing.T, pkg string, f *scFile, i int) map[string]any {
	t.Helper()
	var r resp
	switch f.via {
	case "form path first", "form file first":
		fields := [][2]string{{"path", f.path}}
		if f.mediaType != "" {
			fields = append(fields, [2]string{"media_type", f.mediaType})
		}
		if i%3 == 0 {
			fields = append(fields, [2]string{"digest", sha(f.data)})
		}
		if f.via == "form file first" {
			fields = append([][2]string{{"file", string(f.data)}}, fields...)
		} else {
			fields = append(fields, [2]string{"file", string(f.data)})
		}
		r = ts.putFile(t, tokenAcme, pkg, fields...)
	case "session":
		var body io.Reader
		var hdr []string
		switch i % 3 {
		case 0:
			body, hdr = strings.NewReader(fmt.Sprintf(`{"size":%d}`, len(f.data))), []string{"Content-Type", "application/json"}
		case 1:
			hdr = []string{"Upload-Length", strconv.Itoa(len(f.data))}
		}
		r = ts.do(t, "POST", "/uploads", tokenAcme, body, hdr...)
		if r.status != 201 || r.header.Get("Location") == "" {
			t.Fatalf("%s: create upload: %d %s", f.path, r.status, r.body)
		}
		loc := r.header.Get("Location")
		// Split into f.chunks non-empty chunks, each named another way.
		cuts := []int{0}
		for k := 1; k < f.chunks; k++ {
			cuts = append(cuts, len(f.data)*k/f.chunks)
		}
		cuts = append(cuts, len(f.data))
		for k := 0; k+1 < len(cuts); k++ {
			a, b := cuts[k], cuts[k+1]
			var h []string
			switch (i + k) % 4 {
			case 0:
				h = []string{"Upload-Offset", strconv.Itoa(a)}
			case 1:
				h = []string{"Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b-1, len(f.data))}
			case 2:
				h = []string{"Content-Range", fmt.Sprintf("bytes %d-%d/*", a, b-1)}
			case 3: // no header: append at the current offset
			}
			h = append(h, "Content-Type", "application/offset+octet-stream")
			r = ts.do(t, "PATCH", loc, tokenAcme, bytes.NewReader(f.data[a:b]), h...)
			if r.status != 204 || r.header.Get("Upload-Offset") != strconv.Itoa(b) {
				t.Fatalf("%s: chunk %d (%d-%d, %v): %d %v %s", f.path, k, a, b, h, r.status, r.header, r.body)
			}
		}
		req := map[string]string{"package_id": pkg, "path": f.path}
		if f.mediaType != "" {
			req["media_type"] = f.mediaType
		}
		if i%2 == 0 {
			req["digest"] = sha(f.data)
		}
		b, _ := json.Marshal(req)
		r = ts.do(t, "POST", loc+"/complete", tokenAcme, bytes.NewReader(b), "Content-Type", "application/json")
	}
	if r.status != 201 {
		t.Fatalf("%s (%s): %d %s", f.path, f.via, r.status, r.body)
	}
	out := r.json(t)
	wantMT := f.mediaType
	if wantMT == "" {
		wantMT = artifactstore.DefaultMediaType
	}
	if out["path"] != f.path || out["package_id"] != pkg || out["size"] != float64(len(f.data)) ||
		out["digest"] != sha(f.data) || out["media_type"] != wantMT || out["id"] == "" {
		t.Fatalf("%s (%s): file %s, want %d bytes %s %s", f.path, f.via, r.body, len(f.data), sha(f.data), wantMT)
	}
	return out
}

// scriptedFiles is the 50-file package of TestScriptedIngest50Files.
func scriptedFiles() []*scFile {
	sizes := []int{0, 1, 4095, 4096, 4097, 1<<20 + 3, 3 << 20}
	paths := []string{
		"a/b/c/d.txt",
		"日本語/ファイル.txt",
		"ü/ß.bin",
		"with space/file name.txt",
		"name  with two spaces.md",
		"Zebra", // upper case sorts before lower case, bytewise
		"a-b",   // '-' < '/' < '0'
		"a/b0",
		"x/\u00e9.txt",  // é precomposed (NFC) …
		"x/e\u0301.txt", // … and decomposed (NFD): two distinct paths
		"emoji/🙂 smile.txt",
		"deep/1/2/3/4/5/6/7/8/9/leaf",
		"dup/same-as-4096.bin",
	}
	r := rand.New(rand.NewPCG(50, 50))
	var files []*scFile
	for i := 0; i < 50; i++ {
		f := &scFile{}
		switch {
		case i < len(paths):
			f.path = paths[i]
		default:
			f.path = fmt.Sprintf("gen/dir%02d/file-%02d.dat", i%5, i)
		}
		switch {
		case i < len(sizes):
			f.data = scContent(uint64(i), sizes[i])
		case f.path == "dup/same-as-4096.bin":
			f.data = files[3].data // equal content is stored once
		case i%9 == 0:
			f.data = scContent(uint64(i), 256<<10+r.IntN(1<<20))
		default:
			f.data = scContent(uint64(i), r.IntN(64<<10))
		}
		switch {
		case strings.HasSuffix(f.path, ".txt"):
			f.mediaType = "text/plain"
		case i%7 == 0:
			f.mediaType = "application/x-custom"
		}
		switch {
		case len(f.data) >= 3 && i%3 == 2:
			f.via, f.chunks = "session", 2+i%2
		case i%2 == 0:
			f.via = "form path first"
		default:
			f.via = "form file first"
		}
		files = append(files, f)
	}
	// The big ones through sessions too.
	files[5].via, files[5].chunks = "session", 3
	return files
}

// TestScriptedIngest50Files pushes a 50-file package through HTTP, finalizes
// it and reads it all back: manifest (CBOR and JSON), every file, the file
// listing page by page and the event log from 0.
func TestScriptedIngest50Files(t *testing.T) {
	ts := newServer(t, false)
	pkg := ts.createPackage(t, tokenAcme)
	files := scriptedFiles()
	byPath := map[string]*scFile{}
	total := 0
	for i, f := range files {
		if byPath[f.path] != nil {
			t.Fatalf("the script repeats path %q", f.path)
		}
		byPath[f.path] = f
		f.id = ts.putScripted(t, pkg, f, i)["id"].(string)
		total += len(f.data)
	}

	// Finalize.
	r := ts.do(t, "POST", "/packages/"+pkg+"/finalize", tokenAcme, nil)
	if r.status != 200 {
		t.Fatalf("finalize: %d %s", r.status, r.body)
	}
	p := r.json(t)
	digest, _ := p["manifest_digest"].(string)
	if p["state"] != "finalized" || p["file_count"] != float64(len(files)) || p["total_size"] != float64(total) || !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("finalized package %s, want %d files, %d bytes", r.body, len(files), total)
	}

	// The manifest, CBOR: its digest, its ETag, its content.
	r = ts.do(t, "GET", "/packages/"+pkg+"/manifest", tokenAcme, nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/cbor") {
		t.Fatalf("manifest: %d %v", r.status, r.header)
	}
	if sha(r.body) != digest || r.header.Get("ETag") != strconv.Quote(digest) {
		t.Fatalf("manifest: sha256 %s, ETag %s; the package says %s", sha(r.body), r.header.Get("ETag"), digest)
	}
	cborBytes := r.body
	m, err := artifactstore.DecodeManifestCBOR(cborBytes)
	if err != nil {
		t.Fatalf("manifest CBOR: %v", err)
	}
	if m.Schema != "artifactstore.manifest.v1" || m.Package.ID != pkg || m.FileCount != uint64(len(files)) || m.TotalSize != uint64(total) || len(m.Files) != len(files) {
		t.Fatalf("manifest: schema %q, package %q, %d/%d files, %d bytes", m.Schema, m.Package.ID, m.FileCount, len(m.Files), m.TotalSize)
	}
	for i, mf := range m.Files {
		if i > 0 && m.Files[i-1].Path >= mf.Path {
			t.Errorf("manifest files out of bytewise order: %q then %q", m.Files[i-1].Path, mf.Path)
		}
		f := byPath[mf.Path]
		if f == nil {
			t.Errorf("manifest names %q, never sent", mf.Path)
			continue
		}
		wantMT := cmpOr(f.mediaType, artifactstore.DefaultMediaType)
		if mf.Size != uint64(len(f.data)) || mf.Digest != sha(f.data) || mf.MediaType != wantMT {
			t.Errorf("manifest entry %+v, want %d bytes %s %s", mf, len(f.data), sha(f.data), wantMT)
		}
	}

	// manifest.json: the same value in JCS.
	r = ts.do(t, "GET", "/packages/"+pkg+"/manifest.json", tokenAcme, nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("manifest.json: %d %v", r.status, r.header)
	}
	mj, err := artifactstore.DecodeManifestJSON(r.body)
	if err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if !reflect.DeepEqual(mj, m) {
		t.Errorf("manifest.json decodes to %+v\nCBOR to %+v", mj, m)
	}
	if again, err := mj.MarshalCBOR(); err != nil || !bytes.Equal(again, cborBytes) {
		t.Errorf("manifest.json re-encoded as CBOR differs from the served CBOR (%v)", err)
	}
	if again, err := m.MarshalJCS(); err != nil || !bytes.Equal(again, r.body) {
		t.Errorf("manifest.json is not the byte-exact JCS of the manifest (%v)", err)
	}

	// Every file, whole, against its manifest entry and what was sent.
	entry := map[string]artifactstore.ManifestFile{}
	for _, mf := range m.Files {
		entry[mf.Path] = mf
	}
	for _, f := range files {
		r := ts.do(t, "GET", "/files/"+f.id+"/download", tokenAcme, nil)
		if r.status != 200 {
			t.Errorf("download %q: %d %s", f.path, r.status, r.body)
			continue
		}
		if sha(r.body) != entry[f.path].Digest || r.header.Get("ETag") != strconv.Quote(entry[f.path].Digest) ||
			r.header.Get("Content-Length") != strconv.Itoa(len(f.data)) {
			t.Errorf("download %q: sha256 %s, ETag %s, Content-Length %s; manifest %+v", f.path, sha(r.body), r.header.Get("ETag"), r.header.Get("Content-Length"), entry[f.path])
		}
		if !bytes.Equal(r.body, f.data) {
			t.Errorf("download %q: %d bytes differ from the %d sent", f.path, len(r.body), len(f.data))
		}
	}

	// The listing, 7 at a time.
	var listed []string
	pages := 0
	cursor := ""
	for {
		q := "limit=7"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		r := ts.do(t, "GET", "/packages/"+pkg+"/files?"+q, tokenAcme, nil)
		if r.status != 200 {
			t.Fatalf("list files page %d: %d %s", pages, r.status, r.body)
		}
		var page struct {
			Files []struct {
				ID, Path, Digest string
				Size             int
			} `json:"files"`
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatalf("list files page %d: %v", pages, err)
		}
		pages++
		if len(page.Files) > 7 || len(page.Files) == 0 {
			t.Fatalf("list files page %d has %d files (limit 7): %s", pages, len(page.Files), r.body)
		}
		for _, lf := range page.Files {
			f := byPath[lf.Path]
			if f == nil || lf.ID != f.id || lf.Digest != sha(f.data) || lf.Size != len(f.data) {
				t.Errorf("listed %+v does not match what was sent", lf)
			}
			listed = append(listed, lf.Path)
		}
		if page.NextCursor == "" {
			break
		}
		if pages > 50 {
			t.Fatalf("the listing does not end")
		}
		cursor = page.NextCursor
	}
	if pages != 8 {
		t.Errorf("50 files 7 at a time took %d pages, want 8", pages)
	}
	if !slices.IsSorted(listed) || len(listed) != len(files) || len(slices.Compact(slices.Clone(listed))) != len(listed) {
		t.Errorf("listing: %d paths, sorted %t, distinct %d: %q", len(listed), slices.IsSorted(listed), len(slices.Compact(slices.Clone(listed))), listed)
	}
	var sent []string
	for _, f := range files {
		sent = append(sent, f.path)
	}
	slices.Sort(sent) // Go orders strings bytewise
	if !slices.Equal(listed, sent) {
		t.Errorf("listing order\n%q\nwant\n%q", listed, sent)
	}

	// The event log from 0, 10 at a time: created, 50 added, finalized.
	type want struct{ typ, fileID, path string }
	wants := []want{{artifactstore.EventPackageCreated, "", ""}}
	for _, f := range files {
		wants = append(wants, want{artifactstore.EventFileAdded, f.id, f.path})
	}
	wants = append(wants, want{artifactstore.EventPackageFinalized, "", ""})
	var got []scEvent
	since := uint64(0)
	for {
		r := ts.do(t, "GET", fmt.Sprintf("/events?since=%d&limit=10&wait=0", since), tokenAcme, nil, "Accept", "application/json")
		page, err := decodeEventPage(r)
		if err != nil {
			t.Fatal(err)
		}
		if page.Head != uint64(len(wants)) || len(page.Events) > 10 {
			t.Fatalf("events since %d: %d events, head %d (want %d)", since, len(page.Events), page.Head, len(wants))
		}
		if len(page.Events) == 0 {
			if page.Next != since || !bytes.Contains(r.body, []byte(`"events":[]`)) {
				t.Errorf("events at the tail: next %d (want %d): %s", page.Next, since, r.body)
			}
			break
		}
		if last := page.Events[len(page.Events)-1].Seq; page.Next != last {
			t.Errorf("events since %d: next %d, last seq %d", since, page.Next, last)
		}
		got = append(got, page.Events...)
		since = page.Next
		if len(got) > 2*len(wants) {
			t.Fatalf("the event log does not end")
		}
	}
	if len(got) != len(wants) {
		t.Fatalf("%d events, want %d", len(got), len(wants))
	}
	for i, e := range got {
		w := wants[i]
		if e.Seq != uint64(i+1) || e.Type != w.typ || e.Tenant != "acme" || e.PackageID != pkg || e.FileID != w.fileID || e.Time == "" {
			t.Errorf("event %d = %+v, want seq %d %s file %q", i, e, i+1, w.typ, w.fileID)
			continue
		}
		if w.typ == artifactstore.EventFileAdded {
			f := byPath[w.path]
			if e.Data["path"] != f.path || e.Data["digest"] != sha(f.data) || e.Data["size"] != float64(len(f.data)) {
				t.Errorf("event %d data %v, want %q %d bytes %s", e.Seq, e.Data, f.path, len(f.data), sha(f.data))
			}
		}
	}
}

func cmpOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// TestConsumerTailsConcurrentProducers: a consumer long-polls the event log
// while four producers each create a package, put files and finalize. It
// must see every change exactly once, in a gapless sequence, and in each
// producer's own order.
func TestConsumerTailsConcurrentProducers(t *testing.T) {
	const producers, perProducer = 4, 15
	ts := newServer(t, false)
	ctx := context.Background()

	type change struct{ typ, pkg, fileID string }
	var (
		mu      sync.Mutex
		changes = map[int][]change{} // per producer, in its order
	)
	record := func(p int, c change) {
		mu.Lock()
		changes[p] = append(changes[p], c)
		mu.Unlock()
	}

	// The consumer: long-polls until it knows how many events the producers
	// caused and has them all.
	expected := atomic.Int64{}
	expected.Store(-1) // unknown while the producers run
	pollCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	var seen []scEvent
	polls := 0
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		since := uint64(0)
		deadline := time.Now().Add(60 * time.Second)
		for {
			n := expected.Load()
			if n >= 0 && int64(len(seen)) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("consumer: gave up with %d events of %d", len(seen), n)
				return
			}
			wait, rctx := 5, pollCtx
			if n >= 0 {
				// The producers are done: what is left is in the log.
				wait, rctx = 0, ctx
			}
			polls++
			r, err := ts.scriptDo(rctx, "GET", fmt.Sprintf("/events?since=%d&wait=%d&limit=10", since, wait), tokenAcme, nil, "Accept", "application/json")
			if err != nil {
				if pollCtx.Err() != nil {
					continue // woken when the producers finished
				}
				t.Errorf("consumer: %v", err)
				return
			}
			page, err := decodeEventPage(r)
			if err != nil {
				t.Errorf("consumer: %v", err)
				return
			}
			if len(page.Events) > 0 && page.Next != page.Events[len(page.Events)-1].Seq || len(page.Events) == 0 && page.Next != since {
				t.Errorf("consumer: since %d: next %d for %d events", since, page.Next, len(page.Events))
			}
			if n >= 0 && len(page.Events) == 0 {
				t.Errorf("consumer: the log ends at %d (head %d) with %d of the %d events", since, page.Head, len(seen), n)
				return
			}
			seen = append(seen, page.Events...)
			since = page.Next
		}
	}()

	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			r, err := ts.scriptDo(ctx, "POST", "/packages", tokenAcme,
				strings.NewReader(fmt.Sprintf(`{"producer":"producer-%d","subject":"concurrent"}`, p)), "Content-Type", "application/json")
			if err != nil || r.status != 201 {
				t.Errorf("producer %d: create: %v %d %s", p, err, r.status, r.body)
				return
			}
			var pk struct{ ID string }
			json.Unmarshal(r.body, &pk)
			record(p, change{artifactstore.EventPackageCreated, pk.ID, ""})
			for i := range perProducer {
				data := scContent(uint64(p*1000+i), 1+(p*perProducer+i)*97%5000)
				body, ct := multipartBody(t, [][2]string{{"path", fmt.Sprintf("p%d/f%02d", p, i)}, {"file", string(data)}})
				r, err := ts.scriptDo(ctx, "POST", "/packages/"+pk.ID+"/files", tokenAcme, body, "Content-Type", ct)
				if err != nil || r.status != 201 {
					t.Errorf("producer %d: file %d: %v %d %s", p, i, err, r.status, r.body)
					continue
				}
				var f struct{ ID, Digest string }
				json.Unmarshal(r.body, &f)
				if f.Digest != sha(data) {
					t.Errorf("producer %d: file %d digest %s, want %s", p, i, f.Digest, sha(data))
				}
				record(p, change{artifactstore.EventFileAdded, pk.ID, f.ID})
			}
			r, err = ts.scriptDo(ctx, "POST", "/packages/"+pk.ID+"/finalize", tokenAcme, nil)
			if err != nil || r.status != 200 {
				t.Errorf("producer %d: finalize: %v %d %s", p, err, r.status, r.body)
				return
			}
			record(p, change{artifactstore.EventPackageFinalized, pk.ID, ""})
		})
	}
	wg.Wait()
	total := 0
	for _, cs := range changes {
		total += len(cs)
	}
	expected.Store(int64(total))
	stopWaiting()
	select {
	case <-consumerDone:
	case <-time.After(90 * time.Second):
		t.Fatal("the consumer did not finish")
	}
	if total != producers*(perProducer+2) {
		t.Errorf("the producers made %d changes, want %d", total, producers*(perProducer+2))
	}
	t.Logf("%d events in %d polls", len(seen), polls)

	// Exactly once, gapless, and nothing else.
	if len(seen) != total {
		t.Fatalf("the consumer saw %d events, the producers caused %d", len(seen), total)
	}
	pos := map[change]int{}
	for i, e := range seen {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: the sequence has a gap or a repeat", i+1, e.Seq)
		}
		c := change{e.Type, e.PackageID, e.FileID}
		if _, dup := pos[c]; dup {
			t.Errorf("event %+v seen twice", e)
		}
		pos[c] = i
		if e.Tenant != "acme" {
			t.Errorf("event %+v of another tenant", e)
		}
	}
	head := ts.eventHead(t)
	if head != float64(total) {
		t.Errorf("head %v, want %d", head, total)
	}
	// Every producer's change is there, in the producer's order.
	for p, cs := range changes {
		last := -1
		for _, c := range cs {
			i, ok := pos[c]
			if !ok {
				t.Errorf("producer %d: change %+v has no event", p, c)
				continue
			}
			if i <= last {
				t.Errorf("producer %d: change %+v at seq %d, before the one it followed (seq %d)", p, c, i+1, last+1)
			}
			last = i
			delete(pos, c)
		}
	}
	for c, i := range pos {
		t.Errorf("event seq %d (%+v) matches no producer's change", i+1, c)
	}
}

// TestLongPollLatency: a waiting long-poll answers as soon as a change
// commits, and an idle one answers empty when its wait runs out.
func TestLongPollLatency(t *testing.T) {
	ts := newServer(t, false)
	ctx := context.Background()
	type answer struct {
		at  time.Time
		r   resp
		err error
	}
	var lat []time.Duration
	for round := range 5 {
		since := round // one event per round so far
		ch := make(chan answer, 1)
		polled := time.Now()
		go func() {
			r, err := ts.scriptDo(ctx, "GET", fmt.Sprintf("/events?since=%d&wait=10", since), tokenAcme, nil, "Accept", "application/json")
			ch <- answer{time.Now(), r, err}
		}()
		time.Sleep(300 * time.Millisecond) // let the poll reach its wait
		select {
		case a := <-ch:
			t.Fatalf("round %d: the long-poll answered before any change: %v %d %s", round, a.err, a.r.status, a.r.body)
		default:
		}
		sent := time.Now()
		r := ts.do(t, "POST", "/packages", tokenAcme, strings.NewReader(`{"producer":"latency","subject":"probe"}`), "Content-Type", "application/json")
		created := time.Now()
		if r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		pkg := r.json(t)["id"].(string)
		var a answer
		select {
		case a = <-ch:
		case <-time.After(15 * time.Second):
			t.Fatalf("round %d: the long-poll never answered", round)
		}
		if a.err != nil {
			t.Fatalf("round %d: %v", round, a.err)
		}
		page, err := decodeEventPage(a.r)
		if err != nil {
			t.Fatal(err)
		}
		d := a.at.Sub(created)
		// The event commits before the 201 is written, so the poll may even
		// answer first (a negative figure).
		t.Logf("round %d: the long-poll answered %v after the 201 (%v after the create was sent, %v after the poll started)",
			round, d, a.at.Sub(sent), a.at.Sub(polled))
		if d >= 200*time.Millisecond {
			t.Errorf("round %d: the long-poll answered %v after the create, want < 200ms", round, d)
		}
		if len(page.Events) != 1 || page.Events[0].Type != artifactstore.EventPackageCreated || page.Events[0].PackageID != pkg ||
			page.Events[0].Seq != uint64(since+1) || page.Next != uint64(since+1) || page.Head != uint64(since+1) {
			t.Errorf("round %d: long-poll answered %s, want the creation of %s", round, a.r.body, pkg)
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	t.Logf("long-poll wake-up after a create: min %v, median %v, max %v", lat[0], lat[len(lat)/2], lat[len(lat)-1])

	// An idle tenant, and a busy one at its head: empty after about 1 s.
	for _, c := range []struct {
		token string
		since int
	}{{tokenGlobex, 0}, {tokenAcme, len(lat)}} {
		start := time.Now()
		r := ts.do(t, "GET", fmt.Sprintf("/events?since=%d&wait=1", c.since), c.token, nil, "Accept", "application/json")
		took := time.Since(start)
		page, err := decodeEventPage(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("idle long-poll (since %d) answered after %v", c.since, took)
		if took < 900*time.Millisecond || took > 3*time.Second {
			t.Errorf("wait=1 answered after %v, want about 1s", took)
		}
		if len(page.Events) != 0 || page.Next != uint64(c.since) || page.Head != uint64(c.since) || !bytes.Contains(r.body, []byte(`"events":[]`)) {
			t.Errorf("wait=1 at the head answered %s, want no events, next and head %d", r.body, c.since)
		}
	}
}
