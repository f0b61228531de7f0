package httpserver_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestBadInput sends malformed requests; each must get the right status and
// a problem document, and change nothing (the event head stays put and no
// file appears).
func TestBadInput(t *testing.T) {
	ts := newServer(t, false)
	pkg := ts.createPackage(t, tokenAcme)
	r := ts.putFile(t, tokenAcme, pkg, [2]string{"path", "taken"}, [2]string{"file", "x"})
	if r.status != 201 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	fileID := r.json(t)["id"].(string)
	r = ts.do(t, "POST", "/uploads", tokenAcme, strings.NewReader(`{"size":10}`), "Content-Type", "application/json")
	upload := r.header.Get("Location")
	ts.do(t, "PATCH", upload, tokenAcme, strings.NewReader("abc"), "Upload-Offset", "0")
	finPkg := ts.createPackage(t, tokenAcme)
	ts.do(t, "POST", "/packages/"+finPkg+"/finalize", tokenAcme, nil)
	headBefore := ts.eventHead(t)

	json := func(s string) (io.Reader, []string) {
		return strings.NewReader(s), []string{"Content-Type", "application/json"}
	}
	type tc struct {
		name   string
		method string
		path   string
		token  string
		body   func() (io.Reader, []string)
		status int
		kind   string
		field  string // a field the problem must name
	}
	mp := func(fields ...[2]string) func() (io.Reader, []string) {
		return func() (io.Reader, []string) {
			b, ct := multipartBody(t, fields)
			return b, []string{"Content-Type", ct}
		}
	}
	js := func(s string) func() (io.Reader, []string) { return func() (io.Reader, []string) { return json(s) } }
	raw := func(s string, hdr ...string) func() (io.Reader, []string) {
		return func() (io.Reader, []string) { return strings.NewReader(s), hdr }
	}
	big := strings.Repeat("x", 2<<20)
	for _, c := range []tc{
		{"no token", "POST", "/packages", "", js(`{"producer":"a","subject":"b"}`), 401, "unauthorized", ""},
		{"wrong token", "POST", "/packages", "nope", js(`{"producer":"a","subject":"b"}`), 401, "unauthorized", ""},
		{"wrong token on a read", "GET", "/packages", "nope", nil, 401, "unauthorized", ""},
		{"no token on a read", "GET", "/packages/" + pkg, "", nil, 401, "unauthorized", ""},
		{"malformed JSON", "POST", "/packages", tokenAcme, js(`{"producer":`), 400, "validation", ""},
		{"missing fields", "POST", "/packages", tokenAcme, js(`{}`), 422, "validation", ""},
		{"empty producer", "POST", "/packages", tokenAcme, js(`{"producer":"","subject":"s"}`), 422, "validation", "producer"},
		{"bad retention", "POST", "/packages", tokenAcme, js(`{"producer":"p","subject":"s","retention_class":"forever"}`), 422, "validation", "retention_class"},
		{"metadata key with =", "POST", "/packages", tokenAcme, js(`{"producer":"p","subject":"s","metadata":{"a=b":"c"}}`), 422, "validation", "metadata"},
		{"oversized JSON body", "POST", "/packages", tokenAcme, js(`{"producer":"` + big + `","subject":"s"}`), 413, "too-large", ""},
		{"path escapes", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"path", "../etc/passwd"}, [2]string{"file", "x"}), 422, "validation", "path"},
		{"absolute path", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"path", "/etc/passwd"}, [2]string{"file", "x"}), 422, "validation", "path"},
		{"backslash path", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"path", `a\b`}, [2]string{"file", "x"}), 422, "validation", "path"},
		{"path after file escapes", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"file", "x"}, [2]string{"path", "a/../b"}), 422, "validation", "path"},
		{"no path", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"file", "x"}), 422, "validation", "path"},
		{"no file", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"path", "a"}), 422, "validation", "file"},
		{"path taken", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"path", "taken"}, [2]string{"file", "y"}), 409, "conflict", ""},
		{"digest mismatch", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"path", "d"}, [2]string{"digest", sha([]byte("other"))}, [2]string{"file", "y"}), 422, "digest-mismatch", ""},
		{"digest mismatch after file", "POST", "/packages/" + pkg + "/files", tokenAcme, mp([2]string{"file", "y"}, [2]string{"path", "d"}, [2]string{"digest", sha([]byte("other"))}), 422, "digest-mismatch", ""},
		{"finalized package", "POST", "/packages/" + finPkg + "/files", tokenAcme, mp([2]string{"path", "late"}, [2]string{"file", "y"}), 409, "finalized", ""},
		{"broken multipart", "POST", "/packages/" + pkg + "/files", tokenAcme, raw("--xyz\r\nbroken", "Content-Type", "multipart/form-data; boundary=xyz"), 400, "validation", ""},
		{"not multipart", "POST", "/packages/" + pkg + "/files", tokenAcme, js(`{}`), 400, "validation", ""},
		{"other tenant's package", "POST", "/packages/" + pkg + "/files", tokenGlobex, mp([2]string{"path", "g"}, [2]string{"file", "y"}), 404, "not-found", ""},
		{"other tenant's package read", "GET", "/packages/" + pkg, tokenGlobex, nil, 404, "not-found", ""},
		{"other tenant's file", "GET", "/files/" + fileID, tokenGlobex, nil, 404, "not-found", ""},
		{"other tenant's download", "GET", "/files/" + fileID + "/download", tokenGlobex, nil, 404, "not-found", ""},
		{"other tenant's finalize", "POST", "/packages/" + pkg + "/finalize", tokenGlobex, nil, 404, "not-found", ""},
		{"other tenant's upload", "PATCH", upload, tokenGlobex, raw("d", "Upload-Offset", "3"), 404, "not-found", ""},
		{"unknown package", "GET", "/packages/01JDX0000000000000000000ZZ", tokenAcme, nil, 404, "not-found", ""},
		{"malformed id", "GET", "/packages/not-an-id", tokenAcme, nil, 422, "validation", "id"},
		{"bad cursor", "GET", "/packages?cursor=!!!", tokenAcme, nil, 422, "validation", ""},
		{"forged cursor", "GET", "/packages?cursor=Zm9v", tokenAcme, nil, 422, "validation", "cursor"},
		{"limit too big", "GET", "/packages?limit=5000", tokenAcme, nil, 422, "validation", "limit"},
		{"limit not a number", "GET", "/packages?limit=ten", tokenAcme, nil, 422, "validation", "limit"},
		{"bad state", "GET", "/packages?state=closed", tokenAcme, nil, 422, "validation", "state"},
		{"bad file cursor", "GET", "/packages/" + pkg + "/files?cursor=Zm9v", tokenAcme, nil, 422, "validation", "cursor"},
		{"wrong offset", "PATCH", upload, tokenAcme, raw("d", "Upload-Offset", "9"), 409, "offset-mismatch", ""},
		{"bad Content-Range", "PATCH", upload, tokenAcme, raw("d", "Content-Range", "bytes 3-2/10"), 422, "validation", "Content-Range"},
		{"Content-Range not bytes", "PATCH", upload, tokenAcme, raw("d", "Content-Range", "items 3-3/10"), 422, "validation", "Content-Range"},
		{"negative Upload-Offset", "PATCH", upload, tokenAcme, raw("d", "Upload-Offset", "-1"), 422, "validation", ""},
		{"past the declared size", "PATCH", upload, tokenAcme, raw("defghijklmnop", "Upload-Offset", "3"), 413, "too-large", ""},
		{"complete short upload", "POST", upload + "/complete", tokenAcme, js(`{"package_id":"` + pkg + `","path":"u"}`), 422, "validation", "size"},
		{"complete bad JSON", "POST", upload + "/complete", tokenAcme, js(`{`), 400, "validation", ""},
		{"unknown upload", "HEAD", "/uploads/01JDX0000000000000000000ZZ", tokenAcme, nil, 404, "", ""},
		{"bad Range is ignored, not an error", "GET", "/files/" + fileID + "/download", tokenAcme, raw("", "Range", "bytes=zz"), 200, "", ""},
		{"unsatisfiable range", "GET", "/files/" + fileID + "/download", tokenAcme, raw("", "Range", "bytes=5-"), 416, "range-not-satisfiable", ""},
		{"since beyond head", "GET", "/events?since=999", tokenAcme, nil, 400, "validation", "since"},
		{"negative since", "GET", "/events?since=-1", tokenAcme, nil, 422, "validation", "since"},
		{"wait too long", "GET", "/events?wait=61", tokenAcme, nil, 422, "validation", "wait"},
		{"unknown route", "GET", "/nope", tokenAcme, nil, 404, "not-found", ""},
		{"wrong method", "DELETE", "/packages", tokenAcme, nil, 405, "validation", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			var hdr []string
			if c.body != nil {
				body, hdr = c.body()
			}
			r := ts.do(t, c.method, c.path, c.token, body, hdr...)
			if c.kind == "" {
				if r.status != c.status {
					t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
				}
				return
			}
			p := wantProblem(t, r, c.status, c.kind)
			if c.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
			if c.field != "" && !bytes.Contains(r.body, []byte(`"field":"`+c.field+`"`)) {
				t.Errorf("the problem does not name field %q: %s", c.field, r.body)
			}
			if c.kind == "offset-mismatch" && (p["expected-offset"] != float64(3) || r.header.Get("Upload-Offset") != "3") {
				t.Errorf("offset problem = %v, Upload-Offset %q", p, r.header.Get("Upload-Offset"))
			}
		})
	}
	if h := ts.eventHead(t); h != headBefore {
		t.Errorf("bad input moved the event head from %v to %v", headBefore, h)
	}
	r = ts.do(t, "GET", "/packages/"+pkg, tokenAcme, nil)
	if n := r.json(t)["file_count"]; n != float64(1) {
		t.Errorf("package has %v files after bad input, want 1", n)
	}
	r = ts.do(t, "HEAD", upload, tokenAcme, nil)
	if r.header.Get("Upload-Offset") != "3" {
		t.Errorf("upload offset %q after bad appends, want 3", r.header.Get("Upload-Offset"))
	}
}

