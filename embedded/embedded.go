// Package embedded wires the zero-setup default of artifactstore: one data
// directory holding a SQLite catalog (catalog.db) and the blobs on disk
// (blobs/, tmp/, uploads/). The layout is decided here and nowhere else.
package embedded

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/blob/fsblob"
	"github.com/artifactstore/artifactstore/catalog/sqlite"
)

// Open opens (creating if needed) the store in dir. opts.Blobs and
// opts.Catalog must be nil; everything else in opts applies. The directory is
// locked: a second Open of the same directory fails until the first Store is
// closed.
func Open(ctx context.Context, dir string, opts artifactstore.Options) (*artifactstore.Store, error) {
	if opts.Blobs != nil || opts.Catalog != nil {
		return nil, fmt.Errorf("embedded: Options.Blobs and Options.Catalog are chosen by embedded.Open")
	}
	blobs, err := OpenBlobs(dir)
	if err != nil {
		return nil, err
	}
	cat, err := OpenCatalog(ctx, dir)
	if err != nil {
		blobs.Close()
		return nil, err
	}
	opts.Blobs, opts.Catalog = blobs, cat
	st, err := artifactstore.Open(ctx, opts)
	if err != nil {
		cat.Close()
		blobs.Close()
		return nil, err
	}
	return st, nil
}

// OpenBlobs opens (creating if needed) the blob store of the data directory
// dir, for callers that pair it with another catalog.
func OpenBlobs(dir string) (*fsblob.Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	b, err := fsblob.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	return b, nil
}

// OpenCatalog opens (creating if needed) the SQLite catalog of the data
// directory dir, for callers that pair it with another blob store.
func OpenCatalog(ctx context.Context, dir string) (*sqlite.Catalog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	c, err := sqlite.Open(ctx, filepath.Join(dir, "catalog.db"), sqlite.Options{})
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	return c, nil
}
