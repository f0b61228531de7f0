package artifactstore

import "testing"

func TestFileCacheEvictsOldest(t *testing.T) {
	c := newFileCache(2)
	for _, id := range []string{"a", "b", "c"} {
		c.put(File{ID: id, Tenant: "t"})
	}
	if _, ok := c.get("a"); ok {
		t.Error("the oldest entry survived past the limit")
	}
	for _, id := range []string{"b", "c"} {
		if f, ok := c.get(id); !ok || f.ID != id {
			t.Errorf("entry %s lost", id)
		}
	}
	c.put(File{ID: "c", Tenant: "t"}) // again: no second slot
	c.put(File{ID: "d", Tenant: "t"})
	if _, ok := c.get("c"); !ok {
		t.Error("a repeated put took a second slot and evicted its own entry")
	}
	if len(c.m) != 2 {
		t.Errorf("%d entries, limit 2", len(c.m))
	}
}
