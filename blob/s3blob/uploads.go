package s3blob

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/minio/minio-go/v7"

	"github.com/artifactstore/artifactstore/blob"
)

// Upload sessions keep no state outside the bucket, so any replica can
// continue any session. Each Append stores its bytes as one chunk object,
// uploads/<id>/<offset>, named by where it starts (20 digits, so that keys
// sort by offset). A chunk ends where the next one starts: an Append at an
// offset inside an earlier chunk (the catalog acknowledged fewer bytes than
// reached the bucket) truncates that chunk logically, since S3 cannot
// truncate an object. The upload's length is the last chunk's end.

const (
	offsetWidth = 20 // digits of an int64
)

// Uploads returns the upload staging area under uploads/.
func (s *Store) Uploads() blob.Uploads { return (*uploads)(s) }

type uploads Store

func validID(id string) error {
	if err := blob.CheckUploadID(id); err != nil {
		return fmt.Errorf("s3blob: %w", err)
	}
	return nil
}

func (u *uploads) uploadsPrefix() string { return u.prefix + "uploads/" }

func (u *uploads) chunkPrefix(id string) string { return u.uploadsPrefix() + id + "/" }

func (u *uploads) chunkKey(id string, offset int64) string {
	return fmt.Sprintf("%s%0*d", u.chunkPrefix(id), offsetWidth, offset)
}

// chunk is one Append's object.
type chunk struct {
	key         string
	start, size int64
}

// chunks lists an upload's chunks in offset order.
func (u *uploads) chunks(ctx context.Context, id string) ([]chunk, error) {
	prefix := u.chunkPrefix(id)
	var cs []chunk
	for obj, err := range (*Store)(u).list(ctx, prefix, true) {
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(obj.Key, prefix)
		start, err := strconv.ParseInt(name, 10, 64)
		if len(name) != offsetWidth || err != nil || start < 0 {
			continue
		}
		cs = append(cs, chunk{key: obj.Key, start: start, size: obj.Size})
	}
	slices.SortFunc(cs, func(a, b chunk) int { return cmp.Compare(a.start, b.start) })
	return cs, nil
}

// spans returns the first size bytes of an upload made of cs as ranges of
// its chunks, each chunk ending where the next starts. It fails if the
// chunks leave a gap or hold fewer than size bytes.
func spans(cs []chunk, size int64) ([]span, error) {
	var out []span
	var end int64 // bytes covered so far
	for _, c := range cs {
		if c.start > end {
			return nil, fmt.Errorf("upload has a gap at %d (next chunk at %d)", end, c.start)
		}
		// A chunk starting before the previous one's end cut it short.
		if c.start < end {
			out = cutSpans(out, c.start)
		}
		out = append(out, span{key: c.key, off: 0, n: c.size, size: c.size})
		end = c.start + c.size
	}
	if end < size {
		return nil, fmt.Errorf("upload has %d bytes, want %d", end, size)
	}
	return cutSpans(out, size), nil
}

// cutSpans keeps the first n bytes of spans, dropping empty ones.
func cutSpans(spans []span, n int64) []span {
	var out []span
	for _, sp := range spans {
		if n <= 0 {
			break
		}
		sp.n = min(sp.n, n)
		n -= sp.n
		if sp.n > 0 {
			out = append(out, sp)
		}
	}
	return out
}

