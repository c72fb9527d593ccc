package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"lambdadb/internal/session"
	"lambdadb/server"
)

// FuzzHandler sends arbitrary requests — method, path and query, the
// precondition and session headers, a body — to a Server over a live
// one-node cluster. Every decoder of the public API is on this path (key
// escaping, If-Match/If-None-Match, X-Session, consistency, scan bounds
// and limit, the value). The server must not panic or answer 500, every
// error must be the documented JSON, and every /v1/kv response must carry
// X-Session.
func FuzzHandler(f *testing.F) {
	tok := session.Token{0: 3, 2: 9}.Encode()
	for _, s := range []struct{ method, target, ifMatch, ifNone, sess, body string }{
		{"PUT", "/v1/kv/k", "", "", "", "v"},
		{"PUT", "/v1/kv/k", `"3"`, "", tok, "v2"},
		{"PUT", "/v1/kv/a%2F%2Fb", "", "*", "", ""},
		{"PUT", "/v1/kv/k", `W/"1"`, "*", "s1.garbage", "x"},
		{"GET", "/v1/kv/k?consistency=session", "", "", tok, ""},
		{"GET", "/v1/kv/k?consistency=stale&consistency=stale", "", "", "", ""},
		{"GET", "/v1/kv?prefix=a&start=b&end=a&limit=3", "", "", "", ""},
		{"GET", "/v1/kv?prefix=&limit=0", "", "", tok, ""},
		{"DELETE", "/v1/kv/k", `"18446744073709551615"`, "", "", ""},
		{"DELETE", "/v1/kv/%2E%2E", "", "*", "", ""},
		{"HEAD", "/v1/kv/..", "", "", "", ""},
		{"POST", "/v1/kv/k", "", "", "", "v"},
		{"GET", "/v1/cluster", "", "", "", ""},
	} {
		f.Add(s.method, s.target, s.ifMatch, s.ifNone, s.sess, []byte(s.body))
	}
	h := newServer(f, server.Config{MaxValueBytes: 1 << 10})
	f.Fuzz(func(t *testing.T, method, target, ifMatch, ifNone, sess string, body []byte) {
		switch method {
		case "GET", "PUT", "DELETE", "HEAD", "POST":
		default:
			method = "GET"
		}
		if !strings.HasPrefix(target, "/") {
			target = "/v1/kv/" + target
		}
		r, err := http.NewRequest(method, "http://lambdadb"+target, strings.NewReader(string(body)))
		if err != nil {
			return // not a request a client could send
		}
		r.ContentLength = int64(len(body))
		for name, v := range map[string]string{"If-Match": ifMatch, "If-None-Match": ifNone, session.Header: sess} {
			if v != "" {
				r.Header.Set(name, v)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		resp := w.Result()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s: status %d: %s", method, target, resp.StatusCode, w.Body.String())
		}
		if resp.StatusCode >= 400 && method != "HEAD" {
			var e struct{ Error, Code string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Error == "" {
				t.Fatalf("%s %s: status %d with body %q, want a JSON error", method, target, resp.StatusCode, w.Body.String())
			}
		}
		if strings.HasPrefix(r.URL.Path, "/v1/kv") && resp.StatusCode != http.StatusMethodNotAllowed &&
			resp.StatusCode != http.StatusNotFound && len(resp.Header.Values(session.Header)) == 0 {
			// 404 for unknown routes and 405 carry no session; a 404 for an absent key does.
			t.Fatalf("%s %s: status %d without %s", method, target, resp.StatusCode, session.Header)
		}
	})
}
