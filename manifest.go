package artifactstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gowebpki/jcs"
)

// ManifestSchema names the manifest format this package writes.
const ManifestSchema = "artifactstore.manifest.v1"

// TimeFormat is the fixed-precision RFC 3339 UTC form every time takes in a
// manifest or event: milliseconds, always three digits, always "Z".
const TimeFormat = "2006-01-02T15:04:05.000Z"

// FormatTime renders t in TimeFormat.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Manifest is the frozen description of a finalized package (DESIGN §3).
// Its CBOR encoding is RFC 8949 §4.2.1 core deterministic; its JSON
// projection is the same value canonicalised with RFC 8785 (JCS).
type Manifest struct {
	Schema    string          `cbor:"schema" json:"schema"`
	Package   ManifestPackage `cbor:"package" json:"package"`
	Files     []ManifestFile  `cbor:"files" json:"files"`
	FileCount uint64          `cbor:"file_count" json:"file_count"`
	TotalSize uint64          `cbor:"total_size" json:"total_size"`
}

// ManifestPackage is the package part of a manifest. Times are TimeFormat text.
type ManifestPackage struct {
	ID             string            `cbor:"id" json:"id"`
	Producer       string            `cbor:"producer" json:"producer"`
	Subject        string            `cbor:"subject" json:"subject"`
	RetentionClass string            `cbor:"retention_class" json:"retention_class"`
	Metadata       map[string]string `cbor:"metadata" json:"metadata"`
	CreatedAt      string            `cbor:"created_at" json:"created_at"`
	FinalizedAt    string            `cbor:"finalized_at" json:"finalized_at"`
}

// ManifestFile is one file of a manifest.
type ManifestFile struct {
	Path      string `cbor:"path" json:"path"`
	Size      uint64 `cbor:"size" json:"size"`
	Digest    string `cbor:"digest" json:"digest"`
	MediaType string `cbor:"media_type" json:"media_type"`
}

var (
	detEnc = mustEncMode()
	// strictDec refuses duplicate keys, unknown fields and indefinite
	// lengths: a manifest that decodes re-encodes to the same bytes.
	strictDec = mustDecMode()
)

func mustEncMode() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	opts.Time = cbor.TimeRFC3339Nano
	em, err := opts.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}

func mustDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		DefaultMapType:    nil,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}

// normalize makes nil collections empty and sorts files bytewise by path, so
// equal content always encodes to equal bytes.
func (m *Manifest) normalize() {
	if m.Package.Metadata == nil {
		m.Package.Metadata = map[string]string{}
	}
	if m.Files == nil {
		m.Files = []ManifestFile{}
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
}

// MarshalCBOR returns the manifest's deterministic CBOR bytes.
func (m Manifest) MarshalCBOR() ([]byte, error) {
	m.normalize()
	type plain Manifest // no MarshalCBOR method: avoids recursion
	return detEnc.Marshal(plain(m))
}

// MarshalJCS returns the manifest's JCS (RFC 8785) JSON bytes.
func (m Manifest) MarshalJCS() ([]byte, error) {
	m.normalize()
	return canonicalJSON(m)
}

// Digest returns "sha256:" + hex SHA-256 of the CBOR bytes.
func (m Manifest) Digest() (string, error) {
	b, err := m.MarshalCBOR()
	if err != nil {
		return "", err
	}
	return digestOf(b), nil
}

// DecodeManifestCBOR parses manifest CBOR strictly (no duplicate keys, no
// unknown fields, no trailing bytes).
func DecodeManifestCBOR(b []byte) (Manifest, error) {
	type plain Manifest
	var m plain
	if err := strictDec.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if m.Schema != ManifestSchema {
		return Manifest{}, fmt.Errorf("manifest: unknown schema %q", m.Schema)
	}
	return Manifest(m), nil
}

// DecodeManifestJSON parses manifest JSON strictly (no unknown fields, no
// trailing data).
func DecodeManifestJSON(b []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("manifest: trailing data")
	}
	if m.Schema != ManifestSchema {
		return Manifest{}, fmt.Errorf("manifest: unknown schema %q", m.Schema)
	}
	return m, nil
}

// ManifestJSON converts manifest CBOR bytes to its JCS JSON projection.
func ManifestJSON(cborBytes []byte) ([]byte, error) {
	m, err := DecodeManifestCBOR(cborBytes)
	if err != nil {
		return nil, err
	}
	return m.MarshalJCS()
}

// canonicalJSON marshals v and canonicalises it with JCS.
func canonicalJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(raw)
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