func (ts *testServer) eventHead(tb testing.TB) float64 {
	tb.Helper()
	r := ts.do(tb, "GET", "/events?wait=0&limit=1", tokenAcme, nil, "Accept", "application/json")
	if r.status != 200 {
		tb.Fatalf("events: %d %s", r.status, r.body)
	}
	return r.json(tb)["head"].(float64)
}

func TestAnonymousReads(t *testing.T) {
	closed := newServer(t, false)
	open := newServer(t, true)
	for _, ts := range []*testServer{closed, open} {
		pkg := ts.createPackage(t, tokenAcme)
		r := ts.do(t, "GET", "/packages/"+pkg, "", nil)
		if ts == closed {
			wantProblem(t, r, 401, "unauthorized")
			continue
		}
		if r.status != 200 {
			t.Fatalf("anonymous read: %d %s", r.status, r.body)
		}
		// Writes stay closed.
		wantProblem(t, ts.do(t, "POST", "/packages/"+pkg+"/finalize", "", nil), 401, "unauthorized")
		// Events need a tenant.
		wantProblem(t, ts.do(t, "GET", "/events?wait=0", "", nil), 422, "validation")
		r = ts.do(t, "GET", "/events?wait=0&tenant=acme", "", nil, "Accept", "application/json")
		if r.status != 200 || r.json(t)["head"] != float64(1) {
			t.Fatalf("anonymous events: %d %s", r.status, r.body)
		}
		// A token reads only its own tenant's log.
		wantProblem(t, ts.do(t, "GET", "/events?wait=0&tenant=acme", tokenGlobex, nil), 403, "forbidden")
	}
}

