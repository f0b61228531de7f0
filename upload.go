package artifactstore

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/catalog"
)

// Upload is a resumable upload session: bytes appended in order, then
// completed into a file of an open package. Size is -1 and Digest empty when
// they were not declared.
type Upload struct {
	ID        string
	Tenant    string
	Offset    int64 // bytes received and durable so far
	Size      int64 // declared total size, or -1
	Digest    string
	CreatedAt time.Time
	ExpiresAt time.Time
	FileID    string // set once completed
}

// NewUpload declares what is known of an upload up front. Both are
// optional: Size (when non-nil) is checked on every append and at
// completion, Digest at completion.
type NewUpload struct {
	Size   *int64
	Digest string
}

// CompleteUploadRequest names the file an upload becomes.
type CompleteUploadRequest struct {
	PackageID string
	Path      string
	MediaType string // default DefaultMediaType
	Digest    string // optional; checked like NewUpload.Digest
}

// AtCurrentOffset, passed as the offset of AppendUpload, appends wherever the
// upload is.
const AtCurrentOffset = -1

// CreateUpload starts an upload session for tenant. It expires after
// Options.UploadTTL.
func (s *Store) CreateUpload(ctx context.Context, tenant string, nu NewUpload) (Upload, error) {
	const op = "CreateUpload"
	var errs []FieldError
	if tenant == AllTenants || validTenant(tenant) != nil {
		errs = append(errs, FieldError{"tenant", "is not a valid tenant"})
	}
	size := int64(-1)
	if nu.Size != nil {
		size = *nu.Size
		if size < 0 {
			errs = append(errs, FieldError{"size", "must not be negative"})
		}
	}
	if nu.Digest != "" && !validDigest(nu.Digest) {
		errs = append(errs, FieldError{"digest", digestRule})
	}
	if len(errs) > 0 {
		return Upload{}, invalid(op, errs...)
	}
	if size > s.opts.MaxFileSize {
		return Upload{}, errorf(op, TooLarge, "the declared size %d is larger than the limit of %d bytes", size, s.opts.MaxFileSize)
	}
	state, err := marshalHash(sha256.New())
	if err != nil {
		return Upload{}, wrap(op, err)
	}
	u, err := s.cat.CreateUpload(ctx, catalog.Upload{
		ID:        s.newID(),
		Tenant:    tenant,
		Size:      size,
		Digest:    nu.Digest,
		HashState: state,
	}, s.opts.UploadTTL)
	if err != nil {
		return Upload{}, wrap(op, err)
	}
	return uploadFrom(u), nil
}

// UploadStatus returns an upload session: how far it got, to resume from
// there. Expired sessions are NotFound.
func (s *Store) UploadStatus(ctx context.Context, tenant, id string) (Upload, error) {
	const op = "UploadStatus"
	u, err := s.getUpload(ctx, op, tenant, id)
	if err != nil {
		return Upload{}, err
	}
	return uploadFrom(u), nil
}

func (s *Store) getUpload(ctx context.Context, op, tenant, id string) (catalog.Upload, error) {
	if err := checkWrite(op, tenant, "upload_id", id); err != nil {
		return catalog.Upload{}, err
	}
	u, err := s.cat.GetUpload(ctx, tenant, id)
	if err != nil {
		return catalog.Upload{}, notFound(op, err, "upload %s", id)
	}
	return u, nil
}

// claim takes the catalog's append claim on an upload at offset for one
// operation, so appends (and completion) of one session are exclusive across
// every process sharing the catalog, and keeps it alive while the operation
// runs. lost is closed if the claim could not be renewed; release gives the
// claim up when the operation did not advance the upload.
type claim struct {
	holder string
	stop   chan struct{}
	done   chan struct{}
	lost   chan struct{}
}

func (s *Store) claim(ctx context.Context, op, tenant string, u catalog.Upload) (*claim, error) {
	c := &claim{holder: s.newID(), stop: make(chan struct{}), done: make(chan struct{}), lost: make(chan struct{})}
	ttl := s.opts.UploadClaimTTL
	if _, err := s.cat.ClaimUpload(ctx, tenant, u.ID, c.holder, u.Offset, ttl); err != nil {
		if errors.Is(err, catalog.ErrConflict) {
			if cur, gerr := s.cat.GetUpload(ctx, tenant, u.ID); gerr == nil && cur.Offset != u.Offset {
				return nil, &Error{Op: op, Kind: OffsetMismatch, Offset: cur.Offset,
					Detail: fmt.Sprintf("the upload is at byte %d; the request started at %d", cur.Offset, u.Offset)}
			}
			return nil, &Error{Op: op, Kind: Conflict, Detail: fmt.Sprintf("another request is working on upload %s", u.ID),
				RetryAfter: max(ttl/3, time.Second), Err: err}
		}
		return nil, notFound(op, err, "upload %s", u.ID)
	}
	go func() {
		defer close(c.done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				if _, err := s.cat.ClaimUpload(context.WithoutCancel(ctx), tenant, u.ID, c.holder, u.Offset, ttl); err != nil {
					close(c.lost)
					return
				}
			}
		}
	}()
	return c, nil
}

