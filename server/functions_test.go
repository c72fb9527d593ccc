package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/session"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
)

// fnServer serves the HTTP API with a function engine over a one-node
// in-memory cluster.
func fnServer(t *testing.T) *httptest.Server { return fnServerTB(t) }

// fnServerURL is fnServer for benchmarks.
func fnServerURL(tb testing.TB) string { return fnServerTB(tb).URL }

func fnServerTB(t testing.TB) *httptest.Server {
	t.Helper()
	n := testnode.New(t)
	reg := prometheus.NewRegistry()
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	h, err := server.New(server.Config{Node: n, Functions: e, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) code() string {
	var e struct{ Code string }
	_ = json.Unmarshal(r.body, &e)
	return e.Code
}

func do(t *testing.T, method, url string, body []byte, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
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
	return reply{resp.StatusCode, resp.Header, b}
}

func TestFunctionAPI(t *testing.T) {
	ts := fnServer(t)
	echo := wasmtest.Example(t, "echo")
	fnURL := ts.URL + "/v1/functions/"

	r := do(t, "PUT", fnURL+"echo?memory_mb=32&timeout_ms=500", echo)
	if r.status != 201 || r.header.Get(session.Header) == "" {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	var f lambda.Function
	if err := json.Unmarshal(r.body, &f); err != nil || f.Name != "echo" || len(f.SHA256) != 64 || f.MemoryMB != 32 || f.TimeoutMS != 500 {
		t.Fatalf("deploy body %s (%v)", r.body, err)
	}
	r = do(t, "POST", fnURL+"echo/invoke", []byte("hello"))
	if r.status != 200 || string(r.body) != "hello" {
		t.Fatalf("invoke: %d %s", r.status, r.body)
	}
	for _, h := range []string{"X-Start", "X-Duration-Us", "X-Billed-Ms", "X-Node", "X-Session"} {
		if _, ok := r.header[h]; !ok {
			t.Errorf("invoke response lacks %s", h)
		}
	}
	if s := r.header.Get("X-Start"); s != "restart" && s != "warm" && s != "cold" {
		t.Fatalf("X-Start = %q", s)
	}
	r = do(t, "GET", fnURL+"echo", nil)
	var v struct {
		Name        string
		Invocations int
		Starts      map[string]int
		Sandboxes   lambda.SandboxCounts
		BilledMS    int `json:"billed_ms"`
		P50US       float64
		Nodes       map[string]json.RawMessage
	}
	if err := json.Unmarshal(r.body, &v); err != nil || r.status != 200 || v.Invocations != 1 || v.Sandboxes.Paused != 1 || v.BilledMS < 1 || len(v.Nodes) != 1 {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	r = do(t, "GET", ts.URL+"/v1/functions", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"name":"echo"`) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	r = do(t, "GET", ts.URL+"/metrics", nil)
	if !strings.Contains(string(r.body), `lambdadb_function_sandboxes{function="echo",state="paused"} 1`) {
		t.Fatalf("metrics lack sandbox counts")
	}
	r = do(t, "DELETE", fnURL+"echo", nil)
	if r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	r = do(t, "POST", fnURL+"echo/invoke", nil)
	if r.status != 404 || r.code() != "not_found" {
		t.Fatalf("invoke after delete: %d %s", r.status, r.body)
	}
}

func TestFunctionAPIErrors(t *testing.T) {
	ts := fnServer(t)
	fnURL := ts.URL + "/v1/functions/"
	if r := do(t, "PUT", fnURL+"faulty?timeout_ms=2000&memory_mb=32", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy faulty: %d %s", r.status, r.body)
	}
	tests := []struct {
		name, method, path string
		body               []byte
		status             int
		code, msg          string
	}{
		{"garbage module", "PUT", "g", []byte("garbage"), 400, "invalid_module", ""},
		{"no sdk", "PUT", "g", wasmtest.Guest(t, "noexports"), 400, "invalid_module", "ldb_invoke"},
		{"module too large", "PUT", "g", make([]byte, lambda.MaxModuleBytes+1), 413, "module_too_large", ""},
		{"bad name", "PUT", "bad%20name", []byte("x"), 400, "invalid_name", ""},
		{"bad memory", "PUT", "g?memory_mb=lots", []byte("x"), 400, "invalid_config", "memory_mb"},
		{"zero timeout", "PUT", "g?timeout_ms=0", []byte("x"), 400, "invalid_config", "timeout_ms"},
		{"unknown function", "POST", "nope/invoke", nil, 404, "not_found", ""},
		{"unknown get", "GET", "nope", nil, 404, "not_found", ""},
		{"unknown delete", "DELETE", "nope", nil, 404, "not_found", ""},
		{"handler error", "POST", "faulty/invoke", []byte("error"), 500, "handler_error", "handler said no"},
		{"panic", "POST", "faulty/invoke", []byte("panic"), 500, "handler_error", "boom"},
		{"memory cap", "POST", "faulty/invoke", []byte("alloc"), 500, "memory_limit", ""},
		{"time cap", "POST", "faulty/invoke", []byte("loop"), 504, "timeout", ""},
		{"stack overflow", "POST", "faulty/invoke", []byte("recurse"), 500, "stack_overflow", "recursion"},
		{"response too large", "POST", "faulty/invoke", []byte(fmt.Sprint("big ", lambda.MaxMessageBytes+1)), 500, "handler_error", "exceeds the limit"},
		{"request too large", "POST", "faulty/invoke", make([]byte, lambda.MaxMessageBytes+1), 413, "request_too_large", ""},
		{"bad key", "POST", "faulty/invoke?key=", nil, 400, "invalid_key", ""},
		{"bad consistency", "POST", "faulty/invoke?consistency=eventual", nil, 400, "bad_consistency", ""},
		{"wrong method", "PATCH", "faulty", nil, 405, "method_not_allowed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, fnURL+tt.path, tt.body)
			if r.status != tt.status || r.code() != tt.code || !strings.Contains(string(r.body), tt.msg) {
				t.Fatalf("%d %s, want %d %s containing %q", r.status, r.body, tt.status, tt.code, tt.msg)
			}
			// The node keeps serving.
			if r := do(t, "POST", fnURL+"faulty/invoke", []byte("fine")); r.status != 200 || string(r.body) != "fine" {
				t.Fatalf("after: %d %s", r.status, r.body)
			}
		})
	}
}

// TestInvokeLargestRequest: echoing a request of the largest size allowed
// succeeds (the framing across the guest boundary once pushed the
// response over the limit: 500 handler_error).
func TestInvokeLargestRequest(t *testing.T) {
	ts := fnServer(t)
	if r := do(t, "PUT", ts.URL+"/v1/functions/echo", wasmtest.Example(t, "echo")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	for _, n := range []int{0, 1, lambda.MaxMessageBytes - 1, lambda.MaxMessageBytes} {
		body := bytes.Repeat([]byte{'e'}, n)
		r := do(t, "POST", ts.URL+"/v1/functions/echo/invoke", body)
		if r.status != 200 || !bytes.Equal(r.body, body) {
			t.Fatalf("%d bytes: %d, %d bytes back %.200s", n, r.status, len(r.body), r.body)
		}
	}
}

// TestInvokeSessionFlows: a client that invokes a handler then reads with
// the token it got back sees the handler's writes.
func TestInvokeSessionFlows(t *testing.T) {
	ts := fnServer(t)
	if r := do(t, "PUT", ts.URL+"/v1/functions/counter", wasmtest.Example(t, "counter")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	tok := ""
	for i := 1; i <= 3; i++ {
		r := do(t, "POST", ts.URL+"/v1/functions/counter/invoke?key=visits", nil, session.Header, tok)
		if r.status != 200 || string(r.body) != fmt.Sprint(i) {
			t.Fatalf("invoke %d: %d %s", i, r.status, r.body)
		}
		tok = r.header.Get(session.Header)
	}
	r := do(t, "GET", ts.URL+"/v1/kv/visits", nil, session.Header, tok)
	if r.status != 200 || string(r.body) != "3" {
		t.Fatalf("read after invoke: %d %s", r.status, r.body)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// doQuiet is do without a testing.T (for goroutines); transport errors
// come back as status 0.
func doQuiet(method, url string, body []byte) reply {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return reply{}
	}
	client := &http.Client{Timeout: 15 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}
