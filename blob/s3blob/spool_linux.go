package s3blob

import (
	"os"

	"golang.org/x/sys/unix"
)

// openUnnamed opens a file in dir that has no name at all (O_TMPFILE), so a
// process killed at any moment leaves nothing behind; ok is false where the
// file system does not support it.
func openUnnamed(dir string) (f *os.File, ok bool) {
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false
	}
	return f, true
}
