package server_test

import (
	"net/http"
	"net/url"
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
		t.Fatalf("page without a token, not from a browser: %d, want 401", r.status)
	}
	if r := ss.do(t, "", "GET", "/ui/", nil, "Accept", "text/html"); r.status != 200 || !strings.Contains(r.body, "Sign in") {
		t.Fatalf("page without a token: %d %s, want the login form", r.status, r.body)
	}
	if r := ss.do(t, "", "GET", "/ui/cluster", nil, "HX-Request", "true"); r.status != 401 {
		t.Fatalf("live fragment without a token: %d, want 401", r.status)
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

// TestConsoleLogin: the console exchanges a token for an HttpOnly,
// SameSite=Strict cookie scoped to /ui/, which only the console's pages
// accept; a bad token gets the form again; sign-out clears it.
func TestConsoleLogin(t *testing.T) {
	ss := newSecureServer(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, form url.Values) *http.Response {
		t.Helper()
		resp, err := noRedirect.PostForm(ss.url+path, form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	get := func(path string, c *http.Cookie) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", ss.url+path, nil)
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		if c != nil {
			req.AddCookie(c)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get("/ui/", nil); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/login" {
		t.Fatalf("page without a token: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := post("/ui/login", url.Values{"token": {"ldb_nope"}}); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Fatalf("bad token: %d %v", r.StatusCode, r.Cookies())
	}
	reader, _ := ss.token(t, "default", 0, "kv:read:*")
	r := post("/ui/login", url.Values{"token": {reader}})
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("sign-in: %d %v", r.StatusCode, r.Cookies())
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" {
		t.Fatalf("cookie %+v", c)
	}
	if r := get("/ui/keys", c); r.StatusCode != 200 {
		t.Fatalf("page with the cookie: %d", r.StatusCode)
	}
	// The cookie is not a token for the API.
	if r := get("/v1/kv?prefix=", c); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API with the console's cookie: %d", r.StatusCode)
	}
	// A cross-site form post cannot sign anyone in.
	req, _ := http.NewRequest("POST", ss.url+"/ui/login", strings.NewReader(url.Values{"token": {reader}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := noRedirect.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site sign-in: %v %v", resp, err)
	}
	r = post("/ui/logout", nil)
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 || r.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("sign-out: %d %v", r.StatusCode, r.Cookies())
	}
}
