package httpserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ogen-go/ogen/http"

	"github.com/artifactstore/artifactstore/api/oas"
)

type bearer string

func (b bearer) BearerAuth(context.Context, oas.OperationName) (oas.BearerAuth, error) {
	return oas.BearerAuth{Token: string(b)}, nil
}

// TestGeneratedClient drives every operation through the ogen-generated
// client, so the spec, the generated code and the server agree.
func TestGeneratedClient(t *testing.T) {
	ctx := context.Background()
	ts := newServer(t, false)
	c, err := oas.NewClient(ts.URL, bearer(tokenAcme))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := c.Health(ctx); err != nil || h.Status != "ok" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	created, err := c.CreatePackage(ctx, &oas.NewPackage{Producer: "ci", Subject: "gen", Metadata: oas.NewOptMetadata(oas.Metadata{"k": "v"})})
	if err != nil {
		t.Fatal(err)
	}
	pkg := created.Response
	if created.Location != "/packages/"+pkg.ID || pkg.State != oas.PackageStateOpen || pkg.FinalizedAt.Set {
		t.Fatalf("CreatePackage = %+v", created)
	}

	// The generated client sends the file part before the fields.
	content := []byte("generated client content")
	f, err := c.PutFile(ctx, &oas.PutFileFormMultipart{
		Path: "gen/file.txt",
		File: http.MultipartFile{Name: "file.txt", File: bytes.NewReader(content), Size: int64(len(content))},
	}, oas.PutFileParams{ID: pkg.ID})
	if err != nil {
		t.Fatal(err)
	}
	if f.Path != "gen/file.txt" || f.Digest != sha(content) {
		t.Fatalf("PutFile = %+v", f)
	}
	if got, err := c.GetFile(ctx, oas.GetFileParams{FileID: f.ID}); err != nil || got.Digest != f.Digest {
		t.Fatalf("GetFile = %+v, %v", got, err)
	}

	up, err := c.CreateUpload(ctx, oas.NewOptNewUpload(oas.NewUpload{Size: oas.NewOptInt64(6)}), oas.CreateUploadParams{})
	if err != nil {
		t.Fatal(err)
	}
	id := up.Response.UploadID
	if up.UploadOffset != 0 || up.Response.Size.Value != 6 || up.Location != "/uploads/"+id {
		t.Fatalf("CreateUpload = %+v", up)
	}
	if _, err := c.AppendUpload(ctx, oas.AppendUploadReq{Data: strings.NewReader("abc")}, oas.AppendUploadParams{ID: id, UploadOffset: oas.NewOptInt64(0)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.AppendUpload(ctx, oas.AppendUploadReq{Data: strings.NewReader("def")}, oas.AppendUploadParams{ID: id, UploadOffset: oas.NewOptInt64(1)})
	var pe *oas.ProblemStatusCode
	if !errors.As(err, &pe) || pe.StatusCode != 409 || pe.Response.ExpectedOffset.Value != 3 || pe.Response.Type != "/problems/offset-mismatch" {
		t.Fatalf("wrong offset = %v", err)
	}
	if _, err := c.AppendUpload(ctx, oas.AppendUploadReq{Data: strings.NewReader("def")}, oas.AppendUploadParams{ID: id, ContentRange: oas.NewOptString("bytes 3-5/6")}); err != nil {
		t.Fatal(err)
	}
	if h, err := c.HeadUpload(ctx, oas.HeadUploadParams{ID: id}); err != nil || h.UploadOffset != 6 || h.UploadLength.Value != 6 {
		t.Fatalf("HeadUpload = %+v, %v", h, err)
	}
	if g, err := c.GetUpload(ctx, oas.GetUploadParams{ID: id}); err != nil || g.Response.Offset != 6 {
		t.Fatalf("GetUpload = %+v, %v", g, err)
	}
	uf, err := c.CompleteUpload(ctx, &oas.CompleteUpload{PackageID: pkg.ID, Path: "gen/upload.bin", Digest: oas.NewOptString(sha([]byte("abcdef")))}, oas.CompleteUploadParams{ID: id})
	if err != nil || uf.Size != 6 {
		t.Fatalf("CompleteUpload = %+v, %v", uf, err)
	}
	up2, _ := c.CreateUpload(ctx, oas.OptNewUpload{}, oas.CreateUploadParams{})
	if err := c.DeleteUpload(ctx, oas.DeleteUploadParams{ID: up2.Response.UploadID}); err != nil {
		t.Fatal(err)
	}

	list, err := c.ListFiles(ctx, oas.ListFilesParams{ID: pkg.ID, Limit: oas.NewOptInt(1)})
	if err != nil || len(list.Files) != 1 || !list.NextCursor.Set {
		t.Fatalf("ListFiles = %+v, %v", list, err)
	}
	fin, err := c.FinalizePackage(ctx, oas.FinalizePackageParams{ID: pkg.ID})
	if err != nil || fin.State != oas.PackageStateFinalized || !fin.ManifestDigest.Set {
		t.Fatalf("FinalizePackage = %+v, %v", fin, err)
	}
	mc, err := c.GetManifest(ctx, oas.GetManifestParams{ID: pkg.ID})
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := io.ReadAll(mc.Response.Data)
	if sha(cb) != fin.ManifestDigest.Value || mc.ETag != `"`+fin.ManifestDigest.Value+`"` {
		t.Fatalf("GetManifest: digest %s, ETag %s", sha(cb), mc.ETag)
	}
	mj, err := c.GetManifestJSON(ctx, oas.GetManifestJSONParams{ID: pkg.ID})
	if err != nil || !bytes.Contains(mj, []byte(`"schema":"artifactstore.manifest.v1"`)) {
		t.Fatalf("GetManifestJSON = %s, %v", mj, err)
	}
	pl, err := c.ListPackages(ctx, oas.ListPackagesParams{Metadata: []string{"k=v"}, State: oas.NewOptPackageState(oas.PackageStateFinalized)})
	if err != nil || len(pl.Packages) != 1 || pl.Packages[0].ID != pkg.ID {
		t.Fatalf("ListPackages = %+v, %v", pl, err)
	}
	if g, err := c.GetPackage(ctx, oas.GetPackageParams{ID: pkg.ID}); err != nil || g.FileCount != 2 {
		t.Fatalf("GetPackage = %+v, %v", g, err)
	}

	// Downloads come back as streaming responses.
	dr, err := c.DownloadFile(ctx, oas.DownloadFileParams{FileID: f.ID, Range: oas.NewOptString("bytes=0-8")})
	if err != nil {
		t.Fatal(err)
	}
	partial, ok := dr.(*oas.DownloadFilePartialContentRaw)
	if !ok {
		t.Fatalf("DownloadFile with a range = %T", dr)
	}
	b, _ := io.ReadAll(partial.Response.Body)
	partial.Response.Body.Close()
	if string(b) != string(content[:9]) {
		t.Fatalf("ranged body %q", b)
	}
	dr, err = c.DownloadFile(ctx, oas.DownloadFileParams{FileID: f.ID, IfNoneMatch: oas.NewOptString(`"` + f.Digest + `"`)})
	if _, ok := dr.(*oas.DownloadFileNotModified); err != nil || !ok {
		t.Fatalf("DownloadFile If-None-Match = %T, %v", dr, err)
	}
	hr, err := c.HeadFile(ctx, oas.HeadFileParams{FileID: f.ID})
	if ok, isOK := hr.(*oas.HeadFileOKRaw); err != nil || !isOK || ok.Response.ContentLength != int64(len(content)) {
		t.Fatalf("HeadFile = %T, %v", hr, err)
	}
	hr.(*oas.HeadFileOKRaw).Response.Body.Close()

	ev, err := c.ListEvents(ctx, oas.ListEventsParams{Wait: oas.NewOptInt(0), Accept: oas.NewOptString("application/json")})
	if err != nil {
		t.Fatal(err)
	}
	js, ok := ev.(*oas.ListEventsOKApplicationJSON)
	if !ok || !bytes.Contains(*js, []byte(`"head":4`)) {
		t.Fatalf("ListEvents JSON = %T %s", ev, *js)
	}
	ev, err = c.ListEvents(ctx, oas.ListEventsParams{Wait: oas.NewOptInt(0)})
	if _, ok := ev.(*oas.ListEventsOKApplicationCbor); err != nil || !ok {
		t.Fatalf("ListEvents CBOR = %T, %v", ev, err)
	}

	// Errors arrive as problems.
	_, err = c.GetPackage(ctx, oas.GetPackageParams{ID: "01JDX0000000000000000000ZZ"})
	if !errors.As(err, &pe) || pe.StatusCode != 404 || pe.Response.Type != "/problems/not-found" {
		t.Fatalf("missing package = %v", err)
	}
	bad, _ := oas.NewClient(ts.URL, bearer("wrong"))
	_, err = bad.GetPackage(ctx, oas.GetPackageParams{ID: pkg.ID})
	if !errors.As(err, &pe) || pe.StatusCode != 401 {
		t.Fatalf("bad token = %v", err)
	}
}
