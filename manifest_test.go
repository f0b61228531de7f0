package artifactstore

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenManifests are fixed inputs whose encodings must never change: a
// change of bytes changes every manifest digest ever published.
func goldenManifests() map[string]Manifest {
	return map[string]Manifest{
		"empty": {
			Schema: ManifestSchema,
			Package: ManifestPackage{
				ID: "01JDX0000000000000000000AA", Producer: "ci", Subject: "svc-a",
				RetentionClass: "standard", CreatedAt: "2026-11-26T20:39:07.123Z", FinalizedAt: "2026-11-26T20:39:09.001Z",
			},
		},
		"two-files": {
			Schema: ManifestSchema,
			Package: ManifestPackage{
				ID: "01JDX0000000000000000000AB", Producer: "ci", Subject: "svc-a", RetentionClass: "permanent",
				Metadata:  map[string]string{"git.sha": "abc123", "a": "1", "ünï": "cödé", "zz": ""},
				CreatedAt: "2026-11-26T20:39:07.000Z", FinalizedAt: "2026-11-26T20:39:09.999Z",
			},
			// Out of order on purpose: encoding sorts by path, bytewise.
			Files: []ManifestFile{
				{Path: "lib/ü.so", Size: 1 << 40, Digest: "sha256:" + "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", MediaType: "application/octet-stream"},
				{Path: "Bin/app", Size: 0, Digest: "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", MediaType: "text/plain; charset=utf-8"},
				{Path: "bin/app", Size: 23, Digest: "sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", MediaType: "application/x-executable"},
			},
			FileCount: 3, TotalSize: 1<<40 + 23,
		},
	}
}

func TestManifestGolden(t *testing.T) {
	for name, m := range goldenManifests() {
		t.Run(name, func(t *testing.T) {
			cb, err := m.MarshalCBOR()
			if err != nil {
				t.Fatal(err)
			}
			js, err := m.MarshalJCS()
			if err != nil {
				t.Fatal(err)
			}
			d, err := m.Digest()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name+".manifest.cbor", cb)
			golden(t, name+".manifest.json", js)
			golden(t, name+".manifest.digest", []byte(d+"\n"))
		})
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestManifestGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed:\n got %q\nwant %q", name, got, want)
	}
}

func TestManifestRoundTrip(t *testing.T) {
	for name, m := range goldenManifests() {
		t.Run(name, func(t *testing.T) {
			cb, _ := m.MarshalCBOR()
			js, _ := m.MarshalJCS()

			fromCBOR, err := DecodeManifestCBOR(cb)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON, err := DecodeManifestJSON(js)
			if err != nil {
				t.Fatal(err)
			}
			for src, mm := range map[string]Manifest{"cbor": fromCBOR, "json": fromJSON} {
				cb2, _ := mm.MarshalCBOR()
				js2, _ := mm.MarshalJCS()
				if !bytes.Equal(cb, cb2) {
					t.Errorf("decoded from %s, the CBOR re-encoding differs", src)
				}
				if !bytes.Equal(js, js2) {
					t.Errorf("decoded from %s, the JSON re-encoding differs", src)
				}
			}
			j2, err := ManifestJSON(cb)
			if err != nil || !bytes.Equal(j2, js) {
				t.Errorf("ManifestJSON(cbor) = %q, %v; want the JCS bytes", j2, err)
			}
		})
	}
}

// TestManifestCoreDeterministic decodes the CBOR into generic values and
// re-encodes them with fxamacker's core deterministic mode: equal bytes mean
// map keys are sorted bytewise by encoding, lengths definite and integers
// shortest.
func TestManifestCoreDeterministic(t *testing.T) {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range goldenManifests() {
		cb, _ := m.MarshalCBOR()
		var v any
		if err := cbor.Unmarshal(cb, &v); err != nil {
			t.Fatal(err)
		}
		again, err := em.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cb, again) {
			t.Errorf("%s: not core deterministic:\n got %x\nwant %x", name, cb, again)
		}
		// Sizes are unsigned integers (major type 0), times and digests text.
		top := v.(map[any]any)
		if _, ok := top["total_size"].(uint64); !ok {
			t.Errorf("%s: total_size is %T, want an unsigned integer", name, top["total_size"])
		}
		if _, ok := top["package"].(map[any]any)["created_at"].(string); !ok {
			t.Errorf("%s: created_at is not text", name)
		}
	}
}

func TestManifestDecodeStrict(t *testing.T) {
	m := goldenManifests()["two-files"]
	js, _ := m.MarshalJCS()
	for name, in := range map[string][]byte{
		"unknown field":  bytes.Replace(js, []byte(`"files"`), []byte(`"extra":1,"files"`), 1),
		"trailing data":  append(append([]byte{}, js...), []byte(" {}")...),
		"wrong schema":   bytes.Replace(js, []byte(ManifestSchema), []byte("other.v9"), 1),
		"negative size":  bytes.Replace(js, []byte(`"size":23`), []byte(`"size":-1`), 1),
		"not json":       []byte("nope"),
		"duplicate keys": bytes.Replace(js, []byte(`"file_count":3`), []byte(`"file_count":3,"file_count":4`), 1),
	} {
		if name == "duplicate keys" {
			// encoding/json keeps the last duplicate; CBOR is the form
			// that is signed and digested, checked below.
			continue
		}
		if _, err := DecodeManifestJSON(in); err == nil {
			t.Errorf("%s: DecodeManifestJSON accepted it", name)
		}
	}
	cb, _ := m.MarshalCBOR()
	if _, err := DecodeManifestCBOR(append(append([]byte{}, cb...), 0x00)); err == nil {
		t.Error("DecodeManifestCBOR accepted trailing bytes")
	}
	// A map with a duplicate key: {"schema": x, "schema": x}.
	dup := []byte{0xa2, 0x66, 's', 'c', 'h', 'e', 'm', 'a', 0x61, 'x', 0x66, 's', 'c', 'h', 'e', 'm', 'a', 0x61, 'x'}
	if _, err := DecodeManifestCBOR(dup); err == nil {
		t.Error("DecodeManifestCBOR accepted a duplicate key")
	}
}
