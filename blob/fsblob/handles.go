package fsblob

import (
	"container/list"
	"io"
	"os"
	"sync"
)

// maxIdleHandles bounds the read handles kept open between reads.
const maxIdleHandles = 128

// handles keeps the read handles of recently read blobs open between reads,
// so a blob read again (a hot file downloaded in ranges, a small file many
// clients fetch) costs one lseek instead of an open, an fstat and a close:
// about a fifth of the server's work for a small download. A blob is
// immutable while it has its name, so any handle of it reads the right
// bytes; a delete drops the blob's idle handles, and a handle checked out
// before a delete is closed, not kept, when it comes back.
type handles struct {
	mu   sync.Mutex
	lru  list.List                  // of *handle, most recently returned first
	idle map[string][]*list.Element // blob file name → its idle handles
	gen  uint64                     // bumped by every drop
}

type handle struct {
	path string
	f    *os.File
	size int64
}

// get takes an idle handle of the blob at path, positioned at the start, or
// reports none. gen is to be passed back to put.
func (h *handles) get(path string) (f *os.File, size int64, gen uint64) {
	h.mu.Lock()
	gen = h.gen
	els := h.idle[path]
	if len(els) == 0 {
		h.mu.Unlock()
		return nil, 0, gen
	}
	e := els[len(els)-1]
	h.forget(path, els)
	hd := h.lru.Remove(e).(*handle)
	h.mu.Unlock()
	if _, err := hd.f.Seek(0, io.SeekStart); err != nil {
		hd.f.Close()
		return nil, 0, gen
	}
	return hd.f, hd.size, gen
}

// forget drops the last of path's idle elements from the index; h.mu is
// held.
func (h *handles) forget(path string, els []*list.Element) {
	if len(els) == 1 {
		delete(h.idle, path)
	} else {
		els[len(els)-1] = nil
		h.idle[path] = els[:len(els)-1]
	}
}

// put keeps f, a handle of the blob at path taken at gen, for the next read,
// closing the least recently used handle beyond maxIdleHandles. A handle
// taken before a drop is closed instead.
func (h *handles) put(path string, f *os.File, size int64, gen uint64) {
	h.mu.Lock()
	if gen != h.gen {
		h.mu.Unlock()
		f.Close()
		return
	}
	if h.idle == nil {
		h.idle = map[string][]*list.Element{}
	}
	h.idle[path] = append(h.idle[path], h.lru.PushFront(&handle{path: path, f: f, size: size}))
	var evict *handle
	if h.lru.Len() > maxIdleHandles {
		evict = h.lru.Remove(h.lru.Back()).(*handle)
		els := h.idle[evict.path]
		// The least recently returned handle of a blob is its first.
		if len(els) == 1 {
			delete(h.idle, evict.path)
		} else {
			els[0] = nil
			h.idle[evict.path] = els[1:]
		}
	}
	h.mu.Unlock()
	if evict != nil {
		evict.f.Close()
	}
}

// drop closes the idle handles of the blob at path and makes handles
// checked out now be closed when they come back; an empty path drops every
// handle.
func (h *handles) drop(path string) {
	h.mu.Lock()
	h.gen++
	var closing []*os.File
	for p, els := range h.idle {
		if path == "" || p == path {
			for _, e := range els {
				closing = append(closing, h.lru.Remove(e).(*handle).f)
			}
			delete(h.idle, p)
		}
	}
	h.mu.Unlock()
	for _, f := range closing {
		f.Close()
	}
}

// idleCount reports the idle handles, for tests.
func (h *handles) idleCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lru.Len()
}

// generation is the current drop generation, for a handle about to be
// opened.
func (h *handles) generation() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}
