// Package s3blob is a blob.Store on S3-compatible object storage, written
// with github.com/minio/minio-go/v7 and tested against versitygw.
//
// The store owns everything under Config.Prefix in one bucket:
//
//	<prefix>blobs/sha256/<64 hex>               committed blobs, named by digest
//	<prefix>tmp/<32 hex>                        staged writes bigger than one part
//	<prefix>uploads/<id>/<offset, 20 digits>    one object per Uploads.Append
//
// It keeps no state outside the bucket (Append's spool file lives only for
// the call), so any number of replicas can share a prefix.
//
// # Writes
//
// A Writer buffers up to Config.PartSize bytes. A write that ends within its
// first part is PUT straight to its content address at Commit, when the
// digest is known: one request. A bigger write becomes a multipart upload to
// a staged key tmp/<random>, one part at a time, so a Writer holds one part
// of memory whatever the size; Commit completes it, copies it server-side to
// its content address and deletes the staged object.
//
// Why stage and copy rather than a conditional PUT to the content address:
// the address is known only at Commit, but a multipart upload names its key
// when it starts. Putting directly would mean spooling every large blob to
// local disk and sending it again after the client finished, where the
// server-side copy moves no bytes over the network.
//
// # Refreshing ModTime
//
// Equal content is stored once, and committing it again must refresh the
// blob's ModTime (S3's LastModified, in whole seconds), which S3 cannot
// touch. Copying an object onto itself with metadata REPLACE moves
// LastModified on AWS, but versitygw accepts it and changes only the
// metadata; an X-Amz-Meta-Touched value would be seen by HEAD (Stat) but not
// by ListObjects (All). So a refresh copies the blob onto itself with a
// multipart UploadPartCopy, which moves LastModified on every S3
// implementation for the price of a server-side copy of identical bytes.
//
// Content addresses are create-only: both Commits look first (HEAD); an
// existing blob is refreshed, never written from the staged bytes, and the
// staged copy is dropped. Only a blob that is not there is put (one part) or
// copied from tmp/ (larger). Two writers racing to create the same digest
// both write bytes whose SHA-256 the caller has verified, so the loser
// replaces the object with identical content, atomically. (A conditional
// If-None-Match: * would close even that window on PUT, but versitygw
// ignores it on copies.) On a versioned bucket every refresh keeps a
// noncurrent version; expire those with a lifecycle rule.
//
// # Cancellation and cleanup
//
// Create's context governs the Writer: parts are uploaded with it, and
// Commit fails, leaving nothing, if it is done before the blob becomes
// visible. From that check on, the copy into place runs to the end on a
// context that is no longer cancelled (as fsblob renames after its check).
// Cleanup after failures (aborting multipart uploads, deleting staged
// objects) also runs on a detached context. A crash can still leave staged
// objects and incomplete multipart uploads, which nothing lists; a bucket
// lifecycle rule should expire <prefix>tmp/ and abort incomplete multipart
// uploads after a day.
//
// # Reads
//
// Open sends one HEAD. Read then asks for the bytes from the current offset
// to the end with a ranged GET, and a Seek that moves drops that response,
// so serving a range costs one GET that starts at the range.
package s3blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/artifactstore/artifactstore/blob"
)

const (
	// maxCopyPart bounds one CopyObject or UploadPartCopy request; S3 allows
	// 5 GiB, but a smaller piece keeps each request well inside the
	// client's one-minute response header timeout on a slow server.
	maxCopyPart = 1 << 30
	// cleanupTimeout bounds cleanup requests on a detached context.
	cleanupTimeout = time.Minute
)

// Store is a blob.Store in an S3 bucket. It is safe for concurrent use.
type Store struct {
	client   *minio.Client
	core     *minio.Core // the same client, for multipart calls
	tr       *http.Transport
	bucket   string
	prefix   string // Config.Prefix, ending in "/" unless empty
	partSize int64
	closed   atomic.Bool
}

var (
	_ blob.Store   = (*Store)(nil)
	_ blob.Uploads = (*uploads)(nil)
	_ blob.Writer  = (*writer)(nil)
	_ blob.Reader  = (*reader)(nil)
)

