package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/blob/s3blob"
	"github.com/artifactstore/artifactstore/catalog"
	"github.com/artifactstore/artifactstore/catalog/postgres"
	"github.com/artifactstore/artifactstore/embedded"
)

// openStore builds the Store the configuration names: the SQLite catalog and
// the blobs on disk under the data directory by default; a PostgreSQL
// catalog (--catalog postgres://…) and an S3 bucket (--blob s3://…) to run
// several replicas.
func openStore(ctx context.Context, cfg serveConfig, log *slog.Logger) (*artifactstore.Store, error) {
	var (
		blobs blob.Store
		cat   catalog.Catalog
		err   error
	)
	closeAll := func() {
		if blobs != nil {
			blobs.Close()
		}
		if cat != nil {
			cat.Close()
		}
	}
	switch {
	case cfg.blob == "":
		blobs, err = embedded.OpenBlobs(cfg.data)
	case strings.HasPrefix(cfg.blob, "s3://"):
		var sc s3blob.Config
		if sc, err = s3blob.ParseURL(cfg.blob); err == nil {
			blobs, err = s3blob.Open(ctx, sc)
		}
	default:
		err = errors.New(`--blob must be s3://bucket?endpoint=… (or empty for the data directory)`)
	}
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	switch {
	case cfg.catalog == "":
		cat, err = embedded.OpenCatalog(ctx, cfg.data)
	case strings.HasPrefix(cfg.catalog, "postgres://"), strings.HasPrefix(cfg.catalog, "postgresql://"):
		cat, err = postgres.Open(ctx, cfg.catalog, postgres.Options{})
	default:
		err = errors.New(`--catalog must be postgres://… (or empty for SQLite in the data directory)`)
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("catalog: %w", err)
	}
	st, err := artifactstore.Open(ctx, artifactstore.Options{Blobs: blobs, Catalog: cat, Logger: log})
	if err != nil {
		closeAll()
		return nil, err
	}
	return st, nil
}
