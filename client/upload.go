package client

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/api/oas"
)

// CreateUpload starts a resumable upload session. Size and Digest, when
// given, are checked by the server on every append and at completion.
func (c *Client) CreateUpload(ctx context.Context, nu artifactstore.NewUpload) (artifactstore.Upload, error) {
	const op = "CreateUpload"
	var body oas.OptNewUpload
	if nu.Size != nil || nu.Digest != "" {
		var v oas.NewUpload
		if nu.Size != nil {
			v.Size = oas.NewOptInt64(*nu.Size)
		}
		if nu.Digest != "" {
			v.Digest = oas.NewOptString(nu.Digest)
		}
		body = oas.NewOptNewUpload(v)
	}
	res, err := c.api.CreateUpload(ctx, body, oas.CreateUploadParams{})
	if err != nil {
		return artifactstore.Upload{}, fail(op, err)
	}
	return uploadFrom(&res.Response), nil
}

// AppendUpload appends the bytes of r to an upload session at offset, which
// must be the session's current offset (artifactstore.AtCurrentOffset
// appends wherever it is). It streams r until EOF and does not close it; it
// returns only once it has stopped reading r. The returned Upload carries
// the ID and the new Offset only.
//
// When offset is not the session's, the error is OffsetMismatch with the
// session's offset in its Offset field (the returned Upload has it too), and
// nothing was appended. If the connection breaks, the bytes that arrived
// are kept by the server: ask UploadStatus where to resume.
func (c *Client) AppendUpload(ctx context.Context, id string, offset int64, r io.Reader) (artifactstore.Upload, error) {
	const op = "AppendUpload"
	if err := checkID(op, "upload_id", id); err != nil {
		return artifactstore.Upload{}, err
	}
	if offset < artifactstore.AtCurrentOffset {
		return artifactstore.Upload{}, invalid(op, "offset", "must not be negative")
	}
	src := &guardedReader{r: r}
	u, err := c.appendUpload(ctx, id, offset, src)
	if _, srcErr := src.result(); srcErr != nil {
		return u, sourceFailed(op, srcErr)
	}
	return u, fail(op, err)
}

// appendUpload sends one PATCH with src as its body and fences src before
// returning: the transport may still be reading a body when the answer
// arrives early (an offset mismatch is answered before the body is read).
func (c *Client) appendUpload(ctx context.Context, id string, offset int64, src *guardedReader) (artifactstore.Upload, error) {
	params := oas.AppendUploadParams{ID: id}
	if offset >= 0 {
		params.UploadOffset = oas.NewOptInt64(offset)
	}
	res, err := c.api.AppendUpload(ctx, oas.AppendUploadReq{Data: src}, params)
	src.fence()
	if err != nil {
		if e, ok := errors.AsType[*artifactstore.Error](err); ok && e.Kind == artifactstore.OffsetMismatch {
			return artifactstore.Upload{ID: id, Size: -1, Offset: e.Offset}, err
		}
		return artifactstore.Upload{}, err
	}
	return artifactstore.Upload{ID: id, Size: -1, Offset: res.UploadOffset}, nil
}

// UploadStatus returns an upload session and how far it got: resume from
// its Offset. Expired and unknown sessions are NotFound.
func (c *Client) UploadStatus(ctx context.Context, id string) (artifactstore.Upload, error) {
	const op = "UploadStatus"
	if err := checkID(op, "upload_id", id); err != nil {
		return artifactstore.Upload{}, err
	}
	res, err := c.api.GetUpload(ctx, oas.GetUploadParams{ID: id})
	if err != nil {
		return artifactstore.Upload{}, fail(op, err)
	}
	return uploadFrom(&res.Response), nil
}

// CompleteUpload turns an upload session into a file of an open package. A
// retry after a lost answer returns the same file. Errors: NotFound,
// Invalid (fewer bytes than the declared size, bad fields),
// DigestMismatch, Conflict (the path is taken), Finalized.
func (c *Client) CompleteUpload(ctx context.Context, id string, req artifactstore.CompleteUploadRequest) (artifactstore.File, error) {
	const op = "CompleteUpload"
	if err := checkID(op, "upload_id", id); err != nil {
		return artifactstore.File{}, err
	}
	body := &oas.CompleteUpload{PackageID: req.PackageID, Path: req.Path}
	if req.MediaType != "" {
		body.MediaType = oas.NewOptString(req.MediaType)
	}
	if req.Digest != "" {
		body.Digest = oas.NewOptString(req.Digest)
	}
	res, err := c.api.CompleteUpload(ctx, body, oas.CompleteUploadParams{ID: id})
	if err != nil {
		return artifactstore.File{}, fail(op, err)
	}
	return fileFrom(res), nil
}

// AbortUpload abandons an upload session and its bytes.
func (c *Client) AbortUpload(ctx context.Context, id string) error {
	const op = "AbortUpload"
	if err := checkID(op, "upload_id", id); err != nil {
		return err
	}
	return fail(op, c.api.DeleteUpload(ctx, oas.DeleteUploadParams{ID: id}))
}