// Open connects to the bucket cfg names and checks that it exists. It makes
// no other request.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	return open(ctx, cfg, nil)
}

// open is Open with an optional wrapper around the HTTP transport, for tests
// that count requests.
func open(ctx context.Context, cfg Config, wrap func(http.RoundTripper) http.RoundTripper) (*Store, error) {
	client, tr, err := newClient(cfg, wrap)
	if err != nil {
		return nil, err
	}
	s := &Store{
		client:   client,
		core:     &minio.Core{Client: client},
		tr:       tr,
		bucket:   cfg.Bucket,
		prefix:   cfg.Prefix,
		partSize: int64(cfg.PartSize),
	}
	if s.prefix != "" && !strings.HasSuffix(s.prefix, "/") {
		s.prefix += "/"
	}
	if s.partSize == 0 {
		s.partSize = DefaultPartSize
	}
	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("s3blob: open bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, mapErr(err))
	}
	if !ok {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("s3blob: open: bucket %s does not exist at %s", cfg.Bucket, cfg.Endpoint)
	}
	return s, nil
}

// newClient validates cfg and returns a client with path-style bucket
// lookup and without trailing checksum headers (versitygw answers 400
// BadDigest to those on multipart uploads).
func newClient(cfg Config, wrap func(http.RoundTripper) http.RoundTripper) (*minio.Client, *http.Transport, error) {
	if err := cfg.validate(); err != nil {
		return nil, nil, err
	}
	host, secure, _ := cfg.endpoint()
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, nil, fmt.Errorf("s3blob: %w", err)
	}
	var rt http.RoundTripper = tr
	if wrap != nil {
		rt = wrap(tr)
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       secure,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    rt,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("s3blob: %w", err)
	}
	return client, tr, nil
}

// Close marks the store closed and drops idle connections. Readers opened
// before keep working; every later call returns blob.ErrClosed, as does a
// second Close.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return blob.ErrClosed
	}
	s.tr.CloseIdleConnections()
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return blob.ErrClosed
	}
	return ctx.Err()
}

// blobKey returns the key of a blob. Callers pass well-formed digests; a
// malformed one is refused rather than turned into a key.
func (s *Store) blobKey(digest string) (string, error) {
	hexPart, ok := blob.DigestHex(digest)
	if !ok {
		return "", fmt.Errorf("s3blob: malformed digest %q", digest)
	}
	return s.prefix + "blobs/sha256/" + hexPart, nil
}

func (s *Store) blobsPrefix() string { return s.prefix + "blobs/sha256/" }
func (s *Store) tmpPrefix() string   { return s.prefix + "tmp/" }

func randomName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// detach returns a context for cleanup that outlives ctx's cancellation.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// Create starts a staged write.
func (s *Store) Create(ctx context.Context) (blob.Writer, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("s3blob: create: %w", err)
	}
	return &writer{s: s, ctx: ctx}, nil
}

// writer is a staged write: bytes up to one part in buf, the parts before in
// a multipart upload to key. It is not safe for concurrent use.
type writer struct {
	s      *Store
	ctx    context.Context
	buf    []byte // not yet uploaded; never more than s.partSize
	n      int64  // bytes written
	key    string // staged key, once the first part went up
	upload string // its multipart upload id
	parts  []minio.CompletePart
	done   bool // committed, aborted or failed at Commit
	err    error
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("s3blob: write after commit or abort")
	}
	if w.err != nil {
		return 0, w.err
	}
	if err := w.ctx.Err(); err != nil {
		w.err = fmt.Errorf("s3blob: write: %w", err)
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if len(w.buf) == cap(w.buf) {
			w.grow()
		}
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		written += k
		w.n += int64(k)
		if int64(len(w.buf)) == w.s.partSize {
			if err := w.uploadPart(w.ctx); err != nil {
				w.err = fmt.Errorf("s3blob: write: %w", err)
				return written, w.err
			}
		}
	}
	return written, nil
}

// grow doubles buf's capacity up to one part, so small blobs take little
// memory and big ones exactly one part.
func (w *writer) grow() {
	c := min(max(2*cap(w.buf), 64<<10), int(w.s.partSize))
	nb := make([]byte, len(w.buf), c)
	copy(nb, w.buf)
	w.buf = nb
}

