package httpserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-faster/jx"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/api/oas"
)

// handler implements the generated interfaces: each method parses, calls one
// Store method and encodes. Conversions between generated and domain types
// live in this file alone.
type handler struct{ s *Server }

var (
	_ oas.Handler         = (*handler)(nil)
	_ oas.RawHandler      = (*handler)(nil)
	_ oas.SecurityHandler = (*handler)(nil)
)

func (h *handler) HandleBearerAuth(ctx context.Context, _ oas.OperationName, t oas.BearerAuth) (context.Context, error) {
	tenant, err := h.s.tenantOf(t.Token)
	if err != nil {
		return ctx, err
	}
	return withTenant(ctx, tenant), nil
}

// NewError answers every error a handler returns, and the security errors
// ogen raises, from the one problem table.
func (h *handler) NewError(ctx context.Context, err error) *oas.ProblemStatusCode {
	err = classify(err)
	info := infoOf(ctx)
	p := problemOf(ctx, h.s.log, err, info.instance)
	if w := info.w; w != nil {
		problemHeaders(w.Header(), p)
	}
	out := oas.Problem{Type: p.Type, Title: p.Title, Status: p.Status, Detail: p.Detail}
	if p.Instance != "" {
		out.Instance = oas.NewOptString(p.Instance)
	}
	for _, f := range p.Errors {
		out.Errors = append(out.Errors, oas.FieldError{Field: f.Field, Message: f.Message})
	}
	if p.ExpectedOffset != nil {
		out.ExpectedOffset = oas.NewOptInt64(*p.ExpectedOffset)
	}
	return &oas.ProblemStatusCode{StatusCode: p.Status, Response: out}
}

func (h *handler) Health(context.Context) (*oas.Health, error) {
	return &oas.Health{Status: "ok"}, nil
}

func (h *handler) CreatePackage(ctx context.Context, req *oas.NewPackage) (*oas.PackageHeaders, error) {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return nil, err
	}
	p, err := h.s.st.CreatePackage(ctx, tenant, artifactstore.NewPackage{
		Producer:       req.Producer,
		Subject:        req.Subject,
		RetentionClass: req.RetentionClass.Or(""),
		Metadata:       req.Metadata.Value,
	})
	if err != nil {
		return nil, err
	}
	return &oas.PackageHeaders{Location: "/packages/" + p.ID, Response: toPackage(p)}, nil
}

func (h *handler) ListPackages(ctx context.Context, params oas.ListPackagesParams) (*oas.PackageList, error) {
	tenant, err := h.s.readTenant(ctx)
	if err != nil {
		return nil, err
	}
	page, err := h.s.st.ListPackages(ctx, tenant, artifactstore.PackageQuery{
		Producer:       params.Producer.Or(""),
		Subject:        params.Subject.Or(""),
		RetentionClass: params.RetentionClass.Or(""),
		State:          string(params.State.Or("")),
		Metadata:       params.Metadata,
		Limit:          params.Limit.Or(0),
		Cursor:         params.Cursor.Or(""),
	})
	if err != nil {
		return nil, err
	}
	out := &oas.PackageList{Packages: make([]oas.Package, len(page.Packages))}
	for i, p := range page.Packages {
		out.Packages[i] = toPackage(p)
	}
	if page.NextCursor != "" {
		out.NextCursor = oas.NewOptString(page.NextCursor)
	}
	return out, nil
}

func (h *handler) GetPackage(ctx context.Context, params oas.GetPackageParams) (*oas.Package, error) {
	tenant, err := h.s.readTenant(ctx)
	if err != nil {
		return nil, err
	}
	p, err := h.s.st.GetPackage(ctx, tenant, params.ID)
	if err != nil {
		return nil, err
	}
	out := toPackage(p)
	return &out, nil
}

func (h *handler) ListFiles(ctx context.Context, params oas.ListFilesParams) (*oas.FileList, error) {
	tenant, err := h.s.readTenant(ctx)
	if err != nil {
		return nil, err
	}
	page, err := h.s.st.ListFiles(ctx, tenant, params.ID, artifactstore.FileQuery{
		Prefix: params.Prefix.Or(""),
		Limit:  params.Limit.Or(0),
		Cursor: params.Cursor.Or(""),
	})
	if err != nil {
		return nil, err
	}
	out := &oas.FileList{Files: make([]oas.File, len(page.Files))}
	for i, f := range page.Files {
		out.Files[i] = toFile(f)
	}
	if page.NextCursor != "" {
		out.NextCursor = oas.NewOptString(page.NextCursor)
	}
	return out, nil
}