// Defaults of ResumableOptions.
const (
	DefaultChunkSize = 64 << 20
	DefaultRetries   = 5
)

// ResumableOptions tune UploadResumable.
type ResumableOptions struct {
	// ChunkSize is the most bytes one request sends (default
	// DefaultChunkSize). A break costs at most the unacknowledged part of
	// one chunk.
	ChunkSize int64
	// Retries is how many failed attempts in a row, without the upload
	// getting further, are tolerated before giving up (default
	// DefaultRetries; negative: none).
	Retries int
	// UploadID resumes an existing session instead of creating one. The
	// bytes the session already has are not sent again; they are read from
	// the source to compute the digest.
	UploadID string
}

// UploadError is the error of an UploadResumable that gave up after its
// session existed: pass UploadID as ResumableOptions.UploadID to go on
// later. It wraps the cause, so artifactstore.KindOf sees the cause's kind.
type UploadError struct {
	UploadID string
	Offset   int64 // bytes the server had, as far as the client knows
	Err      error
}

func (e *UploadError) Error() string {
	return fmt.Sprintf("upload %s stopped at byte %d: %v", e.UploadID, e.Offset, e.Err)
}

func (e *UploadError) Unwrap() error { return e.Err }

// UploadResumable uploads the size bytes of r into a new file through an
// upload session, in chunks. After a broken connection or a server error it
// asks the server how far the upload got, seeks r there and goes on, so
// bytes the server has are never sent twice. It computes the digest while
// reading and completes the upload with it (req.Digest, when set, must
// match). r is read from offset 0; it is not closed.
//
// When it gives up after the session was created, the error is an
// *UploadError naming the session, to resume later with
// ResumableOptions.UploadID.
func (c *Client) UploadResumable(ctx context.Context, r io.ReadSeeker, size int64, req artifactstore.CompleteUploadRequest, o ResumableOptions) (artifactstore.File, error) {
	const op = "UploadResumable"
	switch {
	case size < 0:
		return artifactstore.File{}, invalid(op, "size", "must not be negative")
	case o.ChunkSize < 0:
		return artifactstore.File{}, invalid(op, "chunk_size", "must not be negative")
	case o.ChunkSize == 0:
		o.ChunkSize = DefaultChunkSize
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	u := &resumable{c: c, r: r, size: size, opts: o, h: sha256.New()}
	if o.UploadID == "" {
		up, err := c.CreateUpload(ctx, artifactstore.NewUpload{Size: &size})
		if err != nil {
			return artifactstore.File{}, fail(op, err)
		}
		u.id, u.off, u.known = up.ID, up.Offset, true
	} else {
		if err := checkID(op, "upload_id", o.UploadID); err != nil {
			return artifactstore.File{}, err
		}
		u.id = o.UploadID
	}
	f, err := u.run(ctx, req)
	if err != nil {
		return artifactstore.File{}, &UploadError{UploadID: u.id, Offset: u.off, Err: fail(op, err)}
	}
	return f, nil
}

// resumable is the state of one UploadResumable.
type resumable struct {
	c    *Client
	r    io.ReadSeeker
	size int64
	opts ResumableOptions
	id   string

	off   int64 // the server's offset, when known
	known bool

	// h hashes bytes [0, hashed) of r. snap is h's state at snapAt, taken
	// before each chunk, so a chunk the server kept only part of costs a
	// re-read of that part rather than of everything before it.
	h      hash.Hash
	hashed int64
	snap   []byte
	snapAt int64

	fails    int           // failed attempts since the upload last got further
	busy     time.Duration // time waited for a busy session
	progress int64         // the offset at which fails was last reset
}

func (u *resumable) run(ctx context.Context, req artifactstore.CompleteUploadRequest) (artifactstore.File, error) {
	for {
		if !u.known {
			st, err := u.c.UploadStatus(ctx, u.id)
			if err != nil {
				if err := u.failed(ctx, err, false); err != nil {
					return artifactstore.File{}, err
				}
				continue
			}
			if st.Size >= 0 && st.Size != u.size {
				return artifactstore.File{}, invalid("", "size", fmt.Sprintf("the upload was declared with %d bytes, not %d", st.Size, u.size))
			}
			u.off, u.known = st.Offset, true
		}
		if u.off > u.progress {
			u.progress, u.fails = u.off, 0
		}
		if u.off > u.size {
			return artifactstore.File{}, invalid("", "size", fmt.Sprintf("the upload already has %d bytes, more than %d", u.off, u.size))
		}
		if u.off == u.size {
			break
		}
		if err := u.sendChunk(ctx); err != nil {
			return artifactstore.File{}, err
		}
	}

	if err := u.hashTo(u.size); err != nil {
		return artifactstore.File{}, err
	}
	digest := "sha256:" + hex.EncodeToString(u.h.Sum(nil))
	if req.Digest == "" {
		req.Digest = digest // the server checks that it got what was read
	} else if req.Digest != digest {
		return artifactstore.File{}, &artifactstore.Error{Kind: artifactstore.DigestMismatch,
			Detail: fmt.Sprintf("the declared digest is %s but the source hashes to %s", req.Digest, digest)}
	}
	u.fails = 0
	for {
		f, err := u.c.CompleteUpload(ctx, u.id, req)
		if err == nil {
			return f, nil
		}
		// Completing again after a lost answer gives the same file.
		if err := u.failed(ctx, err, false); err != nil {
			return artifactstore.File{}, err
		}
	}
}

// sendChunk sends the next chunk from the server's offset and updates what
// is known of the upload. It returns an error only when the upload must
// stop.
func (u *resumable) sendChunk(ctx context.Context) error {
	off := u.off
	if err := u.hashTo(off); err != nil {
		return err
	}
	state, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return err
	}
	u.snap, u.snapAt = state, off
	if _, err := u.r.Seek(off, io.SeekStart); err != nil {
		return sourceFailed("", fmt.Errorf("seeking to byte %d: %w", off, err))
	}
	n := min(u.opts.ChunkSize, u.size-off)
	src := &guardedReader{r: io.TeeReader(io.LimitReader(u.r, n), u.h)}
	up, err := u.c.appendUpload(ctx, u.id, off, src)
	read, srcErr := src.result()
	u.hashed = off + read
	if srcErr != nil {
		return sourceFailed("", srcErr)
	}
	if err == nil {
		if read < n {
			return invalid("", "size", fmt.Sprintf("the source ended at byte %d, before the declared %d", off+read, u.size))
		}
		u.off = up.Offset
		if u.off <= off {
			// Accepted but not kept: do not loop forever on it.
			u.fails++
			if u.fails > u.opts.Retries {
				return fmt.Errorf("the server acknowledged %d bytes at offset %d but stays at %d", n, off, u.off)
			}
		}
		return nil
	}
	if e, ok := errors.AsType[*artifactstore.Error](err); ok && e.Kind == artifactstore.OffsetMismatch {
		// Someone (a lost earlier attempt) got further or less far than
		// we thought: go on from where the server is.
		u.off = e.Offset
		u.fails++
		if u.fails > u.opts.Retries {
			return err
		}
		return nil
	}
	u.known = false
	return u.failed(ctx, err, true)
}

