package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/session"
	"lambdadb/internal/testnode"
	"lambdadb/server"
	"lambdadb/shard"
)

// newServer returns a Server over a fresh in-memory node.
func newServer(tb testing.TB, cfg server.Config) *server.Server {
	tb.Helper()
	if cfg.Node == nil {
		cfg.Node = testnode.New(tb)
	}
	s, err := server.New(cfg)
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	return s
}

// request describes one HTTP request sent through the handler.
type request struct {
	method, target string
	body           io.Reader
	header         http.Header
}

func (rq request) do(tb testing.TB, h http.Handler) *http.Response {
	tb.Helper()
	r := httptest.NewRequest(rq.method, rq.target, rq.body)
	if rq.body == nil {
		r.ContentLength = 0
	}
	for k, vs := range rq.header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func put(tb testing.TB, h http.Handler, key, value string, header http.Header) *http.Response {
	tb.Helper()
	return request{http.MethodPut, "/v1/kv/" + key, strings.NewReader(value), header}.do(tb, h)
}

func get(tb testing.TB, h http.Handler, target string, header http.Header) *http.Response {
	tb.Helper()
	return request{http.MethodGet, target, nil, header}.do(tb, h)
}

func body(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return string(b)
}

// mustStatus fails unless resp has the status, and returns the body.
func mustStatus(tb testing.TB, resp *http.Response, status int) string {
	tb.Helper()
	b := body(tb, resp)
	if resp.StatusCode != status {
		tb.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, b)
	}
	return b
}

// errCode decodes a JSON error body and returns its code.
func errCode(tb testing.TB, resp *http.Response, b string) string {
	tb.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("error Content-Type = %q, want application/json", ct)
	}
	var e struct{ Error, Code string }
	if err := json.Unmarshal([]byte(b), &e); err != nil || e.Code == "" || e.Error == "" {
		tb.Fatalf("error body %q: not {error, code} JSON (%v)", b, err)
	}
	return e.Code
}

func putVersion(tb testing.TB, h http.Handler, key, value string) uint64 {
	tb.Helper()
	b := mustStatus(tb, put(tb, h, key, value, nil), http.StatusOK)
	var out struct{ Version uint64 }
	if err := json.Unmarshal([]byte(b), &out); err != nil || out.Version == 0 {
		tb.Fatalf("PUT %s: body %q (%v)", key, b, err)
	}
	return out.Version
}

// errAfter is a request body that fails after n bytes.
type errAfter struct{ n int }

func (e *errAfter) Read(p []byte) (int, error) {
	if e.n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	m := min(len(p), e.n)
	for i := range p[:m] {
		p[i] = 'x'
	}
	e.n -= m
	return m, nil
}

