// Command inprocess runs artifactstore inside a Go program: it opens the
// embedded store in a data directory, creates a package, puts files,
// finalizes it and prints the manifest digest.
//
//	go run ./examples/inprocess [-data DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/embedded"
)

func main() {
	data := flag.String("data", "", "data directory (default: a temporary one, removed at exit)")
	flag.Parse()
	if err := run(context.Background(), *data); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dir string) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "artifactstore-inprocess")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	st, err := embedded.Open(ctx, dir, artifactstore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	p, err := st.CreatePackage(ctx, "example", artifactstore.NewPackage{
		Producer: "examples/inprocess",
		Subject:  "hello",
		Metadata: map[string]string{"git.sha": "0000000"},
	})
	if err != nil {
		return err
	}
	for path, content := range map[string]string{
		"README.md":  "# hello\n",
		"bin/hello":  "#!/bin/sh\necho hello\n",
		"data/empty": "",
	} {
		f, err := st.PutFile(ctx, "example", p.ID, path, strings.NewReader(content), artifactstore.PutOptions{})
		if err != nil {
			return err
		}
		fmt.Printf("put %-12s %6d bytes  %s\n", f.Path, f.Size, f.Digest)
	}
	p, err = st.Finalize(ctx, "example", p.ID)
	if err != nil {
		return err
	}
	m, err := st.Manifest(ctx, "example", p.ID)
	if err != nil {
		return err
	}
	fmt.Printf("package %s finalized: %d files, %d bytes\n", p.ID, p.FileCount, p.TotalSize)
	fmt.Printf("manifest %s (%d bytes CBOR, %d bytes JSON)\n", p.ManifestDigest, len(m.CBOR), len(m.JSON))
	return nil
}
