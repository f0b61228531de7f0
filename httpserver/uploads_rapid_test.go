package httpserver_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"pgregory.net/rapid"
)

// TestUploadSessionsModel drives random sequences of upload-session
// operations over the real HTTP surface and checks that the server always
// agrees with an in-memory model of DESIGN §4: offsets, declared sizes and
// digests, offset conflicts, completion (and its retry), abort, and the
// bytes a completed file serves.
func TestUploadSessionsModel(t *testing.T) {
	ts := newServer(t, false) // once: opening a store per check is slow
	// A failure prints the -rapid.seed that replays it; it writes no fail
	// file into the shared testdata directory unless asked to.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || strings.HasSuffix(f.Name, "failfile") })
	if !explicit && os.Getenv("RAPID_NOFAILFILE") == "" {
		flag.Set("rapid.nofailfile", "true")
	}
	rapid.Check(t, func(rt *rapid.T) {
		m := &uploadModel{ts: ts, files: map[string]*modelFile{}, salt: modelSalt.Add(1)}
		m.pkg = m.createPackage(rt)
		rt.Repeat(map[string]func(*rapid.T){
			"create":              m.create,
			"append":              m.append,
			"appendWrongOffset":   m.appendWrongOffset,
			"appendPastSize":      m.appendPastSize,
			"head":                m.head,
			"get":                 m.get,
			"complete":            m.complete,
			"completeWrongDigest": m.completeWrongDigest,
			"completeEarly":       m.completeEarly,
			"completeTakenPath":   m.completeTakenPath,
			"retryComplete":       m.retryComplete,
			"delete":              m.abort,
			"onAborted":           m.onAborted,
			"onCompleted":         m.onCompleted,
			"":                    m.invariant,
		})
		m.final(rt)
	})
}

type sessionState int

const (
	sessionActive sessionState = iota
	sessionCompleted
	sessionAborted
)

func (s sessionState) String() string {
	return [...]string{"active", "completed", "aborted"}[s]
}

// modelUpload is what the model knows of one upload session.
type modelUpload struct {
	loc        string // /uploads/{id}
	id         string
	declSize   int64  // -1 when not declared
	declDigest string // "" when not declared
	intended   []byte // the planned content when size or digest was declared
	data       []byte // the bytes the server has acknowledged
	state      sessionState
	// once completed:
	fileID, path string
}

func (u *modelUpload) String() string {
	return fmt.Sprintf("%s[%s off=%d size=%d digest=%t]", u.id, u.state, len(u.data), u.declSize, u.declDigest != "")
}

// ready: completing it is refused neither for size nor for the declared
// digest.
func (u *modelUpload) ready() bool {
	return u.sizeOK() && (u.declDigest == "" || u.declDigest == sha(u.data))
}

func (u *modelUpload) sizeOK() bool { return u.declSize < 0 || int64(len(u.data)) == u.declSize }

type modelFile struct {
	id   string
	data []byte
}

var modelSalt atomic.Uint64

type uploadModel struct {
	ts      *testServer
	salt    uint64
	pkg     string
	uploads []*modelUpload
	files   map[string]*modelFile // path → file of pkg
}

// modelPaths is small so that completions often collide on a path.
var modelPaths = []string{"a", "b", "dir/c.bin", "dir/sub/d", "ü ñ/ファイル.txt"}

// ---- HTTP plumbing usable from a *rapid.T ----

type fatalHelper interface {
	Helper()
	Fatalf(format string, args ...any)
}

func (m *uploadModel) do(t fatalHelper, method, path string, body []byte, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, m.ts.URL+path, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+tokenAcme)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func decodeJSON(t fatalHelper, r resp) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %q (status %d): %v", r.body, r.status, err)
	}
	return v
}