func TestStatusCodes(t *testing.T) {
	t.Parallel()
	const maxValue = 4096
	s := newServer(t, server.Config{MaxValueBytes: maxValue})
	v := putVersion(t, s, "exists", "old")
	ver := strconv.FormatUint(v, 10)
	badTok := "s1.garbage"

	cases := []struct {
		name     string
		req      request
		status   int
		code     string // error code, for non-2xx
		wantBody string // exact body, when set
		allow    string // Allow header, for 405
	}{
		{name: "put", req: request{"PUT", "/v1/kv/k1", strings.NewReader("v"), nil}, status: 200},
		{name: "put slash key", req: request{"PUT", "/v1/kv/a/b/c", strings.NewReader("v"), nil}, status: 200},
		{name: "put escaped slashes", req: request{"PUT", "/v1/kv/a%2F%2Fb", strings.NewReader("v"), nil}, status: 200},
		{name: "put 1024-byte key", req: request{"PUT", "/v1/kv/" + strings.Repeat("k", 1024), strings.NewReader("v"), nil}, status: 200},
		{name: "put max value", req: request{"PUT", "/v1/kv/big", strings.NewReader(strings.Repeat("v", maxValue)), nil}, status: 200},
		{name: "put empty value", req: request{"PUT", "/v1/kv/empty", nil, nil}, status: 200},
		{name: "get", req: request{"GET", "/v1/kv/exists", nil, nil}, status: 200, wantBody: "old"},
		{name: "get stale", req: request{"GET", "/v1/kv/exists?consistency=stale", nil, nil}, status: 200, wantBody: "old"},
		{name: "head", req: request{"HEAD", "/v1/kv/exists", nil, nil}, status: 200},
		{name: "delete", req: request{"DELETE", "/v1/kv/nothing", nil, nil}, status: 200, wantBody: `{"deleted":false}` + "\n"},
		{name: "scan", req: request{"GET", "/v1/kv?prefix=zzz", nil, nil}, status: 200, wantBody: `{"items":[],"next":null}` + "\n"},
		{name: "cluster", req: request{"GET", "/v1/cluster", nil, nil}, status: 200},
		{name: "healthz", req: request{"GET", "/healthz", nil, nil}, status: 200, wantBody: `{"status":"ok","node":"n1"}` + "\n"},

		{name: "empty key", req: request{"PUT", "/v1/kv/", strings.NewReader("v"), nil}, status: 400, code: "invalid_key"},
		{name: "non-UTF-8 key", req: request{"PUT", "/v1/kv/%FF%FE", strings.NewReader("v"), nil}, status: 400, code: "invalid_key"},
		{name: "1025-byte key", req: request{"PUT", "/v1/kv/" + strings.Repeat("k", 1025), strings.NewReader("v"), nil}, status: 400, code: "invalid_key"},
		{name: "get 1025-byte key", req: request{"GET", "/v1/kv/" + strings.Repeat("k", 1025), nil, nil}, status: 400, code: "invalid_key"},
		{name: "unescaped empty segment", req: request{"PUT", "/v1/kv/a//b", strings.NewReader("v"), nil}, status: 400, code: "invalid_key"},
		{name: "unescaped dot segment", req: request{"GET", "/v1/kv/a/../b", nil, nil}, status: 400, code: "invalid_key"},
		{name: "if-match unquoted", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", ver)}, status: 400, code: "bad_precondition"},
		{name: "if-match weak", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", `W/"`+ver+`"`)}, status: 400, code: "bad_precondition"},
		{name: "if-match list", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", `"`+ver+`", "9"`)}, status: 400, code: "bad_precondition"},
		{name: "if-match two headers", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", `"`+ver+`"`, "If-Match", `"9"`)}, status: 400, code: "bad_precondition"},
		{name: "if-match star", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", "*")}, status: 400, code: "bad_precondition"},
		{name: "if-match zero", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", `"0"`)}, status: 400, code: "bad_precondition"},
		{name: "if-match negative", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", `"-1"`)}, status: 400, code: "bad_precondition"},
		{name: "if-match overflow", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", `"18446744073709551616"`)}, status: 400, code: "bad_precondition"},
		{name: "if-none-match tag", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-None-Match", `"1"`)}, status: 400, code: "bad_precondition"},
		{name: "if-match and if-none-match", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", `"1"`, "If-None-Match", "*")}, status: 400, code: "bad_precondition"},
		{name: "delete if-none-match", req: request{"DELETE", "/v1/kv/exists", nil, hdr("If-None-Match", "*")}, status: 400, code: "bad_precondition"},
		{name: "delete bad if-match", req: request{"DELETE", "/v1/kv/exists", nil, hdr("If-Match", "x")}, status: 400, code: "bad_precondition"},
		{name: "bad consistency", req: request{"GET", "/v1/kv/exists?consistency=strong", nil, nil}, status: 400, code: "bad_consistency"},
		{name: "repeated consistency", req: request{"GET", "/v1/kv/exists?consistency=stale&consistency=session", nil, nil}, status: 400, code: "bad_consistency"},
		{name: "scan bad consistency", req: request{"GET", "/v1/kv?consistency=", nil, nil}, status: 400, code: "bad_consistency"},
		{name: "bad session get", req: request{"GET", "/v1/kv/exists", nil, hdr(session.Header, badTok)}, status: 400, code: "bad_session"},
		{name: "bad session put", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr(session.Header, badTok)}, status: 400, code: "bad_session"},
		{name: "bad session delete", req: request{"DELETE", "/v1/kv/exists", nil, hdr(session.Header, badTok)}, status: 400, code: "bad_session"},
		{name: "bad session scan", req: request{"GET", "/v1/kv", nil, hdr(session.Header, badTok)}, status: 400, code: "bad_session"},
		{name: "limit not a number", req: request{"GET", "/v1/kv?limit=ten", nil, nil}, status: 400, code: "invalid_scan"},
		{name: "limit zero", req: request{"GET", "/v1/kv?limit=0", nil, nil}, status: 400, code: "invalid_scan"},
		{name: "limit negative", req: request{"GET", "/v1/kv?limit=-1", nil, nil}, status: 400, code: "invalid_scan"},
		{name: "limit too large", req: request{"GET", "/v1/kv?limit=" + strconv.Itoa(shard.MaxScanLimit+1), nil, nil}, status: 400, code: "invalid_scan"},

		{name: "missing key", req: request{"GET", "/v1/kv/missing", nil, nil}, status: 404, code: "not_found"},
		{name: "unknown route", req: request{"GET", "/v2/kv/x", nil, nil}, status: 404, code: "not_found"},
		{name: "root", req: request{"GET", "/", nil, nil}, status: 404, code: "not_found"},
		{name: "post key", req: request{"POST", "/v1/kv/x", strings.NewReader("v"), nil}, status: 405, code: "method_not_allowed", allow: "GET, HEAD, PUT, DELETE"},
		{name: "put scan", req: request{"PUT", "/v1/kv", strings.NewReader("v"), nil}, status: 405, code: "method_not_allowed", allow: "GET, HEAD"},
		{name: "delete cluster", req: request{"DELETE", "/v1/cluster", nil, nil}, status: 405, code: "method_not_allowed", allow: "GET, HEAD"},
		{name: "post healthz", req: request{"POST", "/healthz", nil, nil}, status: 405, code: "method_not_allowed", allow: "GET, HEAD"},

		{name: "if-match stale version", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-Match", fmt.Sprintf(`"%d"`, v+1000))}, status: 412, code: "precondition_failed"},
		{name: "if-match absent key", req: request{"PUT", "/v1/kv/absent", strings.NewReader("v"), hdr("If-Match", `"1"`)}, status: 412, code: "precondition_failed"},
		{name: "if-none-match present key", req: request{"PUT", "/v1/kv/exists", strings.NewReader("v"), hdr("If-None-Match", "*")}, status: 412, code: "precondition_failed"},
		{name: "delete if-match stale", req: request{"DELETE", "/v1/kv/exists", nil, hdr("If-Match", fmt.Sprintf(`"%d"`, v+1000))}, status: 412, code: "precondition_failed"},

		{name: "value too large", req: request{"PUT", "/v1/kv/big", strings.NewReader(strings.Repeat("v", maxValue+1)), nil}, status: 413, code: "value_too_large"},
		{name: "value too large chunked", req: request{"PUT", "/v1/kv/big", io.MultiReader(strings.NewReader(strings.Repeat("v", maxValue+1))), nil}, status: 413, code: "value_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := tc.req.do(t, s)
			b := mustStatus(t, resp, tc.status)
			if tc.code != "" {
				if got := errCode(t, resp, b); got != tc.code {
					t.Errorf("code = %q, want %q (body %s)", got, tc.code, b)
				}
			}
			if tc.wantBody != "" && tc.req.method != "HEAD" && b != tc.wantBody {
				t.Errorf("body = %q, want %q", b, tc.wantBody)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			_, hasSession := resp.Header[session.Header]
			if data := strings.HasPrefix(tc.req.target, "/v1/kv"); data != hasSession {
				t.Errorf("X-Session present = %v, want %v", hasSession, data)
			}
		})
	}
	// None of the failed writes above changed "exists".
	resp := get(t, s, "/v1/kv/exists", nil)
	if b := mustStatus(t, resp, 200); b != "old" || resp.Header.Get("ETag") != `"`+ver+`"` {
		t.Fatalf("exists = %q %s, want %q \"%s\"", b, resp.Header.Get("ETag"), "old", ver)
	}
}

func TestValueTooLargeDefault(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	big := strings.Repeat("v", server.DefaultMaxValueBytes)
	mustStatus(t, put(t, s, "k", big, nil), http.StatusOK)
	resp := put(t, s, "k", big+"v", nil)
	if got := errCode(t, resp, mustStatus(t, resp, http.StatusRequestEntityTooLarge)); got != "value_too_large" {
		t.Fatalf("code = %q", got)
	}
}

// TestTruncatedBody checks that a PUT whose body fails part-way writes
// nothing: neither a new key nor over an existing one.
func TestTruncatedBody(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	v := putVersion(t, s, "k", "original")
	for _, key := range []string{"k", "new"} {
		r := httptest.NewRequest(http.MethodPut, "/v1/kv/"+key, &errAfter{n: 100})
		r.ContentLength = 1000
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		resp := w.Result()
		if got := errCode(t, resp, mustStatus(t, resp, http.StatusBadRequest)); got != "bad_body" {
			t.Fatalf("code = %q, want bad_body", got)
		}
	}
	resp := get(t, s, "/v1/kv/k", nil)
	if b := mustStatus(t, resp, 200); b != "original" || resp.Header.Get("ETag") != fmt.Sprintf(`"%d"`, v) {
		t.Fatalf("k = %q (ETag %s) after truncated PUT", b, resp.Header.Get("ETag"))
	}
	mustStatus(t, get(t, s, "/v1/kv/new", nil), http.StatusNotFound)
}

// TestClientDisconnect sends a PUT over TCP whose body stops short of its
// Content-Length, then closes; the key must not be written.
func TestClientDisconnect(t *testing.T) {
	t.Parallel()
	node := testnode.New(t)
	ts := testnode.Serve(t, node)
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1/kv/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("x", 10))
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustStatus(t, resp, http.StatusBadRequest)
	res, err := node.Get(t.Context(), "cut", shard.ReadOptions{})
	if err != nil || res.Found {
		t.Fatalf("Get(cut) = %+v, %v; want not found", res, err)
	}
}

type scanPage struct {
	Items []struct {
		Key     string
		Value   []byte
		Version uint64
	}
	Next *string
}

func scanAll(t *testing.T, h http.Handler, query string, limit int) (keys []string, pages int) {
	t.Helper()
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	q.Set("limit", strconv.Itoa(limit))
	for pages < 1000 {
		var page scanPage
		if err := json.Unmarshal([]byte(mustStatus(t, get(t, h, "/v1/kv?"+q.Encode(), nil), 200)), &page); err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Items) > limit {
			t.Fatalf("page of %d items, limit %d", len(page.Items), limit)
		}
		for _, it := range page.Items {
			if string(it.Value) != "value-"+it.Key || it.Version == 0 {
				t.Fatalf("item %+v: wrong value or version", it)
			}
			keys = append(keys, it.Key)
		}
		if page.Next == nil {
			return keys, pages
		}
		q.Set("start", *page.Next)
	}
	t.Fatal("scan does not end")
	return nil, 0
}

func TestScan(t *testing.T) {
	t.Parallel()
	node := testnode.New(t)
	s := newServer(t, server.Config{Node: node})
	var want []string
	for i := range 50 {
		k := fmt.Sprintf("scan/%03d", i)
		want = append(want, k)
		putVersion(t, s, k, "value-"+k)
	}
	for _, k := range []string{"scam", "scan", "scan0", "scao/1", "other/1"} {
		putVersion(t, s, k, "value-"+k)
	}
	// The keys landed on more than one shard.
	used := 0
	for _, sh := range node.Cluster().Shards {
		for _, r := range sh.Replicas {
			if r.Applied > 0 && r.Node == node.ID() {
				used++
			}
		}
	}
	if used < 2 {
		t.Fatalf("keys touched %d shards, want several", used)
	}

	cases := []struct {
		name  string
		query string
		limit int
		want  []string
		pages int
	}{
		{"all in one page", "prefix=scan/", 100, want, 1},
		{"pages of 7", "prefix=scan/", 7, want, 8},
		{"exact pages", "prefix=scan/", 10, want, 5},
		{"range", "prefix=scan/&start=scan/010&end=scan/020", 3, want[10:20], 4},
		{"start before prefix", "prefix=scan/&start=a", 100, want, 1},
		{"escaped prefix", "prefix=scan%2F04", 100, want[40:], 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			keys, pages := scanAll(t, s, tc.query, tc.limit)
			if !slices.Equal(keys, tc.want) {
				t.Fatalf("keys = %v\nwant %v", keys, tc.want)
			}
			if pages != tc.pages && !(tc.limit*(tc.pages-1) == len(tc.want) && pages == tc.pages-1) {
				t.Errorf("pages = %d, want %d", pages, tc.pages)
			}
		})
	}
	t.Run("all keys sorted", func(t *testing.T) {
		keys, _ := scanAll(t, s, "prefix=", 13)
		if len(keys) != 55 || !slices.IsSorted(keys) {
			t.Fatalf("keys = %v", keys)
		}
	})
}

func decodeSession(tb testing.TB, resp *http.Response) session.Token {
	tb.Helper()
	vs, ok := resp.Header[session.Header]
	if !ok || len(vs) != 1 {
		tb.Fatalf("X-Session header = %v, want exactly one", vs)
	}
	tok, err := session.Decode(vs[0])
	if err != nil {
		tb.Fatalf("X-Session %q: %v", vs[0], err)
	}
	return tok
}

func TestSessionReadYourWrites(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	resp := put(t, s, "a", "1", nil)
	mustStatus(t, resp, 200)
	tok := decodeSession(t, resp)
	if len(tok) == 0 {
		t.Fatal("PUT returned an empty session token")
	}
	raw := tok.Encode()

	// A second write carrying the token returns a token covering both.
	resp = put(t, s, "b", "2", hdr(session.Header, raw))
	mustStatus(t, resp, 200)
	tok2 := decodeSession(t, resp)
	if !tok2.Covers(tok) {
		t.Fatalf("token %v does not cover %v", tok2, tok)
	}
	raw2 := tok2.Encode()

	for _, c := range []string{"", "?consistency=session", "?consistency=stale", "?consistency=linearizable"} {
		for _, key := range []string{"a", "b"} {
			resp := get(t, s, "/v1/kv/"+key+c, hdr(session.Header, raw2))
			want := map[string]string{"a": "1", "b": "2"}[key]
			if b := mustStatus(t, resp, 200); b != want {
				t.Fatalf("GET %s%s = %q, want %q", key, c, b, want)
			}
			if got := decodeSession(t, resp); !got.Covers(tok2) {
				t.Fatalf("GET %s%s: token %v does not cover %v", key, c, got, tok2)
			}
		}
	}

	// Errors on data routes echo (at least) the request's token.
	for _, rq := range []request{
		{"GET", "/v1/kv/missing", nil, hdr(session.Header, raw2)},
		{"GET", "/v1/kv/" + strings.Repeat("k", 1025), nil, hdr(session.Header, raw2)},
		{"GET", "/v1/kv/a?consistency=bogus", nil, hdr(session.Header, raw2)},
		{"PUT", "/v1/kv/a", strings.NewReader("x"), hdr(session.Header, raw2, "If-Match", `"999999"`)},
		{"GET", "/v1/kv?limit=x", nil, hdr(session.Header, raw2)},
	} {
		resp := rq.do(t, s)
		body(t, resp)
		if resp.StatusCode < 400 {
			t.Fatalf("%s %s: status %d, want an error", rq.method, rq.target, resp.StatusCode)
		}
		if got := decodeSession(t, resp); !got.Covers(tok2) {
			t.Fatalf("%s %s: token %v does not cover %v", rq.method, rq.target, got, tok2)
		}
	}

	// Without a token, a response still carries the header.
	resp = get(t, s, "/v1/kv/missing", nil)
	body(t, resp)
	decodeSession(t, resp)
}

func TestETagIsVersion(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	resp := put(t, s, "k", "one", nil)
	var out struct{ Version uint64 }
	if err := json.Unmarshal([]byte(mustStatus(t, resp, 200)), &out); err != nil {
		t.Fatal(err)
	}
	etag := fmt.Sprintf(`"%d"`, out.Version)
	if got := resp.Header.Get("ETag"); got != etag {
		t.Fatalf("PUT ETag = %q, want %q", got, etag)
	}
	resp = get(t, s, "/v1/kv/k", nil)
	if b := mustStatus(t, resp, 200); b != "one" {
		t.Fatalf("GET = %q", b)
	}
	if got := resp.Header.Get("ETag"); got != etag {
		t.Fatalf("GET ETag = %q, want %q", got, etag)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/octet-stream" {
		t.Fatalf("GET Content-Type = %q", got)
	}
	var page scanPage
	if err := json.Unmarshal([]byte(mustStatus(t, get(t, s, "/v1/kv?prefix=k", nil), 200)), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 || page.Items[0].Version != out.Version {
		t.Fatalf("scan = %+v, want version %d", page, out.Version)
	}

	// Compare-and-set: the current ETag wins once, then is stale.
	resp = put(t, s, "k", "two", hdr("If-Match", etag))
	mustStatus(t, resp, 200)
	etag2 := resp.Header.Get("ETag")
	if etag2 == etag {
		t.Fatalf("version did not change: %s", etag2)
	}
	mustStatus(t, put(t, s, "k", "three", hdr("If-Match", etag)), http.StatusPreconditionFailed)
	// If-None-Match: * creates only once.
	mustStatus(t, put(t, s, "fresh", "1", hdr("If-None-Match", "*")), 200)
	mustStatus(t, put(t, s, "fresh", "2", hdr("If-None-Match", "*")), http.StatusPreconditionFailed)
	if b := mustStatus(t, get(t, s, "/v1/kv/fresh", nil), 200); b != "1" {
		t.Fatalf("fresh = %q, want 1", b)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	v := putVersion(t, s, "k", "v")
	del := func(h http.Header) string {
		return mustStatus(t, request{"DELETE", "/v1/kv/k", nil, h}.do(t, s), 200)
	}
	mustStatus(t, request{"DELETE", "/v1/kv/k", nil, hdr("If-Match", fmt.Sprintf(`"%d"`, v+1))}.do(t, s), http.StatusPreconditionFailed)
	if b := del(hdr("If-Match", fmt.Sprintf(`"%d"`, v))); b != `{"deleted":true}`+"\n" {
		t.Fatalf("first delete = %s", b)
	}
	if b := del(nil); b != `{"deleted":false}`+"\n" {
		t.Fatalf("second delete = %s", b)
	}
	mustStatus(t, get(t, s, "/v1/kv/k", nil), http.StatusNotFound)
}

func TestCluster(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	var st shard.ClusterStatus
	if err := json.Unmarshal([]byte(mustStatus(t, get(t, s, "/v1/cluster", nil), 200)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Node != "n1" || len(st.Nodes) != 1 || len(st.Shards) != testnode.DefaultShards {
		t.Fatalf("cluster = %+v", st)
	}
	for _, sh := range st.Shards {
		if sh.Leader != "n1" {
			t.Fatalf("shard %d leader %q, want n1", sh.ID, sh.Leader)
		}
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	node := testnode.New(t)
	s := newServer(t, server.Config{Node: node, Registry: reg})
	// A second server on the same registry shares the collectors.
	s2 := newServer(t, server.Config{Node: node, Registry: reg})
	putVersion(t, s, "k", "v")
	mustStatus(t, get(t, s2, "/v1/kv/k", nil), 200)
	mustStatus(t, get(t, s, "/nowhere", nil), 404)
	b := mustStatus(t, get(t, s, "/metrics", nil), 200)
	for _, want := range []string{
		server.MetricRequests + `{code="200",route="kv_put"} 1`,
		server.MetricRequests + `{code="200",route="kv_get"} 1`,
		server.MetricRequests + `{code="404",route="unmatched"} 1`,
		server.MetricDuration + `_bucket{code="200",route="kv_put",le=`,
		"go_goroutines",
		"process_cpu_seconds_total",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	if _, err := server.New(server.Config{}); err == nil {
		t.Fatal("New without Node succeeded")
	}
	if _, err := server.New(server.Config{Node: testnode.New(t), MaxValueBytes: -1}); err == nil {
		t.Fatal("New with negative MaxValueBytes succeeded")
	}
}

// TestClosedNode checks that requests to a closed node get 503.
func TestClosedNode(t *testing.T) {
	t.Parallel()
	node := testnode.New(t)
	s := newServer(t, server.Config{Node: node})
	putVersion(t, s, "k", "v")
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	resp := get(t, s, "/v1/kv/k", nil)
	b := mustStatus(t, resp, http.StatusServiceUnavailable)
	if code := errCode(t, resp, b); code != "closed" {
		t.Fatalf("code = %q, want closed", code)
	}
}

func BenchmarkServer(b *testing.B) {
	s := newServer(b, server.Config{})
	value := bytes.Repeat([]byte("v"), 100)
	resp := put(b, s, "bench/key", string(value), nil)
	mustStatus(b, resp, 200)
	tok := resp.Header.Get(session.Header)
	for i := range 100 {
		mustStatus(b, put(b, s, fmt.Sprintf("scan/%03d", i), string(value), nil), 200)
	}

	b.Run("put", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r := httptest.NewRequest(http.MethodPut, "/v1/kv/bench/put"+strconv.Itoa(i%1000), bytes.NewReader(value))
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
			i++
		}
	})
	for _, c := range []string{"linearizable", "session", "stale"} {
		b.Run("get/"+c, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, "/v1/kv/bench/key?consistency="+c, nil)
				r.Header.Set(session.Header, tok)
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
	b.Run("scan/100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodGet, "/v1/kv?prefix=scan/&limit=100", nil)
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}
