package s3blob

import (
	"os"
	"testing"
)

// An append's spool file never has a name on Linux, so a process killed
// at any moment of an append leaves nothing in TMPDIR.
func TestSpoolFileHasNoName(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	f, done, err := spoolFile()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if _, err := f.WriteString("spooled bytes"); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("TMPDIR holds %d entries while a spool file is open, want none", len(left))
	}
	g, ok := openUnnamed(dir)
	if !ok {
		t.Fatalf("O_TMPFILE is not available in %s: spool files are named for a moment", dir)
	}
	g.Close()
}
