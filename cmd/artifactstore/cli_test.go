package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// run calls Main in-process, as a user would call the binary.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// tree writes files (path → content) under a new directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// snapshot reads every regular file under dir (relative slash path →
// content), skipping nothing.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	return got
}

func field(out, name string) string {
	for line := range strings.SplitSeq(out, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func TestPushManifestPull(t *testing.T) {
	srv := startServer(t, t.TempDir())
	big := strings.Repeat("large file content ", 200_000) // ~3.8 MB: an upload session
	files := map[string]string{
		"README.md":                 "# hello\n",
		"bin/app":                   "binary",
		"empty":                     "",
		"deep/a/b/c/d.txt":          "deep",
		"with space/a file.txt":     "spaces",
		"日本語/ファイル.txt":              "こんにちは",
		"ü/ß.bin":                   "umlaut",
		"big/blob.bin":              big,
		".hidden":                   "dotfile",
		"dir/empty-too":             "",
		"dir/nested/more/file.json": `{"a":1}`,
	}
	dir := tree(t, files)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	common := []string{"--url", srv.url, "--token", "secret"}

	code, out, errOut := run(t, append([]string{"push", "--producer", "ci", "--subject", "svc", "--meta", "git.sha=abc",
		"--resumable-over", "1048576", "--chunk-size", "1048576", "--state-dir", state}, append(common, dir)...)...)
	if code != 0 {
		t.Fatalf("push: exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "skipping symlink escape") {
		t.Errorf("the symlink was not reported: %q", errOut)
	}
	id, digest := field(out, "package"), field(out, "manifest")
	if id == "" || !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("push printed %q", out)
	}
	if left, _ := os.ReadDir(state); len(left) != 0 {
		t.Errorf("a finished push left state behind: %v", left)
	}

	// manifest: the bytes exactly as served.
	code, js, errOut := run(t, append([]string{"manifest"}, append(common, id)...)...)
	if code != 0 {
		t.Fatalf("manifest: %s", errOut)
	}
	res := srv.request(t, "GET", "/packages/"+id+"/manifest.json", nil)
	served, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if js != string(served) {
		t.Errorf("manifest prints other bytes than the server serves")
	}
	code, cb, _ := run(t, append([]string{"manifest", "--cbor"}, append(common, id)...)...)
	sum := sha256.Sum256([]byte(cb))
	if code != 0 || "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Errorf("manifest --cbor does not hash to the manifest digest")
	}

	// pull reproduces the tree byte for byte (without the symlink).
	dest := filepath.Join(t.TempDir(), "out")
	code, out, errOut = run(t, append([]string{"pull"}, append(common, id, dest)...)...)
	if code != 0 {
		t.Fatalf("pull: %s", errOut)
	}
	got := snapshot(t, dest)
	if len(got) != len(files) {
		t.Errorf("pulled %d files, want %d", len(got), len(files))
	}
	for p, c := range files {
		if got[p] != c {
			t.Errorf("pulled %s differs", p)
		}
	}
	// A second pull keeps what is there; a partial file is resumed.
	partial := filepath.Join(dest, "big", "blob.bin")
	os.Remove(partial)
	os.WriteFile(partial+".partial", []byte(big[:1000]), 0o644)
	if code, _, errOut = run(t, append([]string{"pull"}, append(common, id, dest)...)...); code != 0 {
		t.Fatalf("second pull: %s", errOut)
	}
	if b, _ := os.ReadFile(partial); string(b) != big {
		t.Error("the resumed file differs")
	}
	if _, err := os.Stat(partial + ".partial"); err == nil {
		t.Error("the partial file was left behind")
	}

	// ls finds it by metadata; --json prints the package.
	code, out, _ = run(t, append([]string{"ls", "--meta", "git.sha=abc"}, common...)...)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "finalized") {
		t.Errorf("ls: %d %q", code, out)
	}
	code, out, _ = run(t, append([]string{"ls", "--json", "--meta", "git.sha=other"}, common...)...)
	if code != 0 || strings.TrimSpace(out) != "" {
		t.Errorf("ls with no match: %d %q", code, out)
	}
	// events prints one JSON line per event.
	code, out, _ = run(t, append([]string{"events"}, common...)...)
	if lines := strings.Count(out, "\n"); code != 0 || lines != 2+len(files) {
		t.Errorf("events: %d lines, want %d: %s", lines, 2+len(files), out)
	}
}