// problem asserts r is a problem document of one of kinds (all with the
// given status) and returns it.
func modelProblem(t fatalHelper, what string, r resp, status int, kinds ...string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d %v: %s", what, r.status, status, kinds, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("%s: Content-Type %q, want application/problem+json (body %s)", what, ct, r.body)
	}
	p := decodeJSON(t, r)
	for _, k := range kinds {
		if p["type"] == "/problems/"+k && p["status"] == float64(status) && p["title"] != "" {
			return p
		}
	}
	t.Fatalf("%s: problem %v, want one of the kinds %v", what, p, kinds)
	return nil
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// randomBytes draws n and a seed, and expands the seed: drawing every byte
// through rapid would make each check (and shrinking) slow.
// The salt makes each check's content new to the shared server, so that
// whether a blob already exists from an earlier check (content addressing
// dedupes) never changes what a replay of a failing check does.
func (m *uploadModel) randomBytes(t *rapid.T, label string, minN, maxN int) []byte {
	n := rapid.IntRange(minN, maxN).Draw(t, label+"Len")
	seed := rapid.Uint64().Draw(t, label+"Seed")
	r := rand.New(rand.NewPCG(seed, m.salt))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func (m *uploadModel) createPackage(t *rapid.T) string {
	r := m.do(t, "POST", "/packages", []byte(`{"producer":"rapid","subject":"uploads"}`), "Content-Type", "application/json")
	if r.status != 201 {
		t.Fatalf("create package: %d %s", r.status, r.body)
	}
	return decodeJSON(t, r)["id"].(string)
}

// pick draws one of the uploads that satisfy ok, or skips the action.
func (m *uploadModel) pick(t *rapid.T, label string, ok func(*modelUpload) bool) *modelUpload {
	var c []*modelUpload
	for _, u := range m.uploads {
		if ok(u) {
			c = append(c, u)
		}
	}
	if len(c) == 0 {
		t.Skip("no upload for " + label)
	}
	return rapid.SampledFrom(c).Draw(t, label)
}

func active(u *modelUpload) bool { return u.state == sessionActive }

// ---- actions ----

func (m *uploadModel) create(t *rapid.T) {
	u := &modelUpload{declSize: -1}
	declareSize := rapid.Bool().Draw(t, "declareSize")
	declareDigest := rapid.Bool().Draw(t, "declareDigest")
	if declareSize || declareDigest {
		u.intended = m.randomBytes(t, "intended", 0, 8<<10)
	}
	if declareSize {
		u.declSize = int64(len(u.intended))
	}
	if declareDigest {
		if rapid.IntRange(0, 4).Draw(t, "bogusDigest") == 0 {
			// A declared digest the content will never match.
			u.declDigest = sha(append([]byte("not "), u.intended...))
		} else {
			u.declDigest = sha(u.intended)
		}
	}
	var body []byte
	var hdr []string
	sizeVia := "json"
	if declareSize {
		sizeVia = rapid.SampledFrom([]string{"json", "Upload-Length"}).Draw(t, "sizeVia")
	}
	obj := map[string]any{}
	if declareSize && sizeVia == "json" {
		obj["size"] = u.declSize
	}
	if declareSize && sizeVia == "Upload-Length" {
		hdr = append(hdr, "Upload-Length", strconv.FormatInt(u.declSize, 10))
	}
	if declareDigest {
		obj["digest"] = u.declDigest
	}
	if len(obj) > 0 || rapid.Bool().Draw(t, "emptyJSON") {
		body = jsonBody(obj)
		hdr = append(hdr, "Content-Type", "application/json")
	}
	r := m.do(t, "POST", "/uploads", body, hdr...)
	if r.status != 201 {
		t.Fatalf("create upload %s %v: %d %s", body, hdr, r.status, r.body)
	}
	v := decodeJSON(t, r)
	u.loc = r.header.Get("Location")
	u.id, _ = v["upload_id"].(string)
	if u.loc == "" || u.id == "" || u.loc != "/uploads/"+u.id || v["upload_url"] != u.loc {
		t.Fatalf("create upload: Location %q, body %s", u.loc, r.body)
	}
	if r.header.Get("Upload-Offset") != "0" || v["offset"] != float64(0) || r.header.Get("Upload-Expires") == "" || v["expires_at"] == nil {
		t.Fatalf("create upload: headers %v, body %s", r.header, r.body)
	}
	if declareSize && v["size"] != float64(u.declSize) || !declareSize && v["size"] != nil {
		t.Fatalf("create upload: size %v, want %d", v["size"], u.declSize)
	}
	m.uploads = append(m.uploads, u)
}

// nextChunk is what a well-behaved client appends next: the planned content
// while there is some, random bytes otherwise.
func (m *uploadModel) nextChunk(t *rapid.T, u *modelUpload, minN int) []byte {
	if rest := len(u.intended) - len(u.data); rest > 0 && bytes.HasPrefix(u.intended, u.data) {
		n := min(rest, 4<<10)
		if !rapid.Bool().Draw(t, "allThatIsLeft") {
			n = rapid.IntRange(min(minN, rest), n).Draw(t, "chunkLen")
		}
		return u.intended[len(u.data) : len(u.data)+n]
	}
	return m.randomBytes(t, "chunk", minN, 4<<10)
}

// appendHeaders names the start of chunk per mode; a Content-Range can name
// no empty chunk, so callers pass non-empty chunks for those modes.
func appendHeaders(mode string, start int64, chunk []byte, total int64) []string {
	h := []string{"Content-Type", "application/offset+octet-stream"}
	end := start + int64(len(chunk)) - 1
	switch mode {
	case "Upload-Offset":
		h = append(h, "Upload-Offset", strconv.FormatInt(start, 10))
	case "Content-Range":
		t := "*"
		if total >= 0 && end < total {
			t = strconv.FormatInt(total, 10)
		}
		h = append(h, "Content-Range", fmt.Sprintf("bytes %d-%d/%s", start, end, t))
	case "Content-Range/*":
		h = append(h, "Content-Range", fmt.Sprintf("bytes %d-%d/*", start, end))
	}
	return h
}

// activeOrNew draws an active session, creating one when there is none:
// rapid favours the first of the sorted action keys ("append…"), and they
// must always apply.
func (m *uploadModel) activeOrNew(t *rapid.T) *modelUpload {
	if !slices.ContainsFunc(m.uploads, active) {
		m.create(t)
	}
	return m.pick(t, "upload", active)
}

func (m *uploadModel) append(t *rapid.T) {
	u := m.activeOrNew(t)
	mode := rapid.SampledFrom([]string{"Upload-Offset", "Content-Range", "Content-Range/*", "none"}).Draw(t, "mode")
	minN := 0
	if strings.HasPrefix(mode, "Content-Range") {
		minN = 1
	}
	chunk := m.nextChunk(t, u, minN)
	if len(chunk) < minN {
		t.Skip("nothing left to name in a Content-Range")
	}
	off := int64(len(u.data))
	r := m.do(t, "PATCH", u.loc, chunk, appendHeaders(mode, off, chunk, u.declSize)...)
	what := fmt.Sprintf("append %d bytes at %d via %s to %v", len(chunk), off, mode, u)
	if u.declSize >= 0 && off+int64(len(chunk)) > u.declSize {
		modelProblem(t, what, r, 413, "too-large")
		m.expectOffset(t, u)
		return
	}
	if r.status != 204 {
		t.Fatalf("%s: %d %s", what, r.status, r.body)
	}
	u.data = append(u.data[:len(u.data):len(u.data)], chunk...)
	if got := r.header.Get("Upload-Offset"); got != strconv.Itoa(len(u.data)) {
		t.Fatalf("%s: Upload-Offset %q, want %d", what, got, len(u.data))
	}
}

func (m *uploadModel) appendWrongOffset(t *rapid.T) {
	u := m.activeOrNew(t)
	cur := len(u.data)
	wrong := rapid.IntRange(0, cur+4<<10).Filter(func(n int) bool { return n != cur }).Draw(t, "wrongOffset")
	mode := rapid.SampledFrom([]string{"Upload-Offset", "Content-Range/*", "Content-Range"}).Draw(t, "mode")
	chunk := m.randomBytes(t, "chunk", 1, 64)
	total := int64(-1)
	if mode == "Content-Range" {
		total = int64(wrong + len(chunk) + rapid.IntRange(0, 10).Draw(t, "slack"))
	}
	r := m.do(t, "PATCH", u.loc, chunk, appendHeaders(mode, int64(wrong), chunk, total)...)
	p := modelProblem(t, fmt.Sprintf("append at %d via %s to %v", wrong, mode, u), r, 409, "offset-mismatch")
	if p["expected-offset"] != float64(cur) || r.header.Get("Upload-Offset") != strconv.Itoa(cur) || p["instance"] != u.loc {
		t.Fatalf("offset mismatch on %v: expected-offset %v, Upload-Offset %q, instance %v; want %d at %s", u, p["expected-offset"], r.header.Get("Upload-Offset"), p["instance"], cur, u.loc)
	}
	m.expectOffset(t, u)
}

func (m *uploadModel) appendPastSize(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return active(u) && u.declSize >= 0 })
	room := int(u.declSize) - len(u.data)
	chunk := m.randomBytes(t, "chunk", room+1, room+1+rapid.IntRange(0, 512).Draw(t, "excess"))
	mode := rapid.SampledFrom([]string{"Upload-Offset", "Content-Range/*", "none"}).Draw(t, "mode")
	r := m.do(t, "PATCH", u.loc, chunk, appendHeaders(mode, int64(len(u.data)), chunk, -1)...)
	modelProblem(t, fmt.Sprintf("append %d bytes past the declared size of %v", len(chunk), u), r, 413, "too-large")
	m.expectOffset(t, u)
}

