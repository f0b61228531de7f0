package artifactstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/artifactstore/artifactstore/blob"
	"github.com/artifactstore/artifactstore/catalog"
)

// DefaultMediaType is the media type of a file that declares none. It is
// not guessed from the name: manifests must not depend on a machine's MIME
// tables.
const DefaultMediaType = "application/octet-stream"

// File is a file of a package. Its bytes are the blob addressed by Digest.
type File struct {
	ID        string
	PackageID string
	Tenant    string
	Path      string
	Size      int64
	Digest    string // sha256:<hex>
	MediaType string
	CreatedAt time.Time
}

// PutOptions are optional facts about a file being put.
type PutOptions struct {
	// MediaType of the file (default DefaultMediaType).
	MediaType string
	// Digest, when set, is the expected "sha256:<hex>" of the bytes; a
	// mismatch is DigestMismatch and nothing is stored.
	Digest string
}

// FileQuery pages through a package's files, sorted by path bytewise.
type FileQuery struct {
	Prefix string // only paths starting with Prefix
	Limit  int    // default DefaultPageSize, at most MaxPageSize
	Cursor string // NextCursor of the previous page
}

// FilePage is one page of ListFiles. NextCursor is empty on the last page.
type FilePage struct {
	Files      []File
	NextCursor string
}

// PutFile streams r into a new file at path in an open package of tenant.
// It reads r to EOF (it does not close it), hashes the bytes while storing
// them, and records the file only after the bytes are durable and the digest
// is verified: the file is visible once PutFile returns nil and never
// before. Errors: Invalid (a bad path, media type or digest), NotFound (no
// such package), Finalized, Conflict (the path is taken), DigestMismatch,
// TooLarge. On any error nothing is recorded. Cancelling ctx abandons the
// write.
func (s *Store) PutFile(ctx context.Context, tenant, packageID, path string, r io.Reader, o PutOptions) (File, error) {
	const op = "PutFile"
	if err := s.checkNewFile(op, tenant, packageID, path, &o); err != nil {
		return File{}, err
	}
	if err := s.checkOpen(ctx, op, tenant, packageID); err != nil {
		return File{}, err
	}
	c, err := s.stage(ctx, op, r, o.Digest)
	if err != nil {
		return File{}, err
	}
	// The content was committed a moment ago: it is fresh, so no cleanup
	// can have taken it (see recordStaged).
	return s.recordStaged(ctx, op, tenant, packageID, path, c, o.MediaType, false)
}

// Content is durable, digest-addressed bytes not yet part of any file: what
// StageContent returns and AddFile records. Content that is never added is
// collected by Cleanup once it is older than Options.OrphanGrace.
type Content struct {
	Digest string
	Size   int64
}

// StageContent stores the bytes of r durably, before the file they will
// become is known: for callers that learn the path only after the bytes (a
// multipart form whose file part comes first). Pass the result to AddFile
// within Options.OrphanGrace. want, when set, is the expected digest: a
// mismatch is DigestMismatch and nothing is stored.
func (s *Store) StageContent(ctx context.Context, tenant string, r io.Reader, want string) (Content, error) {
	const op = "StageContent"
	var errs []FieldError
	if tenant == AllTenants || validTenant(tenant) != nil {
		errs = append(errs, FieldError{"tenant", "is not a valid tenant"})
	}
	if want != "" && !validDigest(want) {
		errs = append(errs, FieldError{"digest", digestRule})
	}
	if len(errs) > 0 {
		return Content{}, invalid(op, errs...)
	}
	return s.stage(ctx, op, r, want)
}

func (s *Store) stage(ctx context.Context, op string, r io.Reader, want string) (Content, error) {
	w, err := s.blobs.Create(ctx)
	if err != nil {
		return Content{}, wrap(op, err)
	}
	defer w.Abort()
	h := sha256.New()
	n, err := copyLimited(io.MultiWriter(w, h), r, s.opts.MaxFileSize)
	if err != nil {
		return Content{}, s.readFailure(op, err)
	}
	c := Content{Digest: hexDigest(h), Size: n}
	if want != "" && want != c.Digest {
		return Content{}, mismatch(op, want, c.Digest)
	}
	if err := w.Commit(c.Digest); err != nil {
		return Content{}, wrap(op, err)
	}
	return c, nil
}

// checkOpen fails before a body is read when the package cannot take it.
// It is a courtesy, not the rule (the catalog checks again when it records
// the file), so it trusts what it saw of the package before: a package
// seen finalized stays so, and one seen open is assumed still open, which
// spares small files a catalog read each.
func (s *Store) checkOpen(ctx context.Context, op, tenant, packageID string) error {
	h, ok := s.pkgs.get(packageID)
	if !ok || h.tenant != tenant {
		p, err := s.cat.GetPackage(ctx, tenant, packageID)
		if err != nil {
			return notFound(op, err, "package %s", packageID)
		}
		h = pkgHint{tenant: p.Tenant, finalized: p.State != StateOpen}
		s.pkgs.put(packageID, h)
	}
	if h.finalized {
		return errorf(op, Finalized, "package %s is finalized", packageID)
	}
	return nil
}

