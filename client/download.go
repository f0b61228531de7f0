package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/artifactstore/artifactstore"
)

// DownloadOptions select what Download asks for.
type DownloadOptions struct {
	// Offset is the first byte wanted (default 0).
	Offset int64
	// Length is the number of bytes wanted from Offset; 0 reads to the end.
	Length int64
	// IfNoneMatch, when set, is an ETag list; when it matches the file the
	// answer is 304 Not Modified and Body is empty. A bare digest
	// ("sha256:…") is quoted for you.
	IfNoneMatch string
}

// Download is an answer of Download.
type Download struct {
	// Body yields the requested bytes as they arrive. The caller closes it.
	// A body that ends early (a broken connection) fails with an error, never
	// with a clean EOF.
	Body io.ReadCloser
	// File holds what the headers tell: ID, Size (of the whole file),
	// Digest (from the ETag) and MediaType. Use GetFile for the rest.
	File artifactstore.File
	// Filename is the base name the server suggests (Content-Disposition).
	Filename string
	// StatusCode is 200 (whole file), 206 (a range) or 304 (not modified).
	StatusCode int
	// NotModified reports a 304: IfNoneMatch matched.
	NotModified bool
	// Offset is where Body starts in the file; Length how many bytes it
	// holds (-1 when the server did not say).
	Offset, Length int64
}

// Download starts a download of a file's bytes: the whole file or one range
// of it. The body streams; cancelling ctx ends it. Errors: NotFound,
// RangeNotSatisfiable (Offset at or beyond the end of a non-empty file),
// Invalid (negative Offset or Length).
func (c *Client) Download(ctx context.Context, fileID string, o DownloadOptions) (*Download, error) {
	const op = "Download"
	if err := checkID(op, "file_id", fileID); err != nil {
		return nil, err
	}
	if o.Offset < 0 {
		return nil, invalid(op, "offset", "must not be negative")
	}
	if o.Length < 0 {
		return nil, invalid(op, "length", "must not be negative")
	}
	// A plain request rather than the generated one: the generated client
	// leaves the body open on some error paths and insists on a parsable
	// Content-Type for the bytes.
	req, err := c.newRequest(ctx, http.MethodGet, "/files/"+url.PathEscape(fileID)+"/download", nil)
	if err != nil {
		return nil, fail(op, err)
	}
	ranged := o.Offset > 0 || o.Length > 0
	if ranged {
		rng := "bytes=" + strconv.FormatInt(o.Offset, 10) + "-"
		if o.Length > 0 {
			rng += strconv.FormatInt(o.Offset+o.Length-1, 10)
		}
		req.Header.Set("Range", rng)
	}
	if o.IfNoneMatch != "" {
		req.Header.Set("If-None-Match", quoteETag(o.IfNoneMatch))
	}
	// Ask for the bytes as stored: a transparently decompressed body would
	// not match the Content-Length, the ranges or the digest.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.do.Do(req)
	if err != nil {
		return nil, fail(op, err)
	}
	d := &Download{
		Body:       resp.Body,
		StatusCode: resp.StatusCode,
		File: artifactstore.File{
			ID:        fileID,
			Digest:    digestOfETag(resp.Header.Get("ETag")),
			MediaType: resp.Header.Get("Content-Type"),
			Size:      -1,
		},
	}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
		d.Filename = params["filename"]
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		resp.Body.Close()
		d.Body, d.NotModified, d.File.MediaType = http.NoBody, true, ""
		return d, nil
	case http.StatusOK:
		d.File.Size = resp.ContentLength
		d.Length = resp.ContentLength
		if ranged {
			// The server may ignore a range and send everything (RFC 9110
			// §14.2): cut the body down to what was asked.
			if _, err := io.CopyN(io.Discard, resp.Body, o.Offset); err != nil {
				resp.Body.Close()
				return nil, fail(op, fmt.Errorf("skipping to byte %d of a whole-file answer: %w", o.Offset, err))
			}
			d.Offset = o.Offset
			switch {
			case resp.ContentLength >= 0:
				d.Length = max(resp.ContentLength-o.Offset, 0)
				if o.Length > 0 {
					d.Length = min(d.Length, o.Length)
				}
			case o.Length > 0:
				d.Length = o.Length // at most
			}
			if d.Length >= 0 {
				d.Body = readCloser{io.LimitReader(resp.Body, d.Length), resp.Body}
			}
		}
	case http.StatusPartialContent:
		start, _, size, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != o.Offset {
			resp.Body.Close()
			return nil, fail(op, fmt.Errorf("the server answered the range %q to a request for byte %d on", resp.Header.Get("Content-Range"), o.Offset))
		}
		d.File.Size, d.Offset, d.Length = size, start, resp.ContentLength
	default:
		resp.Body.Close()
		return nil, fail(op, unexpected(resp))
	}
	return d, nil
}

// DownloadVerified copies a whole file to w while hashing it and checks the
// bytes against the file's digest. It returns the file's metadata. When the
// bytes do not match, the error is DigestMismatch; w has received them by
// then, so the caller must discard what it wrote on any error.
func (c *Client) DownloadVerified(ctx context.Context, fileID string, w io.Writer) (artifactstore.File, error) {
	const op = "DownloadVerified"
	f, err := c.GetFile(ctx, fileID)
	if err != nil {
		return artifactstore.File{}, fail(op, err)
	}
	d, err := c.Download(ctx, fileID, DownloadOptions{})
	if err != nil {
		return artifactstore.File{}, fail(op, err)
	}
	defer d.Body.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), d.Body)
	if err != nil {
		return artifactstore.File{}, fail(op, err)
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if got != f.Digest || n != f.Size {
		return artifactstore.File{}, &artifactstore.Error{Op: op, Kind: artifactstore.DigestMismatch,
			Detail: fmt.Sprintf("file %s should be %d bytes hashing to %s; %d bytes hashing to %s arrived", fileID, f.Size, f.Digest, n, got)}
	}
	return f, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// quoteETag quotes a bare entity tag; lists, "*" and quoted or weak tags
// pass unchanged.
func quoteETag(s string) string {
	s = strings.TrimSpace(s)
	if s == "*" || strings.HasPrefix(s, `"`) || strings.HasPrefix(s, "W/") {
		return s
	}
	return strconv.Quote(s)
}

// digestOfETag is the digest in a file's ETag `"sha256:<hex>"`.
func digestOfETag(etag string) string {
	etag = strings.TrimPrefix(strings.TrimSpace(etag), "W/")
	if s, err := strconv.Unquote(etag); err == nil {
		return s
	}
	return etag
}

// parseContentRange parses the Content-Range of a 206, "bytes a-b/size".
func parseContentRange(h string) (first, last, size int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %q", h)
	rest, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, total, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, 0, bad
	}
	size = -1
	if total != "*" {
		if size, err = strconv.ParseInt(total, 10, 64); err != nil {
			return 0, 0, 0, bad
		}
	}
	return first, last, size, nil
}