// expectOffset checks with HEAD that the server still has the model's
// offset for u.
func (m *uploadModel) expectOffset(t *rapid.T, u *modelUpload) {
	t.Helper()
	r := m.do(t, "HEAD", u.loc, nil)
	if r.status != 204 || r.header.Get("Upload-Offset") != strconv.Itoa(len(u.data)) {
		t.Fatalf("HEAD %v: %d, Upload-Offset %q, want %d", u, r.status, r.header.Get("Upload-Offset"), len(u.data))
	}
}

func (m *uploadModel) head(t *rapid.T) {
	u := m.pick(t, "upload", func(*modelUpload) bool { return true })
	r := m.do(t, "HEAD", u.loc, nil)
	if u.state == sessionAborted {
		if r.status != 404 {
			t.Fatalf("HEAD aborted %v: %d, want 404", u, r.status)
		}
		return
	}
	if r.status != 204 || len(r.body) != 0 {
		t.Fatalf("HEAD %v: %d %q", u, r.status, r.body)
	}
	h := r.header
	if h.Get("Upload-Offset") != strconv.Itoa(len(u.data)) || h.Get("Upload-Expires") == "" || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("HEAD %v: headers %v", u, h)
	}
	wantLen := ""
	if u.declSize >= 0 {
		wantLen = strconv.FormatInt(u.declSize, 10)
	}
	if got := h.Get("Upload-Length"); got != wantLen {
		t.Fatalf("HEAD %v: Upload-Length %q, want %q", u, got, wantLen)
	}
}