// TestPushResumesAfterServerKill: the server dies mid-push; the same push,
// run again after a restart, finishes the same package without sending the
// finished files again.
func TestPushResumesAfterServerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a server process; skipped with -short")
	}
	data := t.TempDir()
	srv := startServer(t, data)
	files := map[string]string{}
	for i := range 8 {
		files[string(rune('a'+i))+".txt"] = strings.Repeat(string(rune('a'+i)), 1000*(i+1))
	}
	big := strings.Repeat("0123456789abcdef", 3<<20) // 48 MiB, sent last (sorted by name)
	files["zz-big.bin"] = big
	dir := tree(t, files)
	state := t.TempDir()
	args := []string{"push", "--producer", "ci", "--subject", "resume", "--parallel", "1",
		"--resumable-over", "1048576", "--chunk-size", "1048576", "--state-dir", state, "--url", srv.url, "--token", "secret", dir}

	done := make(chan int, 1)
	var errOut string
	go func() {
		code, _, e := run(t, args...)
		errOut = e
		done <- code
	}()
	// Kill the server once the big file's session is under way.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(state, mustOnlyEntry(t, state)))
		if strings.Contains(string(b), "zz-big.bin") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the push never reached the big file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	srv.cmd.Process.Signal(syscall.SIGKILL)
	srv.cmd.Wait()
	if code := <-done; code == 0 {
		t.Fatal("the push succeeded although its server was killed")
	}
	if n := strings.Count(strings.TrimSpace(errOut), "\n"); n != 0 && !strings.Contains(errOut, "pushed") {
		t.Errorf("the failure is not one line: %q", errOut)
	}

	// Restart on the same address and push again.
	again := startServerAt(t, data, strings.TrimPrefix(srv.url, "http://"))
	code, out, errOut := run(t, args...)
	if code != 0 {
		t.Fatalf("second push: %s", errOut)
	}
	if !strings.Contains(errOut, "continuing the interrupted push") || !strings.Contains(errOut, "8 file(s) already in the package") {
		t.Errorf("the second push did not continue: %q", errOut)
	}
	id := field(out, "package")
	pkg := again.json(t, "GET", "/packages/"+id, nil, 200)
	if pkg["state"] != "finalized" || pkg["file_count"] != float64(len(files)) {
		t.Fatalf("package after the resumed push: %v", pkg)
	}
	// Each file was added once.
	evs := again.json(t, "GET", "/events?wait=0&limit=1000", nil, 200, "Accept", "application/json")
	added := map[string]int{}
	for _, e := range evs["events"].([]any) {
		ev := e.(map[string]any)
		if ev["type"] == "file.added" {
			added[ev["data"].(map[string]any)["path"].(string)]++
		}
	}
	for p := range files {
		if added[p] != 1 {
			t.Errorf("%s added %d times", p, added[p])
		}
	}
	dest := t.TempDir()
	if code, _, errOut := run(t, "pull", "--url", again.url, "--token", "secret", id, dest); code != 0 {
		t.Fatalf("pull: %s", errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "zz-big.bin")); string(b) != big {
		t.Error("the resumed big file differs")
	}
}

func mustOnlyEntry(t *testing.T, dir string) string {
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".json") {
			return e.Name()
		}
	}
	return "none"
}

func TestCLIErrors(t *testing.T) {
	srv := startServer(t, t.TempDir())
	dir := tree(t, map[string]string{"a": "a"})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad token", []string{"push", "--producer", "p", "--subject", "s", "--url", srv.url, "--token", "wrong", dir}, "unauthorized"},
		{"unreachable server", []string{"ls", "--url", "http://127.0.0.1:1"}, "cannot reach the server"},
		{"missing directory", []string{"push", "--producer", "p", "--subject", "s", "--url", srv.url, "--token", "secret", filepath.Join(dir, "nope")}, "no such file or directory"},
		{"unknown package", []string{"manifest", "--url", srv.url, "--token", "secret", "01JDX0000000000000000000ZZ"}, "not-found"},
		{"malformed package id", []string{"pull", "--url", srv.url, "--token", "secret", "nope", t.TempDir()}, "validation"},
		{"no producer", []string{"push", "--url", srv.url, dir}, "--producer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(t, tc.args...)
			if code == 0 {
				t.Fatal("exit status 0")
			}
			line := strings.TrimSuffix(errOut, "\n")
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "artifactstore: ") || !strings.Contains(line, tc.want) {
				t.Errorf("stderr %q: want one line mentioning %q", errOut, tc.want)
			}
			if strings.Contains(errOut, "goroutine ") || strings.Contains(errOut, "panic") {
				t.Errorf("a stack trace: %q", errOut)
			}
		})
	}
}