// uploadPart sends buf as the next part, starting the multipart upload of
// the staged key with the first one.
func (w *writer) uploadPart(ctx context.Context) error {
	s := w.s
	if w.upload == "" {
		key := s.tmpPrefix() + randomName()
		id, err := s.core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{})
		if err != nil {
			return mapErr(err)
		}
		w.key, w.upload = key, id
	}
	num := len(w.parts) + 1
	p, err := s.core.PutObjectPart(ctx, s.bucket, w.key, w.upload, num,
		bytes.NewReader(w.buf), int64(len(w.buf)), minio.PutObjectPartOptions{})
	if err != nil {
		return mapErr(err)
	}
	w.parts = append(w.parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
	w.buf = w.buf[:0]
	return nil
}

// Commit refreshes an existing blob and drops the staged bytes; otherwise it
// puts a one-part write straight to its content address, or completes a
// bigger one's staged upload, copies it into place and deletes it. On
// failure nothing is left.
func (w *writer) Commit(digest string) (err error) {
	if w.done {
		return errors.New("s3blob: commit after commit or abort")
	}
	w.done = true
	s := w.s
	completed := false
	defer func() {
		if err != nil {
			w.cleanup(completed)
			err = fmt.Errorf("s3blob: commit %s: %w", digest, err)
		}
	}()
	if w.err != nil {
		return w.err
	}
	if s.closed.Load() {
		return blob.ErrClosed
	}
	target, err := s.blobKey(digest)
	if err != nil {
		return err
	}
	if err := w.ctx.Err(); err != nil {
		return err
	}
	// Create-only: equal content is stored once; an existing blob is only
	// refreshed.
	if ok, err := s.refresh(context.WithoutCancel(w.ctx), target); err != nil {
		return err
	} else if ok {
		w.cleanup(false)
		return nil
	}
	if w.upload == "" {
		// The blob becomes visible with this PUT: after the check above it
		// runs to the end.
		ctx := context.WithoutCancel(w.ctx)
		_, err := s.client.PutObject(ctx, s.bucket, target, bytes.NewReader(w.buf), int64(len(w.buf)),
			minio.PutObjectOptions{DisableMultipart: true})
		w.buf = nil
		return mapErr(err)
	}
	if len(w.buf) > 0 {
		if err := w.uploadPart(w.ctx); err != nil {
			return err
		}
	}
	w.buf = nil
	if _, err := s.core.CompleteMultipartUpload(w.ctx, s.bucket, w.key, w.upload, w.parts, minio.PutObjectOptions{}); err != nil {
		return mapErr(err)
	}
	completed = true
	if err := w.ctx.Err(); err != nil {
		return err
	}
	ctx := context.WithoutCancel(w.ctx)
	if err := s.copyObject(ctx, w.key, target, w.n); err != nil {
		return err
	}
	w.cleanup(true)
	return nil
}

// cleanup removes the staged object, or aborts its multipart upload if it
// was not completed. Errors leave garbage under tmp/ for the lifecycle rule;
// the write itself has succeeded or failed already.
func (w *writer) cleanup(completed bool) error {
	w.buf = nil
	if w.upload == "" {
		return nil
	}
	ctx, cancel := detach(w.ctx)
	defer cancel()
	if completed {
		return mapErr(w.s.client.RemoveObject(ctx, w.s.bucket, w.key, minio.RemoveObjectOptions{}))
	}
	err := w.s.core.AbortMultipartUpload(ctx, w.s.bucket, w.key, w.upload)
	if errResp(err).Code == minio.NoSuchUpload {
		return nil
	}
	return mapErr(err)
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	if err := w.cleanup(false); err != nil {
		return fmt.Errorf("s3blob: abort: %w", err)
	}
	return nil
}

// copyObject copies the size-byte object src to dst on the server: in one
// request when it is small enough, else as a multipart copy.
func (s *Store) copyObject(ctx context.Context, src, dst string, size int64) error {
	if size <= maxCopyPart {
		_, err := s.core.CopyObject(ctx, s.bucket, src, s.bucket, dst, nil, minio.CopySrcOptions{}, minio.PutObjectOptions{})
		return mapErr(err)
	}
	return s.composeObject(ctx, dst, []span{{key: src, off: 0, n: size, size: size}})
}

