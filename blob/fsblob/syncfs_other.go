//go:build !linux

package fsblob

// syncfs(2) is Linux's: elsewhere every round syncs each waiter on its own,
// as the store did before group syncs.
func syncfs(int) error { return errNoGroupSync }
