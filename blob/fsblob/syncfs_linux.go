package fsblob

import "golang.org/x/sys/unix"

// syncfs flushes the file system that holds the open file fd.
func syncfs(fd int) error { return unix.Syncfs(fd) }
