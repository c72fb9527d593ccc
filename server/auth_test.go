package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"lambdadb/auth"
	"lambdadb/changefeed"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
	"lambdadb/shard"
)

// secureServer is a secure-mode server over one node with functions and
// triggers, its token store on a clock the test moves, and its log.
type secureServer struct {
	url   string
	srv   *server.Server
	store *auth.Store
	now   *atomic.Int64
	logs  *bytes.Buffer
	root  string // the bootstrap admin token
}

func newSecureServer(t *testing.T) *secureServer {
	t.Helper()
	n, e, tr := functionsNode(t)
	ss := &secureServer{now: new(atomic.Int64), logs: new(bytes.Buffer)}
	ss.now.Store(time.Now().UnixNano())
	var err error
	ss.store, err = auth.New(auth.Config{Node: n, Now: func() time.Time { return time.Unix(0, ss.now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: ss.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ss.srv, err = server.New(server.Config{Node: n, Functions: e, Triggers: tr, Auth: ss.store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(ss.srv)
	t.Cleanup(ts.Close)
	ss.url = ts.URL
	r := ss.do(t, "", "POST", "/v1/auth/bootstrap", nil)
	if r.status != 200 {
		t.Fatalf("bootstrap: %d %s", r.status, r.body)
	}
	var b struct{ Token string }
	_ = json.Unmarshal([]byte(r.body), &b)
	ss.root = b.Token
	return ss
}

type lockedWriter struct {
	mu atomic.Bool
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	for !l.mu.CompareAndSwap(false, true) {
	}
	defer l.mu.Store(false)
	return l.w.Write(p)
}

type answer struct {
	status int
	body   string
	header http.Header
}

func (ss *secureServer) do(t *testing.T, token, method, path string, body []byte, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, ss.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

// token creates a token with the admin token.
func (ss *secureServer) token(t *testing.T, ns string, ttl time.Duration, scopes ...string) (tok, accessor string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"namespace": ns, "scopes": scopes, "ttl_s": int64(ttl / time.Second)})
	r := ss.do(t, ss.root, "POST", "/v1/tokens", b)
	if r.status != 201 {
		t.Fatalf("create token %v: %d %s", scopes, r.status, r.body)
	}
	var out struct{ Token, Accessor string }
	_ = json.Unmarshal([]byte(r.body), &out)
	return out.Token, out.Accessor
}

// routeCase is one request per route and a scope that suffices for it.
type routeCase struct {
	name, method, path, body string
	scope                    string // "" for any valid token; "public" for none
}

var routeCases = []routeCase{
	{"healthz", "GET", "/healthz", "", "public"},
	{"auth_bootstrap", "POST", "/v1/auth/bootstrap", "", "public"},
	{"kv_put", "PUT", "/v1/kv/orders/1", "v", "kv:write:orders/"},
	{"kv_get", "GET", "/v1/kv/orders/1", "", "kv:read:orders/"},
	{"kv_delete", "DELETE", "/v1/kv/orders/1", "", "kv:write:orders/"},
	{"kv_scan", "GET", "/v1/kv?prefix=orders/", "", "kv:read:orders/"},
	{"kv_invalid_path", "GET", "/v1/kv/a/../b", "", ""},
	{"feed", "GET", "/v1/feed?prefix=orders/&wait=0s", "", "feed:read:orders/"},
	{"query", "POST", "/v1/query", `{"prefix":"orders/","aggregate":{"op":"count"}}`, "query kv:read:orders/"},
	{"fn_deploy", "PUT", "/v1/functions/echo2", "not wasm", "fn:deploy"},
	{"fn_list", "GET", "/v1/functions", "", "fn:invoke"},
	{"fn_get", "GET", "/v1/functions/echo", "", "fn:invoke"},
	{"fn_invoke", "POST", "/v1/functions/echo/invoke", "hi", "fn:invoke"},
	{"fn_logs", "GET", "/v1/functions/echo/logs", "", "fn:logs"},
	{"fn_series", "GET", "/v1/functions/echo/series", "", "fn:logs"},
	{"fn_delete", "DELETE", "/v1/functions/nothing", "", "fn:deploy"},
	{"trigger_put", "PUT", "/v1/triggers/t2", `{"function":"indexer","prefix":"orders/"}`, "trigger:admin feed:read:orders/ fn:invoke"},
	{"trigger_list", "GET", "/v1/triggers", "", "trigger:admin"},
	{"trigger_get", "GET", "/v1/triggers/t1", "", "trigger:admin"},
	{"trigger_dead", "GET", "/v1/triggers/t1/dead", "", "trigger:admin"},
	{"trigger_pause", "POST", "/v1/triggers/t1/pause", "", "trigger:admin"},
	{"trigger_resume", "POST", "/v1/triggers/t1/resume", "", "trigger:admin"},
	{"trigger_delete", "DELETE", "/v1/triggers/nothing", "", "trigger:admin"},
	{"trigger_dead_replay", "POST", "/v1/triggers/t1/dead/0-1-0/replay", "", "trigger:admin fn:invoke"},
	{"trigger_dead_drop", "DELETE", "/v1/triggers/t1/dead/0-1-0", "", "trigger:admin"},
	{"cluster", "GET", "/v1/cluster", "", ""},
	{"cluster_moves", "GET", "/v1/cluster/moves", "", ""},
	{"cluster_rebalance", "POST", "/v1/cluster/rebalance", "", "admin"},
	{"node_decommission", "POST", "/v1/cluster/nodes/n9/decommission", "", "admin"},
	{"node_remove", "DELETE", "/v1/cluster/nodes/n9", "", "admin"},
	{"metrics", "GET", "/metrics", "", "metrics"},
	{"token_create", "POST", "/v1/tokens", `{"namespace":"x","scopes":["query"]}`, "admin"},
	{"token_list", "GET", "/v1/tokens", "", "admin"},
	{"token_revoke", "DELETE", "/v1/tokens/0000000000000000", "", "admin"},
	{"auth_log", "GET", "/v1/auth/log", "", "admin"},
	{"ns_quota_put", "PUT", "/v1/namespaces/acme/quota", `{"ops_per_s":1000}`, "admin"},
	{"ns_quota_get", "GET", "/v1/namespaces/acme/quota", "", "admin"},
	{"ns_list", "GET", "/v1/namespaces", "", "admin"},
	{"console", "GET", "/ui/", "", ""},
	{"console_static", "GET", "/ui/static/htmx.min.js", "", "public"},
	{"unmatched", "GET", "/v2/nothing", "", ""},
	{"console_login", "GET", "/ui/login", "", "public"},
	{"console_logout", "POST", "/ui/logout", "", "public"},
	{"console_trigger_replay", "POST", "/ui/triggers/t1/dead/0-1-0/replay", "", "trigger:admin fn:invoke"},
	{"console_trigger_drop", "POST", "/ui/triggers/t1/dead/0-1-0/drop", "", "trigger:admin"},
	{"console_trigger_state", "POST", "/ui/triggers/t1/pause", "", "trigger:admin"},
}

// TestEveryRouteHasAPolicy: a route added without an access policy, or
// without a case in routeCases, fails here.
func TestEveryRouteHasAPolicy(t *testing.T) {
	ss := newSecureServer(t)
	cased := map[string]bool{}
	for _, c := range routeCases {
		cased[c.name] = true
	}
	names := server.RouteNames(ss.srv)
	if len(names) < 30 {
		t.Fatalf("only %d routes registered: %v", len(names), names)
	}
	for _, name := range append(names, "kv_invalid_path") {
		if !server.HasPolicy(name) {
			t.Errorf("route %s has no access policy (server/auth.go policies)", name)
		}
		if !cased[name] {
			t.Errorf("route %s has no case in routeCases", name)
		}
	}
}

// TestRouteAccess: every route × {no token, malformed, forged, expired,
// revoked, missing scope, the scope it needs}.
func TestRouteAccess(t *testing.T) {
	ss := newSecureServer(t)
	// Fixtures the routes name: a function, a trigger, a key.
	if r := ss.do(t, ss.root, "PUT", "/v1/functions/echo", wasmtest.Example(t, "echo")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "PUT", "/v1/functions/indexer", wasmtest.Example(t, "indexer")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "PUT", "/v1/triggers/t1", []byte(`{"function":"indexer","prefix":"orders/"}`)); r.status != 201 {
		t.Fatalf("trigger: %d %s", r.status, r.body)
	}
	expiring, _ := ss.token(t, "default", time.Hour, "admin")
	revoked, revokedAcc := ss.token(t, "default", 0, "admin")
	if r := ss.do(t, ss.root, "DELETE", "/v1/tokens/"+revokedAcc, nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	unrelated, _ := ss.token(t, "default", 0, "kv:read:elsewhere/")
	// A token of another namespace with every scope but admin: what names
	// default's key, function or trigger finds nothing.
	other, _ := ss.token(t, "blog", 0, "kv:read:*", "kv:write:*", "feed:read:*", "query", "fn:deploy", "fn:invoke", "fn:logs", "trigger:admin")
	if r := ss.do(t, ss.root, "PUT", "/v1/kv/orders/1", []byte("default's")); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	otherNS := map[string]bool{"kv_get": true, "fn_get": true, "fn_invoke": true, "fn_logs": true,
		"trigger_get": true, "trigger_dead": true, "trigger_pause": true, "trigger_resume": true,
		"trigger_dead_replay": true, "trigger_dead_drop": true,
		"console_trigger_replay": true, "console_trigger_drop": true, "console_trigger_state": true}
	forged := ss.root[:len(ss.root)-9] + "x" + ss.root[len(ss.root)-8:]
	ss.now.Add(int64(2 * time.Hour)) // expiring has expired
	for _, c := range routeCases {
		t.Run(c.name, func(t *testing.T) {
			call := func(tok string) answer {
				return ss.do(t, tok, c.method, c.path, []byte(c.body))
			}
			if c.scope == "public" {
				if r := call(""); r.status == 401 || r.status == 403 {
					t.Fatalf("public route refused: %d %s", r.status, r.body)
				}
				return
			}
			for _, bad := range []struct{ what, tok string }{
				{"no token", ""}, {"malformed", "ldb_nope"}, {"forged", forged},
				{"expired", expiring}, {"revoked", revoked},
			} {
				r := call(bad.tok)
				if r.status != 401 || !strings.Contains(r.body, `"code":"unauthenticated"`) {
					t.Fatalf("%s: %d %s, want 401 unauthenticated", bad.what, r.status, r.body)
				}
				if r.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("%s: 401 without WWW-Authenticate", bad.what)
				}
			}
			if c.scope != "" {
				if r := call(unrelated); r.status != 403 || !strings.Contains(r.body, `"code":"forbidden"`) {
					t.Fatalf("missing scope: %d %s, want 403 forbidden", r.status, r.body)
				}
			}
			if otherNS[c.name] {
				// A function's logs are kept by name, even of a function
				// gone: another namespace's name has none.
				if r := call(other); r.status != 404 && !(c.name == "fn_logs" && r.status == 200 && strings.Contains(r.body, `"lines":[]`)) {
					t.Fatalf("other namespace: %d %s, want 404", r.status, r.body)
				}
			}
			scopes := strings.Fields(c.scope)
			if len(scopes) == 0 {
				scopes = []string{"kv:read:elsewhere/"}
			}
			tok, _ := ss.token(t, "default", 0, scopes...)
			if r := call(tok); r.status == 401 || r.status == 403 {
				t.Fatalf("with %v: %d %s", scopes, r.status, r.body)
			}
			// One scope short of a composite requirement is not enough.
			for i := range scopes {
				if len(scopes) == 1 {
					break
				}
				short := append(append([]string{}, scopes[:i]...), scopes[i+1:]...)
				tok, _ := ss.token(t, "default", 0, short...)
				if r := call(tok); r.status != 403 {
					t.Fatalf("with %v (without %s): %d %s, want 403", short, scopes[i], r.status, r.body)
				}
			}
		})
	}
	// No token appears in the node's log, though every route failed
	// with some; the accessors may.
	logs := ss.logs.String()
	for _, tok := range []string{ss.root, expiring, revoked, unrelated, forged} {
		if strings.Contains(logs, tok[len("ldb_")+17:len("ldb_")+30]) {
			t.Fatalf("a token's secret is in the log")
		}
	}
}

func TestPrefixScopes(t *testing.T) {
	ss := newSecureServer(t)
	rw, _ := ss.token(t, "default", 0, "kv:read:orders/", "kv:write:orders/")
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"PUT", "/v1/kv/orders/1", 200},
		{"PUT", "/v1/kv/orders", 403},
		{"PUT", "/v1/kv/order%73/1", 200}, // "orders/1" escaped: the key is what counts
		{"PUT", "/v1/kv/users/1", 403},
		{"GET", "/v1/kv/users/1", 403},
		{"GET", "/v1/kv?prefix=orders/", 200},
		{"GET", "/v1/kv?prefix=order", 403},
		{"GET", "/v1/kv", 403},
		{"GET", "/v1/kv?start=orders/a&end=orders/b", 200},
		{"GET", "/v1/kv?start=orders/a", 403},
		{"GET", "/v1/kv?start=orders/a&end=p", 403},
		{"GET", "/v1/kv?start=a&end=orders/b", 403},
		{"GET", "/v1/feed?prefix=orders/&wait=0s", 403}, // kv:read is not feed:read
	} {
		if r := ss.do(t, rw, c.method, c.path, []byte("v")); r.status != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, r.status, r.body, c.want)
		}
	}
}

func TestBootstrapOnce(t *testing.T) {
	ss := newSecureServer(t)
	if r := ss.do(t, "", "POST", "/v1/auth/bootstrap", nil); r.status != 409 || !strings.Contains(r.body, "already_bootstrapped") {
		t.Fatalf("second bootstrap: %d %s", r.status, r.body)
	}
	r := ss.do(t, ss.root, "GET", "/v1/tokens", nil)
	if r.status != 200 || strings.Contains(r.body, ss.root[len("ldb_")+17:]) || !strings.Contains(r.body, `"scopes":["admin"]`) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	for _, body := range []string{`{"namespace":"x"}`, `{"namespace":"X!","scopes":["query"]}`, `{"scopes":["kv:read"]}`, `{"scopes":["query"],"ttl_s":-1}`, `{"scopes":["query"],"extra":1}`, `nope`} {
		if r := ss.do(t, ss.root, "POST", "/v1/tokens", []byte(body)); r.status != 400 {
			t.Errorf("create %s: %d %s, want 400", body, r.status, r.body)
		}
	}
	// Denials are logged by accessor, and only admins read them.
	ro, acc := ss.token(t, "default", 0, "kv:read:*")
	if r := ss.do(t, ro, "PUT", "/v1/kv/a", []byte("x")); r.status != 403 {
		t.Fatalf("read-only token wrote: %d", r.status)
	}
	r = ss.do(t, ss.root, "GET", "/v1/auth/log", nil)
	if r.status != 200 || !strings.Contains(r.body, acc) || !strings.Contains(r.body, `"route":"kv_put"`) || strings.Contains(r.body, ro[len("ldb_")+17:]) {
		t.Fatalf("auth log: %d %s", r.status, r.body)
	}
}

func TestNamespaceHeader(t *testing.T) {
	ss := newSecureServer(t)
	shop, _ := ss.token(t, "shop", 0, "kv:read:*", "kv:write:*")
	if r := ss.do(t, shop, "PUT", "/v1/kv/a", []byte("x"), "X-Namespace", "blog"); r.status != 403 {
		t.Fatalf("non-admin X-Namespace: %d %s", r.status, r.body)
	}
	if r := ss.do(t, shop, "PUT", "/v1/kv/a", []byte("x"), "X-Namespace", "shop"); r.status != 200 {
		t.Fatalf("own X-Namespace: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "GET", "/v1/kv/a", nil, "X-Namespace", "Bad!"); r.status != 400 {
		t.Fatalf("bad X-Namespace: %d %s", r.status, r.body)
	}
}

// TestInsecureModeUnchanged: without Config.Auth nothing needs a token,
// the token routes say secure mode is off, and X-Namespace is refused.
func TestInsecureModeUnchanged(t *testing.T) {
	ts := httptest.NewServer(newServer(t, server.Config{}))
	defer ts.Close()
	for _, c := range []struct{ method, path, body, hdr string }{
		{"PUT", "/v1/kv/a", "x", ""},
		{"GET", "/v1/kv/a", "", ""},
	} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s: %v %v", c.method, c.path, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	for _, path := range []string{"/v1/auth/bootstrap", "/v1/tokens"} {
		resp, _ := http.Post(ts.URL+path, "application/json", strings.NewReader(`{}`))
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "insecure mode") {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	req, _ := http.NewRequest("GET", ts.URL+"/v1/kv/a", nil)
	req.Header.Set("X-Namespace", "shop")
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("X-Namespace in insecure mode: %d", resp.StatusCode)
	}
}

// TestCrossOrigin: a browser page of another origin can neither change
// data nor open a feed stream; programs and same-origin pages can.
func TestCrossOrigin(t *testing.T) {
	ts := httptest.NewServer(newServer(t, server.Config{}))
	defer ts.Close()
	req, _ := http.NewRequest("POST", ts.URL+"/v1/query", strings.NewReader(`{"prefix":"","aggregate":{"op":"count"}}`))
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("cross-site POST: %d", resp.StatusCode)
	}
	ws := "ws" + strings.TrimPrefix(ts.URL, "http") + "/v1/feed"
	_, r, err := websocket.DefaultDialer.Dial(ws, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || r == nil || r.StatusCode != 403 {
		t.Fatalf("cross-origin WebSocket: %v %v", err, r)
	}
	c, _, err := websocket.DefaultDialer.Dial(ws, http.Header{"Origin": {ts.URL}})
	if err != nil {
		t.Fatalf("same-origin WebSocket: %v", err)
	}
	c.Close()
}

// TestWebSocketToken: a browser's WebSocket sends its token as a
// subprotocol entry; the node answers with the feed protocol, never the
// token; a token in the URL is ignored.
func TestWebSocketToken(t *testing.T) {
	ss := newSecureServer(t)
	tok, _ := ss.token(t, "default", 0, "feed:read:*")
	ws := "ws" + strings.TrimPrefix(ss.url, "http") + "/v1/feed?cursor=now"
	if _, r, err := websocket.DefaultDialer.Dial(ws+"&token="+tok, nil); err == nil || r.StatusCode != 401 {
		t.Fatalf("token in URL: %v %v", err, r)
	}
	d := websocket.Dialer{Subprotocols: []string{"lambdadb.feed", "lambdadb.bearer." + tok}}
	c, r, err := d.Dial(ws, nil)
	if err != nil {
		t.Fatalf("subprotocol token: %v", err)
	}
	defer c.Close()
	if p := r.Header.Get("Sec-WebSocket-Protocol"); p != "lambdadb.feed" {
		t.Fatalf("answered subprotocol %q", p)
	}
	c2, _, err := websocket.DefaultDialer.Dial(ws, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("Authorization header: %v", err)
	}
	c2.Close()
	_ = context.Background
	_ = fmt.Sprint
}

// functionsNode is a one-node cluster with a function engine and
// triggers, set up as serve does (the feed is never trimmed past a
// trigger's checkpoint); all are closed at the end of the test.
func functionsNode(t *testing.T) (*shard.Node, *lambda.Engine, *changefeed.Triggers) {
	t.Helper()
	var trp atomic.Pointer[changefeed.Triggers]
	n := testnode.NewWithConfig(t, shard.Config{FeedTrimLimit: func(s int) uint64 {
		if tr := trp.Load(); tr != nil {
			return tr.TrimLimit(s)
		}
		return 0
	}})
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tr, err := changefeed.NewTriggers(changefeed.TriggersConfig{Node: n, Functions: e, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
	trp.Store(tr)
	t.Cleanup(tr.Close)
	return n, e, tr
}