// end stops renewing the claim.
func (c *claim) end() {
	close(c.stop)
	<-c.done
}

// AppendUpload appends the bytes of r to an upload at offset, which must be
// the upload's current offset (or AtCurrentOffset); otherwise it is an
// OffsetMismatch error carrying the current offset, and nothing changes.
// Appends to one upload are exclusive, also across processes sharing the
// catalog: a concurrent one is a Conflict rather than a wait behind a slow
// stream.
//
// Bytes are durable and counted before AppendUpload returns. If r fails
// part-way (a client that went away), the bytes that arrived are kept: the
// returned Upload shows the new offset and the error is Invalid. Appending
// past a declared size or Options.MaxFileSize is TooLarge and changes
// nothing.
func (s *Store) AppendUpload(ctx context.Context, tenant, id string, offset int64, r io.Reader) (Upload, error) {
	const op = "AppendUpload"
	if offset < AtCurrentOffset {
		return Upload{}, invalid(op, FieldError{"offset", "must not be negative"})
	}
	u, err := s.getUpload(ctx, op, tenant, id)
	if err != nil {
		return Upload{}, err
	}
	if u.FileID != "" {
		return Upload{}, errorf(op, Conflict, "upload %s is complete", id)
	}
	if offset == AtCurrentOffset {
		offset = u.Offset
	}
	if offset != u.Offset {
		return uploadFrom(u), &Error{Op: op, Kind: OffsetMismatch, Offset: u.Offset,
			Detail: fmt.Sprintf("the upload is at byte %d; the request started at %d", u.Offset, offset)}
	}
	h, err := unmarshalHash(u.HashState)
	if err != nil {
		return Upload{}, wrap(op, err)
	}
	cl, err := s.claim(ctx, op, tenant, u)
	if err != nil {
		return uploadFrom(u), err
	}
	// Only the reader ends an append: when a client goes away its request's
	// context is cancelled too, and the bytes that arrived must still be
	// stored and counted. So the storage and the catalog see a context that
	// is not cancelled with ctx; losing the claim cancels it, so a stalled
	// append never writes over a successor's bytes.
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		select {
		case <-cl.lost:
			cancel()
		case <-actx.Done():
		}
	}()
	advanced := false
	defer func() {
		cl.end()
		if !advanced {
			s.cat.AdvanceUpload(context.WithoutCancel(ctx), tenant, id, cl.holder, u.Offset, u.Offset, u.HashState)
		}
	}()

	max := s.opts.MaxFileSize
	if u.Size >= 0 {
		max = u.Size
	}
	counted := &countingWriter{w: h}
	lr := &limitReader{r: io.TeeReader(r, counted), left: max - u.Offset}
	n, appendErr := s.blobs.Uploads().Append(actx, id, u.Offset, lr)
	switch {
	case appendErr == nil:
	case errors.Is(appendErr, errTooLarge):
		// Nothing is counted; the surplus on disk is cut by the next append.
		return uploadFrom(u), errorf(op, TooLarge, "the upload would exceed %d bytes", max)
	case errors.As(appendErr, new(*readError)):
		// The bytes that arrived are durable; keep them.
	default:
		return uploadFrom(u), wrap(op, appendErr)
	}
	if n == 0 {
		return uploadFrom(u), s.appendFailure(op, appendErr)
	}
	if counted.n != n {
		// The hash saw bytes the backend did not keep: re-derive it from
		// what is stored.
		if h, err = s.rehash(actx, id, u.Offset+n); err != nil {
			return uploadFrom(u), wrap(op, err)
		}
	}
	state, err := marshalHash(h)
	if err != nil {
		return uploadFrom(u), wrap(op, err)
	}
	nu, err := s.cat.AdvanceUpload(actx, tenant, id, cl.holder, u.Offset, u.Offset+n, state)
	if err != nil {
		return uploadFrom(u), wrap(op, err)
	}
	advanced = true
	return uploadFrom(nu), s.appendFailure(op, appendErr)
}

func (s *Store) appendFailure(op string, err error) error {
	if err == nil {
		return nil
	}
	return s.readFailure(op, err)
}

// rehash computes the SHA-256 state of the first size staged bytes.
func (s *Store) rehash(ctx context.Context, id string, size int64) (hash.Hash, error) {
	rc, err := s.blobs.Uploads().Open(ctx, id, size)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return nil, err
	}
	if n != size {
		return nil, fmt.Errorf("upload %s: %d staged bytes, want %d", id, n, size)
	}
	return h, nil
}