func (m *uploadModel) get(t *rapid.T) {
	u := m.pick(t, "upload", func(*modelUpload) bool { return true })
	r := m.do(t, "GET", u.loc, nil)
	if u.state == sessionAborted {
		modelProblem(t, fmt.Sprintf("GET aborted %v", u), r, 404, "not-found")
		return
	}
	if r.status != 200 {
		t.Fatalf("GET %v: %d %s", u, r.status, r.body)
	}
	v := decodeJSON(t, r)
	if v["upload_id"] != u.id || v["offset"] != float64(len(u.data)) || r.header.Get("Upload-Offset") != strconv.Itoa(len(u.data)) ||
		r.header.Get("Cache-Control") != "no-store" || v["expires_at"] == nil {
		t.Fatalf("GET %v: %v %s", u, r.header, r.body)
	}
	if u.declSize >= 0 && v["size"] != float64(u.declSize) || u.declSize < 0 && v["size"] != nil {
		t.Fatalf("GET %v: size %v", u, v["size"])
	}
}

func (m *uploadModel) completeReq(t *rapid.T, u *modelUpload, path, digest string) resp {
	req := map[string]any{"package_id": m.pkg, "path": path}
	if digest != "" {
		req["digest"] = digest
	}
	return m.do(t, "POST", u.loc+"/complete", jsonBody(req), "Content-Type", "application/json")
}

