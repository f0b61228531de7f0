package artifactstore

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidatePath(t *testing.T) {
	long := strings.Repeat("a", 255)
	ok := []string{
		"a", "a/b", "bin/app", "dir with spaces/file.txt", "ünïcödé/日本語.txt",
		"a.b", ".hidden", "..dots", "a/.../b", long, strings.TrimSuffix(strings.Repeat(long+"/", 4), "/"),
		"a-b_c~d+e@f", "file.",
	}
	bad := []string{
		"", "/abs", "trailing/", "a//b", "./a", "a/./b", "a/..", "../a", "..", ".",
		`a\b`, "a\x00b", "a\nb", "a\tb", "a\x7fb", "a\u0085b", "\xff", "a/\xc3",
		long + "a", strings.Repeat("a/", 512) + "a",
	}
	for _, p := range ok {
		if err := ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range bad {
		if err := ValidatePath(p); err == nil {
			t.Errorf("ValidatePath(%q) = nil, want an error", p)
		}
	}
}

// FuzzValidatePath checks that every accepted path satisfies each rule of
// DESIGN §2 independently of how the validator is written.
func FuzzValidatePath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../x", "a//b", "/x", "x/", `a\b`, "ü/ß", "a\x00", ".", "..", "a/./b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if ValidatePath(p) != nil {
			return
		}
		if len(p) < 1 || len(p) > MaxPathBytes {
			t.Fatalf("accepted %d bytes", len(p))
		}
		if !utf8.ValidString(p) {
			t.Fatalf("accepted invalid UTF-8 %q", p)
		}
		if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, `\`) {
			t.Fatalf("accepted %q", p)
		}
		for _, r := range p {
			if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
				t.Fatalf("accepted control character in %q", p)
			}
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "" || seg == "." || seg == ".." || len(seg) > MaxSegmentBytes {
				t.Fatalf("accepted segment %q of %q", seg, p)
			}
		}
	})
}

func TestValidDigest(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		d    string
		want bool
	}{
		{good, true},
		{strings.ToUpper(good), false},
		{"sha256:" + strings.Repeat("AB", 32), false},
		{"sha512:" + strings.Repeat("ab", 32), false},
		{good[:len(good)-1], false},
		{good + "a", false},
		{"sha256:" + strings.Repeat("g", 64), false},
		{"", false},
	} {
		if got := validDigest(tc.d); got != tc.want {
			t.Errorf("validDigest(%q) = %v, want %v", tc.d, got, tc.want)
		}
	}
}

func TestValidMetadata(t *testing.T) {
	many := map[string]string{}
	for i := range MaxMetadata + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	for _, tc := range []struct {
		md   map[string]string
		bad  bool
		name string
	}{
		{map[string]string{"git.sha": "abc"}, false, "plain"},
		{map[string]string{"k": ""}, false, "empty value"},
		{map[string]string{"": "v"}, true, "empty key"},
		{map[string]string{"a=b": "v"}, true, "= in key"},
		{map[string]string{"a\nb": "v"}, true, "control in key"},
		{map[string]string{strings.Repeat("k", 129): "v"}, true, "long key"},
		{map[string]string{"k": strings.Repeat("v", 4097)}, true, "long value"},
		{map[string]string{"k": "\xff"}, true, "bad UTF-8 value"},
		{many, true, "too many"},
	} {
		if got := len(validMetadata(tc.md)) > 0; got != tc.bad {
			t.Errorf("%s: invalid = %v, want %v", tc.name, got, tc.bad)
		}
	}
}

func TestKindNames(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds() {
		n := k.String()
		if n == "" || seen[n] {
			t.Fatalf("kind %d has name %q (empty or repeated)", k, n)
		}
		seen[n] = true
		if ParseKind(n) != k {
			t.Errorf("ParseKind(%q) = %v, want %v", n, ParseKind(n), k)
		}
	}
	if len(seen) != 12 {
		t.Errorf("%d kinds, want the 12 problem kinds of DESIGN §4", len(seen))
	}
}
