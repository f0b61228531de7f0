package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/client"
)

type pullConfig struct {
	clientConfig
	parallel int
}

func pullCommand(stdout, stderr io.Writer) *ffcli.Command {
	var cfg pullConfig
	fs := newFlagSet("pull", stderr)
	cfg.register(fs)
	fs.IntVar(&cfg.parallel, "parallel", 4, "files downloaded at once")
	return &ffcli.Command{
		Name:       "pull",
		ShortUsage: "artifactstore pull [flags] ID DIR",
		ShortHelp:  "download every file of a package into DIR, verifying each digest",
		LongHelp: "Files already in DIR with the right digest are kept; a partial download\n" +
			"(DIR/<path>.partial) is resumed with a Range request.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 2 {
				return usagef("pull takes a package id and a directory")
			}
			return pull(ctx, cfg, args[0], args[1], stdout, stderr)
		},
	}
}

// partialSuffix marks a file whose download is in progress.
const partialSuffix = ".partial"

func pull(ctx context.Context, cfg pullConfig, id, dir string, stdout, stderr io.Writer) error {
	c, err := cfg.client()
	if err != nil {
		return err
	}
	var files []artifactstore.File
	q := artifactstore.FileQuery{Limit: artifactstore.MaxPageSize}
	for {
		page, err := c.ListFiles(ctx, id, q)
		if err != nil {
			return err
		}
		files = append(files, page.Files...)
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	for _, f := range files {
		// The server validates paths; a client still never writes outside DIR.
		if !filepath.IsLocal(filepath.FromSlash(f.Path)) {
			return fmt.Errorf("refusing to write %q outside %s", f.Path, dir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	work := make(chan artifactstore.File)
	var (
		mu       sync.Mutex
		failures []error
		bytes    int64
		wg       sync.WaitGroup
	)
	for range max(cfg.parallel, 1) {
		wg.Go(func() {
			for f := range work {
				err := pullOne(ctx, c, dir, f)
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Errorf("%s: %s", f.Path, describe(err)))
				} else {
					bytes += f.Size
				}
				mu.Unlock()
			}
		})
	}
	for _, f := range files {
		work <- f
	}
	close(work)
	wg.Wait()
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d file(s) not pulled (run the same pull again to resume): %w", len(failures), len(files), failures[0])
	}
	fmt.Fprintf(stdout, "pulled %d files (%d bytes) into %s\n", len(files), bytes, dir)
	return nil
}

// pullOne brings one file into dir: kept when it is there already,
// resumed from a partial download, fetched otherwise; the digest is checked
// before the file takes its name.
func pullOne(ctx context.Context, c *client.Client, dir string, f artifactstore.File) error {
	dest := filepath.Join(dir, filepath.FromSlash(f.Path))
	if d, err := fileDigest(dest); err == nil && d == f.Digest {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	part := dest + partialSuffix
	out, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	h := sha256.New()
	have, err := io.Copy(h, out) // hash what an earlier pull left
	if err != nil {
		return err
	}
	if have > f.Size {
		if err := restart(out, &h); err != nil {
			return err
		}
		have = 0
	}
	if have < f.Size {
		dl, err := c.Download(ctx, f.ID, client.DownloadOptions{Offset: have})
		if err != nil {
			return err
		}
		_, err = io.Copy(io.MultiWriter(out, h), dl.Body)
		dl.Body.Close()
		if err != nil {
			return err // the partial file stays for the next pull
		}
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != f.Digest {
		restart(out, &h)
		return &artifactstore.Error{Kind: artifactstore.DigestMismatch, Detail: fmt.Sprintf("downloaded bytes hash to %s, the manifest says %s", got, f.Digest)}
	}
	if err := out.Sync(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(part, dest)
}

// restart empties a partial file and its hash.
func restart(f *os.File, h *hash.Hash) error {
	*h = sha256.New()
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}