// pickPath draws one of modelPaths that satisfies ok, or skips the action.
func (m *uploadModel) pickPath(t *rapid.T, label string, ok func(string) bool) string {
	var c []string
	for _, p := range modelPaths {
		if ok(p) {
			c = append(c, p)
		}
	}
	if len(c) == 0 {
		t.Skip("no path for " + label)
	}
	return rapid.SampledFrom(c).Draw(t, label)
}

func (m *uploadModel) complete(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return active(u) && u.ready() })
	path := m.pickPath(t, "path", func(p string) bool { return m.files[p] == nil })
	digest := ""
	if rapid.Bool().Draw(t, "giveDigest") {
		digest = sha(u.data)
	}
	r := m.completeReq(t, u, path, digest)
	if r.status != 201 {
		t.Fatalf("complete %v into %q: %d %s", u, path, r.status, r.body)
	}
	f := decodeJSON(t, r)
	id, _ := f["id"].(string)
	if id == "" || f["package_id"] != m.pkg || f["path"] != path || f["size"] != float64(len(u.data)) || f["digest"] != sha(u.data) {
		t.Fatalf("complete %v into %q: file %s, want %d bytes %s", u, path, r.body, len(u.data), sha(u.data))
	}
	u.state, u.fileID, u.path = sessionCompleted, id, path
	m.files[path] = &modelFile{id: id, data: u.data}
	m.expectDownload(t, path)
}

func (m *uploadModel) expectDownload(t *rapid.T, path string) {
	t.Helper()
	f := m.files[path]
	r := m.do(t, "GET", "/files/"+f.id+"/download", nil)
	if r.status != 200 || !bytes.Equal(r.body, f.data) {
		t.Fatalf("download %q (%s): %d, %d bytes %s, want %d bytes %s", path, f.id, r.status, len(r.body), sha(r.body), len(f.data), sha(f.data))
	}
}

// unchanged checks that a refused completion changed nothing: the session
// is where it was and the package has no new file.
func (m *uploadModel) unchanged(t *rapid.T, u *modelUpload) {
	t.Helper()
	m.expectOffset(t, u)
	m.invariant(t)
}

func (m *uploadModel) completeWrongDigest(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return active(u) && u.sizeOK() })
	path := m.pickPath(t, "path", func(p string) bool { return m.files[p] == nil })
	digest := sha(append([]byte("wrong"), u.data...))
	if u.declDigest != "" && u.declDigest != sha(u.data) && rapid.Bool().Draw(t, "onlyDeclared") {
		digest = "" // the declared digest alone is wrong
	}
	r := m.completeReq(t, u, path, digest)
	modelProblem(t, fmt.Sprintf("complete %v with digest %q", u, digest), r, 422, "digest-mismatch")
	m.unchanged(t, u)
}

func (m *uploadModel) completeEarly(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return active(u) && !u.sizeOK() })
	path := m.pickPath(t, "path", func(p string) bool { return m.files[p] == nil })
	r := m.completeReq(t, u, path, "")
	what := fmt.Sprintf("complete %v before its declared size", u)
	if u.declDigest == "" {
		modelProblem(t, what, r, 422, "validation")
		if !bytes.Contains(r.body, []byte(`"field":"size"`)) {
			t.Fatalf("%s: the problem names no field size: %s", what, r.body)
		}
	} else {
		// Short content cannot match the declared digest either; both
		// refusals are right.
		modelProblem(t, what, r, 422, "validation", "digest-mismatch")
	}
	m.unchanged(t, u)
}

func (m *uploadModel) completeTakenPath(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return active(u) && u.ready() })
	path := m.pickPath(t, "takenPath", func(p string) bool { return m.files[p] != nil })
	r := m.completeReq(t, u, path, "")
	modelProblem(t, fmt.Sprintf("complete %v into taken path %q", u, path), r, 409, "conflict")
	m.unchanged(t, u)
	m.expectDownload(t, path) // the file that holds the path is untouched
}

