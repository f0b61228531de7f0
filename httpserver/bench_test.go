package httpserver_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/blob/fsblob"
	"github.com/artifactstore/artifactstore/catalog/sqlite"
	"github.com/artifactstore/artifactstore/httpserver"
)

// BenchmarkDownloadHandler measures the server's own work for a small
// ranged download (auth, catalog lookup, headers, logging, the middleware), in
// process and without the network, beside http.ServeContent of the same
// file: the CPU a download costs beyond serving bytes.
func BenchmarkDownloadHandler(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		dir := b.TempDir()
		blobs, err := fsblob.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		cat, err := sqlite.Open(context.Background(), dir+"/catalog.db", sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		st, err := artifactstore.Open(context.Background(), artifactstore.Options{Blobs: blobs, Catalog: cat, CleanupInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		srv, err := httpserver.New(st, httpserver.Config{Tokens: map[string]string{tokenAcme: "acme"}})
		if err != nil {
			b.Fatal(err)
		}
		p, err := st.CreatePackage(context.Background(), "acme", artifactstore.NewPackage{Producer: "p", Subject: "s"})
		if err != nil {
			b.Fatal(err)
		}
		f, err := st.PutFile(context.Background(), "acme", p.ID, "f.bin", bytes.NewReader(bytes.Repeat([]byte("x"), size)), artifactstore.PutOptions{})
		if err != nil {
			b.Fatal(err)
		}
		name := map[int]string{4 << 10: "4KiB", 64 << 10: "64KiB"}[size]
		b.Run(name+"/artifactstore", func(b *testing.B) {
			req := httptest.NewRequest("GET", "/files/"+f.ID+"/download", nil)
			req.Header.Set("Authorization", "Bearer "+tokenAcme)
			req.Header.Set("Range", "bytes=0-")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				srv.ServeHTTP(w, req)
				if w.Code != 206 || w.Body.Len() != size {
					b.Fatalf("%d, %d bytes", w.Code, w.Body.Len())
				}
			}
		})
		b.Run(name+"/servecontent", func(b *testing.B) {
			path := dir + "/blobs/sha256/" + f.Digest[7:9] + "/" + f.Digest[7:]
			req := httptest.NewRequest("GET", "/x", nil)
			req.Header.Set("Range", "bytes=0-")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				fh, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				http.ServeContent(w, req, "f.bin", time.Time{}, fh)
				fh.Close()
				if w.Code != 206 || w.Body.Len() != size {
					b.Fatalf("%d, %d bytes", w.Code, w.Body.Len())
				}
			}
		})
	}
}
