package httpserver

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"mime"
	"strings"
	"testing"
)

// Examples from RFC 9110 §14.1.2 against a 10,000-byte representation.
func TestParseRange(t *testing.T) {
	const size = 10000
	for _, tc := range []struct {
		h    string
		want byteRange
		err  error
	}{
		{"bytes=0-499", byteRange{0, 500}, nil},
		{"bytes=500-999", byteRange{500, 500}, nil},
		{"bytes=-500", byteRange{9500, 500}, nil},
		{"bytes=9500-", byteRange{9500, 500}, nil},
		{"bytes=0-0", byteRange{0, 1}, nil},
		{"bytes=-1", byteRange{9999, 1}, nil},
		{"bytes=0-999999", byteRange{0, size}, nil},
		{"bytes=-20000", byteRange{0, size}, nil},
		{"BYTES = 1-2", byteRange{1, 2}, nil},
		{"bytes=10000-", byteRange{}, errRangeUnsatisfiable},
		{"bytes=20000-30000", byteRange{}, errRangeUnsatisfiable},
		{"bytes=-0", byteRange{}, errRangeUnsatisfiable},
		{"bytes=0-0,-1", byteRange{}, errRangeIgnored}, // several ranges: 200
		{"bytes=500-600,601-999", byteRange{}, errRangeIgnored},
		{"bytes=5-4", byteRange{}, errRangeIgnored},
		{"bytes=a-b", byteRange{}, errRangeIgnored},
		{"bytes=-", byteRange{}, errRangeIgnored},
		{"bytes=+1-2", byteRange{}, errRangeIgnored},
		{"items=0-1", byteRange{}, errRangeIgnored},
		{"bytes 0-1", byteRange{}, errRangeIgnored},
		{"", byteRange{}, errRangeIgnored},
		{"bytes=99999999999999999999-", byteRange{}, errRangeIgnored},
	} {
		got, err := parseRange(tc.h, size)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("parseRange(%q) = %v, %v; want %v, %v", tc.h, got, err, tc.want, tc.err)
		}
	}
	if _, err := parseRange("bytes=0-", 0); !errors.Is(err, errRangeUnsatisfiable) {
		t.Errorf("a range of an empty file = %v, want unsatisfiable", err)
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-499", "bytes=-500", "bytes=9500-", "bytes=0-0,-1", "bytes=5-4", "bytes=-0", "x"} {
		f.Add(s, int64(10000))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return
		}
		r, err := parseRange(h, size)
		if err != nil {
			return
		}
		if r.Length <= 0 || r.Start < 0 || r.Start+r.Length > size {
			t.Fatalf("parseRange(%q, %d) = %+v: outside the representation", h, size, r)
		}
	})
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		h    string
		want contentRange
		ok   bool
	}{
		{"bytes 0-499/1234", contentRange{0, 499, 1234}, true},
		{"bytes 500-999/*", contentRange{500, 999, -1}, true},
		{"bytes 42-1233/1234", contentRange{42, 1233, 1234}, true},
		{"bytes */1234", contentRange{-1, -1, 1234}, true},
		{"bytes */*", contentRange{}, false},
		{"bytes 0-1234/1234", contentRange{}, false},
		{"bytes 5-4/10", contentRange{}, false},
		{"bytes 0-4", contentRange{}, false},
		{"bytes=0-4/10", contentRange{}, false},
		{"items 0-4/10", contentRange{}, false},
		{"bytes -1-4/10", contentRange{}, false},
		{"", contentRange{}, false},
	} {
		got, err := parseContentRange(tc.h)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseContentRange(%q) = %+v, %v; want %+v ok=%v", tc.h, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-499/1234", "bytes 500-999/*", "bytes */1234", "bytes 5-4/10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		cr, err := parseContentRange(h)
		if err != nil {
			return
		}
		if cr.First < 0 {
			if cr.Total < 0 || cr.Last != -1 {
				t.Fatalf("%q: %+v", h, cr)
			}
			return
		}
		if cr.Last < cr.First || (cr.Total >= 0 && cr.Last >= cr.Total) {
			t.Fatalf("%q: inconsistent %+v", h, cr)
		}
	})
}

func TestETagMatches(t *testing.T) {
	const etag = `"sha256:abc"`
	for _, tc := range []struct {
		h    string
		want bool
	}{
		{`"sha256:abc"`, true},
		{`W/"sha256:abc"`, true},
		{`*`, true},
		{`"xyzzy", "sha256:abc"`, true},
		{`"xyzzy",W/"r2d2xxxx", "c3piozzzz"`, false},
		{`"a,b", "sha256:abc"`, true},
		{`sha256:abc`, false},
		{`"sha256:abcd"`, false},
		{``, false},
	} {
		if got := etagMatches(tc.h, etag); got != tc.want {
			t.Errorf("etagMatches(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
	if !ifRangeMatches(etag, etag) || ifRangeMatches("W/"+etag, etag) || ifRangeMatches("Sat, 29 Oct 1994 19:43:31 GMT", etag) {
		t.Error("If-Range must match only the exact strong tag")
	}
}

func FuzzETagMatches(f *testing.F) {
	for _, s := range []string{`"xyzzy"`, `W/"xyzzy"`, `"xyzzy", "r2d2xxxx", "c3piozzzz"`, `*`, `"a,b"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		for _, tag := range splitETags(h) {
			if tag != "*" && !(strings.HasSuffix(tag, `"`) && (strings.HasPrefix(tag, `"`) || strings.HasPrefix(tag, `W/"`)) && len(tag) >= 2) {
				t.Fatalf("splitETags(%q) yielded %q", h, tag)
			}
		}
		// A header that lists the tag always matches it.
		if !etagMatches(`"t", `+h, `"t"`) {
			t.Fatalf("a list starting with the tag does not match")
		}
	})
}

func TestAttachmentMatchesFormatMediaType(t *testing.T) {
	for _, name := range []string{"f.bin", "app-1.2.tar.gz", "a b.txt", `quo"te`, "ünï.txt", "x=y", "back\\slash", "tab\there", "", "a;b", "~weird!#$%&'*+^`|"} {
		want := mime.FormatMediaType("attachment", map[string]string{"filename": name})
		if got := attachment(name); got != want {
			t.Errorf("attachment(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestReprDigest(t *testing.T) {
	d := "sha256:" + strings.Repeat("0f", 32)
	sum, _ := hex.DecodeString(strings.Repeat("0f", 32))
	if got, want := reprDigest(d), "sha-256=:"+base64.StdEncoding.EncodeToString(sum)+":"; got != want {
		t.Errorf("reprDigest = %q, want %q", got, want)
	}
	for _, bad := range []string{"", "sha256:", "sha256:" + strings.Repeat("0F", 32), "sha512:" + strings.Repeat("00", 32), "sha256:" + strings.Repeat("0", 63)} {
		if got := reprDigest(bad); got != "" {
			t.Errorf("reprDigest(%q) = %q, want empty", bad, got)
		}
	}
}
