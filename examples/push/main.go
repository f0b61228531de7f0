// Command push uses the Go client to push a directory as a package: every
// regular file under it, then finalize, printing the manifest digest.
//
//	go run ./examples/push -url http://127.0.0.1:8480 -token dev-token DIR
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/client"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8480", "server URL")
	token := flag.String("token", os.Getenv("ARTIFACTSTORE_TOKEN"), "bearer token")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: push [-url URL] [-token T] DIR")
	}
	if err := run(context.Background(), *url, *token, flag.Arg(0)); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, url, token, dir string) error {
	c, err := client.New(url, client.WithToken(token))
	if err != nil {
		return err
	}
	p, err := c.CreatePackage(ctx, artifactstore.NewPackage{Producer: "examples/push", Subject: filepath.Base(dir)})
	if err != nil {
		return err
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		// The file streams from disk to the server; nothing is buffered.
		file, err := c.PutFile(ctx, p.ID, filepath.ToSlash(rel), f, artifactstore.PutOptions{})
		if err != nil {
			return err
		}
		fmt.Printf("put %s %s\n", file.Path, file.Digest)
		return nil
	})
	if err != nil {
		return err
	}
	p, err = c.Finalize(ctx, p.ID)
	if err != nil {
		return err
	}
	fmt.Printf("package %s\nmanifest %s\n", p.ID, p.ManifestDigest)
	return nil
}