// PutFile is the generated (buffering) route of the multipart upload. The
// server routes the path to the streaming putFile before ogen sees it; this
// method stays correct for anything that reaches it anyway.
func (h *handler) PutFile(ctx context.Context, req *oas.PutFileFormMultipart, params oas.PutFileParams) (*oas.File, error) {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return nil, err
	}
	f, err := h.s.st.PutFile(ctx, tenant, params.ID, req.Path, req.File.File, artifactstore.PutOptions{
		MediaType: req.MediaType.Or(""),
		Digest:    req.Digest.Or(""),
	})
	if err != nil {
		return nil, err
	}
	out := toFile(f)
	return &out, nil
}

func (h *handler) FinalizePackage(ctx context.Context, params oas.FinalizePackageParams) (*oas.Package, error) {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return nil, err
	}
	p, err := h.s.st.Finalize(ctx, tenant, params.ID)
	if err != nil {
		return nil, err
	}
	out := toPackage(p)
	return &out, nil
}

func (h *handler) manifest(ctx context.Context, id string) (artifactstore.ManifestBytes, error) {
	tenant, err := h.s.readTenant(ctx)
	if err != nil {
		return artifactstore.ManifestBytes{}, err
	}
	return h.s.st.Manifest(ctx, tenant, id)
}

func (h *handler) GetManifest(ctx context.Context, params oas.GetManifestParams) (*oas.GetManifestOKHeaders, error) {
	m, err := h.manifest(ctx, params.ID)
	if err != nil {
		return nil, err
	}
	return &oas.GetManifestOKHeaders{
		ETag:     strconv.Quote(m.Package.ManifestDigest),
		Response: oas.GetManifestOK{Data: bytes.NewReader(m.CBOR)},
	}, nil
}

func (h *handler) GetManifestJSON(ctx context.Context, params oas.GetManifestJSONParams) (jx.Raw, error) {
	m, err := h.manifest(ctx, params.ID)
	if err != nil {
		return nil, err
	}
	if w := infoOf(ctx).w; w != nil {
		// Another representation, another strong validator (RFC 9110
		// §8.8.3): the digest names the CBOR bytes.
		w.Header().Set("ETag", strconv.Quote(m.Package.ManifestDigest+"+json"))
	}
	return jx.Raw(m.JSON), nil
}

func (h *handler) GetFile(ctx context.Context, params oas.GetFileParams) (*oas.File, error) {
	tenant, err := h.s.readTenant(ctx)
	if err != nil {
		return nil, err
	}
	f, err := h.s.st.GetFile(ctx, tenant, params.FileID)
	if err != nil {
		return nil, err
	}
	out := toFile(f)
	return &out, nil
}

// DownloadFile and HeadFile are reached only if the streaming route is
// bypassed; they serve through the same code.
func (h *handler) DownloadFile(ctx context.Context, params oas.DownloadFileParams, w http.ResponseWriter) error {
	return h.s.serveFile(ctx, w, http.MethodGet, params.FileID, downloadHeaders{
		rng: params.Range.Or(""), ifNoneMatch: params.IfNoneMatch.Or(""), ifRange: params.IfRange.Or(""),
	})
}

func (h *handler) HeadFile(ctx context.Context, params oas.HeadFileParams, w http.ResponseWriter) error {
	return h.s.serveFile(ctx, w, http.MethodHead, params.FileID, downloadHeaders{
		rng: params.Range.Or(""), ifNoneMatch: params.IfNoneMatch.Or(""), ifRange: params.IfRange.Or(""),
	})
}

