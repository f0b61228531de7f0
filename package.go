package artifactstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/artifactstore/artifactstore/catalog"
)

// Package states.
const (
	StateOpen      = catalog.StateOpen
	StateFinalized = catalog.StateFinalized
)

// Event types.
const (
	EventPackageCreated   = "package.created"
	EventFileAdded        = "file.added"
	EventPackageFinalized = "package.finalized"
)

// Package is a package as callers see it. FinalizedAt is zero and
// ManifestDigest empty while the package is open.
type Package struct {
	ID             string
	Tenant         string
	Producer       string
	Subject        string
	RetentionClass string
	Metadata       map[string]string
	State          string // StateOpen or StateFinalized
	FileCount      int64
	TotalSize      int64
	CreatedAt      time.Time
	FinalizedAt    time.Time
	ManifestDigest string
}

// NewPackage describes a package to create. Producer and Subject are
// required; RetentionClass defaults to DefaultRetentionClass.
type NewPackage struct {
	Producer       string
	Subject        string
	RetentionClass string
	Metadata       map[string]string
}

// PackageQuery filters ListPackages. Empty fields match anything. Each
// Metadata entry is "key" (the package has the key) or "key=value" (it has
// that value); all must match. Limit defaults to DefaultPageSize and may be
// at most MaxPageSize; Cursor is the NextCursor of the previous page.
type PackageQuery struct {
	Producer       string
	Subject        string
	RetentionClass string
	State          string
	Metadata       []string
	Limit          int
	Cursor         string
}

// PackagePage is one page of ListPackages, newest first. NextCursor is empty
// on the last page.
type PackagePage struct {
	Packages   []Package
	NextCursor string
}

