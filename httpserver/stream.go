package httpserver

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/artifactstore/artifactstore"
)

// maxFormField caps the small fields of the multipart upload (path,
// media_type, digest).
const maxFormField = 4096

// readBufs recycles the 1 MiB read buffers under multipart readers
// (mime/multipart reads 4 KiB at a time; a large buffer below it doubled the
// rate) so small uploads do not pay for a fresh one each.
var readBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1<<20) }}

// smallReadBufs serve bodies known to be small (Content-Length up to their
// size): a megabyte each for thousands of concurrent small files would be
// most of the server's memory.
var smallReadBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, smallBody) }}

const smallBody = 64 << 10

// putFile is POST /packages/{id}/files, multipart/form-data with the fields
// path, file and optionally media_type and digest, in any order. It streams:
// the file part's bytes go to the store as they arrive (a 1 MiB read buffer
// under the multipart reader, measured to double its throughput), and when
// the file part comes before path they are staged and bound to the path once
// it arrives.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	tenant, err := s.authenticate(r)
	if err == nil && tenant == "" {
		err = unauthorized("this endpoint needs a bearer token")
	}
	if err != nil {
		s.problem(w, r, err)
		return
	}
	f, err := s.putMultipart(r, tenant, r.PathValue("id"))
	if err != nil {
		s.problem(w, r, err)
		return
	}
	w.Header().Set("Location", "/files/"+f.ID)
	out := toFile(f)
	writeJSON(w, http.StatusCreated, &out)
}

func (s *Server) putMultipart(r *http.Request, tenant, packageID string) (artifactstore.File, error) {
	ctx := r.Context()
	malformed := func(format string, args ...any) error {
		return badRequest{&artifactstore.Error{Kind: artifactstore.Invalid, Detail: fmt.Sprintf(format, args...)}}
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return artifactstore.File{}, malformed("the body must be multipart/form-data with the fields path and file")
	}
	pool := &readBufs
	if r.ContentLength >= 0 && r.ContentLength <= smallBody {
		pool = &smallReadBufs
	}
	br := pool.Get().(*bufio.Reader)
	br.Reset(r.Body)
	defer func() {
		br.Reset(nil)
		pool.Put(br)
	}()
	mr := multipart.NewReader(br, params["boundary"])
	fields := map[string]string{}
	var (
		file    *artifactstore.File
		staged  *artifactstore.Content
		sawFile bool
	)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return artifactstore.File{}, malformed("broken multipart body: %v", err)
		}
		name := part.FormName()
		switch name {
		case "path", "media_type", "digest":
			b, err := io.ReadAll(io.LimitReader(part, maxFormField+1))
			if err != nil {
				return artifactstore.File{}, malformed("broken multipart body: %v", err)
			}
			if len(b) > maxFormField {
				return artifactstore.File{}, &artifactstore.Error{Kind: artifactstore.Invalid, Detail: "form field " + name + " is too long",
					Fields: []artifactstore.FieldError{{Field: name, Message: fmt.Sprintf("at most %d bytes", maxFormField)}}}
			}
			if _, dup := fields[name]; dup {
				return artifactstore.File{}, malformed("form field %s appears twice", name)
			}
			fields[name] = string(b)
		case "file":
			if sawFile {
				return artifactstore.File{}, malformed("one file per request")
			}
			sawFile = true
			opts := artifactstore.PutOptions{MediaType: fields["media_type"], Digest: fields["digest"]}
			if opts.MediaType == "" {
				// The part's own Content-Type, unless it is the generic default.
				if ct := part.Header.Get("Content-Type"); ct != "" && ct != "application/octet-stream" {
					opts.MediaType = ct
				}
			}
			if p, ok := fields["path"]; ok {
				f, err := s.st.PutFile(ctx, tenant, packageID, p, part, opts)
				if err != nil {
					return artifactstore.File{}, err
				}
				file = &f
			} else {
				c, err := s.st.StageContent(ctx, tenant, part, opts.Digest)
				if err != nil {
					return artifactstore.File{}, err
				}
				staged = &c
				if fields["media_type"] == "" && opts.MediaType != "" {
					fields["media_type"] = opts.MediaType
				}
			}
		default:
			// Unknown fields are drained and ignored, like most form servers.
			if _, err := io.Copy(io.Discard, io.LimitReader(part, maxFormField)); err != nil {
				return artifactstore.File{}, malformed("broken multipart body: %v", err)
			}
		}
	}
	switch {
	case !sawFile:
		return artifactstore.File{}, &artifactstore.Error{Kind: artifactstore.Invalid, Detail: "the form has no file part",
			Fields: []artifactstore.FieldError{{Field: "file", Message: "is required"}}}
	case file != nil:
		return *file, nil
	}
	p, ok := fields["path"]
	if !ok {
		return artifactstore.File{}, &artifactstore.Error{Kind: artifactstore.Invalid, Detail: "the form has no path field",
			Fields: []artifactstore.FieldError{{Field: "path", Message: "is required"}}}
	}
	return s.st.AddFile(ctx, tenant, packageID, p, *staged, artifactstore.PutOptions{MediaType: fields["media_type"], Digest: fields["digest"]})
}