func (h *handler) CreateUpload(ctx context.Context, req oas.OptNewUpload, params oas.CreateUploadParams) (*oas.UploadHeaders, error) {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return nil, err
	}
	var nu artifactstore.NewUpload
	if size, ok := req.Value.Size.Get(); req.Set && ok {
		nu.Size = &size
	}
	if hdr, ok := params.UploadLength.Get(); ok {
		if nu.Size != nil && *nu.Size != hdr {
			return nil, &artifactstore.Error{Kind: artifactstore.Invalid, Detail: "Upload-Length and the body's size disagree",
				Fields: []artifactstore.FieldError{{Field: "size", Message: "differs from Upload-Length"}}}
		}
		nu.Size = &hdr
	}
	if req.Set {
		nu.Digest = req.Value.Digest.Or("")
	}
	u, err := h.s.st.CreateUpload(ctx, tenant, nu)
	if err != nil {
		return nil, err
	}
	out := toUpload(u)
	return &oas.UploadHeaders{
		Location:      out.UploadURL,
		UploadExpires: u.ExpiresAt.UTC().Format(http.TimeFormat),
		UploadLimit:   h.s.uploadLimit(),
		UploadOffset:  u.Offset,
		Response:      out,
	}, nil
}

func (s *Server) uploadLimit() string {
	return "max-size=" + strconv.FormatInt(s.st.Options().MaxFileSize, 10) +
		", max-age=" + strconv.FormatInt(int64(s.st.Options().UploadTTL/time.Second), 10)
}

func (h *handler) AppendUpload(ctx context.Context, req oas.AppendUploadReq, params oas.AppendUploadParams) (*oas.AppendUploadNoContent, error) {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return nil, err
	}
	offset := int64(artifactstore.AtCurrentOffset)
	body := req.Data
	if v, ok := params.UploadOffset.Get(); ok {
		offset = v
	}
	if v, ok := params.ContentRange.Get(); ok {
		cr, err := parseContentRange(v)
		if err != nil {
			return nil, &artifactstore.Error{Kind: artifactstore.Invalid, Detail: err.Error(),
				Fields: []artifactstore.FieldError{{Field: "Content-Range", Message: err.Error()}}}
		}
		if cr.First < 0 {
			// "bytes */total": no content, only where the upload stands.
			body = strings.NewReader("")
		} else {
			if offset >= 0 && offset != cr.First {
				return nil, &artifactstore.Error{Kind: artifactstore.Invalid, Detail: "Upload-Offset and Content-Range disagree"}
			}
			offset = cr.First
			body = io.LimitReader(body, cr.Last-cr.First+1)
		}
	}
	u, err := h.s.st.AppendUpload(ctx, tenant, params.ID, offset, body)
	if err != nil {
		return nil, err
	}
	return &oas.AppendUploadNoContent{UploadOffset: u.Offset}, nil
}

func (h *handler) uploadStatus(ctx context.Context, id string) (artifactstore.Upload, error) {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return artifactstore.Upload{}, err
	}
	return h.s.st.UploadStatus(ctx, tenant, id)
}

func (h *handler) HeadUpload(ctx context.Context, params oas.HeadUploadParams) (*oas.HeadUploadNoContent, error) {
	u, err := h.uploadStatus(ctx, params.ID)
	if err != nil {
		return nil, err
	}
	out := &oas.HeadUploadNoContent{CacheControl: "no-store", UploadExpires: u.ExpiresAt.UTC().Format(http.TimeFormat), UploadOffset: u.Offset}
	if u.Size >= 0 {
		out.UploadLength = oas.NewOptInt64(u.Size)
	}
	return out, nil
}

func (h *handler) GetUpload(ctx context.Context, params oas.GetUploadParams) (*oas.GetUploadOKHeaders, error) {
	u, err := h.uploadStatus(ctx, params.ID)
	if err != nil {
		return nil, err
	}
	out := &oas.GetUploadOKHeaders{CacheControl: "no-store", UploadExpires: u.ExpiresAt.UTC().Format(http.TimeFormat),
		UploadOffset: u.Offset, Response: toUpload(u)}
	if u.Size >= 0 {
		out.UploadLength = oas.NewOptInt64(u.Size)
	}
	return out, nil
}

func (h *handler) CompleteUpload(ctx context.Context, req *oas.CompleteUpload, params oas.CompleteUploadParams) (*oas.File, error) {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return nil, err
	}
	f, err := h.s.st.CompleteUpload(ctx, tenant, params.ID, artifactstore.CompleteUploadRequest{
		PackageID: req.PackageID,
		Path:      req.Path,
		MediaType: req.MediaType.Or(""),
		Digest:    req.Digest.Or(""),
	})
	if err != nil {
		return nil, err
	}
	out := toFile(f)
	return &out, nil
}