// Append checks that the chunks before offset cover it, deletes every chunk
// at or past offset, spools r to a temp file in os.TempDir (so memory stays
// small and the length is known; unlinked at once, so that it cannot outlive
// the process), then stores what arrived as the chunk at offset. The spool
// lets a client that breaks off mid-way keep the bytes it sent: they are
// stored, and counted, even if ctx is cancelled meanwhile (a client going
// away cancels its request's context too).
func (u *uploads) Append(ctx context.Context, id string, offset int64, r io.Reader) (n int64, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("s3blob: append to upload %s at %d: %w", id, offset, err)
		}
	}()
	s := (*Store)(u)
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if err := validID(id); err != nil {
		return 0, err
	}
	if offset < 0 {
		return 0, errors.New("negative offset")
	}
	cs, err := u.chunks(ctx, id)
	if err != nil {
		return 0, err
	}
	if len(cs) == 0 && offset > 0 {
		return 0, blob.ErrNotFound
	}
	i, _ := slices.BinarySearchFunc(cs, offset, func(c chunk, off int64) int { return cmp.Compare(c.start, off) })
	keep, surplus := cs[:i], cs[i:]
	if offset > 0 {
		if _, err := spans(keep, offset); err != nil {
			return 0, err
		}
	}
	var keys []string
	for _, c := range surplus {
		keys = append(keys, c.key)
	}
	if err := s.removeKeys(ctx, keys); err != nil {
		return 0, err
	}

	f, done, err := spoolFile()
	if err != nil {
		return 0, err
	}
	defer done()
	n, werr, rerr := blob.CopyStream(ctx, f, r)
	if werr != nil {
		// The local disk failed, not r: store nothing.
		if errors.Is(werr, syscall.ENOSPC) || errors.Is(werr, syscall.EDQUOT) {
			return 0, fmt.Errorf("%w: spool: %w", blob.ErrNoSpace, werr)
		}
		return 0, fmt.Errorf("spool: %w", werr)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	// Even when nothing arrived the chunk is stored: it creates the upload
	// and cuts a chunk that reaches past offset.
	pctx := context.WithoutCancel(ctx)
	_, err = s.client.PutObject(pctx, s.bucket, u.chunkKey(id, offset), f, n, minio.PutObjectOptions{
		PartSize:   uint64(s.partSize),
		NumThreads: 1,
	})
	if err != nil {
		return 0, mapErr(err)
	}
	return n, rerr
}

// Open reads the first size bytes of an upload, chunk by chunk.
func (u *uploads) Open(ctx context.Context, id string, size int64) (io.ReadCloser, error) {
	s := (*Store)(u)
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("s3blob: open upload %s: %w", id, err)
	}
	if err := validID(id); err != nil {
		return nil, err
	}
	sp, err := u.spansOf(ctx, id, size)
	if err != nil {
		return nil, fmt.Errorf("s3blob: open upload %s: %w", id, err)
	}
	return &spanReader{s: s, ctx: ctx, spans: sp}, nil
}

// spansOf returns the first size bytes of an upload as chunk ranges.
func (u *uploads) spansOf(ctx context.Context, id string, size int64) ([]span, error) {
	if size < 0 {
		return nil, errors.New("negative size")
	}
	cs, err := u.chunks(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, blob.ErrNotFound
	}
	return spans(cs, size)
}

// spanReader reads spans one after the other, each with one ranged GET.
type spanReader struct {
	s     *Store
	ctx   context.Context
	spans []span
	cur   io.ReadCloser
	left  int64 // bytes left in spans[0]
}

