// Package client is the Go client of the artifactstore HTTP API (DESIGN §4).
//
// It wraps the client that ogen generates from api/openapi.yaml and speaks
// the root package's types: it takes and returns artifactstore.Package,
// artifactstore.File, artifactstore.Upload, artifactstore.EventPage and so on,
// and every problem document the server answers becomes an
// *artifactstore.Error of the same Kind the Store would have returned
// in-process, so artifactstore.KindOf(err) means the same on both sides.
//
// File content streams both ways: PutFile, AppendUpload and UploadResumable
// read their io.Reader while the request is being sent, and Download hands
// out the response body as it arrives. Nothing holds a whole file in memory.
//
// A Client is safe for concurrent use.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/ogen-go/ogen/ogenerrors"

	"github.com/artifactstore/artifactstore"
	"github.com/artifactstore/artifactstore/api/oas"
)

// userAgent is sent with every request.
const userAgent = "artifactstore-go-client/1"

// Client talks to one artifactstore server as one tenant (the owner of its
// token) or anonymously.
type Client struct {
	base  string // the server URL without a trailing slash
	token string
	hc    *http.Client
	api   *oas.Client
	do    *doer
}

// Option configures a Client.
type Option func(*Client)

// WithToken authenticates every request with Authorization: Bearer token.
// Without a token the client is anonymous: operations that need a token fail
// with an Unauthorized error without a request being sent.
func WithToken(token string) Option {
	return func(c *Client) { c.token = token }
}

// WithHTTPClient sends the requests through hc instead of a client over
// http.DefaultTransport. hc should have no overall Timeout: downloads,
// uploads and event long-polls run as long as the transfer takes; bound
// them with the context instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// New returns a client of the server at baseURL (e.g.
// "http://127.0.0.1:8480"; a path prefix is kept).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must be an absolute http or https URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q must not have a query or fragment", baseURL)
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), hc: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	if strings.ContainsFunc(c.token, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return nil, errors.New("client: the token must not contain spaces or control characters")
	}
	c.do = &doer{hc: c.hc}
	c.api, err = oas.NewClient(c.base, tokenSource(c.token), oas.WithClient(c.do))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return c, nil
}

// tokenSource is the generated client's SecuritySource: the bearer token, or
// no security at all for an anonymous client.
type tokenSource string

func (t tokenSource) BearerAuth(context.Context, oas.OperationName) (oas.BearerAuth, error) {
	if t == "" {
		return oas.BearerAuth{}, ogenerrors.ErrSkipClientSecurity
	}
	return oas.BearerAuth{Token: string(t)}, nil
}

// doer sends every request, the generated client's and the hand-written
// ones. An answer of 400 or more never reaches the caller as a response: it
// becomes an error here, in one place (see responseError).
type doer struct{ hc *http.Client }

func (d *doer) Do(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", userAgent)
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	defer drainClose(resp.Body)
	return nil, responseError(req, resp)
}

// newRequest builds a hand-written request to path (already escaped) with
// the client's credentials.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// drainClose reads a little of what is left of a body, so the connection can
// be reused, and closes it.
func drainClose(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}

// fail turns the error of a call into what the client returns: the
// server's problem as an *artifactstore.Error naming op, or the transport
// error wrapped with op (Kind Internal).
func fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*artifactstore.Error](err); ok {
		e.Op = op
		return e
	}
	if errors.Is(err, ogenerrors.ErrSecurityRequirementIsNotSatisfied) {
		return &artifactstore.Error{Op: op, Kind: artifactstore.Unauthorized,
			Detail: "this operation needs a bearer token (client.WithToken)"}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// invalid is a client-side validation error, of the kind the Store gives
// for the same mistake.
func invalid(op, field, msg string) error {
	return &artifactstore.Error{Op: op, Kind: artifactstore.Invalid, Detail: field + ": " + msg,
		Fields: []artifactstore.FieldError{{Field: field, Message: msg}}}
}

// checkID rejects identifiers that cannot name a resource in a URL path (the
// server would route them elsewhere); the Store finds them Invalid too.
func checkID(op, field, id string) error {
	if id == "" || id == "." || id == ".." {
		return invalid(op, field, "is not an identifier this store issues")
	}
	return nil
}

// Conversions from the generated types to the domain types.

func packageFrom(p *oas.Package) artifactstore.Package {
	md := map[string]string(p.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	out := artifactstore.Package{
		ID:             p.ID,
		Tenant:         p.Tenant,
		Producer:       p.Producer,
		Subject:        p.Subject,
		RetentionClass: p.RetentionClass,
		Metadata:       md,
		State:          string(p.State),
		FileCount:      p.FileCount,
		TotalSize:      p.TotalSize,
		CreatedAt:      p.CreatedAt,
		ManifestDigest: p.ManifestDigest.Or(""),
	}
	if t, ok := p.FinalizedAt.Get(); ok {
		out.FinalizedAt = t
	}
	return out
}

// fileFrom converts a File. The wire form does not carry the tenant, so
// Tenant is empty.
func fileFrom(f *oas.File) artifactstore.File {
	return artifactstore.File{
		ID:        f.ID,
		PackageID: f.PackageID,
		Path:      f.Path,
		Size:      f.Size,
		Digest:    f.Digest,
		MediaType: f.MediaType,
		CreatedAt: f.CreatedAt,
	}
}

// uploadFrom converts an Upload. The wire form carries neither the tenant,
// the creation time nor the completed file, so those stay zero.
func uploadFrom(u *oas.Upload) artifactstore.Upload {
	size := int64(-1)
	if v, ok := u.Size.Get(); ok {
		size = v
	}
	return artifactstore.Upload{
		ID:        u.UploadID,
		Offset:    u.Offset,
		Size:      size,
		Digest:    u.Digest.Or(""),
		ExpiresAt: u.ExpiresAt,
	}
}