func (m *uploadModel) retryComplete(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return u.state == sessionCompleted })
	if rapid.Bool().Draw(t, "samePath") {
		r := m.completeReq(t, u, u.path, "")
		if r.status != 201 {
			t.Fatalf("retry complete %v into %q: %d %s", u, u.path, r.status, r.body)
		}
		if f := decodeJSON(t, r); f["id"] != u.fileID || f["digest"] != sha(u.data) || f["path"] != u.path {
			t.Fatalf("retry complete %v: file %s, want id %s", u, r.body, u.fileID)
		}
		return
	}
	other := m.pickPath(t, "otherPath", func(p string) bool { return p != u.path })
	r := m.completeReq(t, u, other, "")
	modelProblem(t, fmt.Sprintf("retry complete %v (done into %q) into %q", u, u.path, other), r, 409, "conflict")
	m.invariant(t)
}

func (m *uploadModel) abort(t *rapid.T) {
	u := m.pick(t, "upload", active)
	r := m.do(t, "DELETE", u.loc, nil)
	if r.status != 204 {
		t.Fatalf("DELETE %v: %d %s", u, r.status, r.body)
	}
	u.state = sessionAborted
	if r := m.do(t, "HEAD", u.loc, nil); r.status != 404 {
		t.Fatalf("HEAD after DELETE %v: %d, want 404", u, r.status)
	}
}

// onAborted: every operation on an abandoned session is 404.
func (m *uploadModel) onAborted(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return u.state == sessionAborted })
	op := rapid.SampledFrom([]string{"PATCH", "PATCH at 0", "GET", "HEAD", "complete", "DELETE"}).Draw(t, "op")
	var r resp
	switch op {
	case "PATCH":
		r = m.do(t, "PATCH", u.loc, []byte("x"), "Upload-Offset", strconv.Itoa(len(u.data)))
	case "PATCH at 0":
		r = m.do(t, "PATCH", u.loc, []byte("x"), "Upload-Offset", "0")
	case "GET", "HEAD", "DELETE":
		r = m.do(t, op, u.loc, nil)
	case "complete":
		path := m.pickPath(t, "path", func(p string) bool { return m.files[p] == nil })
		r = m.completeReq(t, u, path, "")
	}
	what := fmt.Sprintf("%s on aborted %v", op, u)
	if op == "HEAD" {
		if r.status != 404 {
			t.Fatalf("%s: %d, want 404", what, r.status)
		}
		return
	}
	modelProblem(t, what, r, 404, "not-found")
	m.invariant(t)
}

// onCompleted: a completed session takes no more bytes, and ending it (in
// whatever way the server answers) never takes the file away.
func (m *uploadModel) onCompleted(t *rapid.T) {
	u := m.pick(t, "upload", func(u *modelUpload) bool { return u.state == sessionCompleted })
	switch rapid.SampledFrom([]string{"PATCH", "DELETE"}).Draw(t, "op") {
	case "PATCH":
		r := m.do(t, "PATCH", u.loc, []byte("more"), "Upload-Offset", strconv.Itoa(len(u.data)))
		modelProblem(t, fmt.Sprintf("PATCH completed %v", u), r, 409, "conflict", "offset-mismatch")
		m.expectOffset(t, u)
	case "DELETE":
		r := m.do(t, "DELETE", u.loc, nil)
		switch r.status {
		case 204:
			u.state = sessionAborted
		case 409:
			modelProblem(t, fmt.Sprintf("DELETE completed %v", u), r, 409, "conflict")
		default:
			t.Fatalf("DELETE completed %v: %d %s", u, r.status, r.body)
		}
	}
	m.expectDownload(t, u.path)
}

// invariant: the package holds exactly the model's files.
func (m *uploadModel) invariant(t *rapid.T) {
	t.Helper()
	r := m.do(t, "GET", "/packages/"+m.pkg, nil)
	if r.status != 200 {
		t.Fatalf("GET package: %d %s", r.status, r.body)
	}
	var size int
	for _, f := range m.files {
		size += len(f.data)
	}
	p := decodeJSON(t, r)
	if p["file_count"] != float64(len(m.files)) || p["total_size"] != float64(size) || p["state"] != "open" {
		t.Fatalf("package %s, want %d files, %d bytes", r.body, len(m.files), size)
	}
}