// pkgHint is what a Store last saw of a package.
type pkgHint struct {
	tenant    string
	finalized bool
}

// AddFile records staged content as a new file at path in an open package
// of tenant, like PutFile. o.Digest, when set, must equal c.Digest
// (DigestMismatch otherwise).
func (s *Store) AddFile(ctx context.Context, tenant, packageID, path string, c Content, o PutOptions) (File, error) {
	const op = "AddFile"
	if err := s.checkNewFile(op, tenant, packageID, path, &o); err != nil {
		return File{}, err
	}
	if o.Digest != "" && o.Digest != c.Digest {
		return File{}, mismatch(op, o.Digest, c.Digest)
	}
	return s.recordStaged(ctx, op, tenant, packageID, path, c, o.MediaType, true)
}

// recordStaged records staged content c as a file. Cleanup removes
// unreferenced blobs only once they are older than OrphanGrace, and not
// while this holds s.gc; content staged long ago (check) is looked for
// first, so that a file is never recorded without its bytes.
func (s *Store) recordStaged(ctx context.Context, op, tenant, packageID, path string, c Content, mediaType string, check bool) (File, error) {
	s.gc.RLock()
	defer s.gc.RUnlock()
	if check {
		if info, err := s.blobs.Stat(ctx, c.Digest); err != nil || info.Size != c.Size {
			return File{}, errorf(op, Invalid, "the staged content %s is gone; send it again", c.Digest)
		}
	}
	return s.addFile(ctx, op, func(f catalog.File, ev catalog.NewEvent) (catalog.File, error) {
		return s.cat.AddFile(ctx, f, ev)
	}, tenant, packageID, path, c.Size, c.Digest, mediaType)
}

// checkNewFile validates the arguments shared by PutFile and
// CompleteUpload, and fills in the default media type.
func (s *Store) checkNewFile(op, tenant, packageID, path string, o *PutOptions) error {
	var errs []FieldError
	if tenant == AllTenants || validTenant(tenant) != nil {
		errs = append(errs, FieldError{"tenant", "is not a valid tenant"})
	}
	if !validID(packageID) {
		errs = append(errs, FieldError{"package_id", "is not an identifier this store issues"})
	}
	if err := ValidatePath(path); err != nil {
		errs = append(errs, FieldError{"path", err.Error()})
	}
	if o.MediaType == "" {
		o.MediaType = DefaultMediaType
	} else if !validMediaType(o.MediaType) {
		errs = append(errs, FieldError{"media_type", "must be a media type such as text/plain"})
	}
	if o.Digest != "" && !validDigest(o.Digest) {
		errs = append(errs, FieldError{"digest", digestRule})
	}
	if len(errs) > 0 {
		return invalid(op, errs...)
	}
	return nil
}

// addFile records a file whose bytes are durable, through record (AddFile or
// CompleteUpload), with its file.added event.
func (s *Store) addFile(ctx context.Context, op string, record func(catalog.File, catalog.NewEvent) (catalog.File, error),
	tenant, packageID, path string, size int64, digest, mediaType string) (File, error) {
	data, err := eventData(map[string]any{
		"path":       path,
		"digest":     digest,
		"size":       uint64(size),
		"media_type": mediaType,
	})
	if err != nil {
		return File{}, wrap(op, err)
	}
	f, err := record(catalog.File{
		ID:        s.newID(),
		Tenant:    tenant,
		PackageID: packageID,
		Path:      path,
		Size:      size,
		Digest:    digest,
		MediaType: mediaType,
	}, catalog.NewEvent{Type: EventFileAdded, Data: data})
	if err != nil {
		switch {
		case errors.Is(err, catalog.ErrConflict):
			return File{}, &Error{Op: op, Kind: Conflict, Detail: fmt.Sprintf("path %q is taken in package %s", path, packageID), Err: err}
		case errors.Is(err, catalog.ErrFinalized):
			s.pkgs.put(packageID, pkgHint{tenant: tenant, finalized: true})
			return File{}, &Error{Op: op, Kind: Finalized, Detail: fmt.Sprintf("package %s is finalized", packageID), Err: err}
		}
		return File{}, notFound(op, err, "package %s", packageID)
	}
	s.notify.broadcast()
	return fileFrom(f), nil
}

