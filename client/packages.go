package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/go-faster/jx"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/api/oas"
)

// CreatePackage creates an open package for the client's tenant.
// Errors: Invalid (naming every bad field), Unauthorized.
func (c *Client) CreatePackage(ctx context.Context, np artifactstore.NewPackage) (artifactstore.Package, error) {
	const op = "CreatePackage"
	req := &oas.NewPackage{Producer: np.Producer, Subject: np.Subject}
	if np.RetentionClass != "" {
		req.RetentionClass = oas.NewOptString(np.RetentionClass)
	}
	if np.Metadata != nil {
		req.Metadata = oas.NewOptMetadata(np.Metadata)
	}
	res, err := c.api.CreatePackage(ctx, req)
	if err != nil {
		return artifactstore.Package{}, fail(op, err)
	}
	return packageFrom(&res.Response), nil
}

// GetPackage returns a package. Another tenant's package is NotFound, like
// a missing one.
func (c *Client) GetPackage(ctx context.Context, id string) (artifactstore.Package, error) {
	const op = "GetPackage"
	if err := checkID(op, "id", id); err != nil {
		return artifactstore.Package{}, err
	}
	res, err := c.api.GetPackage(ctx, oas.GetPackageParams{ID: id})
	if err != nil {
		return artifactstore.Package{}, fail(op, err)
	}
	return packageFrom(res), nil
}

// ListPackages returns one page of packages matching q, newest first. Pass
// the page's NextCursor as q.Cursor for the next page; it is empty on the
// last one.
func (c *Client) ListPackages(ctx context.Context, q artifactstore.PackageQuery) (artifactstore.PackagePage, error) {
	const op = "ListPackages"
	params := oas.ListPackagesParams{Metadata: q.Metadata}
	if q.Producer != "" {
		params.Producer = oas.NewOptString(q.Producer)
	}
	if q.Subject != "" {
		params.Subject = oas.NewOptString(q.Subject)
	}
	if q.RetentionClass != "" {
		params.RetentionClass = oas.NewOptString(q.RetentionClass)
	}
	if q.State != "" {
		params.State = oas.NewOptPackageState(oas.PackageState(q.State))
	}
	if q.Limit != 0 {
		params.Limit = oas.NewOptInt(q.Limit)
	}
	if q.Cursor != "" {
		params.Cursor = oas.NewOptString(q.Cursor)
	}
	res, err := c.api.ListPackages(ctx, params)
	if err != nil {
		return artifactstore.PackagePage{}, fail(op, err)
	}
	page := artifactstore.PackagePage{Packages: make([]artifactstore.Package, len(res.Packages)), NextCursor: res.NextCursor.Or("")}
	for i := range res.Packages {
		page.Packages[i] = packageFrom(&res.Packages[i])
	}
	return page, nil
}

// ListFiles returns one page of a package's files, sorted by path bytewise.
func (c *Client) ListFiles(ctx context.Context, packageID string, q artifactstore.FileQuery) (artifactstore.FilePage, error) {
	const op = "ListFiles"
	if err := checkID(op, "id", packageID); err != nil {
		return artifactstore.FilePage{}, err
	}
	params := oas.ListFilesParams{ID: packageID}
	if q.Prefix != "" {
		params.Prefix = oas.NewOptString(q.Prefix)
	}
	if q.Limit != 0 {
		params.Limit = oas.NewOptInt(q.Limit)
	}
	if q.Cursor != "" {
		params.Cursor = oas.NewOptString(q.Cursor)
	}
	res, err := c.api.ListFiles(ctx, params)
	if err != nil {
		return artifactstore.FilePage{}, fail(op, err)
	}
	page := artifactstore.FilePage{Files: make([]artifactstore.File, len(res.Files)), NextCursor: res.NextCursor.Or("")}
	for i := range res.Files {
		page.Files[i] = fileFrom(&res.Files[i])
	}
	return page, nil
}

// Finalize freezes a package and returns it with its manifest digest.
// Finalizing a finalized package returns it unchanged.
func (c *Client) Finalize(ctx context.Context, id string) (artifactstore.Package, error) {
	const op = "Finalize"
	if err := checkID(op, "id", id); err != nil {
		return artifactstore.Package{}, err
	}
	res, err := c.api.FinalizePackage(ctx, oas.FinalizePackageParams{ID: id})
	if err != nil {
		return artifactstore.Package{}, fail(op, err)
	}
	return packageFrom(res), nil
}

// Manifest returns the deterministic CBOR manifest of a finalized package,
// exactly as served. The bytes are checked against the manifest digest the
// server names in its ETag: a difference is DigestMismatch. Conflict while
// the package is open.
func (c *Client) Manifest(ctx context.Context, id string) ([]byte, error) {
	const op = "Manifest"
	if err := checkID(op, "id", id); err != nil {
		return nil, err
	}
	res, err := c.api.GetManifest(ctx, oas.GetManifestParams{ID: id})
	if err != nil {
		return nil, fail(op, err)
	}
	b, err := io.ReadAll(res.Response)
	if err != nil {
		return nil, fail(op, err)
	}
	if want, err := strconv.Unquote(res.ETag); err == nil && strings.HasPrefix(want, "sha256:") {
		sum := sha256.Sum256(b)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != want {
			return nil, &artifactstore.Error{Op: op, Kind: artifactstore.DigestMismatch,
				Detail: fmt.Sprintf("the manifest bytes hash to %s but the server names %s", got, want)}
		}
	}
	return b, nil
}