// final lists the package's files and downloads each once more.
func (m *uploadModel) final(t *rapid.T) {
	r := m.do(t, "GET", "/packages/"+m.pkg+"/files?limit=1000", nil)
	if r.status != 200 {
		t.Fatalf("list files: %d %s", r.status, r.body)
	}
	var list struct {
		Files []struct {
			ID, Path, Digest string
			Size             int
		}
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("list files %s: %v", r.body, err)
	}
	if len(list.Files) != len(m.files) {
		t.Fatalf("list files: %d files, want %d: %s", len(list.Files), len(m.files), r.body)
	}
	for _, f := range list.Files {
		mf := m.files[f.Path]
		if mf == nil || mf.id != f.ID || f.Digest != sha(mf.data) || f.Size != len(mf.data) {
			t.Fatalf("listed file %+v is not in the model", f)
		}
		m.expectDownload(t, f.Path)
	}
}

// GoString keeps rapid's logs of drawn uploads short.
func (u *modelUpload) GoString() string { return u.String() }

// TestUploadAppendAfterRefusedComplete: a completion refused because the
// path is taken changes nothing, so the session goes on taking bytes (and
// refusing too many with 413). The model test found the staged bytes left
// hard-linked into the blob store by the refused completion, and every
// later append answered 500.
func TestUploadAppendAfterRefusedComplete(t *testing.T) {
	ts := newServer(t, false)
	pkg := ts.createPackage(t, tokenAcme)
	if r := ts.putFile(t, tokenAcme, pkg, [2]string{"path", "taken"}, [2]string{"file", "x"}); r.status != 201 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	complete := func(loc, path string) resp {
		return ts.do(t, "POST", loc+"/complete", tokenAcme, strings.NewReader(`{"package_id":"`+pkg+`","path":"`+path+`"}`), "Content-Type", "application/json")
	}
	for _, declared := range []bool{false, true} {
		first, more := []byte("first part, never stored before"), []byte(" and the rest")
		body := ""
		if declared {
			body = fmt.Sprintf(`{"size":%d}`, len(first)+len(more))
		}
		r := ts.do(t, "POST", "/uploads", tokenAcme, strings.NewReader(body), "Content-Type", "application/json")
		loc := r.header.Get("Location")
		if r.status != 201 || loc == "" {
			t.Fatalf("create upload: %d %s", r.status, r.body)
		}
		all := append(slices.Clone(first), more...)
		if declared {
			first, more = all, nil // complete, then one byte too many
		}
		if r = ts.do(t, "PATCH", loc, tokenAcme, bytes.NewReader(first), "Upload-Offset", "0"); r.status != 204 {
			t.Fatalf("declared %t: first append: %d %s", declared, r.status, r.body)
		}
		wantProblem(t, complete(loc, "taken"), 409, "conflict")
		r = ts.do(t, "HEAD", loc, tokenAcme, nil)
		if r.status != 204 || r.header.Get("Upload-Offset") != strconv.Itoa(len(first)) {
			t.Fatalf("declared %t: HEAD after the refused completion: %d %v", declared, r.status, r.header)
		}
		if declared {
			wantProblem(t, ts.do(t, "PATCH", loc, tokenAcme, strings.NewReader("!"), "Upload-Offset", strconv.Itoa(len(first))), 413, "too-large")
		} else if r = ts.do(t, "PATCH", loc, tokenAcme, bytes.NewReader(more), "Upload-Offset", strconv.Itoa(len(first))); r.status != 204 || r.header.Get("Upload-Offset") != strconv.Itoa(len(all)) {
			t.Fatalf("append after the refused completion: %d %v %s", r.status, r.header, r.body)
		}
		path := fmt.Sprintf("free-%t", declared)
		r = complete(loc, path)
		if r.status != 201 || r.json(t)["digest"] != sha(all) {
			t.Fatalf("declared %t: complete into a free path: %d %s, want digest %s", declared, r.status, r.body, sha(all))
		}
		if d := ts.do(t, "GET", "/files/"+r.json(t)["id"].(string)+"/download", tokenAcme, nil); d.status != 200 || !bytes.Equal(d.body, all) {
			t.Fatalf("declared %t: download: %d %q, want %q", declared, d.status, d.body, all)
		}
	}
}
