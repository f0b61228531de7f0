package artifactstore_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/embedded"
)

// The whole store in-process: create a package, put files, finalize it and
// read a file back.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "artifactstore-example")
	defer os.RemoveAll(dir)

	st, err := embedded.Open(ctx, dir, artifactstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	p, err := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{
		Producer: "ci", Subject: "svc-a", Metadata: map[string]string{"git.sha": "abc123"},
	})
	if err != nil {
		log.Fatal(err)
	}
	f, err := st.PutFile(ctx, "acme", p.ID, "bin/app", strings.NewReader("hello"), artifactstore.PutOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f.Path, f.Size, f.Digest)

	p, err = st.Finalize(ctx, "acme", p.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.State, p.FileCount, strings.HasPrefix(p.ManifestDigest, "sha256:"))

	_, r, err := st.OpenFile(ctx, "acme", f.ID)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	fmt.Println(string(b))
	// Output:
	// bin/app 5 sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
	// finalized 1 true
	// hello
}

// Errors carry a kind that means the same in-process and over HTTP.
func ExampleKindOf() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "artifactstore-example")
	defer os.RemoveAll(dir)
	st, err := embedded.Open(ctx, dir, artifactstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	p, _ := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{Producer: "ci", Subject: "svc-a"})
	_, err = st.PutFile(ctx, "acme", p.ID, "../escape", strings.NewReader("x"), artifactstore.PutOptions{})
	fmt.Println(artifactstore.KindOf(err))
	_, err = st.GetPackage(ctx, "globex", p.ID)
	fmt.Println(artifactstore.KindOf(err))
	// Output:
	// validation
	// not-found
}

// Waiting for events without polling: WaitEvents returns as soon as a change
// commits.
func ExampleStore_WaitEvents() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "artifactstore-example")
	defer os.RemoveAll(dir)
	st, err := embedded.Open(ctx, dir, artifactstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	done := make(chan artifactstore.EventPage)
	go func() {
		page, _ := st.WaitEvents(ctx, "acme", 0, 10, artifactstore.DefaultEventWait)
		done <- page
	}()
	st.CreatePackage(ctx, "acme", artifactstore.NewPackage{Producer: "ci", Subject: "svc-a"})
	page := <-done
	fmt.Println(page.Events[0].Seq, page.Events[0].Type, page.Next)
	// Output:
	// 1 package.created 1
}
