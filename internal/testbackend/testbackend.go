// Package testbackend gives tests the storage backends named by the
// environment, so that one test suite runs on each of them:
//
//	ARTIFACTSTORE_TEST_BACKEND=""/"embedded"  fsblob and SQLite in a temp dir (the default)
//	ARTIFACTSTORE_TEST_BACKEND="postgres+s3"  catalog/postgres on ARTIFACTSTORE_TEST_POSTGRES,
//	                                           blob/s3blob on ARTIFACTSTORE_TEST_S3
//
// On PostgreSQL every call gets a schema of its own (selected through the
// DSN's search_path and dropped when the test ends); on S3 a fresh random
// key prefix (emptied when the test ends). scripts/test-services.sh starts
// both servers on loopback and exports the variables.
package testbackend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/blob/s3blob"
	"github.com/artifactstore/artifactstore/catalog"
	"github.com/artifactstore/artifactstore/catalog/postgres"
	"github.com/artifactstore/artifactstore/embedded"
)

// Environment variables read here.
const (
	BackendEnv  = "ARTIFACTSTORE_TEST_BACKEND"
	PostgresEnv = "ARTIFACTSTORE_TEST_POSTGRES"
	S3Env       = "ARTIFACTSTORE_TEST_S3"
)

// Backend names.
const (
	Embedded   = "embedded"
	PostgresS3 = "postgres+s3"
)

// Name is the backend ARTIFACTSTORE_TEST_BACKEND selects: "embedded" (also
// when unset) or "postgres+s3"; any other value is returned as it is, and
// Open fails on it.
func Name() string {
	if n := strings.TrimSpace(os.Getenv(BackendEnv)); n != "" {
		return n
	}
	return Embedded
}

// Open returns a fresh, empty blob store and catalog on the selected
// backend. Both are closed when tb ends (closing them earlier, for example
// through the Store that took them over, is fine); on postgres+s3 their
// schema and prefix are removed after that. A missing variable of the
// selected backend fails the test.
func Open(tb testing.TB) (blob.Store, catalog.Catalog) {
	tb.Helper()
	ctx := context.Background()
	var (
		blobs blob.Store
		cat   catalog.Catalog
		err   error
	)
	switch Name() {
	case Embedded:
		dir := tb.TempDir()
		if blobs, err = embedded.OpenBlobs(dir); err != nil {
			tb.Fatalf("testbackend: %v", err)
		}
		tb.Cleanup(func() { blobs.Close() })
		if cat, err = embedded.OpenCatalog(ctx, dir); err != nil {
			tb.Fatalf("testbackend: %v", err)
		}
		tb.Cleanup(func() { cat.Close() })
	case PostgresS3:
		cfg := s3Config(tb) // fails before anything is created when unset
		dsn := PostgresDSN(tb)
		cfg.Prefix = newPrefix(tb, cfg)
		if blobs, err = s3blob.Open(ctx, cfg); err != nil {
			tb.Fatalf("testbackend: s3blob: %v", err)
		}
		tb.Cleanup(func() { blobs.Close() })
		if cat, err = postgres.Open(ctx, dsn, postgres.Options{}); err != nil {
			tb.Fatalf("testbackend: postgres: %v", err)
		}
		tb.Cleanup(func() { cat.Close() })
	default:
		tb.Fatalf("testbackend: %s=%q: want %q or %q", BackendEnv, os.Getenv(BackendEnv), Embedded, PostgresS3)
	}
	return blobs, cat
}

