package artifactstore_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/artifactstore/artifactstore"
)

// patternReader yields n bytes of a fixed pattern without holding them in
// memory, so the benchmark's own memory does not grow with the size.
type patternReader struct{ left int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for i := range p {
		p[i] = byte(i*31 + 7)
	}
	r.left -= int64(len(p))
	return len(p), nil
}

var benchSizes = []struct {
	name string
	size int64
}{
	{"1MiB", 1 << 20},
	{"64MiB", 64 << 20},
	{"256MiB", 256 << 20},
	{"1GiB", 1 << 30},
}

// BenchmarkPutFile stores files of several sizes, each size beside its
// physical baseline measured in the same run ("baseline": SHA-256 of the
// bytes plus writing them to a temp file through the same buffer size, fsync,
// rename, directory fsync). B/op must stay flat as the size doubles.
func BenchmarkPutFile(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name+"/baseline", func(b *testing.B) { benchBaseline(b, sz.size) })
		b.Run(sz.name+"/store", func(b *testing.B) {
			st := mustOpen(b, "", artifactstore.Options{})
			p := mustPackage(b, st, "bench", nil)
			b.SetBytes(sz.size)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				// Distinct content per op, so nothing is deduplicated.
				r := io.MultiReader(&patternReader{left: sz.size - 8}, intReader(i))
				if _, err := st.PutFile(context.Background(), "bench", p.ID, fmt.Sprintf("f%d", i), r, artifactstore.PutOptions{}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func intReader(i int) io.Reader {
	var buf [8]byte
	for j := range buf {
		buf[j] = byte(i >> (8 * j))
	}
	return &sliceReader{b: buf[:]}
}

type sliceReader struct{ b []byte }

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

func benchBaseline(b *testing.B, size int64) {
	dir := b.TempDir()
	b.SetBytes(size)
	b.ReportAllocs()
	buf := make([]byte, 1<<20)
	i := 0
	for b.Loop() {
		h := sha256.New()
		f, err := os.CreateTemp(dir, "tmp")
		if err != nil {
			b.Fatal(err)
		}
		r := io.MultiReader(&patternReader{left: size - 8}, intReader(i))
		if _, err := io.CopyBuffer(io.MultiWriter(f, h), r, buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := os.Rename(f.Name(), filepath.Join(dir, fmt.Sprintf("%x", h.Sum(nil)))); err != nil {
			b.Fatal(err)
		}
		d, _ := os.Open(dir)
		d.Sync()
		d.Close()
		i++
	}
}

// BenchmarkPutSmallFiles puts 4 KiB files from 8 goroutines; the baseline is
// BenchmarkPutSmallFilesBaseline (hash, write, fsync, rename, directory fsync
// per file, from 8 goroutines).
func BenchmarkPutSmallFiles(b *testing.B) {
	st := mustOpen(b, "", artifactstore.Options{})
	p := mustPackage(b, st, "bench", nil)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.SetParallelism(8 / runtime.GOMAXPROCS(0))
	var n int64
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			<-mu
			i := n
			n++
			mu <- struct{}{}
			r := io.MultiReader(&patternReader{left: 4096 - 8}, intReader(int(i)))
			if _, err := st.PutFile(context.Background(), "bench", p.ID, fmt.Sprintf("s/%d", i), r, artifactstore.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	tx, writes := st.cat.Batching()
	b.ReportMetric(float64(writes)/float64(tx), "writes/tx")
}

func BenchmarkPutSmallFilesBaseline(b *testing.B) {
	dir := b.TempDir()
	b.SetBytes(4096)
	var n int64
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	b.SetParallelism(8 / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			<-mu
			i := n
			n++
			mu <- struct{}{}
			(&patternReader{left: 4096}).Read(buf)
			h := sha256.Sum256(buf)
			f, err := os.CreateTemp(dir, "tmp")
			if err != nil {
				b.Fatal(err)
			}
			f.Write(buf)
			f.Sync()
			f.Close()
			os.Rename(f.Name(), filepath.Join(dir, fmt.Sprintf("%x-%d", h, i)))
			d, _ := os.Open(dir)
			d.Sync()
			d.Close()
		}
	})
}

// BenchmarkFinalize10000 finalizes a package of 10,000 files (the manifest is
// built inside the finalizing transaction).
func BenchmarkFinalize10000(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		st := mustOpen(b, "", artifactstore.Options{})
		p := mustPackage(b, st, "bench", nil)
		for i := range 10_000 {
			r := intReader(i)
			if _, err := st.PutFile(ctx, "bench", p.ID, fmt.Sprintf("dir%d/file%d", i%100, i), r, artifactstore.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		fp, err := st.Finalize(ctx, "bench", p.ID)
		if err != nil || fp.FileCount != 10_000 {
			b.Fatal(fp, err)
		}
	}
}
