package artifactstore

import (
	"fmt"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/artifactstore/artifactstore/blob"
)

// Limits from DESIGN §2. They are the rules every entry point enforces; the
// HTTP layer and the CLI never re-check them.
const (
	MaxPathBytes      = 1024
	MaxSegmentBytes   = 255
	MaxNameBytes      = 256 // producer, subject
	MaxMetadata       = 64
	MaxMetaKeyBytes   = 128
	MaxMetaValueBytes = 4096
	MaxTenantBytes    = 64
	MaxMediaTypeBytes = 255
)

// ValidatePath reports whether p is an acceptable file path: relative,
// '/'-separated, valid UTF-8, 1–1024 bytes, segments of 1–255 bytes, no
// empty, "." or ".." segment, no leading or trailing '/', no '\', no NUL or
// other control character. Paths are never rewritten; a bad one is rejected
// with the reason.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("must not be empty")
	case len(p) > MaxPathBytes:
		return fmt.Errorf("is %d bytes long; at most %d are allowed", len(p), MaxPathBytes)
	case !utf8.ValidString(p):
		return fmt.Errorf("is not valid UTF-8")
	case p[0] == '/':
		return fmt.Errorf("must be relative (no leading '/')")
	case p[len(p)-1] == '/':
		return fmt.Errorf("must not end with '/'")
	}
	for _, r := range p {
		switch {
		case r == '\\':
			return fmt.Errorf("must not contain '\\'; use '/' to separate segments")
		case isControl(r):
			return fmt.Errorf("must not contain control characters (found %U)", r)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("must not contain an empty segment ('//')")
		case seg == "." || seg == "..":
			return fmt.Errorf("must not contain a %q segment", seg)
		case len(seg) > MaxSegmentBytes:
			return fmt.Errorf("has a segment of %d bytes; at most %d are allowed", len(seg), MaxSegmentBytes)
		}
	}
	return nil
}

// isControl reports C0 and C1 control characters and DEL.
func isControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f)
}

func validName(field, s string, maxBytes int) *FieldError {
	switch {
	case s == "":
		return &FieldError{field, "is required"}
	case len(s) > maxBytes:
		return &FieldError{field, fmt.Sprintf("is %d bytes long; at most %d are allowed", len(s), maxBytes)}
	case !utf8.ValidString(s):
		return &FieldError{field, "is not valid UTF-8"}
	case strings.ContainsFunc(s, isControl):
		return &FieldError{field, "must not contain control characters"}
	}
	return nil
}

// validTenant: 1–64 bytes of ASCII letters, digits, '.', '_' and '-'.
func validTenant(t string) error {
	if t == "" || len(t) > MaxTenantBytes {
		return fmt.Errorf("tenant must be 1–%d bytes", MaxTenantBytes)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("tenant may contain only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// ValidTenant reports whether t is an acceptable tenant name.
func ValidTenant(t string) bool { return validTenant(t) == nil }

func validMetadata(md map[string]string) []FieldError {
	var errs []FieldError
	if len(md) > MaxMetadata {
		errs = append(errs, FieldError{"metadata", fmt.Sprintf("has %d entries; at most %d are allowed", len(md), MaxMetadata)})
	}
	for k, v := range md {
		f := "metadata." + k
		switch {
		case k == "" || len(k) > MaxMetaKeyBytes:
			errs = append(errs, FieldError{"metadata", fmt.Sprintf("key %q must be 1–%d bytes", k, MaxMetaKeyBytes)})
		case !utf8.ValidString(k) || strings.ContainsFunc(k, isControl) || strings.Contains(k, "="):
			errs = append(errs, FieldError{"metadata", fmt.Sprintf("key %q must be UTF-8 without '=' or control characters", k)})
		case len(v) > MaxMetaValueBytes:
			errs = append(errs, FieldError{f, fmt.Sprintf("value is %d bytes; at most %d are allowed", len(v), MaxMetaValueBytes)})
		case !utf8.ValidString(v):
			errs = append(errs, FieldError{f, "value is not valid UTF-8"})
		}
	}
	return errs
}

// validDigest reports whether d is "sha256:" followed by 64 lowercase hex
// digits.
func validDigest(d string) bool {
	_, ok := blob.DigestHex(d)
	return ok
}

const digestRule = "must be sha256:<64 lowercase hex digits>"

// validMediaType accepts an RFC 2045 media type ("type/subtype", parameters
// allowed).
func validMediaType(mt string) bool {
	if mt == "" || len(mt) > MaxMediaTypeBytes {
		return false
	}
	t, _, err := mime.ParseMediaType(mt)
	return err == nil && strings.Count(t, "/") == 1 && !strings.HasPrefix(t, "/") && !strings.HasSuffix(t, "/")
}

// validID reports whether id looks like an identifier this store issues: a
// 26-character ULID in Crockford base32.
func validID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') || c == 'I' || c == 'L' || c == 'O' || c == 'U' {
			return false
		}
	}
	return id[0] <= '7'
}
