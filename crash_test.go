package artifactstore_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/embedded"
)

const crashChildEnv = "ARTIFACTSTORE_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild writes to the store in dir until it is killed, printing one
// line per acknowledged operation:
//
//	P <package id>
//	F <file id> <package id> <sha256 hex> <size>
//	Z <package id> <manifest digest>
func crashChild(dir string) {
	ctx := context.Background()
	st, err := embedded.Open(ctx, dir, artifactstore.Options{CleanupInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := os.Stdout // unbuffered: a printed line is an acknowledgement
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed))
	for n := 0; ; n++ {
		p, err := st.CreatePackage(ctx, "acme", artifactstore.NewPackage{Producer: "crash", Subject: "test"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintf(out, "P %s\n", p.ID)
		for i := range 1 + rng.IntN(4) {
			content := make([]byte, rng.IntN(256<<10))
			for j := range content {
				content[j] = byte(rng.Uint32())
			}
			sum := sha256.Sum256(content)
			path := fmt.Sprintf("f/%d", i)
			var f artifactstore.File
			if i%2 == 0 {
				f, err = st.PutFile(ctx, "acme", p.ID, path, bytes.NewReader(content), artifactstore.PutOptions{})
			} else {
				f, err = putViaUpload(ctx, st, p.ID, path, content)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			fmt.Fprintf(out, "F %s %s %s %d\n", f.ID, p.ID, hex.EncodeToString(sum[:]), len(content))
		}
		if n%2 == 0 {
			fp, err := st.Finalize(ctx, "acme", p.ID)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			fmt.Fprintf(out, "Z %s %s\n", p.ID, fp.ManifestDigest)
		}
	}
}

func putViaUpload(ctx context.Context, st *artifactstore.Store, pkg, path string, content []byte) (artifactstore.File, error) {
	u, err := st.CreateUpload(ctx, "acme", artifactstore.NewUpload{})
	if err != nil {
		return artifactstore.File{}, err
	}
	half := len(content) / 2
	for _, part := range [][]byte{content[:half], content[half:]} {
		if _, err := st.AppendUpload(ctx, "acme", u.ID, artifactstore.AtCurrentOffset, bytes.NewReader(part)); err != nil {
			return artifactstore.File{}, err
		}
	}
	return st.CompleteUpload(ctx, "acme", u.ID, artifactstore.CompleteUploadRequest{PackageID: pkg, Path: path})
}

type acked struct {
	packages  map[string]bool
	files     map[string][2]string // file ID → package ID, sha256 hex
	sizes     map[string]int64
	finalized map[string]string // package ID → manifest digest
}

// TestCrashRecovery kills a writing child process with SIGKILL several
// times, reopening the store in between, and checks that every acknowledged
// write survived intact, that nothing half-written is visible, that the event
// log has exactly one event per change with no gap, and that temp files are
// cleaned up on open.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	dir := t.TempDir()
	a := acked{packages: map[string]bool{}, files: map[string][2]string{}, sizes: map[string]int64{}, finalized: map[string]string{}}
	for round := range 4 {
		runAndKill(t, dir, &a, time.Duration(300+200*round)*time.Millisecond)
	}
	if len(a.files) < 10 || len(a.finalized) < 3 {
		t.Fatalf("the children acknowledged only %d files and %d finalizes; too few to mean anything", len(a.files), len(a.finalized))
	}
	t.Logf("acknowledged: %d packages, %d files, %d finalized", len(a.packages), len(a.files), len(a.finalized))

	// Leave a stray temp file as a crash mid-write would; Open removes it.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "stray-partial"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := mustOpen(t, dir, artifactstore.Options{})
	ctx := context.Background()
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("%d temp files left after open", len(left))
	}
	for id := range a.packages {
		if _, err := st.GetPackage(ctx, "acme", id); err != nil {
			t.Errorf("acknowledged package %s: %v", id, err)
		}
	}
	for id, pf := range a.files {
		f, err := st.GetFile(ctx, "acme", id)
		if err != nil {
			t.Errorf("acknowledged file %s: %v", id, err)
			continue
		}
		b := readAll(t, st, "acme", id)
		if sha(b) != "sha256:"+pf[1] || f.PackageID != pf[0] || int64(len(b)) != a.sizes[id] {
			t.Errorf("acknowledged file %s reads %d bytes hashing to %s", id, len(b), sha(b))
		}
	}
	for id, d := range a.finalized {
		mb, err := st.Manifest(ctx, "acme", id)
		if err != nil || mb.Package.ManifestDigest != d || sha(mb.CBOR) != d {
			t.Errorf("acknowledged finalize of %s: %v, %v", id, mb.Package.ManifestDigest, err)
		}
	}

	// Every visible change has exactly one event and every event a change.
	changes := map[string]bool{}
	var files int
	q := artifactstore.PackageQuery{Limit: 1000}
	for {
		page, err := st.ListPackages(ctx, "acme", q)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Packages {
			changes["package.created "+p.ID] = true
			if p.State == artifactstore.StateFinalized {
				changes["package.finalized "+p.ID] = true
			}
			fp, err := st.ListFiles(ctx, "acme", p.ID, artifactstore.FileQuery{Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fp.Files {
				changes["file.added "+f.ID] = true
				files++
				// Visible files are whole: their bytes hash to their digest.
				if b := readAll(t, st, "acme", f.ID); sha(b) != f.Digest {
					t.Errorf("visible file %s is not intact", f.ID)
				}
			}
			if int64(len(fp.Files)) != p.FileCount {
				t.Errorf("package %s lists %d files, counts %d", p.ID, len(fp.Files), p.FileCount)
			}
		}
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	evs := allEvents(t, st, "acme")
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		key := e.Type + " " + e.PackageID
		if e.Type == artifactstore.EventFileAdded {
			key = e.Type + " " + e.FileID
		}
		if !changes[key] {
			t.Errorf("event %d (%s) has no change, or repeats one", e.Seq, key)
		}
		delete(changes, key)
	}
	for c := range changes {
		t.Errorf("change %s has no event", c)
	}
	t.Logf("visible after the crashes: %d files, %d events", files, len(evs))
}

func runAndKill(t *testing.T, dir string, a *acked, after time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timer := time.NewTimer(after)
	killed := false
	for line := range lines {
		if !killed {
			select {
			case <-timer.C:
				// Kill mid-stream; lines already printed are still read.
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			default:
			}
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "P":
			a.packages[f[1]] = true
		case len(f) == 5 && f[0] == "F":
			a.files[f[1]] = [2]string{f[2], f[3]}
			n, _ := strconv.ParseInt(f[4], 10, 64)
			a.sizes[f[1]] = n
		case len(f) == 3 && f[0] == "Z":
			a.finalized[f[1]] = f[2]
		default:
			t.Fatalf("child printed %q", line)
		}
	}
	if !killed {
		cmd.Process.Signal(syscall.SIGKILL)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child ended by itself (%v): %s", err, stderr.String())
	}
}