// span is the byte range [off, off+n) of the object key, size bytes long.
type span struct {
	key          string
	off, n, size int64
}

// composeObject builds dst from spans with a multipart copy. Every span but
// the last must be at least MinPartSize long; spans longer than maxCopyPart
// are cut into even pieces. dst may be one of the sources: S3 reads the
// sources before Complete replaces dst.
func (s *Store) composeObject(ctx context.Context, dst string, spans []span) (err error) {
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, dst, minio.PutObjectOptions{})
	if err != nil {
		return mapErr(err)
	}
	defer func() {
		if err != nil {
			actx, cancel := detach(ctx)
			defer cancel()
			_ = s.core.AbortMultipartUpload(actx, s.bucket, dst, id)
		}
	}()
	var parts []minio.CompletePart
	for _, sp := range spans {
		pieces := (sp.n + maxCopyPart - 1) / maxCopyPart
		for i := range pieces {
			start := sp.n * i / pieces
			end := sp.n * (i + 1) / pieces
			p, err := s.core.CopyObjectPart(ctx, s.bucket, sp.key, s.bucket, dst, id,
				len(parts)+1, sp.off+start, end-start, nil)
			if err != nil {
				return mapErr(err)
			}
			parts = append(parts, minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag})
		}
	}
	_, err = s.core.CompleteMultipartUpload(ctx, s.bucket, dst, id, parts, minio.PutObjectOptions{})
	return mapErr(err)
}

// refresh moves key's LastModified to now by rewriting it with its own
// bytes, and reports whether it exists.
func (s *Store) refresh(ctx context.Context, key string) (bool, error) {
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		err = mapErr(err)
		if errors.Is(err, blob.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	if info.Size == 0 {
		_, err = s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(nil), 0, minio.PutObjectOptions{DisableMultipart: true})
	} else {
		err = s.composeObject(ctx, key, []span{{key: key, off: 0, n: info.Size, size: info.Size}})
	}
	if errors.Is(err, blob.ErrNotFound) {
		return false, nil // deleted meanwhile
	}
	return err == nil, err
}

// Open returns a reader over a blob. It reads with ctx.
func (s *Store) Open(ctx context.Context, digest string) (blob.Reader, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("s3blob: open %s: %w", digest, err)
	}
	key, err := s.blobKey(digest)
	if err != nil {
		return nil, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("s3blob: open %s: %w", digest, mapErr(err))
	}
	return &reader{s: s, ctx: ctx, key: key, size: info.Size}, nil
}

// reader reads an object with ranged GETs: one from the current offset to
// the end, opened by the first Read after Open or a moving Seek.
type reader struct {
	s      *Store
	ctx    context.Context
	key    string
	size   int64
	off    int64
	body   io.ReadCloser // the response being read, or nil
	closed bool
}