// Page sizes of list operations.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// CreatePackage creates an open package for tenant and records a
// package.created event. Invalid names every field that breaks a rule.
func (s *Store) CreatePackage(ctx context.Context, tenant string, np NewPackage) (Package, error) {
	const op = "CreatePackage"
	var errs []FieldError
	if err := validTenant(tenant); err != nil {
		errs = append(errs, FieldError{"tenant", err.Error()})
	}
	if fe := validName("producer", np.Producer, MaxNameBytes); fe != nil {
		errs = append(errs, *fe)
	}
	if fe := validName("subject", np.Subject, MaxNameBytes); fe != nil {
		errs = append(errs, *fe)
	}
	if np.RetentionClass == "" {
		np.RetentionClass = DefaultRetentionClass
	}
	if !slices.Contains(s.opts.RetentionClasses, np.RetentionClass) {
		errs = append(errs, FieldError{"retention_class", fmt.Sprintf("must be one of %s", strings.Join(s.opts.RetentionClasses, ", "))})
	}
	errs = append(errs, validMetadata(np.Metadata)...)
	if len(errs) > 0 {
		return Package{}, invalid(op, errs...)
	}
	md := maps.Clone(np.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	p := catalog.Package{
		ID:             s.newID(),
		Tenant:         tenant,
		Producer:       np.Producer,
		Subject:        np.Subject,
		RetentionClass: np.RetentionClass,
		Metadata:       md,
		State:          StateOpen,
	}
	data, err := eventData(map[string]any{
		"producer":        p.Producer,
		"subject":         p.Subject,
		"retention_class": p.RetentionClass,
	})
	if err != nil {
		return Package{}, wrap(op, err)
	}
	cp, err := s.cat.CreatePackage(ctx, p, catalog.NewEvent{Type: EventPackageCreated, Data: data})
	if err != nil {
		return Package{}, wrap(op, err)
	}
	s.notify.broadcast()
	return packageFrom(cp), nil
}

// GetPackage returns a package of tenant.
func (s *Store) GetPackage(ctx context.Context, tenant, id string) (Package, error) {
	const op = "GetPackage"
	if err := checkRead(op, tenant, "id", id); err != nil {
		return Package{}, err
	}
	p, err := s.cat.GetPackage(ctx, tenant, id)
	if err != nil {
		return Package{}, notFound(op, err, "package %s", id)
	}
	return packageFrom(p), nil
}

// ListPackages returns one page of tenant's packages matching q, newest
// first.
func (s *Store) ListPackages(ctx context.Context, tenant string, q PackageQuery) (PackagePage, error) {
	const op = "ListPackages"
	var errs []FieldError
	if tenant != AllTenants {
		if err := validTenant(tenant); err != nil {
			errs = append(errs, FieldError{"tenant", err.Error()})
		}
	}
	limit, fe := pageLimit(q.Limit)
	if fe != nil {
		errs = append(errs, *fe)
	}
	f := catalog.PackageFilter{
		Producer:       q.Producer,
		Subject:        q.Subject,
		RetentionClass: q.RetentionClass,
		State:          q.State,
		Limit:          limit + 1,
	}
	if q.State != "" && q.State != StateOpen && q.State != StateFinalized {
		errs = append(errs, FieldError{"state", "must be open or finalized"})
	}
	for _, m := range q.Metadata {
		k, v, hasValue := strings.Cut(m, "=")
		if k == "" || len(k) > MaxMetaKeyBytes || len(v) > MaxMetaValueBytes {
			errs = append(errs, FieldError{"metadata", fmt.Sprintf("%q must be key or key=value with a key of 1–%d bytes", m, MaxMetaKeyBytes)})
			continue
		}
		f.Metadata = append(f.Metadata, catalog.MetaFilter{Key: k, Value: v, HasValue: hasValue})
	}
	if q.Cursor != "" {
		id, ok := decodeCursor("p", q.Cursor)
		if !ok || !validID(id) {
			errs = append(errs, FieldError{"cursor", "is not a cursor this server issued"})
		}
		f.Before = id
	}
	if len(errs) > 0 {
		return PackagePage{}, invalid(op, errs...)
	}
	ps, err := s.cat.ListPackages(ctx, tenant, f)
	if err != nil {
		return PackagePage{}, wrap(op, err)
	}
	var page PackagePage
	if len(ps) > limit {
		ps = ps[:limit]
		page.NextCursor = encodeCursor("p", ps[limit-1].ID)
	}
	page.Packages = make([]Package, len(ps))
	for i, p := range ps {
		page.Packages[i] = packageFrom(p)
	}
	return page, nil
}

// Finalize freezes an open package and records its manifest and a
// package.finalized event. Finalizing a finalized package is not an error:
// it returns the package unchanged, with the same manifest digest.
func (s *Store) Finalize(ctx context.Context, tenant, id string) (Package, error) {
	const op = "Finalize"
	if err := checkWrite(op, tenant, "id", id); err != nil {
		return Package{}, err
	}
	p, err := s.cat.Finalize(ctx, tenant, id, EventPackageFinalized, buildManifest)
	if err != nil {
		return Package{}, notFound(op, err, "package %s", id)
	}
	s.notify.broadcast()
	s.pkgs.put(p.ID, pkgHint{tenant: p.Tenant, finalized: true})
	return packageFrom(p), nil
}

// buildManifest is the catalog.BuildFunc of Finalize.
func buildManifest(p catalog.Package, files []catalog.File) (catalog.Finalization, error) {
	m := Manifest{
		Schema: ManifestSchema,
		Package: ManifestPackage{
			ID:             p.ID,
			Producer:       p.Producer,
			Subject:        p.Subject,
			RetentionClass: p.RetentionClass,
			Metadata:       p.Metadata,
			CreatedAt:      FormatTime(p.CreatedAt),
			FinalizedAt:    FormatTime(p.FinalizedAt),
		},
		Files: make([]ManifestFile, len(files)),
	}
	for i, f := range files {
		m.Files[i] = ManifestFile{Path: f.Path, Size: uint64(f.Size), Digest: f.Digest, MediaType: f.MediaType}
		m.TotalSize += uint64(f.Size)
	}
	m.FileCount = uint64(len(files))
	b, err := m.MarshalCBOR()
	if err != nil {
		return catalog.Finalization{}, err
	}
	d := digestOf(b)
	data, err := eventData(map[string]any{
		"manifest_digest": d,
		"file_count":      m.FileCount,
		"total_size":      m.TotalSize,
	})
	if err != nil {
		return catalog.Finalization{}, err
	}
	return catalog.Finalization{Manifest: b, Digest: d, EventData: data}, nil
}

// ManifestBytes is a finalized package's manifest in both encodings.
type ManifestBytes struct {
	Package Package
	CBOR    []byte // deterministic CBOR; Package.ManifestDigest is its SHA-256
	JSON    []byte // the JCS projection of the same value
}

// Manifest returns the manifest of a finalized package. Conflict while the
// package is open.
func (s *Store) Manifest(ctx context.Context, tenant, id string) (ManifestBytes, error) {
	const op = "Manifest"
	if err := checkRead(op, tenant, "id", id); err != nil {
		return ManifestBytes{}, err
	}
	p, b, err := s.cat.GetManifest(ctx, tenant, id)
	if err != nil {
		if KindOf(wrap(op, err)) == Conflict {
			return ManifestBytes{}, errorf(op, Conflict, "package %s is open; finalize it first", id)
		}
		return ManifestBytes{}, notFound(op, err, "package %s", id)
	}
	j, err := ManifestJSON(b)
	if err != nil {
		return ManifestBytes{}, wrap(op, err)
	}
	return ManifestBytes{Package: packageFrom(p), CBOR: b, JSON: j}, nil
}

func packageFrom(p catalog.Package) Package {
	md := p.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return Package{
		ID:             p.ID,
		Tenant:         p.Tenant,
		Producer:       p.Producer,
		Subject:        p.Subject,
		RetentionClass: p.RetentionClass,
		Metadata:       md,
		State:          p.State,
		FileCount:      p.FileCount,
		TotalSize:      p.TotalSize,
		CreatedAt:      p.CreatedAt,
		FinalizedAt:    p.FinalizedAt,
		ManifestDigest: p.ManifestDigest,
	}
}

// checkRead validates the tenant (AllTenants allowed) and an ID argument of a
// read operation.
func checkRead(op, tenant, idField, id string) error {
	var errs []FieldError
	if tenant != AllTenants {
		if err := validTenant(tenant); err != nil {
			errs = append(errs, FieldError{"tenant", err.Error()})
		}
	}
	if !validID(id) {
		errs = append(errs, FieldError{idField, "is not an identifier this store issues"})
	}
	if len(errs) > 0 {
		return invalid(op, errs...)
	}
	return nil
}

// checkWrite validates the tenant (a real one) and an ID argument of a write
// operation.
func checkWrite(op, tenant, idField, id string) error {
	if tenant == AllTenants {
		return invalid(op, FieldError{"tenant", "a write needs a tenant"})
	}
	return checkRead(op, tenant, idField, id)
}

// notFound wraps err and, for NotFound, names what was not found.
func notFound(op string, err error, format string, args ...any) error {
	e := wrap(op, err).(*Error)
	if e.Kind == NotFound {
		e.Detail = fmt.Sprintf(format, args...) + " not found"
	}
	return e
}

func pageLimit(n int) (int, *FieldError) {
	switch {
	case n == 0:
		return DefaultPageSize, nil
	case n < 0 || n > MaxPageSize:
		return 0, &FieldError{"limit", fmt.Sprintf("must be between 1 and %d", MaxPageSize)}
	}
	return n, nil
}

// Cursors are opaque to callers: base64url of a kind letter and the key.
func encodeCursor(kind, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + key))
}

func decodeCursor(kind, c string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	key, ok := strings.CutPrefix(string(b), kind+":")
	return key, ok
}
