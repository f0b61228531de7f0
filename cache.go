package artifactstore

import "sync"

// recent keeps the most recently put values of records that never change
// once written (a file; a finalized package), so lookups can spare the
// catalog a query. It holds at most limit entries and forgets the oldest
// first; nothing is allocated up front, so an idle server stays small.
type recent[V any] struct {
	mu    sync.Mutex
	m     map[string]V
	ring  []string
	next  int
	limit int
}

// fileCacheSize bounds the file cache to a few MiB (a record is some 250
// bytes).
const fileCacheSize = 1 << 14

// packageCacheSize bounds the package-state hints (some 100 bytes each).
const packageCacheSize = 1 << 12

func newRecent[V any](limit int) *recent[V] {
	return &recent[V]{m: map[string]V{}, limit: limit}
}

func (c *recent[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v, ok
}

// put records v under key; a key already present gets the new value.
func (c *recent[V]) put(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok {
		if len(c.ring) < c.limit {
			c.ring = append(c.ring, key)
		} else {
			delete(c.m, c.ring[c.next])
			c.ring[c.next] = key
			c.next = (c.next + 1) % c.limit
		}
	}
	c.m[key] = v
}
