package server_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"lambdadb/internal/wasmtest"
	"lambdadb/namespace"
	"lambdadb/server"
)

// inNamespace serves h with every request in namespace ns, as the
// authentication middleware sets it.
func inNamespace(h http.Handler, ns string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(namespace.With(r.Context(), ns)))
	})
}

// nsURLs maps a namespace to the base URL of a server that serves every
// request in it.
type nsURLs map[string]string

var testNamespaces = []string{namespace.Default, "shop", "blog"}

// nsServer serves one node's API (KV, feed, functions, triggers, queries)
// once per namespace of testNamespaces.
func nsServer(t *testing.T) nsURLs {
	t.Helper()
	n, e, tr := functionsNode(t)
	h, err := server.New(server.Config{Node: n, Functions: e, Triggers: tr})
	if err != nil {
		t.Fatal(err)
	}
	out := nsURLs{}
	for _, ns := range testNamespaces {
		ts := httptest.NewServer(inNamespace(h, ns))
		t.Cleanup(ts.Close)
		out[ns] = ts.URL
	}
	return out
}

func mustDo(t *testing.T, method, url string, body []byte, status int) reply {
	t.Helper()
	r := do(t, method, url, body)
	if r.status != status {
		t.Fatalf("%s %s: %d %s (want %d)", method, url, r.status, r.body, status)
	}
	return r
}

// scanKeys returns every key (and value) a namespace's scan with query q
// returns, following next with pages of limit.
func scanKeys(t *testing.T, base, q string, limit int) ([]string, map[string]string) {
	t.Helper()
	var keys []string
	vals := map[string]string{}
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	v.Set("limit", fmt.Sprint(limit))
	for {
		r := mustDo(t, "GET", base+"/v1/kv?"+v.Encode(), nil, 200)
		var res struct {
			Items []struct {
				Key   string
				Value []byte
			}
			Next *string
		}
		if err := json.Unmarshal(r.body, &res); err != nil {
			t.Fatal(err)
		}
		for _, it := range res.Items {
			keys = append(keys, it.Key)
			vals[it.Key] = string(it.Value)
		}
		if res.Next == nil {
			return keys, vals
		}
		v.Set("start", *res.Next)
	}
}

// seedNamespaces writes, in every namespace, the keys given, each with
// value "<ns>:<key>".
func seedNamespaces(t *testing.T, u nsURLs, keys map[string][]string) {
	t.Helper()
	for ns, ks := range keys {
		for _, k := range ks {
			mustDo(t, "PUT", u[ns]+"/v1/kv/"+url.PathEscape(k), []byte(ns+":"+k), 200)
		}
	}
}