// failed counts a failed attempt and waits before the next one; it returns
// err when the upload must stop: err is not transient or the retries are
// used up.
func (u *resumable) failed(ctx context.Context, err error, busyOK bool) error {
	if e, ok := errors.AsType[*artifactstore.Error](err); ok && busyOK && e.Kind == artifactstore.Conflict && e.RetryAfter > 0 {
		// The session is busy (another request, or one that died, still
		// holds it): wait as told, up to maxBusyWait in all, without
		// spending a retry.
		if u.busy += e.RetryAfter; u.busy <= maxBusyWait {
			return sleep(ctx, e.RetryAfter)
		}
	}
	u.fails++
	if !transient(err, busyOK) || u.fails > u.opts.Retries {
		return err
	}
	return sleep(ctx, min(100*time.Millisecond<<(u.fails-1), 5*time.Second))
}

// maxBusyWait bounds how long UploadResumable waits for a busy session: a
// server frees the claim of a request that died within seconds.
const maxBusyWait = time.Minute

func sleep(ctx context.Context, wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// hashTo makes h cover bytes [0, off) of r, re-reading from r what it
// needs: from the last snapshot when it is not beyond off, else from the
// start.
func (u *resumable) hashTo(off int64) error {
	if off < u.hashed {
		if u.snap != nil && u.snapAt <= off {
			if err := u.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(u.snap); err != nil {
				return err
			}
			u.hashed = u.snapAt
		} else {
			u.h.Reset()
			u.hashed = 0
		}
	}
	if off == u.hashed {
		return nil
	}
	if _, err := u.r.Seek(u.hashed, io.SeekStart); err != nil {
		return sourceFailed("", fmt.Errorf("seeking to byte %d: %w", u.hashed, err))
	}
	n, err := io.CopyN(u.h, u.r, off-u.hashed)
	u.hashed += n
	if errors.Is(err, io.EOF) {
		return invalid("", "size", fmt.Sprintf("the source ended at byte %d, before the declared %d", u.hashed, u.size))
	}
	if err != nil {
		return sourceFailed("", err)
	}
	return nil
}

// guardedReader is the body of a request that streams a caller's reader. It
// records the reader's own errors (as opposed to the transport's) and, once
// fenced, refuses further reads, so the caller's reader is never touched
// after the operation returned, even by a transport still winding down.
type guardedReader struct {
	mu     sync.Mutex
	r      io.Reader
	n      int64
	srcErr error
	closed bool
}

// errFenced is what a read of a request body after its request ended gets.
var errFenced = errors.New("client: the request body is no longer readable")

func (g *guardedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errFenced
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	if err != nil && err != io.EOF {
		g.srcErr = err
	}
	return n, err
}

// fence waits for a read in progress and refuses the next ones.
func (g *guardedReader) fence() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// result reports how many bytes were read and the reader's own error.
func (g *guardedReader) result() (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n, g.srcErr
}