// PostgresDSN creates an empty schema in the database ARTIFACTSTORE_TEST_POSTGRES
// names and returns that DSN with its search_path set to the schema (pgx
// passes unknown URL parameters to the server as run-time parameters), so a
// catalog opened on it, in this process or another, migrates into the
// schema and sees nothing of other tests. The schema is dropped when tb
// ends: register it before whatever uses it, so that it is closed first.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		tb.Fatalf("testbackend: %s is not set (a DSN such as postgres://postgres@127.0.0.1:5432/db?sslmode=disable)", PostgresEnv)
	}
	schema := "t_" + randomHex(8)
	adminExec(tb, dsn, "CREATE SCHEMA "+schema)
	tb.Cleanup(func() { adminExec(tb, dsn, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	return withParam(tb, dsn, "search_path", schema)
}

// S3URL returns ARTIFACTSTORE_TEST_S3 with a fresh random prefix parameter
// (creating the bucket if it is missing). Everything under the prefix is
// deleted when tb ends.
func S3URL(tb testing.TB) string {
	tb.Helper()
	cfg := s3Config(tb)
	prefix := newPrefix(tb, cfg)
	u, err := url.Parse(os.Getenv(S3Env))
	if err != nil {
		tb.Fatalf("testbackend: %s: %v", S3Env, err)
	}
	q := u.Query()
	q.Set("prefix", prefix)
	u.RawQuery = q.Encode()
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// withParam returns dsn with a connection parameter set, in the URL or the
// keyword/value form.
func withParam(tb testing.TB, dsn, key, value string) string {
	tb.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("testbackend: parse %s: %v", PostgresEnv, err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value // the names used here need no quoting
}

// adminExec runs statements on a connection of its own.
func adminExec(tb testing.TB, dsn string, stmts ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("testbackend: connect to %s: %v", PostgresEnv, err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			tb.Fatalf("testbackend: %s: %v", s, err)
		}
	}
}

// s3Config parses ARTIFACTSTORE_TEST_S3 and makes sure its bucket exists.
func s3Config(tb testing.TB) s3blob.Config {
	tb.Helper()
	raw := os.Getenv(S3Env)
	if raw == "" {
		tb.Fatalf("testbackend: %s is not set (s3://bucket?endpoint=http://host:port&region=..., with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", S3Env)
	}
	cfg, err := s3blob.ParseURL(raw)
	if err != nil {
		tb.Fatalf("testbackend: %s: %v", S3Env, err)
	}
	ensureBucket(tb, cfg)
	return cfg
}

var buckets struct {
	sync.Mutex
	made map[string]bool
}

func ensureBucket(tb testing.TB, cfg s3blob.Config) {
	tb.Helper()
	buckets.Lock()
	defer buckets.Unlock()
	key := cfg.Endpoint + "\x00" + cfg.Bucket
	if buckets.made[key] {
		return
	}
	c := s3Client(tb, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		tb.Fatalf("testbackend: checking bucket %s: %v", cfg.Bucket, err)
	}
	if !ok {
		err := c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
		if code := minio.ToErrorResponse(err).Code; err != nil && code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
			tb.Fatalf("testbackend: creating bucket %s: %v", cfg.Bucket, err)
		}
	}
	if buckets.made == nil {
		buckets.made = map[string]bool{}
	}
	buckets.made[key] = true
}

func s3Client(tb testing.TB, cfg s3blob.Config) *minio.Client {
	tb.Helper()
	eu, err := url.Parse(cfg.Endpoint)
	if err != nil {
		tb.Fatalf("testbackend: S3 endpoint: %v", err)
	}
	c, err := minio.New(eu.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       eu.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		tb.Fatalf("testbackend: S3 client: %v", err)
	}
	return c
}

// newPrefix returns a fresh key prefix under cfg.Prefix and empties it when
// tb ends: objects and incomplete multipart uploads.
func newPrefix(tb testing.TB, cfg s3blob.Config) string {
	tb.Helper()
	base := cfg.Prefix
	if base != "" && !strings.HasSuffix(base, "/") {
		base += "/"
	}
	prefix := base + "testbackend-" + randomHex(6) + "/"
	tb.Cleanup(func() {
		c := s3Client(tb, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var errs []string
		for obj := range c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if obj.Err != nil {
				errs = append(errs, obj.Err.Error())
				break
			}
			if err := c.RemoveObject(ctx, cfg.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
				errs = append(errs, err.Error())
			}
		}
		core := minio.Core{Client: c}
		for up := range c.ListIncompleteUploads(ctx, cfg.Bucket, prefix, true) {
			if up.Err == nil {
				_ = core.AbortMultipartUpload(ctx, cfg.Bucket, up.Key, up.UploadID)
			}
		}
		if len(errs) > 0 {
			tb.Logf("testbackend: emptying s3://%s/%s: %s", cfg.Bucket, prefix, fmt.Sprint(errs))
		}
	})
	return prefix
}
