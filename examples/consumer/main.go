// Command consumer tails a tenant's events and downloads the files of every
// package that gets finalized, verifying each digest. It keeps its cursor in
// a file, so after a restart it resumes where it stopped: every package is
// fetched once, none is missed.
//
//	go run ./examples/consumer -url http://127.0.0.1:8480 -token dev-token -out ./mirror
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/client"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8480", "server URL")
	token := flag.String("token", os.Getenv("ARTIFACTSTORE_TOKEN"), "bearer token")
	out := flag.String("out", "./mirror", "where packages are downloaded (one directory per package) and the cursor kept")
	once := flag.Bool("once", false, "stop at the tail instead of waiting for more events")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *url, *token, *out, *once); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func run(ctx context.Context, url, token, out string, once bool) error {
	c, err := client.New(url, client.WithToken(token))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	cursorFile := filepath.Join(out, ".cursor")
	since := readCursor(cursorFile)
	for {
		wait := 30 * time.Second
		if once {
			wait = 0
		}
		page, err := c.Events(ctx, since, 100, wait)
		if err != nil {
			return err
		}
		for _, e := range page.Events {
			if e.Type == artifactstore.EventPackageFinalized {
				if err := mirror(ctx, c, e.PackageID, filepath.Join(out, e.PackageID)); err != nil {
					return err
				}
			}
			// The cursor moves only after the event is handled: a crash
			// here handles it again, never skips it.
			since = e.Seq
			if err := writeCursor(cursorFile, since); err != nil {
				return err
			}
		}
		if once && len(page.Events) == 0 {
			return nil
		}
	}
}

// mirror downloads every file of a package into dir, verifying digests.
func mirror(ctx context.Context, c *client.Client, id, dir string) error {
	q := artifactstore.FileQuery{Limit: artifactstore.MaxPageSize}
	n := 0
	for {
		page, err := c.ListFiles(ctx, id, q)
		if err != nil {
			return err
		}
		for _, f := range page.Files {
			dest := filepath.Join(dir, filepath.FromSlash(f.Path))
			if !filepath.IsLocal(filepath.FromSlash(f.Path)) {
				return fmt.Errorf("refusing path %q", f.Path)
			}
			if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
				return err
			}
			tmp := dest + ".partial"
			w, err := os.Create(tmp)
			if err != nil {
				return err
			}
			_, err = c.DownloadVerified(ctx, f.ID, w)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Rename(tmp, dest); err != nil {
				return err
			}
			n++
		}
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	fmt.Printf("mirrored package %s: %d files\n", id, n)
	return nil
}

func readCursor(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func writeCursor(path string, seq uint64) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