// download is GET and HEAD /files/{file_id}/download.
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	tenant, err := s.authenticate(r)
	if err != nil {
		s.problem(w, r, err)
		return
	}
	ctx = withTenant(ctx, tenant)
	err = s.serveFile(ctx, w, r.Method, r.PathValue("file_id"), downloadHeaders{
		rng:         r.Header.Get("Range"),
		ifNoneMatch: r.Header.Get("If-None-Match"),
		ifRange:     r.Header.Get("If-Range"),
	})
	if err != nil {
		s.problem(w, r, err)
	}
}

type downloadHeaders struct{ rng, ifNoneMatch, ifRange string }

var (
	acceptRanges = []string{"bytes"}
	immutable    = []string{"private, max-age=31536000, immutable"}
)

// attachment is the Content-Disposition of a download saved as name, as
// mime.FormatMediaType writes it, without its allocations for the usual
// name, a token.
func attachment(name string) string {
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?=`, r) }) {
		return mime.FormatMediaType("attachment", map[string]string{"filename": name})
	}
	return "attachment; filename=" + name
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	}
	return -1
}

// reprDigest is the Repr-Digest field (RFC 9530) of a sha256: digest, or ""
// for a digest that is not one.
func reprDigest(digest string) string {
	var sum [32]byte
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexPart) != 64 {
		return ""
	}
	for i := range sum {
		hi, lo := unhex(hexPart[2*i]), unhex(hexPart[2*i+1])
		if hi < 0 || lo < 0 {
			return ""
		}
		sum[i] = byte(hi<<4 | lo)
	}
	var b [len("sha-256=::") + 44]byte
	n := copy(b[:], "sha-256=:")
	base64.StdEncoding.Encode(b[n:], sum[:])
	n += 44
	b[n] = ':'
	return string(b[:n+1])
}

// formatContentRange is the Content-Range value of a satisfiable range, built with
// one allocation.
func formatContentRange(start, length, size int64) string {
	b := make([]byte, 0, len("bytes -/")+3*20)
	b = append(b, "bytes "...)
	b = strconv.AppendInt(b, start, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, start+length-1, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, size, 10)
	return string(b)
}

// serveFile answers a download. It returns an error only before anything was
// written; a failure mid-body aborts the connection, so a client never takes
// a truncated body for a whole one.
func (s *Server) serveFile(ctx context.Context, w http.ResponseWriter, method, fileID string, hd downloadHeaders) error {
	tenant, err := s.readTenant(ctx)
	if err != nil {
		return err
	}
	f, rd, err := s.st.OpenFile(ctx, tenant, fileID)
	if err != nil {
		return err
	}
	defer rd.Close()
	size := rd.Size()
	etag := `"` + f.Digest + `"` // digests need no escaping
	h := w.Header()
	// Constant values are shared slices: no allocation per request.
	h["Etag"] = []string{etag}
	h["Accept-Ranges"] = acceptRanges
	h["Cache-Control"] = immutable
	if hd.ifNoneMatch != "" && etagMatches(hd.ifNoneMatch, etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h["Content-Type"] = []string{f.MediaType}
	h["Content-Disposition"] = []string{attachment(path.Base(f.Path))}
	if rd := reprDigest(f.Digest); rd != "" {
		h["Repr-Digest"] = []string{rd}
	}
	status, start, length := http.StatusOK, int64(0), size
	if hd.rng != "" && (hd.ifRange == "" || ifRangeMatches(hd.ifRange, etag)) {
		br, err := parseRange(hd.rng, size)
		switch {
		case errors.Is(err, errRangeUnsatisfiable):
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			return &artifactstore.Error{Kind: artifactstore.RangeNotSatisfiable,
				Detail: fmt.Sprintf("the file has %d bytes; the range %q lies outside", size, hd.rng)}
		case err == nil:
			status, start, length = http.StatusPartialContent, br.Start, br.Length
			h["Content-Range"] = []string{formatContentRange(start, length, size)}
		}
	}
	h["Content-Length"] = []string{strconv.FormatInt(length, 10)}
	if start > 0 {
		if _, err := rd.Seek(start, io.SeekStart); err != nil {
			return err
		}
	}
	w.WriteHeader(status)
	if method == http.MethodHead || length == 0 {
		return nil
	}
	if length > liftDownloadDeadline {
		http.NewResponseController(w).SetWriteDeadline(time.Time{})
	}
	var src io.Reader = rd
	if u, ok := rd.(interface{ File() *os.File }); ok {
		src = u.File() // a bare *os.File keeps the sendfile path
		// With the header sent first, net/http goes straight to sendfile
		// instead of reading the first 512 bytes (to sniff a Content-Type
		// we have set) and writing them with the header: a syscall less.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	if _, err := io.Copy(w, io.LimitReader(src, length)); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v interface{ MarshalJSON() ([]byte, error) }) {
	b, err := v.MarshalJSON()
	if err != nil {
		http.Error(w, "encoding failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