func TestNamespaceKV(t *testing.T) {
	u := nsServer(t)
	seedNamespaces(t, u, map[string][]string{
		"default": {"k", "m", "p/1"},
		"shop":    {"a", "k", "p/1", "p/2", "z"},
		"blog":    {"k", "x", "p/9"},
	})
	for _, ns := range testNamespaces {
		r := mustDo(t, "GET", u[ns]+"/v1/kv/k", nil, 200)
		if string(r.body) != ns+":k" {
			t.Fatalf("%s reads k = %q", ns, r.body)
		}
	}
	if r := do(t, "GET", u["blog"]+"/v1/kv/a", nil); r.status != 404 {
		t.Fatalf("blog reads shop's a: %d %s", r.status, r.body)
	}
	// Deleting in one namespace leaves the others' key.
	mustDo(t, "DELETE", u["blog"]+"/v1/kv/k", nil, 200)
	mustDo(t, "GET", u["shop"]+"/v1/kv/k", nil, 200)
	mustDo(t, "GET", u["default"]+"/v1/kv/k", nil, 200)
	mustDo(t, "GET", u["blog"]+"/v1/kv/k", nil, 404)
	// A conditional write sees its own namespace's version only.
	if r := do(t, "PUT", u["blog"]+"/v1/kv/k", []byte("again"), "If-None-Match", "*"); r.status != 200 {
		t.Fatalf("blog create k: %d %s", r.status, r.body)
	}

	want := map[string][]string{
		"default": {"k", "m", "p/1"},
		"shop":    {"a", "k", "p/1", "p/2", "z"},
		"blog":    {"k", "p/9", "x"},
	}
	for _, ns := range testNamespaces {
		for _, limit := range []int{1, 2, 100} {
			keys, vals := scanKeys(t, u[ns], "prefix=", limit)
			if !slices.Equal(keys, want[ns]) {
				t.Fatalf("%s scan (limit %d) = %q, want %q", ns, limit, keys, want[ns])
			}
			for k, v := range vals {
				if k != "k" || ns != "blog" {
					if v != ns+":"+k {
						t.Fatalf("%s scan: %s = %q", ns, k, v)
					}
				}
			}
		}
	}
	// Bounds outside a namespace's keys stay inside it.
	for _, tc := range []struct {
		ns, q string
		want  []string
	}{
		{"shop", "prefix=p/", []string{"p/1", "p/2"}},
		{"shop", "start=" + url.QueryEscape("\u0000"), want["shop"]},
		{"shop", "end=" + url.QueryEscape("\U0010FFFF"), want["shop"]},
		{"shop", "start=b&end=" + url.QueryEscape("\U0010FFFF"), []string{"k", "p/1", "p/2", "z"}},
		{"shop", "prefix=p/&start=a&end=zz", []string{"p/1", "p/2"}},
		{"default", "end=" + url.QueryEscape("\U0010FFFF"), want["default"]},
		{"default", "start=" + url.QueryEscape("\u00ff"), nil},
		{"blog", "start=p", []string{"p/9", "x"}},
	} {
		keys, _ := scanKeys(t, u[tc.ns], tc.q, 2)
		if !slices.Equal(keys, tc.want) {
			t.Fatalf("%s scan %s = %q, want %q", tc.ns, tc.q, keys, tc.want)
		}
	}
	// Bytes that are not UTF-8 — the only way to name the stored form of
	// another namespace's key — are refused.
	for _, q := range []string{"prefix=%FFshop%00", "start=%FFshop%00", "end=%FF", "prefix=%FF"} {
		if r := do(t, "GET", u["default"]+"/v1/kv?"+q, nil); r.status != 400 {
			t.Fatalf("scan ?%s: %d %s", q, r.status, r.body)
		}
	}
	for _, p := range []string{"%FFshop%00k", "%FFblog%00k"} {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			if r := do(t, m, u["default"]+"/v1/kv/"+p, []byte("x")); r.status != 400 {
				t.Fatalf("%s %s: %d %s", m, p, r.status, r.body)
			}
		}
	}
}

func TestNamespaceFeed(t *testing.T) {
	u := nsServer(t)
	cursors := map[string]string{}
	for _, ns := range testNamespaces {
		_, f, _ := feedGet(t, u[ns], "cursor=now")
		cursors[ns] = f.Cursor
	}
	// Streams of every namespace, empty prefix, opened before the writes.
	streams := map[string]*websocket.Conn{}
	for _, ns := range testNamespaces {
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(u[ns], "http")+"/v1/feed?cursor="+cursors[ns], nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		streams[ns] = c
	}
	seedNamespaces(t, u, map[string][]string{
		"default": {"d/1", "k"},
		"shop":    {"s/1", "k", "s/2"},
		"blog":    {"b/1", "k"},
	})
	mustDo(t, "DELETE", u["shop"]+"/v1/kv/s/1", nil, 200)
	want := map[string][]string{
		"default": {"d/1", "k"},
		"shop":    {"s/1", "k", "s/2", "s/1"},
		"blog":    {"b/1", "k"},
	}
	for _, ns := range testNamespaces {
		_, f, _ := feedGet(t, u[ns], "cursor="+cursors[ns])
		var keys []string
		for _, c := range f.Changes {
			keys = append(keys, c.Key)
			if c.Op == "put" && string(c.Value) != ns+":"+c.Key {
				t.Fatalf("%s feed: %s = %q", ns, c.Key, c.Value)
			}
		}
		slices.Sort(keys)
		w := slices.Sorted(slices.Values(want[ns]))
		if !slices.Equal(keys, w) {
			t.Fatalf("%s feed = %q, want %q", ns, keys, w)
		}
		// A prefix maps into the namespace.
		_, f, _ = feedGet(t, u[ns], "prefix=k&cursor="+cursors[ns])
		if len(f.Changes) != 1 || f.Changes[0].Key != "k" || string(f.Changes[0].Value) != ns+":k" {
			t.Fatalf("%s feed of k: %+v", ns, f.Changes)
		}
		// So does a long poll that waits: it sees none of the others'.
		_, f, _ = feedGet(t, u[ns], "prefix=d/&wait=200ms&cursor="+cursors[ns])
		if ns != "default" && len(f.Changes) != 0 {
			t.Fatalf("%s feed of d/: %+v", ns, f.Changes)
		}
	}
	if r := do(t, "GET", u["default"]+"/v1/feed?prefix=%FFshop%00", nil); r.status != 400 {
		t.Fatalf("feed of a stored prefix: %d %s", r.status, r.body)
	}
	for _, ns := range testNamespaces {
		c := streams[ns]
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var keys []string
		for len(keys) < len(want[ns]) {
			var f feedResp
			if err := c.ReadJSON(&f); err != nil {
				t.Fatalf("%s stream after %q: %v", ns, keys, err)
			}
			for _, ch := range f.Changes {
				keys = append(keys, ch.Key)
			}
		}
		slices.Sort(keys)
		if w := slices.Sorted(slices.Values(want[ns])); !slices.Equal(keys, w) {
			t.Fatalf("%s stream = %q, want %q", ns, keys, w)
		}
	}
}