// ManifestJSON returns the JCS JSON projection of a finalized package's
// manifest, byte for byte as served. Conflict while the package is open.
func (c *Client) ManifestJSON(ctx context.Context, id string) ([]byte, error) {
	const op = "ManifestJSON"
	if err := checkID(op, "id", id); err != nil {
		return nil, err
	}
	// A plain request: the generated client would hand out a jx.Raw, which
	// is the same bytes only as long as the server sends no whitespace
	// around the value.
	req, err := c.newRequest(ctx, http.MethodGet, "/packages/"+url.PathEscape(id)+"/manifest.json", nil)
	if err != nil {
		return nil, fail(op, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do.Do(req)
	if err != nil {
		return nil, fail(op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fail(op, unexpected(resp))
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fail(op, err)
	}
	return b, nil
}

// GetFile returns a file's metadata. Tenant is empty: the wire form does not
// carry it.
func (c *Client) GetFile(ctx context.Context, fileID string) (artifactstore.File, error) {
	const op = "GetFile"
	if err := checkID(op, "file_id", fileID); err != nil {
		return artifactstore.File{}, err
	}
	res, err := c.api.GetFile(ctx, oas.GetFileParams{FileID: fileID})
	if err != nil {
		return artifactstore.File{}, fail(op, err)
	}
	return fileFrom(res), nil
}

// PutFile streams r into a new file at path of an open package, in one
// multipart request. It reads r to EOF while the request is being sent and
// does not close it; nothing of r is held in memory. It returns only after
// it has stopped reading r, also on errors. Errors are those of the Store's
// PutFile: Invalid (a bad path, media type or digest; also a failing r),
// NotFound, Finalized, Conflict (the path is taken), DigestMismatch,
// TooLarge. For large files over unreliable links, see UploadResumable.
func (c *Client) PutFile(ctx context.Context, packageID, filePath string, r io.Reader, o artifactstore.PutOptions) (artifactstore.File, error) {
	const op = "PutFile"
	if err := checkID(op, "package_id", packageID); err != nil {
		return artifactstore.File{}, err
	}
	// The generated client writes the file part before the fields, so the
	// server could check nothing (the path, the package's state) before all
	// the bytes arrived. This writes the fields first, through a pipe.
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	contentType := mw.FormDataContentType()
	src := &guardedReader{r: r}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(writeForm(mw, filePath, o, src))
	}()
	finish := func() {
		pr.CloseWithError(errRequestOver) // unblocks the writer if the transport stopped reading
		<-done
		src.fence()
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/packages/"+url.PathEscape(packageID)+"/files", pr)
	if err != nil {
		finish()
		return artifactstore.File{}, fail(op, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := c.do.Do(req)
	finish()
	if _, srcErr := src.result(); srcErr != nil {
		if err == nil {
			drainClose(resp.Body)
		}
		return artifactstore.File{}, sourceFailed(op, srcErr)
	}
	if err != nil {
		return artifactstore.File{}, fail(op, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return artifactstore.File{}, fail(op, unexpected(resp))
	}
	var f oas.File
	if err := decodeJSON(resp.Body, &f); err != nil {
		return artifactstore.File{}, fail(op, err)
	}
	return fileFrom(&f), nil
}

// errRequestOver stops the form writer of a request that has ended.
var errRequestOver = errors.New("client: the request is over")

// writeForm writes the multipart form of PutFile: the small fields first,
// then the file part.
func writeForm(mw *multipart.Writer, filePath string, o artifactstore.PutOptions, r io.Reader) error {
	if err := mw.WriteField("path", filePath); err != nil {
		return err
	}
	if o.MediaType != "" {
		if err := mw.WriteField("media_type", o.MediaType); err != nil {
			return err
		}
	}
	if o.Digest != "" {
		if err := mw.WriteField("digest", o.Digest); err != nil {
			return err
		}
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", mime.FormatMediaType("form-data", map[string]string{"name": "file", "filename": path.Base(filePath)}))
	// The media type travels in its field; the part's own type stays
	// generic, so a bad media type cannot break the part's header.
	h.Set("Content-Type", "application/octet-stream")
	part, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, r); err != nil {
		return err
	}
	return mw.Close()
}

// sourceFailed is the error of a caller's reader that failed: Invalid, as
// the Store answers it.
func sourceFailed(op string, err error) error {
	return &artifactstore.Error{Op: op, Kind: artifactstore.Invalid, Detail: "reading the content failed: " + err.Error(), Err: err}
}

// unexpected is the error of a success status the operation does not
// define.
func unexpected(resp *http.Response) error {
	return fmt.Errorf("unexpected answer %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
}

// decodeJSON decodes a small JSON body with a generated type's decoder and
// validator.
func decodeJSON(r io.Reader, v interface {
	Decode(*jx.Decoder) error
	Validate() error
}) error {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	if err := v.Decode(jx.DecodeBytes(b)); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return v.Validate()
}