func TestPublicEndpoints(t *testing.T) {
	ts := newServer(t, false)
	r := ts.do(t, "GET", "/openapi.json", "", nil)
	if r.status != 200 || r.json(t)["openapi"] == nil {
		t.Fatalf("openapi.json: %d", r.status)
	}
	r = ts.do(t, "GET", "/docs/", "", nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte("<html")) {
		t.Fatalf("docs: %d %.200s", r.status, r.body)
	}
	// Every asset the page names is served by the binary itself.
	for _, m := range findAll(string(r.body), `src="`, `"`) {
		if strings.HasPrefix(m, "http") {
			t.Errorf("docs load %s from the network", m)
			continue
		}
		if !strings.HasPrefix(m, "/") {
			m = "/docs/" + strings.TrimPrefix(m, "./")
		}
		if a := ts.do(t, "GET", m, "", nil); a.status != 200 {
			t.Errorf("docs asset %s: %d", m, a.status)
		}
	}
	r = ts.do(t, "OPTIONS", "/packages", "", nil)
	if r.status != 204 {
		t.Errorf("OPTIONS: %d", r.status)
	}
}

func findAll(s, open, close string) []string {
	var out []string
	for {
		i := strings.Index(s, open)
		if i < 0 {
			return out
		}
		s = s[i+len(open):]
		j := strings.Index(s, close)
		if j < 0 {
			return out
		}
		out = append(out, s[:j])
		s = s[j:]
	}
}
