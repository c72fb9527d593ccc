package server

import (
	"strings"
	"testing"
)

func FuzzParseETag(f *testing.F) {
	for _, s := range []string{`"1"`, `"18446744073709551615"`, `"0"`, `W/"1"`, `"1", "2"`, `*`, `""`, `"`, `"01"`, `"+1"`, `"1_0"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseETag(s)
		if err != nil {
			return
		}
		if v == 0 {
			t.Fatalf("parseETag(%q) = 0 without error", s)
		}
		// Whatever parses is a quoted decimal that formats back to itself
		// up to leading zeros.
		want := `"` + strings.TrimLeft(s[1:len(s)-1], "0") + `"`
		if got := formatETag(v); got != want {
			t.Fatalf("formatETag(parseETag(%q)) = %q, want %q", s, got, want)
		}
	})
}

func FuzzIsCleanPath(f *testing.F) {
	for _, s := range []string{"/v1/kv/a", "/v1/kv/a//b", "/v1/kv/./a", "/v1/kv/a/", "/v1/kv/a/..", "/v1/kv/%2E%2E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p := keyPrefix + key
		clean := isCleanPath(p)
		segs := strings.Split(key, "/")
		bad := false
		for i, s := range segs {
			if s == "." || s == ".." || (s == "" && i < len(segs)-1) {
				bad = true
			}
		}
		if clean == bad {
			t.Fatalf("isCleanPath(%q) = %v, but bad segments = %v", p, clean, bad)
		}
	})
}
