package server_test

import (
	"strings"
	"testing"
)

// TestConsoleSecureMode: in secure mode the console's pages need a token,
// its static assets do not, and the key browser shows only the token's
// namespace and the prefixes its kv:read scopes cover.
func TestConsoleSecureMode(t *testing.T) {
	ss := newSecureServer(t)
	if r := ss.do(t, ss.root, "PUT", "/v1/kv/orders/1", []byte("default's order")); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	if r := ss.do(t, "", "GET", "/ui/", nil); r.status != 401 {
		t.Fatalf("page without a token: %d, want 401", r.status)
	}
	if r := ss.do(t, "", "GET", "/ui/static/console.css", nil); r.status != 200 || !strings.Contains(r.header.Get("Cache-Control"), "immutable") {
		t.Fatalf("static asset without a token: %d %v", r.status, r.header)
	}
	r := ss.do(t, ss.root, "GET", "/ui/keys?prefix=orders/", nil)
	if r.status != 200 || !strings.Contains(r.body, "orders/1") || !strings.Contains(r.body, "default&#39;s order") {
		t.Fatalf("admin's key page: %d %s", r.status, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Fatalf("CSP %q", csp)
	}
	narrow, _ := ss.token(t, "default", 0, "kv:read:elsewhere/")
	if r := ss.do(t, narrow, "GET", "/ui/keys?prefix=orders/", nil); r.status != 403 || strings.Contains(r.body, "orders/1") {
		t.Fatalf("token without kv:read on orders/: %d %s", r.status, r.body)
	}
	other, _ := ss.token(t, "blog", 0, "kv:read:*")
	if r := ss.do(t, other, "GET", "/ui/keys", nil); r.status != 200 || strings.Contains(r.body, "orders/1") || !strings.Contains(r.body, "<b>blog</b>") {
		t.Fatalf("another namespace's token: %d %s", r.status, r.body)
	}
	// The cluster page polls its live fragment.
	if r := ss.do(t, ss.root, "GET", "/ui/", nil); r.status != 200 || !strings.Contains(r.body, `hx-trigger="every 2s"`) {
		t.Fatalf("cluster page: %d %s", r.status, r.body)
	}
}
