package artifactstore

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/artifactstore/artifactstore/blob/fsblob"
	"github.com/artifactstore/artifactstore/catalog/sqlite"
)

// openStore opens a Store over fsblob and SQLite in a temp dir.
func openStore(t *testing.T) *Store {
	t.Helper()
	dir := t.TempDir()
	blobs, err := fsblob.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := sqlite.Open(context.Background(), filepath.Join(dir, "catalog.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), Options{Blobs: blobs, Catalog: cat, CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestRecentEvictsOldest(t *testing.T) {
	c := newRecent[File](2)
	for _, id := range []string{"a", "b", "c"} {
		c.put(id, File{ID: id, Tenant: "t"})
	}
	if _, ok := c.get("a"); ok {
		t.Error("the oldest entry survived past the limit")
	}
	for _, id := range []string{"b", "c"} {
		if f, ok := c.get(id); !ok || f.ID != id {
			t.Errorf("entry %s lost", id)
		}
	}
	c.put("c", File{ID: "c", Tenant: "u"}) // again: no second slot, new value
	c.put("d", File{ID: "d", Tenant: "t"})
	if f, ok := c.get("c"); !ok || f.Tenant != "u" {
		t.Errorf("a repeated put: %+v %v, want the new value in its one slot", f, ok)
	}
	if len(c.m) != 2 {
		t.Errorf("%d entries, limit 2", len(c.m))
	}
}

// PutFile's early package check trusts what it saw, and the catalog still
// has the last word: a package finalized behind the hint's back (another
// replica; here the catalog directly) refuses the file, and from then on
// PutFile refuses before reading the body.
func TestPutFilePackageHint(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	p, err := s.CreatePackage(ctx, "t", NewPackage{Producer: "p", Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutFile(ctx, "t", p.ID, "a", stringsReader("a"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if h, ok := s.pkgs.get(p.ID); !ok || h.finalized || h.tenant != "t" {
		t.Fatalf("hint after a put: %+v %v, want open for t", h, ok)
	}
	// Finalized without this Store seeing it.
	if _, err := s.cat.Finalize(ctx, "t", p.ID, EventPackageFinalized, buildManifest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutFile(ctx, "t", p.ID, "b", stringsReader("b"), PutOptions{}); KindOf(err) != Finalized {
		t.Fatalf("put into a package finalized behind the hint: %v, want finalized", err)
	}
	body := &countingReader{r: stringsReader("c")}
	if _, err := s.PutFile(ctx, "t", p.ID, "c", body, PutOptions{}); KindOf(err) != Finalized {
		t.Fatalf("put after the refusal: %v, want finalized", err)
	}
	if body.n != 0 {
		t.Errorf("PutFile read %d bytes of a body for a package it knew finalized", body.n)
	}
	// Another tenant does not get the hint: it is told not found.
	if _, err := s.PutFile(ctx, "u", p.ID, "d", stringsReader("d"), PutOptions{}); KindOf(err) != NotFound {
		t.Errorf("another tenant's put: %v, want not found", err)
	}
}