func (h *handler) DeleteUpload(ctx context.Context, params oas.DeleteUploadParams) error {
	tenant, err := h.s.writeTenant(ctx)
	if err != nil {
		return err
	}
	return h.s.st.AbortUpload(ctx, tenant, params.ID)
}

func (h *handler) ListEvents(ctx context.Context, params oas.ListEventsParams) (oas.ListEventsRes, error) {
	tenant, err := h.s.readTenant(ctx)
	if err != nil {
		return nil, err
	}
	if named, ok := params.Tenant.Get(); ok {
		if tenant != artifactstore.AllTenants && named != tenant {
			return nil, &artifactstore.Error{Kind: artifactstore.Forbidden, Detail: "a token reads only its own tenant's events"}
		}
		tenant = named
	} else if tenant == artifactstore.AllTenants {
		return nil, &artifactstore.Error{Kind: artifactstore.Invalid, Detail: "anonymous readers name the tenant with ?tenant=",
			Fields: []artifactstore.FieldError{{Field: "tenant", Message: "is required for anonymous readers"}}}
	}
	since := params.Since.Or(0)
	if since < 0 {
		return nil, &artifactstore.Error{Kind: artifactstore.Invalid, Fields: []artifactstore.FieldError{{Field: "since", Message: "must not be negative"}}}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-h.s.drain:
			cancel()
		case <-wctx.Done():
		}
	}()
	page, err := h.s.st.WaitEvents(wctx, tenant, uint64(since), params.Limit.Or(0), time.Duration(params.Wait.Or(20))*time.Second)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		// Drained for shutdown: answer with what there is.
		page, err = h.s.st.Events(ctx, tenant, uint64(since), params.Limit.Or(0))
	}
	if e, ok := errors.AsType[*artifactstore.Error](err); ok && e.Kind == artifactstore.Invalid && len(e.Fields) == 1 && e.Fields[0].Field == "since" {
		// DESIGN §4: since beyond head is 400.
		return nil, badRequest{err}
	}
	if err != nil {
		return nil, err
	}
	if wantsJSON(params.Accept.Or("")) {
		b, err := page.MarshalJCS()
		if err != nil {
			return nil, err
		}
		out := oas.ListEventsOKApplicationJSON(b)
		return &out, nil
	}
	b, err := page.MarshalCBOR()
	if err != nil {
		return nil, err
	}
	return &oas.ListEventsOKApplicationCbor{Data: bytes.NewReader(b)}, nil
}

// wantsJSON: CBOR is the default; JSON when the client asks for it and not
// for CBOR first.
func wantsJSON(accept string) bool {
	j := strings.Index(accept, "application/json")
	c := strings.Index(accept, "application/cbor")
	return j >= 0 && (c < 0 || j < c)
}

func toPackage(p artifactstore.Package) oas.Package {
	out := oas.Package{
		ID:             p.ID,
		Tenant:         p.Tenant,
		Producer:       p.Producer,
		Subject:        p.Subject,
		RetentionClass: p.RetentionClass,
		Metadata:       p.Metadata,
		State:          oas.PackageState(p.State),
		FileCount:      p.FileCount,
		TotalSize:      p.TotalSize,
		CreatedAt:      p.CreatedAt.UTC(),
	}
	if !p.FinalizedAt.IsZero() {
		out.FinalizedAt = oas.NewOptDateTime(p.FinalizedAt.UTC())
		out.ManifestDigest = oas.NewOptString(p.ManifestDigest)
	}
	return out
}

func toFile(f artifactstore.File) oas.File {
	return oas.File{
		ID:        f.ID,
		PackageID: f.PackageID,
		Path:      f.Path,
		Size:      f.Size,
		Digest:    f.Digest,
		MediaType: f.MediaType,
		CreatedAt: f.CreatedAt.UTC(),
	}
}

func toUpload(u artifactstore.Upload) oas.Upload {
	out := oas.Upload{
		UploadID:  u.ID,
		UploadURL: "/uploads/" + u.ID,
		Offset:    u.Offset,
		ExpiresAt: u.ExpiresAt.UTC(),
	}
	if u.Size >= 0 {
		out.Size = oas.NewNilInt64(u.Size)
	} else {
		out.Size.SetToNull()
	}
	if u.Digest != "" {
		out.Digest = oas.NewOptString(u.Digest)
	}
	return out
}
