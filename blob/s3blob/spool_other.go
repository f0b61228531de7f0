//go:build !linux

package s3blob

import "os"

// openUnnamed: O_TMPFILE is Linux's; elsewhere the spool file is named, then
// unlinked at once.
func openUnnamed(string) (*os.File, bool) { return nil, false }
