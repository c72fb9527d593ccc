package server

import (
	"strings"
	"testing"

	"lambdadb/auth"
)

// FuzzScanScope: when rangeAllowed lets a scan through under a prefix
// grant, no key the scan could return lies outside the grant.
func FuzzScanScope(f *testing.F) {
	for _, s := range [][5]string{
		{"orders/", "orders/", "", "", "orders/1"},
		{"orders/", "", "orders/a", "orders/b", "orders/a1"},
		{"orders/", "", "orders/a", "p", "orders0"},
		{"orders/", "o", "orders/", "orders0", "orders/x"},
		{"a", "", "a", "b", "a\xff"},
		{"a\xff", "", "a\xff", "b", "a\xff\xff"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, grant, prefix, start, end, key string) {
		sc, err := auth.ParseScope("kv:read:" + grant)
		if err != nil || sc.Prefix == "*" {
			return
		}
		p := &auth.Principal{Namespace: "x", Scopes: []auth.Scope{sc}}
		if !rangeAllowed(p, auth.KVRead, prefix, start, end) {
			return
		}
		inScan := strings.HasPrefix(key, prefix) && key >= start && (end == "" || key < end)
		if inScan && !strings.HasPrefix(key, sc.Prefix) {
			t.Fatalf("grant %q lets scan (prefix %q, start %q, end %q) reach %q", sc.Prefix, prefix, start, end, key)
		}
	})
}