// GetFile returns a file of tenant.
func (s *Store) GetFile(ctx context.Context, tenant, id string) (File, error) {
	const op = "GetFile"
	if err := checkRead(op, tenant, "file_id", id); err != nil {
		return File{}, err
	}
	if f, ok := s.files.get(id); ok { // a file never changes once recorded
		if tenant != AllTenants && f.Tenant != tenant {
			return File{}, errorf(op, NotFound, "file %s not found", id)
		}
		return f, nil
	}
	cf, err := s.cat.GetFile(ctx, tenant, id)
	if err != nil {
		return File{}, notFound(op, err, "file %s", id)
	}
	f := fileFrom(cf)
	s.files.put(f.ID, f)
	return f, nil
}

// OpenFile returns a file of tenant and a reader over its bytes that can
// seek (for ranges). The caller closes the reader. For the local disk
// backend the reader unwraps to an *os.File, so serving it over HTTP can use
// sendfile.
func (s *Store) OpenFile(ctx context.Context, tenant, id string) (File, blob.Reader, error) {
	const op = "OpenFile"
	f, err := s.GetFile(ctx, tenant, id)
	if err != nil {
		return File{}, nil, err
	}
	r, err := s.blobs.Open(ctx, f.Digest)
	if err != nil {
		// A recorded file whose bytes are missing is our fault, not the
		// caller's: never answer it as not found.
		return File{}, nil, &Error{Op: op, Kind: Internal, Err: fmt.Errorf("bytes of file %s (%s): %w", id, f.Digest, err)}
	}
	return f, r, nil
}

// ListFiles returns one page of a package's files, sorted by path bytewise.
func (s *Store) ListFiles(ctx context.Context, tenant, packageID string, q FileQuery) (FilePage, error) {
	const op = "ListFiles"
	if err := checkRead(op, tenant, "id", packageID); err != nil {
		return FilePage{}, err
	}
	limit, fe := pageLimit(q.Limit)
	var errs []FieldError
	if fe != nil {
		errs = append(errs, *fe)
	}
	f := catalog.FileFilter{Prefix: q.Prefix, Limit: limit + 1}
	if len(q.Prefix) > MaxPathBytes {
		errs = append(errs, FieldError{"prefix", fmt.Sprintf("is longer than %d bytes", MaxPathBytes)})
	}
	if q.Cursor != "" {
		key, ok := decodeCursor("f", q.Cursor)
		pkg, after, found := strings.Cut(key, ":")
		if !ok || !found || pkg != packageID {
			errs = append(errs, FieldError{"cursor", "is not a cursor this server issued for this package"})
		}
		f.After = after
	}
	if len(errs) > 0 {
		return FilePage{}, invalid(op, errs...)
	}
	fs, err := s.cat.ListFiles(ctx, tenant, packageID, f)
	if err != nil {
		return FilePage{}, notFound(op, err, "package %s", packageID)
	}
	var page FilePage
	if len(fs) > limit {
		fs = fs[:limit]
		page.NextCursor = encodeCursor("f", packageID+":"+fs[limit-1].Path)
	}
	page.Files = make([]File, len(fs))
	for i, f := range fs {
		page.Files[i] = fileFrom(f)
	}
	return page, nil
}

func fileFrom(f catalog.File) File {
	return File{
		ID:        f.ID,
		PackageID: f.PackageID,
		Tenant:    f.Tenant,
		Path:      f.Path,
		Size:      f.Size,
		Digest:    f.Digest,
		MediaType: f.MediaType,
		CreatedAt: f.CreatedAt,
	}
}

func hexDigest(h hash.Hash) string {
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func mismatch(op, want, got string) error {
	return errorf(op, DigestMismatch, "the declared digest is %s but the bytes hash to %s", want, got)
}

// errTooLarge is returned by copyLimited's reader when the input passes the
// limit.
var errTooLarge = errors.New("too large")

// readError marks an error that came from the caller's reader, as opposed to
// the storage.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// readFailure classifies an error of copyLimited.
func (s *Store) readFailure(op string, err error) error {
	if errors.Is(err, errTooLarge) {
		return errorf(op, TooLarge, "the file is larger than the limit of %d bytes", s.opts.MaxFileSize)
	}
	if re, ok := errors.AsType[*readError](err); ok {
		return &Error{Op: op, Kind: Invalid, Detail: "reading the content failed: " + re.err.Error(), Err: re.err}
	}
	return wrap(op, err)
}

// limitReader reads at most max bytes from r; a byte beyond max is
// errTooLarge. Errors of r are marked as readErrors.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		n, err := io.ReadFull(l.r, one[:])
		if n > 0 {
			return 0, errTooLarge
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, io.EOF
		}
		return 0, &readError{err}
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}

// copyBufSize is the size of the buffers content is copied through: large
// enough that hashing and writing run in big strides.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyLimited copies r to w until EOF, failing with errTooLarge past max
// bytes. It returns the number of bytes copied.
func copyLimited(w io.Writer, r io.Reader, max int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(w, &limitReader{r: r, left: max}, *bp)
}
