package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
)

// TestConsoleFunctionsSecureMode: the functions pages show the token's
// namespace's functions only, with the numbers the API shows, and what
// the token's fn scopes allow; another namespace's function is a 404 on
// every page and on the series route.
func TestConsoleFunctionsSecureMode(t *testing.T) {
	ss := newSecureServer(t)
	if r := ss.do(t, ss.root, "PUT", "/v1/functions/echo", wasmtest.Example(t, "echo")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	for range 3 {
		if r := ss.do(t, ss.root, "POST", "/v1/functions/echo/invoke", []byte("hi")); r.status != 200 {
			t.Fatalf("invoke: %d %s", r.status, r.body)
		}
	}
	var api lambda.Stats
	r := ss.do(t, ss.root, "GET", "/v1/functions/echo", nil)
	if err := json.Unmarshal([]byte(r.body), &api); err != nil || api.Invocations != 3 {
		t.Fatalf("API: %d %s", r.status, r.body)
	}

	r = ss.do(t, ss.root, "GET", "/ui/functions", nil)
	if r.status != 200 || !strings.Contains(r.body, `href="/ui/functions/echo"`) ||
		!strings.Contains(r.body, `data-field="invocations">3<`) || !strings.Contains(r.body, `hx-get="/ui/functions-live"`) {
		t.Fatalf("list page: %d %s", r.status, r.body)
	}
	r = ss.do(t, ss.root, "GET", "/ui/functions/echo", nil)
	if r.status != 200 || !strings.Contains(r.body, fmt.Sprintf(`id="total-invocations">%d<`, api.Invocations)) ||
		!strings.Contains(r.body, `id="deploys"`) || !strings.Contains(r.body, `data-stream="/ui/functions/echo/logs/stream"`) {
		t.Fatalf("function page: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "GET", "/ui/functions/echo/live", nil); r.status != 200 || !strings.Contains(r.body, `id="per-node"`) {
		t.Fatalf("live fragment: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "GET", "/ui/functions/echo/series", nil); r.status != 200 || !strings.Contains(r.body, `"invocations":`) {
		t.Fatalf("series JSON: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "GET", "/ui/functions/nothing", nil); r.status != 404 || !strings.Contains(r.body, `no function &#34;nothing&#34;`) {
		t.Fatalf("unknown function's page: %d %s", r.status, r.body)
	}

	// Another namespace sees none of it.
	blog, _ := ss.token(t, "blog", 0, "fn:deploy", "fn:logs")
	if r := ss.do(t, blog, "GET", "/ui/functions", nil); r.status != 200 || strings.Contains(r.body, "echo") || !strings.Contains(r.body, "<b>blog</b>") {
		t.Fatalf("another namespace's list: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/ui/functions/echo", "/ui/functions/echo/live", "/ui/functions/echo/series",
		"/ui/functions/echo/logs/stream", "/v1/functions/echo/series"} {
		if r := ss.do(t, blog, "GET", path, nil); r.status != 404 {
			t.Fatalf("another namespace's %s: %d %s", path, r.status, r.body)
		}
	}

	// Scopes: no fn scope, no list; fn:invoke without fn:logs, no tail.
	kv, _ := ss.token(t, "default", 0, "kv:read:*")
	if r := ss.do(t, kv, "GET", "/ui/functions", nil); r.status != 403 || strings.Contains(r.body, "echo") {
		t.Fatalf("token without fn scopes: %d %s", r.status, r.body)
	}
	if r := ss.do(t, kv, "GET", "/ui/functions/echo/series", nil); r.status != 403 {
		t.Fatalf("token without fn scopes, series: %d %s", r.status, r.body)
	}
	inv, _ := ss.token(t, "default", 0, "fn:invoke")
	if r := ss.do(t, inv, "GET", "/ui/functions/echo", nil); r.status != 200 || strings.Contains(r.body, "data-stream") {
		t.Fatalf("token without fn:logs: %d %s", r.status, r.body)
	}
	if r := ss.do(t, inv, "GET", "/ui/functions/echo/logs/stream", nil); r.status != 403 {
		t.Fatalf("token without fn:logs, stream: %d %s", r.status, r.body)
	}
}

// TestConsoleLogStream: the live tail starts with a reset, then sends a
// line the handler logs after the stream opened.
func TestConsoleLogStream(t *testing.T) {
	ts := fnServer(t)
	if r := do(t, "PUT", ts.URL+"/v1/functions/faulty", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/ui/functions/faulty/logs/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %s %v", resp.Status, resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() (event, data string) {
		t.Helper()
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "event: "):
				event = l[len("event: "):]
			case strings.HasPrefix(l, "data: "):
				data = l[len("data: "):]
			case l == "" && event != "":
				return event, data
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return "", ""
	}
	if ev, _ := next(); ev != "reset" {
		t.Fatalf("first event %q, want reset", ev)
	}
	if r := do(t, "POST", ts.URL+"/v1/functions/faulty/invoke", []byte("stdout")); r.status != 200 {
		t.Fatalf("invoke: %d %s", r.status, r.body)
	}
	var lines []string
	for !strings.Contains(strings.Join(lines, "\n"), "via Log 42") {
		ev, data := next()
		if ev != "line" {
			continue
		}
		var l lambda.LogLine
		if err := json.Unmarshal([]byte(data), &l); err != nil {
			t.Fatalf("line %q: %v", data, err)
		}
		lines = append(lines, l.Line)
	}
	// Each line once.
	seen := map[string]int{}
	for _, l := range lines {
		seen[l]++
	}
	for l, n := range seen {
		if n > 1 {
			t.Fatalf("line %q sent %d times: %q", l, n, lines)
		}
	}
}

// TestFunctionSeriesRoute: GET /v1/functions/{name}/series answers the
// sampled activity; its points add up to the invocations.
func TestFunctionSeriesRoute(t *testing.T) {
	n := testnode.New(t)
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: t.TempDir(), SampleInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	srv, err := server.New(server.Config{Node: n, Functions: e})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	if r := do(t, "PUT", ts.URL+"/v1/functions/echo", wasmtest.Example(t, "echo")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	for range 4 {
		if r := do(t, "POST", ts.URL+"/v1/functions/echo/invoke", []byte("x")); r.status != 200 {
			t.Fatalf("invoke: %d %s", r.status, r.body)
		}
	}
	var v struct {
		IntervalMS int64          `json:"interval_ms"`
		Points     []lambda.Point `json:"points"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, scope := range []string{"", "?scope=node"} {
		for {
			r := do(t, "GET", ts.URL+"/v1/functions/echo/series"+scope, nil)
			if r.status != 200 {
				t.Fatalf("series%s: %d %s", scope, r.status, r.body)
			}
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Fatal(err)
			}
			var sum uint64
			for _, p := range v.Points {
				sum += p.Invocations
			}
			if sum == 4 && v.IntervalMS == 50 {
				break
			}
			if sum > 4 || time.Now().After(deadline) {
				t.Fatalf("series%s: %d invocations in the points, want 4: %+v", scope, sum, v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if r := do(t, "GET", ts.URL+"/v1/functions/nothing/series", nil); r.status != 404 {
		t.Fatalf("unknown function: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", ts.URL+"/v1/functions/echo/series?limit=3", nil); r.status != 400 {
		t.Fatalf("unknown parameter: %d %s", r.status, r.body)
	}
}