func (r *spanReader) Read(p []byte) (int, error) {
	for {
		if len(r.spans) == 0 {
			return 0, io.EOF
		}
		if r.cur == nil {
			sp := r.spans[0]
			opts := minio.GetObjectOptions{}
			if err := opts.SetRange(sp.off, sp.off+sp.n-1); err != nil {
				return 0, err
			}
			body, _, _, err := r.s.core.GetObject(r.ctx, r.s.bucket, sp.key, opts)
			if err != nil {
				return 0, fmt.Errorf("s3blob: read %s: %w", sp.key, mapErr(err))
			}
			r.cur, r.left = body, sp.n
		}
		if len(p) == 0 {
			return 0, nil
		}
		n, err := r.cur.Read(p[:min(int64(len(p)), r.left)])
		r.left -= int64(n)
		if r.left == 0 {
			r.cur.Close()
			r.cur = nil
			r.spans = r.spans[1:]
			err = nil
		} else if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return n, fmt.Errorf("s3blob: read %s: %w", r.spans[0].key, err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (r *spanReader) Close() error {
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	r.spans = nil
	return nil
}

// Commit refreshes the blob if it exists. Otherwise it builds the blob from
// the first size bytes of the upload: by a server-side copy when those are
// one chunk, by a multipart copy when every chunk but the last is at least
// MinPartSize long, else by reading the chunks through and uploading them
// (PUT and multipart upload are atomic, so straight to the content
// address). The chunks stay until Delete.
func (u *uploads) Commit(ctx context.Context, id string, size int64, digest string) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("s3blob: commit upload %s as %s: %w", id, digest, err)
		}
	}()
	s := (*Store)(u)
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := validID(id); err != nil {
		return err
	}
	target, err := s.blobKey(digest)
	if err != nil {
		return err
	}
	if ok, err := s.refresh(ctx, target); err != nil || ok {
		return err
	}
	sp, err := u.spansOf(ctx, id, size)
	if err != nil {
		return err
	}
	switch {
	case len(sp) == 0:
		_, err := s.client.PutObject(ctx, s.bucket, target, strings.NewReader(""), 0, minio.PutObjectOptions{DisableMultipart: true})
		return mapErr(err)
	case len(sp) == 1 && sp[0].n == sp[0].size:
		return s.copyObject(ctx, sp[0].key, target, sp[0].n)
	case composable(sp):
		return s.composeObject(ctx, target, sp)
	}
	r := &spanReader{s: s, ctx: ctx, spans: sp}
	defer r.Close()
	_, err = s.client.PutObject(ctx, s.bucket, target, r, size, minio.PutObjectOptions{
		PartSize:   uint64(s.partSize),
		NumThreads: 1,
	})
	return mapErr(err)
}

// composable reports whether a multipart copy can join spans: S3 wants
// every part but the last to be at least MinPartSize.
func composable(spans []span) bool {
	for _, sp := range spans[:len(spans)-1] {
		if sp.n < MinPartSize {
			return false
		}
	}
	return true
}

// Delete removes every chunk of an upload.
func (u *uploads) Delete(ctx context.Context, id string) error {
	s := (*Store)(u)
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("s3blob: delete upload %s: %w", id, err)
	}
	if err := validID(id); err != nil {
		return err
	}
	var keys []string
	for obj, err := range s.list(ctx, u.chunkPrefix(id), true) {
		if err != nil {
			return fmt.Errorf("s3blob: delete upload %s: %w", id, err)
		}
		keys = append(keys, obj.Key)
	}
	if len(keys) == 0 {
		return fmt.Errorf("s3blob: delete upload %s: %w", id, blob.ErrNotFound)
	}
	if err := s.removeKeys(ctx, keys); err != nil {
		return fmt.Errorf("s3blob: delete upload %s: %w", id, err)
	}
	return nil
}

// All lists the ids under uploads/, one listing level deep.
func (u *uploads) All(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		s := (*Store)(u)
		if err := s.check(ctx); err != nil {
			yield("", fmt.Errorf("s3blob: list uploads: %w", err))
			return
		}
		prefix := u.uploadsPrefix()
		for obj, err := range s.list(ctx, prefix, false) {
			if err != nil {
				yield("", fmt.Errorf("s3blob: list uploads: %w", err))
				return
			}
			id, ok := strings.CutSuffix(strings.TrimPrefix(obj.Key, prefix), "/")
			if !ok || validID(id) != nil {
				continue
			}
			if !yield(id, nil) {
				return
			}
		}
	}
}

// spoolFile opens the file an append is spooled to, and done closes it. It
// has no name where the OS allows (O_TMPFILE), or loses it at once (the
// descriptor keeps the bytes), so a process killed mid-append leaves no
// spool file behind; only where neither works does done remove it.
func spoolFile() (f *os.File, done func(), err error) {
	if f, ok := openUnnamed(os.TempDir()); ok {
		return f, func() { f.Close() }, nil
	}
	f, err = os.CreateTemp("", "s3blob-append-*")
	if err != nil {
		return nil, nil, err
	}
	if os.Remove(f.Name()) == nil {
		return f, func() { f.Close() }, nil
	}
	return f, func() { f.Close(); os.Remove(f.Name()) }, nil
}