// CompleteUpload turns an upload into a file of an open package: it checks
// the declared size and digests, makes the bytes a blob and records the file
// with its file.added event. A retry after a lost response returns the same
// file. Errors: NotFound (no such upload or package), Invalid (the size
// falls short of the declared one, bad fields), DigestMismatch, Conflict (the
// path is taken), Finalized.
func (s *Store) CompleteUpload(ctx context.Context, tenant, id string, req CompleteUploadRequest) (File, error) {
	const op = "CompleteUpload"
	o := PutOptions{MediaType: req.MediaType, Digest: req.Digest}
	if err := s.checkNewFile(op, tenant, req.PackageID, req.Path, &o); err != nil {
		return File{}, err
	}
	u, err := s.getUpload(ctx, op, tenant, id)
	if err != nil {
		return File{}, err
	}
	record := func(f catalog.File, ev catalog.NewEvent) (catalog.File, error) {
		return s.cat.CompleteUpload(ctx, id, f, ev)
	}
	if u.FileID != "" {
		// A retry: the catalog answers the file it completed into.
		f, err := s.cat.GetFile(ctx, tenant, u.FileID)
		if err != nil {
			return File{}, wrap(op, err)
		}
		if f.PackageID != req.PackageID || f.Path != req.Path {
			return File{}, errorf(op, Conflict, "upload %s completed into %s of package %s", id, f.Path, f.PackageID)
		}
		return fileFrom(f), nil
	}
	if u.Size >= 0 && u.Offset != u.Size {
		return File{}, invalid(op, FieldError{"size", fmt.Sprintf("the upload has %d of its declared %d bytes", u.Offset, u.Size)})
	}
	h, err := unmarshalHash(u.HashState)
	if err != nil {
		return File{}, wrap(op, err)
	}
	digest := hexDigest(h)
	for _, want := range []string{u.Digest, o.Digest} {
		if want != "" && want != digest {
			return File{}, mismatch(op, want, digest)
		}
	}
	p, err := s.cat.GetPackage(ctx, tenant, req.PackageID)
	if err != nil {
		return File{}, notFound(op, err, "package %s", req.PackageID)
	}
	if p.State != StateOpen {
		return File{}, errorf(op, Finalized, "package %s is finalized", req.PackageID)
	}
	// No append may run while the bytes are promoted: hold the claim. A
	// successful completion ends the session (and so the claim); otherwise
	// it is given back.
	cl, err := s.claim(ctx, op, tenant, u)
	if err != nil {
		return File{}, err
	}
	completed := false
	defer func() {
		cl.end()
		if !completed {
			s.cat.AdvanceUpload(context.WithoutCancel(ctx), tenant, id, cl.holder, u.Offset, u.Offset, u.HashState)
		}
	}()

	s.gc.RLock()
	defer s.gc.RUnlock()
	if u.Offset == 0 {
		// Nothing was appended, so nothing is staged: store the empty blob.
		w, err := s.blobs.Create(ctx)
		if err != nil {
			return File{}, wrap(op, err)
		}
		defer w.Abort()
		err = w.Commit(digest)
		if err != nil {
			return File{}, wrap(op, err)
		}
	} else if err := s.blobs.Uploads().Commit(ctx, id, u.Offset, digest); err != nil {
		return File{}, wrap(op, err)
	}
	f, err := s.addFile(ctx, op, record, tenant, req.PackageID, req.Path, u.Offset, digest, o.MediaType)
	if err != nil {
		return File{}, err
	}
	completed = true
	// The file is recorded; the staged copy is no longer needed. Failing to
	// delete it leaves an orphan for Cleanup, not an error for the caller.
	if err := s.blobs.Uploads().Delete(ctx, id); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log.Warn("artifactstore: removing completed upload bytes", "upload", id, "err", err)
	}
	return f, nil
}

// AbortUpload abandons an upload session and its bytes.
func (s *Store) AbortUpload(ctx context.Context, tenant, id string) error {
	const op = "AbortUpload"
	if err := checkWrite(op, tenant, "upload_id", id); err != nil {
		return err
	}
	if err := s.cat.DeleteUpload(ctx, tenant, id); err != nil {
		return notFound(op, err, "upload %s", id)
	}
	if err := s.blobs.Uploads().Delete(ctx, id); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log.Warn("artifactstore: removing aborted upload bytes", "upload", id, "err", err)
	}
	return nil
}

func uploadFrom(u catalog.Upload) Upload {
	return Upload{
		ID:        u.ID,
		Tenant:    u.Tenant,
		Offset:    u.Offset,
		Size:      u.Size,
		Digest:    u.Digest,
		CreatedAt: u.CreatedAt,
		ExpiresAt: u.ExpiresAt,
		FileID:    u.FileID,
	}
}

func marshalHash(h hash.Hash) ([]byte, error) {
	return h.(encoding.BinaryMarshaler).MarshalBinary()
}

func unmarshalHash(state []byte) (hash.Hash, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("restoring the upload's hash state: %w", err)
	}
	return h, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
