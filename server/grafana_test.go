package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/auth"
	"lambdadb/changefeed"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
	"lambdadb/shard"
)

// dashboard is the part of docs/grafana/lambdadb.json the test reads.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Inputs        []struct {
		Name, Type, PluginID string
	} `json:"__inputs"`
	Panels []struct {
		Type, Title string
		Datasource  *struct{ UID string }
		Targets     []struct{ Expr string }
	}
}

var metricName = regexp.MustCompile(`\blambdadb_[a-z0-9_]+`)

// TestGrafanaDashboard: every metric name an expression of the dashboard
// names is in the /metrics output of a secure node set up as serve sets
// it up (one registry for the node, functions and server), after traffic
// that touches the API, functions (including throttled calls), a trigger
// with a dead letter, a query, a namespace's quota and a burst of writes
// the node sheds.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../docs/grafana/lambdadb.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("docs/grafana/lambdadb.json: %v", err)
	}
	if d.SchemaVersion < 36 || len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" {
		t.Fatalf("schemaVersion %d, inputs %+v", d.SchemaVersion, d.Inputs)
	}
	want := map[string][]string{} // metric name → panels
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || len(p.Targets) == 0 {
			t.Fatalf("panel %q: datasource %+v, %d targets", p.Title, p.Datasource, len(p.Targets))
		}
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Fatalf("panel %q: expression %q names no lambdadb metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				want[n] = append(want[n], p.Title)
			}
		}
	}
	if len(want) < 20 {
		t.Fatalf("only %d metrics on the dashboard", len(want))
	}

	// A node as serve builds it.
	reg := prometheus.NewRegistry()
	var trp atomic.Pointer[changefeed.Triggers]
	// Two writes in flight at most, so that a burst is shed.
	n := testnode.NewWithConfig(t, shard.Config{Registerer: reg, MaxInflightWrites: 2, AdmissionWait: time.Millisecond, FeedTrimLimit: func(s int) uint64 {
		if tr := trp.Load(); tr != nil {
			return tr.TrimLimit(s)
		}
		return 0
	}})
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: t.TempDir(), Registerer: reg})
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
	store, err := auth.New(auth.Config{Node: n})
	if err != nil {
		t.Fatal(err)
	}
	h, err := server.New(server.Config{Node: n, Functions: e, Triggers: tr, Auth: store, Registry: reg, QuotaRefresh: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	call := func(tok, method, path string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(rb)
	}
	must := func(want int, tok, method, path string, body []byte) string {
		t.Helper()
		st, rb := call(tok, method, path, body)
		if st != want {
			t.Fatalf("%s %s: %d %s", method, path, st, rb)
		}
		return rb
	}
	var boot struct{ Token string }
	_ = json.Unmarshal([]byte(must(200, "", "POST", "/v1/auth/bootstrap", nil)), &boot)
	root := boot.Token

	// Traffic.
	for i := range 5 {
		must(200, root, "PUT", fmt.Sprintf("/v1/kv/d/%d", i), fmt.Appendf(nil, `{"n":%d}`, i))
	}
	must(200, root, "GET", "/v1/kv/d/1", nil)
	call("", "GET", "/v1/kv/d/1", nil) // a denial
	must(201, root, "PUT", "/v1/functions/rec?max_instances=1&timeout_ms=200", wasmtest.Guest(t, "faulty"))
	must(200, root, "POST", "/v1/functions/rec/invoke", []byte("get d/1"))
	var wg sync.WaitGroup
	for range 4 { // one instance: some are refused for lack of one
		wg.Go(func() { call(root, "POST", "/v1/functions/rec/invoke", []byte("loop")) })
	}
	wg.Wait()
	must(201, root, "PUT", "/v1/triggers/t1", []byte(`{"function":"rec","prefix":"g/","max_retries":0,"max_wait_ms":0}`))
	must(200, root, "PUT", "/v1/kv/g/1", []byte("fine"))
	must(200, root, "PUT", "/v1/kv/g/2", []byte("poison"))
	must(200, root, "POST", "/v1/query", []byte(`{"prefix":"d/","aggregate":{"op":"count"}}`))
	must(200, root, "PUT", "/v1/namespaces/acme/quota", []byte(`{"ops_per_s":1}`))
	acme := func() string {
		b, _ := json.Marshal(map[string]any{"namespace": "acme", "scopes": []string{"kv:write:*", "kv:read:*"}})
		var out struct{ Token string }
		_ = json.Unmarshal([]byte(must(201, root, "POST", "/v1/tokens", b)), &out)
		return out.Token
	}()

	missing := func() []string {
		t.Helper()
		got := map[string]bool{}
		for _, line := range strings.Split(must(200, root, "GET", "/metrics", nil), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, _, _ := strings.Cut(line, " ")
			name, _, _ = strings.Cut(name, "{")
			got[name] = true
		}
		var out []string
		for name, panels := range want {
			if !got[name] {
				out = append(out, fmt.Sprintf("%s (panels %q)", name, panels))
			}
		}
		sort.Strings(out)
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Keep acme over its quota and the trigger's counters coming.
		for range 5 {
			call(acme, "PUT", "/v1/kv/q", []byte("x"))
		}
		// And a burst of writes beyond what the node admits.
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() { call(root, "PUT", fmt.Sprintf("/v1/kv/burst/%d", i), []byte("x")) })
		}
		wg.Wait()
		m := missing()
		if len(m) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics the dashboard names that the node does not expose:\n%s", strings.Join(m, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
