package httpserver_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/httpserver"
	"github.com/artifactstore/artifactstore/internal/testbackend"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAccessLog: one structured line per request with its id; tokens never
// appear in the log, whether valid or not.
func TestAccessLog(t *testing.T) {
	var logs syncBuffer
	b, c := testbackend.Open(t)
	st, err := artifactstore.Open(context.Background(), artifactstore.Options{Blobs: b, Catalog: c, CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := httpserver.New(st, httpserver.Config{
		Tokens: map[string]string{"very-secret-token": "acme"},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	for _, tok := range []string{"very-secret-token", "wrong-secret-token"} {
		req, _ := http.NewRequest("POST", ts.URL+"/packages", strings.NewReader(`{"producer":"p","subject":"s"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-Id", "req-"+tok[:4])
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.Header.Get("X-Request-Id") != "req-"+tok[:4] {
			t.Errorf("request id not echoed: %q", res.Header.Get("X-Request-Id"))
		}
	}
	// A request without an id gets one.
	res, err := http.Get(ts.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(res.Header.Get("X-Request-Id")) != 16 {
		t.Errorf("generated request id %q", res.Header.Get("X-Request-Id"))
	}
	out := logs.String()
	if strings.Contains(out, "secret") {
		t.Errorf("a token reached the log:\n%s", out)
	}
	for _, want := range []string{`"id":"req-very"`, `"status":201`, `"id":"req-wron"`, `"status":401`, `"path":"/health"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the access log lacks %s:\n%s", want, out)
		}
	}
}

// TestInternalErrorsAreProblems: a failing store gives 500 problems that
// hide the cause, and the server keeps serving.
func TestInternalErrorsAreProblems(t *testing.T) {
	b, c := testbackend.Open(t)
	st, err := artifactstore.Open(context.Background(), artifactstore.Options{Blobs: b, Catalog: c, CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpserver.New(st, httpserver.Config{Tokens: map[string]string{"tok": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	st.Close() // every Store call now fails; a closed notifier must not panic the server either
	req, _ := http.NewRequest("GET", ts.URL+"/packages", nil)
	req.Header.Set("Authorization", "Bearer tok")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 500 || !strings.Contains(string(body), "/problems/internal") || strings.Contains(string(body), "closed") {
		t.Errorf("a closed store answers %d %s", res.StatusCode, body)
	}
	if res, err := http.Get(ts.URL + "/health"); err != nil || res.StatusCode != 200 {
		t.Errorf("health after failures: %v", err)
	}
}