// probe invokes the kvprobe function name in a namespace with ops and
// returns its outcomes.
type probeOp struct {
	Op        string `json:"op"`
	Key       string `json:"key,omitempty"`
	Value     string `json:"value,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	KeyHex    string `json:"key_hex,omitempty"`
	PrefixHex string `json:"prefix_hex,omitempty"`
}

type probeOutcome struct {
	Found bool
	Value string
	Keys  []string
	Err   string
}

func probe(t *testing.T, base, query string, ops ...probeOp) []probeOutcome {
	t.Helper()
	b, _ := json.Marshal(ops)
	r := mustDo(t, "POST", base+"/v1/functions/probe/invoke"+query, b, 200)
	var out []probeOutcome
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
	return out
}

func hexOf(s string) string { return hex.EncodeToString([]byte(s)) }

func TestNamespaceFunctions(t *testing.T) {
	u := nsServer(t)
	mod := wasmtest.Guest(t, "kvprobe")
	for _, ns := range []string{"shop", "blog", "default"} {
		r := mustDo(t, "PUT", u[ns]+"/v1/functions/probe", mod, 201)
		if !strings.Contains(string(r.body), `"name":"probe"`) {
			t.Fatalf("deploy in %s: %s", ns, r.body)
		}
	}
	seedNamespaces(t, u, map[string][]string{
		"default": {"k", "d/1"},
		"shop":    {"k", "s/1"},
		"blog":    {"k", "b/1", "../blog/k"},
	})
	// Lists and reads are per namespace, with user names.
	for _, ns := range testNamespaces {
		r := mustDo(t, "GET", u[ns]+"/v1/functions", nil, 200)
		var l struct{ Functions []struct{ Name string } }
		if err := json.Unmarshal(r.body, &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Functions) != 1 || l.Functions[0].Name != "probe" {
			t.Fatalf("%s lists %s", ns, r.body)
		}
		r = mustDo(t, "GET", u[ns]+"/v1/functions/probe", nil, 200)
		if !strings.Contains(string(r.body), `"name":"probe"`) || strings.Contains(string(r.body), ":probe") {
			t.Fatalf("%s get: %s", ns, r.body)
		}
		mustDo(t, "GET", u[ns]+"/v1/functions/probe/logs", nil, 200)
	}
	// Another namespace's stored name is not a name a user can give.
	for _, p := range []string{"/v1/functions/shop:probe", "/v1/functions/shop:probe/logs"} {
		if r := do(t, "GET", u["default"]+p, nil); r.status != 400 {
			t.Fatalf("default GET %s: %d %s", p, r.status, r.body)
		}
	}
	if r := do(t, "POST", u["default"]+"/v1/functions/blog:probe/invoke", []byte("[]")); r.status != 400 {
		t.Fatalf("default invokes blog:probe: %d %s", r.status, r.body)
	}

	// A shop handler, whatever keys it names, touches shop's keys only.
	out := probe(t, u["shop"], "?key=k",
		probeOp{Op: "get", Key: "k"},
		probeOp{Op: "put", Key: "k", Value: "from shop fn"},
		probeOp{Op: "put", Key: "../blog/k", Value: "from shop fn"},
		probeOp{Op: "get", Key: "b/1"},
		probeOp{Op: "get", KeyHex: hexOf("\xffblog\x00k")},
		probeOp{Op: "put", KeyHex: hexOf("\xffblog\x00k"), Value: "x"},
		probeOp{Op: "cas", KeyHex: hexOf("\xffblog\x00new"), Value: "x"},
		probeOp{Op: "delete", KeyHex: hexOf("\xffblog\x00k")},
		probeOp{Op: "get", KeyHex: hexOf("\xff")},
		probeOp{Op: "scan", Prefix: ""},
		probeOp{Op: "scan", PrefixHex: hexOf("\xffblog\x00")},
		probeOp{Op: "scan", PrefixHex: hexOf("\xff")},
		probeOp{Op: "delete", Key: "b/1"},
	)
	if !out[0].Found || out[0].Value != "shop:k" {
		t.Fatalf("shop fn get k: %+v", out[0])
	}
	if out[1].Err != "" || out[2].Err != "" {
		t.Fatalf("shop fn puts: %+v %+v", out[1], out[2])
	}
	if out[3].Found {
		t.Fatalf("shop fn reads blog's b/1: %+v", out[3])
	}
	for i := 4; i <= 8; i++ {
		if !strings.Contains(out[i].Err, "invalid_key") {
			t.Fatalf("shop fn op %d on a stored key: %+v", i, out[i])
		}
	}
	if w := []string{"../blog/k", "k", "s/1"}; !slices.Equal(out[9].Keys, w) {
		t.Fatalf("shop fn scan = %q, want %q", out[9].Keys, w)
	}
	for i := 10; i <= 11; i++ {
		if !strings.Contains(out[i].Err, "invalid_scan") {
			t.Fatalf("shop fn scan of a stored prefix: %+v", out[i])
		}
	}
	// blog's and default's keys are as they were.
	for ns, keys := range map[string][]string{"blog": {"k", "b/1", "../blog/k"}, "default": {"k", "d/1"}} {
		for _, k := range keys {
			if r := mustDo(t, "GET", u[ns]+"/v1/kv/"+url.PathEscape(k), nil, 200); string(r.body) != ns+":"+k {
				t.Fatalf("%s %s = %q after shop's handler", ns, k, r.body)
			}
		}
	}
	if r := mustDo(t, "GET", u["shop"]+"/v1/kv/k", nil, 200); string(r.body) != "from shop fn" {
		t.Fatalf("shop k = %q", r.body)
	}
	// A Default handler's empty-prefix scan sees Default's keys only.
	out = probe(t, u["default"], "", probeOp{Op: "scan"}, probeOp{Op: "get", KeyHex: hexOf("\xffshop\x00k")})
	if w := []string{"d/1", "k"}; !slices.Equal(out[0].Keys, w) {
		t.Fatalf("default fn scan = %q, want %q", out[0].Keys, w)
	}
	if !strings.Contains(out[1].Err, "invalid_key") {
		t.Fatalf("default fn reads a stored key: %+v", out[1])
	}
	// Removing blog's function leaves shop's.
	mustDo(t, "DELETE", u["blog"]+"/v1/functions/probe", nil, 200)
	mustDo(t, "GET", u["blog"]+"/v1/functions/probe", nil, 404)
	mustDo(t, "GET", u["shop"]+"/v1/functions/probe", nil, 200)
	mustDo(t, "GET", u["default"]+"/v1/functions/probe", nil, 200)
}

func TestNamespaceTriggers(t *testing.T) {
	u := nsServer(t)
	mod := wasmtest.Guest(t, "kvprobe")
	mustDo(t, "PUT", u["shop"]+"/v1/functions/probe", mod, 201)
	mustDo(t, "PUT", u["default"]+"/v1/functions/probe", mod, 201)
	mustDo(t, "PUT", u["shop"]+"/v1/functions/rec", wasmtest.Guest(t, "faulty"), 201)
	// blog has no probe: it cannot bind shop's.
	if r := do(t, "PUT", u["blog"]+"/v1/triggers/t", []byte(`{"function":"probe"}`)); r.status != 400 {
		t.Fatalf("blog binds another namespace's function: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", u["default"]+"/v1/triggers/t", []byte(`{"function":"shop:probe"}`)); r.status != 400 {
		t.Fatalf("default binds shop:probe: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", u["default"]+"/v1/triggers/shop:t", []byte(`{"function":"probe"}`)); r.status != 400 {
		t.Fatalf("default defines shop:t: %d %s", r.status, r.body)
	}
	for _, ns := range []string{"shop", "default"} {
		r := mustDo(t, "PUT", u[ns]+"/v1/triggers/t", []byte(`{"function":"probe","prefix":"","max_wait_ms":0}`), 201)
		var tr struct{ Name, Function, Prefix string }
		if err := json.Unmarshal(r.body, &tr); err != nil || tr.Name != "t" || tr.Function != "probe" || tr.Prefix != "" {
			t.Fatalf("%s define: %s", ns, r.body)
		}
	}
	r := mustDo(t, "PUT", u["shop"]+"/v1/triggers/dl", []byte(`{"function":"rec","prefix":"p/","max_retries":0,"max_wait_ms":0}`), 201)
	if !strings.Contains(string(r.body), `"prefix":"p/"`) || !strings.Contains(string(r.body), `"function":"rec"`) {
		t.Fatalf("shop define dl: %s", r.body)
	}
	seedNamespaces(t, u, map[string][]string{
		"default": {"a", "d/1"},
		"shop":    {"a", "s/1"},
		"blog":    {"a", "b/1"},
	})
	mustDo(t, "PUT", u["shop"]+"/v1/kv/p/2", []byte("poison"), 200)

	want := map[string][]string{
		"default": {"seen/a", "seen/d/1"},
		"shop":    {"seen/a", "seen/p/2", "seen/s/1"},
		"blog":    nil,
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		done := true
		for _, ns := range testNamespaces {
			keys, _ := scanKeys(t, u[ns], "prefix=seen/", 100)
			if len(keys) < len(want[ns]) {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the triggers did not deliver")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // anything misdelivered would show by now
	for _, ns := range testNamespaces {
		keys, vals := scanKeys(t, u[ns], "prefix=seen/", 100)
		if !slices.Equal(keys, want[ns]) {
			t.Fatalf("%s seen = %q, want %q", ns, keys, want[ns])
		}
		for k, v := range vals {
			if uk := strings.TrimPrefix(k, "seen/"); v != ns+":"+uk && v != "poison" {
				t.Fatalf("%s %s = %q", ns, k, v)
			}
		}
	}
	// Dead letters are the namespace's, with user keys.
	for {
		r := mustDo(t, "GET", u["shop"]+"/v1/triggers/dl/dead", nil, 200)
		if strings.Contains(string(r.body), `"key":"p/2"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %s", r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Lists and names are per namespace.
	for ns, names := range map[string][]string{"shop": {"dl", "t"}, "default": {"t"}, "blog": {}} {
		r := mustDo(t, "GET", u[ns]+"/v1/triggers", nil, 200)
		var l struct {
			Triggers []struct{ Name, Function, Prefix string }
		}
		if err := json.Unmarshal(r.body, &l); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tr := range l.Triggers {
			got = append(got, tr.Name)
			if strings.ContainsAny(tr.Function+tr.Prefix, ":\ufffd") || strings.Contains(tr.Function+tr.Prefix, "\xff") {
				t.Fatalf("%s lists %s", ns, r.body)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, names) && !(len(got) == 0 && len(names) == 0) {
			t.Fatalf("%s lists %q, want %q", ns, got, names)
		}
	}
	for _, p := range []string{"/v1/triggers/dl", "/v1/triggers/dl/dead"} {
		mustDo(t, "GET", u["blog"]+p, nil, 404)
		mustDo(t, "GET", u["default"]+p, nil, 404)
	}
	mustDo(t, "POST", u["blog"]+"/v1/triggers/t/pause", nil, 404)
	mustDo(t, "DELETE", u["blog"]+"/v1/triggers/t", nil, 404)
	mustDo(t, "POST", u["default"]+"/v1/triggers/t/pause", nil, 200)
	r = mustDo(t, "GET", u["shop"]+"/v1/triggers/t", nil, 200)
	if !strings.Contains(string(r.body), `"state":"running"`) {
		t.Fatalf("pausing default's t paused shop's: %s", r.body)
	}
	mustDo(t, "DELETE", u["default"]+"/v1/triggers/t", nil, 200)
	mustDo(t, "GET", u["shop"]+"/v1/triggers/t", nil, 200)
}

func TestNamespaceQuery(t *testing.T) {
	u := nsServer(t)
	mod := wasmtest.Guest(t, "kvprobe")
	mustDo(t, "PUT", u["shop"]+"/v1/functions/probe", mod, 201)
	mustDo(t, "PUT", u["default"]+"/v1/functions/probe", mod, 201)
	for ns, n := range map[string]int{"default": 3, "shop": 5, "blog": 7} {
		for i := 0; i < n; i++ {
			mustDo(t, "PUT", fmt.Sprintf("%s/v1/kv/o/%d", u[ns], i), []byte(fmt.Sprintf(`{"amount":%d}`, i+100*len(ns))), 200)
		}
	}
	for ns, n := range map[string]int{"default": 3, "shop": 5, "blog": 7} {
		for _, prefix := range []string{"", "o/"} {
			r := mustDo(t, "POST", u[ns]+"/v1/query", []byte(fmt.Sprintf(`{"prefix":%q,"aggregate":{"op":"count"}}`, prefix)), 200)
			var res struct {
				Result json.RawMessage
				Stats  struct {
					RecordsScanned int `json:"records_scanned"`
				}
			}
			if err := json.Unmarshal(r.body, &res); err != nil {
				t.Fatal(err)
			}
			if res.Stats.RecordsScanned != n || !strings.Contains(string(res.Result), fmt.Sprint(n)) {
				t.Fatalf("%s count of %q = %s, want %d", ns, prefix, r.body, n)
			}
		}
		r := mustDo(t, "POST", u[ns]+"/v1/query", []byte(`{"start":"o/1","end":"\udbff\udfff","aggregate":{"op":"topk","field":"amount","k":2}}`), 200)
		top := fmt.Sprintf(`"key":"o/%d"`, n-1)
		if !strings.Contains(string(r.body), top) || strings.Contains(string(r.body), `\ufffd`) || strings.Contains(string(r.body), `"key":"o/0"`) {
			t.Fatalf("%s topk: %s", ns, r.body)
		}
	}
	for ns, want := range map[string]string{
		"shop":    `["o/0","o/1","o/2","o/3","o/4","prefix="]`,
		"default": `["o/0","o/1","o/2","prefix="]`,
	} {
		r := mustDo(t, "POST", u[ns]+"/v1/query", []byte(`{"prefix":"","function":"probe"}`), 200)
		var res struct{ Result json.RawMessage }
		if err := json.Unmarshal(r.body, &res); err != nil {
			t.Fatal(err)
		}
		if string(res.Result) != want {
			t.Fatalf("%s function query = %s, want %s", ns, res.Result, want)
		}
	}
	r := mustDo(t, "POST", u["shop"]+"/v1/query", []byte(`{"prefix":"o/3","function":"probe"}`), 200)
	if !strings.Contains(string(r.body), `["o/3","prefix=o/3"]`) {
		t.Fatalf("shop function query of o/3: %s", r.body)
	}
	if r := do(t, "POST", u["blog"]+"/v1/query", []byte(`{"function":"probe"}`)); r.status != 404 {
		t.Fatalf("blog queries with shop's function: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", u["default"]+"/v1/query", []byte(`{"function":"shop:probe"}`)); r.status != 400 {
		t.Fatalf("default queries with shop:probe: %d %s", r.status, r.body)
	}
}
