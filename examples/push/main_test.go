package main

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/embedded"
	"github.com/artifactstore/artifactstore/httpserver"
)

func TestPushExample(t *testing.T) {
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
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "b.txt"), []byte("bb"), 0o644)
	if err := run(ctx, ts.URL, "tok", dir); err != nil {
		t.Fatal(err)
	}
	page, err := st.ListPackages(ctx, "acme", artifactstore.PackageQuery{})
	if err != nil || len(page.Packages) != 1 {
		t.Fatalf("%d packages, %v", len(page.Packages), err)
	}
	p := page.Packages[0]
	if p.State != artifactstore.StateFinalized || p.FileCount != 2 || p.TotalSize != 3 {
		t.Errorf("pushed package = %+v", p)
	}
}
