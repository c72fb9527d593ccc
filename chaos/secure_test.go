package chaos

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestWriteSecret(t *testing.T) {
	dir := t.TempDir()
	path, err := writeSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	sec := strings.TrimSpace(string(b))
	if raw, err := hex.DecodeString(sec); err != nil || len(raw) != 48 {
		t.Errorf("secret %q: %d bytes, %v; want 48 bytes of hex", sec, len(raw), err)
	}
	other, _ := writeSecret(t.TempDir())
	if b2, _ := os.ReadFile(other); string(b2) == string(b) {
		t.Error("two secrets are equal")
	}
}

// The admin token goes with raw requests and Go clients alike, and only
// when the cluster has one.
func TestTokenOnEveryRequest(t *testing.T) {
	for _, tok := range []string{"", "ldb_0123456789abcdef_secret"} {
		// A server per case: the client's router asks for the placement
		// in the background, maybe after the case's requests.
		var (
			mu  sync.Mutex
			got []string
		)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"nodes":[],"shards":[]}`))
		}))
		defer srv.Close()
		p := &Proc{ID: "n1", Addr: strings.TrimPrefix(srv.URL, "http://"), scheme: "http"}
		c := &Cluster{hc: srv.Client(), token: tok}
		if _, err := c.Status(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		cl, err := c.Client(p, c.HTTPClient(0))
		if err != nil {
			t.Fatal(err)
		}
		_, _, _ = cl.Get(context.Background(), "k")
		mu.Lock()
		seen := append([]string(nil), got...)
		mu.Unlock()
		want := ""
		if tok != "" {
			want = "Bearer " + tok
		}
		if len(seen) < 2 {
			t.Fatalf("token %q: requests %q", tok, seen)
		}
		for _, g := range seen {
			if !strings.HasSuffix(g, " "+want) {
				t.Errorf("token %q: request %q, want Authorization %q", tok, g, want)
			}
		}
	}
}