func (r *reader) Size() int64 { return r.size }

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("s3blob: read after close")
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.body == nil {
		opts := minio.GetObjectOptions{}
		if err := opts.SetRange(r.off, r.size-1); err != nil {
			return 0, err
		}
		body, _, _, err := r.s.core.GetObject(r.ctx, r.s.bucket, r.key, opts)
		if err != nil {
			return 0, fmt.Errorf("s3blob: read %s at %d: %w", r.key, r.off, mapErr(err))
		}
		r.body = body
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if err == io.EOF {
		r.body.Close()
		r.body = nil
		if r.off < r.size {
			return n, fmt.Errorf("s3blob: read %s: %w", r.key, io.ErrUnexpectedEOF)
		}
		err = nil
		if n == 0 {
			err = io.EOF
		}
	}
	if err != nil {
		return n, fmt.Errorf("s3blob: read %s: %w", r.key, err)
	}
	return n, nil
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	if r.closed {
		return 0, errors.New("s3blob: seek after close")
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("s3blob: seek: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("s3blob: seek: negative position")
	}
	if abs != r.off && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.off = abs
	return abs, nil
}

func (r *reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	return nil
}

// Stat reports a blob's size and LastModified.
func (s *Store) Stat(ctx context.Context, digest string) (blob.Info, error) {
	if err := s.check(ctx); err != nil {
		return blob.Info{}, fmt.Errorf("s3blob: stat %s: %w", digest, err)
	}
	key, err := s.blobKey(digest)
	if err != nil {
		return blob.Info{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return blob.Info{}, fmt.Errorf("s3blob: stat %s: %w", digest, mapErr(err))
	}
	return blob.Info{Digest: digest, Size: info.Size, ModTime: info.LastModified}, nil
}

// Delete removes a blob. S3's DELETE succeeds on missing keys, so a HEAD
// comes first to report ErrNotFound.
func (s *Store) Delete(ctx context.Context, digest string) error {
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("s3blob: delete %s: %w", digest, err)
	}
	key, err := s.blobKey(digest)
	if err != nil {
		return err
	}
	if _, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{}); err != nil {
		return fmt.Errorf("s3blob: delete %s: %w", digest, mapErr(err))
	}
	if err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3blob: delete %s: %w", digest, mapErr(err))
	}
	return nil
}

// All lists blobs/sha256/ page by page.
func (s *Store) All(ctx context.Context) iter.Seq2[blob.Info, error] {
	return func(yield func(blob.Info, error) bool) {
		if err := s.check(ctx); err != nil {
			yield(blob.Info{}, fmt.Errorf("s3blob: list: %w", err))
			return
		}
		for obj, err := range s.list(ctx, s.blobsPrefix(), true) {
			if err != nil {
				yield(blob.Info{}, fmt.Errorf("s3blob: list: %w", err))
				return
			}
			name := strings.TrimPrefix(obj.Key, s.blobsPrefix())
			if !blob.IsDigestHex(name) {
				continue
			}
			info := blob.Info{Digest: blob.DigestPrefix + name, Size: obj.Size, ModTime: obj.LastModified}
			if !yield(info, nil) {
				return
			}
		}
	}
}

// list yields the objects under prefix, or with recursive unset the objects
// and common prefixes directly under it. Stopping early stops the listing.
func (s *Store) list(ctx context.Context, prefix string, recursive bool) iter.Seq2[minio.ObjectInfo, error] {
	return func(yield func(minio.ObjectInfo, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: recursive}) {
			if obj.Err != nil {
				yield(minio.ObjectInfo{}, mapErr(obj.Err))
				return
			}
			if !yield(obj, nil) {
				return
			}
		}
	}
}

// removeKeys deletes keys in batches (DeleteObjects).
func (s *Store) removeKeys(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if len(keys) == 1 {
		return mapErr(s.client.RemoveObject(ctx, s.bucket, keys[0], minio.RemoveObjectOptions{}))
	}
	ch := make(chan minio.ObjectInfo, len(keys))
	for _, k := range keys {
		ch <- minio.ObjectInfo{Key: k}
	}
	close(ch)
	var errs []error
	for e := range s.client.RemoveObjects(ctx, s.bucket, ch, minio.RemoveObjectsOptions{}) {
		if e.Err != nil && errResp(e.Err).Code != minio.NoSuchKey {
			errs = append(errs, fmt.Errorf("%s: %w", e.ObjectName, mapErr(e.Err)))
		}
	}
	return errors.Join(errs...)
}

// errResp returns the S3 error response inside err, or a zero one.
func errResp(err error) minio.ErrorResponse {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er
	}
	return minio.ErrorResponse{}
}

// mapErr wraps blob.ErrNotFound around a missing key's error and
// blob.ErrNoSpace around a full server's.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	er := errResp(err)
	switch {
	case er.Code == minio.NoSuchKey,
		er.StatusCode == http.StatusNotFound && er.Code != minio.NoSuchBucket && er.Code != minio.NoSuchUpload:
		return fmt.Errorf("%w: %w", blob.ErrNotFound, err)
	case er.Code == "XMinioStorageFull", er.StatusCode == http.StatusInsufficientStorage:
		return fmt.Errorf("%w: %w", blob.ErrNoSpace, err)
	}
	return err
}
