package main

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/embedded"
	"github.com/artifactstore/artifactstore/httpserver"
)

// TestConsumerResumesFromCursor: the consumer mirrors finalized packages;
// run again, it handles only what came after its cursor.
func TestConsumerResumesFromCursor(t *testing.T) {
	ctx := context.Background()
	st, err := embedded.Open(ctx, t.TempDir(), artifactstore.Options{CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := httpserver.New(st, httpserver.Config{Tokens: map[string]string{"tok": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	publish := func(name string) string {
		p, err := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{Producer: "t", Subject: name})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.PutFile(ctx, "acme", p.ID, "dir/"+name+".txt", strings.NewReader("content of "+name), artifactstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Finalize(ctx, "acme", p.ID); err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	out := t.TempDir()
	first := publish("one")
	open, _ := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{Producer: "t", Subject: "open"})
	if err := run(ctx, ts.URL, "tok", out, true); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(out, first, "dir", "one.txt")
	if b, err := os.ReadFile(old); err != nil || string(b) != "content of one" {
		t.Fatalf("mirrored %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(out, open.ID)); err == nil {
		t.Error("an open package was mirrored")
	}
	before, _ := os.Stat(old)
	time.Sleep(20 * time.Millisecond)

	second := publish("two")
	if err := run(ctx, ts.URL, "tok", out, true); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(out, second, "dir", "two.txt")); err != nil || string(b) != "content of two" {
		t.Fatalf("second package: %q, %v", b, err)
	}
	if after, _ := os.Stat(old); !after.ModTime().Equal(before.ModTime()) {
		t.Error("the first package was downloaded again: the cursor was not kept")
	}
}
