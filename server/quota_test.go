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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/auth"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/namespace"
	"lambdadb/server"
	"lambdadb/shard"
)

// newQuotaServer is a secure-mode server over one node with functions,
// re-reading quotas and stored bytes every 100 ms, and its node.
//
// The tests write a namespace's data through the node (with
// namespace.Key): what the quotas see is the stored keys, whichever way
// they were written.
func newQuotaServer(t *testing.T) (*secureServer, *shard.Node) {
	t.Helper()
	n := testnode.New(t)
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	ss := &secureServer{now: new(atomic.Int64), logs: new(bytes.Buffer)}
	ss.now.Store(time.Now().UnixNano())
	ss.store, err = auth.New(auth.Config{Node: n, Now: func() time.Time { return time.Unix(0, ss.now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	ss.srv, err = server.New(server.Config{Node: n, Functions: e, Auth: ss.store, QuotaRefresh: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
	return ss, n
}

func nsPut(t *testing.T, n *shard.Node, ns, key string, value []byte) {
	t.Helper()
	if _, err := n.Put(context.Background(), namespace.Key(ns, key), value, shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
}

func (ss *secureServer) setQuota(t *testing.T, ns, body string) server.NamespaceInfo {
	t.Helper()
	r := ss.do(t, ss.root, "PUT", "/v1/namespaces/"+ns+"/quota", []byte(body))
	if r.status != 200 {
		t.Fatalf("set quota %s: %d %s", body, r.status, r.body)
	}
	var info server.NamespaceInfo
	if err := json.Unmarshal([]byte(r.body), &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// wantQuota checks that r is a 429 quota_exceeded of quota which.
func wantQuota(t *testing.T, r answer, which string) {
	t.Helper()
	if r.status != 429 || !strings.Contains(r.body, `"code":"quota_exceeded"`) || !strings.Contains(r.body, `"quota":"`+which+`"`) {
		t.Fatalf("got %d %s, want 429 quota_exceeded %s", r.status, r.body, which)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
}

func TestQuotaAdmin(t *testing.T) {
	ss, n := newQuotaServer(t)
	for _, c := range []struct{ ns, body string }{
		{"acme", `{"ops_per_s":-1}`},
		{"acme", `{"ops_per_s":1,"bogus":2}`},
		{"acme", `not json`},
		{"Bad.NS", `{"ops_per_s":1}`},
	} {
		if r := ss.do(t, ss.root, "PUT", "/v1/namespaces/"+c.ns+"/quota", []byte(c.body)); r.status != 400 {
			t.Fatalf("PUT %s %s: %d %s, want 400", c.ns, c.body, r.status, r.body)
		}
	}
	info := ss.setQuota(t, "acme", `{"ops_per_s":100,"stored_bytes":5000}`)
	if info.Namespace != "acme" || info.Quota != (server.Quota{OpsPerS: 100, StoredBytes: 5000}) {
		t.Fatalf("PUT answered %+v", info)
	}
	ss.setQuota(t, "beta", `{"concurrency":3}`)
	nsPut(t, n, "acme", "k", []byte("0123456789"))
	r := ss.do(t, ss.root, "GET", "/v1/namespaces/acme/quota", nil)
	if err := json.Unmarshal([]byte(r.body), &info); err != nil || r.status != 200 {
		t.Fatalf("GET quota: %d %s", r.status, r.body)
	}
	if want := int64(len("\xffacme\x00k") + 10); info.Usage.StoredBytes != want || info.Quota.OpsPerS != 100 {
		t.Fatalf("GET quota = %+v, want stored bytes %d", info, want)
	}
	r = ss.do(t, ss.root, "GET", "/v1/namespaces", nil)
	var list struct{ Namespaces []server.NamespaceInfo }
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || r.status != 200 {
		t.Fatalf("GET namespaces: %d %s", r.status, r.body)
	}
	var names []string
	for _, i := range list.Namespaces {
		names = append(names, i.Namespace)
	}
	if fmt.Sprint(names) != "[acme beta]" {
		t.Fatalf("namespaces %v", names)
	}
	// All zero removes the quota.
	ss.setQuota(t, "beta", `{}`)
	r = ss.do(t, ss.root, "GET", "/v1/namespaces/beta/quota", nil)
	if !strings.Contains(r.body, `"quota":{"ops_per_s":0,"invocations_per_s":0,"concurrency":0,"stored_bytes":0}`) {
		t.Fatalf("after removal: %s", r.body)
	}
}

func TestQuotaInsecureMode(t *testing.T) {
	ts := testnode.Serve(t, testnode.New(t))
	req, err := http.NewRequest("PUT", ts.URL+"/v1/namespaces/default/quota", strings.NewReader(`{"ops_per_s":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("PUT quota in insecure mode: %d", resp.StatusCode)
	}
}

func TestQuotaOpsPerSecond(t *testing.T) {
	ss, _ := newQuotaServer(t)
	ss.setQuota(t, "acme", `{"ops_per_s":5}`)
	acme, _ := ss.token(t, "acme", 0, "kv:read:*", "kv:write:*")
	beta, _ := ss.token(t, "beta", 0, "kv:read:*", "kv:write:*")
	var refused answer
	for i := 0; i < 20 && refused.status == 0; i++ {
		if r := ss.do(t, acme, "GET", "/v1/kv/none", nil); r.status == 429 {
			refused = r
		} else if r.status != 404 {
			t.Fatalf("get %d: %d %s", i, r.status, r.body)
		} else if i >= 10 {
			t.Fatalf("%d requests within the burst of 5", i+1)
		}
	}
	wantQuota(t, refused, "ops_per_s")
	// Writes and scans count too; another namespace is not affected.
	wantQuota(t, ss.do(t, acme, "PUT", "/v1/kv/k", []byte("v")), "ops_per_s")
	wantQuota(t, ss.do(t, acme, "GET", "/v1/kv?prefix=", nil), "ops_per_s")
	for i := range 30 {
		if r := ss.do(t, beta, "PUT", "/v1/kv/k", []byte("v")); r.status != 200 {
			t.Fatalf("beta put %d: %d %s", i, r.status, r.body)
		}
	}
	// The rate refills.
	time.Sleep(1100 * time.Millisecond)
	if r := ss.do(t, acme, "GET", "/v1/kv/none", nil); r.status != 404 {
		t.Fatalf("after a second: %d %s", r.status, r.body)
	}
	// Metrics carry the namespace.
	m := ss.do(t, ss.root, "GET", "/metrics", nil).body
	for _, want := range []string{
		`lambdadb_namespace_requests_total{code="429",namespace="acme",route="kv_get"}`,
		`lambdadb_namespace_requests_total{code="200",namespace="beta",route="kv_put"} 30`,
		`lambdadb_namespace_quota_rejections_total{namespace="acme",quota="ops_per_s"} 3`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grepLines(m, "lambdadb_namespace"))
	}
}

func TestQuotaInvocations(t *testing.T) {
	ss, _ := newQuotaServer(t)
	acme, _ := ss.token(t, "acme", 0, "fn:deploy", "fn:invoke")
	if r := ss.do(t, acme, "PUT", "/v1/functions/sleep", wasmtest.Example(t, "sleep")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	invoke := func(ms int) answer {
		return ss.do(t, acme, "POST", "/v1/functions/sleep/invoke", []byte(strconv.Itoa(ms)))
	}
	if r := invoke(0); r.status != 200 { // warm
		t.Fatalf("invoke: %d %s", r.status, r.body)
	}

	ss.setQuota(t, "acme", `{"invocations_per_s":2}`)
	var refused answer
	for i := 0; i < 10 && refused.status == 0; i++ {
		if r := invoke(0); r.status == 429 {
			refused = r
		} else if r.status != 200 {
			t.Fatalf("invoke %d: %d %s", i, r.status, r.body)
		}
	}
	wantQuota(t, refused, "invocations_per_s")

	ss.setQuota(t, "acme", `{"concurrency":1}`)
	var wg sync.WaitGroup
	wg.Add(1)
	var long answer
	go func() {
		defer wg.Done()
		long = invoke(700) // functions time out after 1 s
	}()
	time.Sleep(200 * time.Millisecond)
	wantQuota(t, invoke(0), "concurrency")
	r := ss.do(t, ss.root, "GET", "/v1/namespaces/acme/quota", nil)
	if !strings.Contains(r.body, `"running_on_node":1`) {
		t.Errorf("one invocation running: %s", r.body)
	}
	wg.Wait()
	if long.status != 200 {
		t.Fatalf("long invocation: %d %s", long.status, long.body)
	}
	if r := invoke(0); r.status != 200 {
		t.Fatalf("after the long one: %d %s", r.status, r.body)
	}
	// Both refusals count as the function's throttles, not invocations.
	r = ss.do(t, acme, "GET", "/v1/functions/sleep", nil)
	var st lambda.Stats
	if err := json.Unmarshal([]byte(r.body), &st); err != nil || st.Throttles != 2 {
		t.Fatalf("function stats after two quota refusals: %d %s", r.status, r.body)
	}
}

func TestQuotaStoredBytes(t *testing.T) {
	ss, n := newQuotaServer(t)
	ss.setQuota(t, "acme", `{"stored_bytes":2000}`)
	acme, _ := ss.token(t, "acme", 0, "kv:write:*", "kv:read:*", "fn:deploy")
	beta, _ := ss.token(t, "beta", 0, "kv:write:*")
	value := bytes.Repeat([]byte("x"), 100)
	var refused answer
	written := 0
	for i := 0; i < 200 && refused.status == 0; i++ {
		// The quota is checked before the write, against the stored bytes
		// the node last read (every 100 ms here).
		r := ss.do(t, acme, "PUT", "/v1/kv/probe", nil)
		switch r.status {
		case 200:
			nsPut(t, n, "acme", fmt.Sprintf("k%03d", i), value)
			written++
		case 429:
			refused = r
		default:
			t.Fatalf("put %d: %d %s", i, r.status, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantQuota(t, refused, "stored_bytes")
	// Refused once it reached the quota: at most a refresh's worth beyond.
	if stored := written * (len("\xffacme\x00k000") + 100); stored < 2000 || stored > 3500 {
		t.Fatalf("refused after %d bytes", stored)
	}
	if _, err := n.Delete(context.Background(), "probe", shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	nsDelete := func(key string) {
		if _, err := n.Delete(context.Background(), namespace.Key("acme", key), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	nsDelete("probe")
	wantQuota(t, ss.do(t, acme, "PUT", "/v1/functions/f", []byte("\x00asm")), "stored_bytes")
	if r := ss.do(t, beta, "PUT", "/v1/kv/k", value); r.status != 200 {
		t.Fatalf("beta: %d %s", r.status, r.body)
	}
	nsPut(t, n, "beta", "k", value)
	// Reads and deletes go on; deleting frees room.
	if r := ss.do(t, acme, "GET", "/v1/kv/k000", nil); r.status != 200 && r.status != 404 {
		t.Fatalf("read over the quota: %d %s", r.status, r.body)
	}
	for i := 0; i < written; i++ {
		nsDelete(fmt.Sprintf("k%03d", i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := ss.do(t, acme, "PUT", "/v1/kv/again", value)
		if r.status == 200 {
			nsDelete("again")
			nsPut(t, n, "acme", "again", value)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after deleting: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := ss.do(t, ss.root, "GET", "/v1/namespaces/acme/quota", nil)
	if want := fmt.Sprintf(`"stored_bytes":%d,`, len("\xffacme\x00again")+100); !strings.Contains(r.body, want) {
		t.Fatalf("usage after deleting: %s, want %s", r.body, want)
	}
	m := ss.do(t, ss.root, "GET", "/metrics", nil).body
	if !strings.Contains(m, `lambdadb_namespace_stored_bytes{namespace="beta"} `) ||
		!strings.Contains(m, `lambdadb_namespace_quota_rejections_total{namespace="acme",quota="stored_bytes"}`) {
		t.Fatalf("metrics:\n%s", grepLines(m, "lambdadb_namespace"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestQuotaConsoleQuery: the console's pages count against the namespace's
// ops quota like the API's reads (the route "console"), so a query run from
// the query page cannot get around it.
func TestQuotaConsoleQuery(t *testing.T) {
	ss, _ := newQuotaServer(t)
	ss.setQuota(t, "acme", `{"ops_per_s":5}`)
	acme, _ := ss.token(t, "acme", 0, "query", "kv:read:*")
	var refused answer
	for i := 0; i < 20 && refused.status == 0; i++ {
		if r := ss.do(t, acme, "GET", "/ui/query?op=count&prefix=", nil); r.status == 429 {
			refused = r
		} else if r.status != 200 {
			t.Fatalf("query page %d: %d %s", i, r.status, r.body)
		} else if i >= 10 {
			t.Fatalf("%d queries within the burst of 5", i+1)
		}
	}
	if refused.status != 429 || !strings.Contains(refused.body, "quota_exceeded") {
		t.Fatalf("no query page refused by the quota: %d %s", refused.status, refused.body)
	}
}
