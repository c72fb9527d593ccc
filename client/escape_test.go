package client

import (
	"net/url"
	"path"
	"strings"
	"testing"
)

func TestEscapeKey(t *testing.T) {
	cases := []struct{ key, want string }{
		{"plain", "plain"},
		{"a/b/c", "a/b/c"},
		{"a//b", "a%2F%2Fb"},
		{"/lead", "%2Flead"},
		{"trail/", "trail%2F"},
		{".", "%2E"},
		{"..", "%2E%2E"},
		{"a/./b", "a/%2E/b"},
		{"a/../b", "a/%2E%2E/b"},
		{"sp ace?#%+", "sp%20ace%3F%23%25+"},
		{"ünï", "%C3%BCn%C3%AF"},
	}
	for _, tc := range cases {
		if got := escapeKey(tc.key); got != tc.want {
			t.Errorf("escapeKey(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

// FuzzEscapeKey checks that every escaped key survives URL parsing and path
// cleaning unchanged and unescapes to the key.
func FuzzEscapeKey(f *testing.F) {
	for _, k := range []string{"a", "a/b", "a//b", "/", ".", "..", "a/./b", "%2F", "x/..", "ü/ß", "a b"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p := keyPath(key)
		u, err := url.Parse("http://h" + p)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", p, err)
		}
		if got := u.EscapedPath(); got != p {
			t.Fatalf("EscapedPath = %q, want %q", got, p)
		}
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if clean != p && key != "" {
			t.Fatalf("path %q is cleaned to %q", p, clean)
		}
		got, err := url.PathUnescape(strings.TrimPrefix(p, "/v1/kv/"))
		if err != nil || got != key {
			t.Fatalf("unescape(%q) = %q, %v; want %q", p, got, err, key)
		}
	})
}
