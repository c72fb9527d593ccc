package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
)

// startServe runs "lambdadb serve" with args on a loopback port and a
// temporary directory; it returns the address and a function that stops
// the node and returns its logs.
func startServe(t *testing.T, args ...string) (addr string, stop func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, _, stderr := testCLI(nil, "")
	c.notifyContext = func(context.Context) (context.Context, context.CancelFunc) {
		return context.WithCancel(ctx)
	}
	addrs := make(chan string, 1)
	c.ready = func(addr string) { addrs <- addr }
	done := make(chan int, 1)
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data"), "--shards", "2"}, args...)
	go func() { done <- c.run(args) }()
	select {
	case addr = <-addrs:
	case code := <-done:
		cancel()
		t.Fatalf("serve exited %d: %s", code, stderr)
	case <-time.After(time.Minute):
		cancel()
		t.Fatal("serve did not start")
	}
	stopped := false
	stop = func() string {
		t.Helper()
		if stopped {
			return ""
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("serve exited %d: %s", code, stderr)
			}
		case <-time.After(time.Minute):
			t.Fatal("serve did not stop")
		}
		return stderr.String()
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

// TestServeLimits checks serve's HTTP limits: a stalled request body is
// cut after --body-idle-timeout with 408 body_timeout, oversized headers
// get 431 (JSON, as every answer: net/http's own answers are wrapped), and
// --memory-limit-mb sets the runtime's soft limit while the node runs.
// With --pprof the profiler is served and the API's own answers are kept
// (a ServeMux in front once redirected keys with empty segments).
func TestServeLimits(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	addr, stop := startServe(t, "--body-idle-timeout", "200ms", "--max-inflight-body-mb", "1", "--memory-limit-mb", "3000", "--pprof")
	if got := debug.SetMemoryLimit(-1); got != 3000<<20 {
		t.Errorf("memory limit while serving = %d, want %d", got, 3000<<20)
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "PUT /v1/kv/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("x", 500))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("stalled body: no answer within 5 s: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Code string }
	_ = json.Unmarshal(b, &e)
	if resp.StatusCode != http.StatusRequestTimeout || e.Code != "body_timeout" {
		t.Fatalf("stalled body: %d %s, want 408 body_timeout", resp.StatusCode, b)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection not closed after the stalled body: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cut after %v", d)
	}

	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("h", 100<<10))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || e.Code != "headers_too_large" {
		t.Fatalf("100 KiB header: %d %s, want 431 headers_too_large", resp.StatusCode, b)
	}
	req.Header.Set("X-Big", strings.Repeat("h", 32<<10))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("32 KiB header: %d, want 200", resp.StatusCode)
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range []struct {
		path   string
		status int
		code   string
	}{
		{"/debug/pprof/", 200, ""},
		{"/v1/kv/a//b", 400, "invalid_key"},
		{"/debug/pprof", 404, "not_found"},
	} {
		resp, err := noRedirect.Get("http://" + addr + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e.Code = ""
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != tt.status || e.Code != tt.code {
			t.Fatalf("GET %s: %d %.200s, want %d %s", tt.path, resp.StatusCode, b, tt.status, tt.code)
		}
	}

	logs := stop()
	if !strings.Contains(logs, "memory limit") || !strings.Contains(logs, "mib=3000") {
		t.Errorf("log lacks the memory limit:\n%s", logs)
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("memory limit after serve = %d, want %d as before", got, before)
	}
}

// TestServeCaps: serve's caps are set by their flags and refused with
// their JSON errors: --max-functions (a new name beyond it: 409
// too_many_functions; a redeploy works), --max-query-groups (400
// too_many_groups), --max-queries (429 too_many_requests while another
// query runs), --fn-log-lines and --fn-log-line-bytes (what
// GET /v1/functions/{name}/logs keeps).
func TestServeCaps(t *testing.T) {
	addr, _ := startServe(t, "--max-functions", "2", "--max-query-groups", "2", "--max-queries", "1",
		"--fn-log-lines", "2", "--fn-log-line-bytes", "5")
	base := "http://" + addr
	faulty := wasmtest.Guest(t, "faulty")
	probe := wasmtest.Guest(t, "leafprobe")
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e struct{ Code string }
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Code
	}
	for _, k := range []string{"a", "b", "c"} {
		if st, _ := call("PUT", "/v1/kv/g/"+k, fmt.Sprintf(`{"g":%q}`, k)); st != 200 {
			t.Fatalf("put: %d", st)
		}
	}
	for i, tt := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"PUT", "/v1/functions/f", string(faulty), 201, ""},
		{"PUT", "/v1/functions/p?timeout_ms=5000", string(probe), 201, ""},
		{"PUT", "/v1/functions/g", string(faulty), 409, "too_many_functions"},
		{"PUT", "/v1/functions/f", string(faulty), 201, ""},
		{"POST", "/v1/query", `{"prefix":"g/a","aggregate":{"op":"count","group_by":"g"}}`, 200, ""},
		{"POST", "/v1/query", `{"prefix":"g/","aggregate":{"op":"count","group_by":"g"}}`, 400, "too_many_groups"},
		{"POST", "/v1/functions/f/invoke", "stdout", 200, ""},
	} {
		if st, code := call(tt.method, tt.path, tt.body); st != tt.status || code != tt.code {
			t.Fatalf("step %d, %s %s: %d %s, want %d %s", i, tt.method, tt.path, st, code, tt.status, tt.code)
		}
	}
	// A query whose leaves sleep holds the node's only query slot.
	if st, _ := call("PUT", "/v1/kv/cfg/leaf_sleep_ms", "1500"); st != 200 {
		t.Fatalf("put: %d", st)
	}
	slow := make(chan int, 1)
	go func() {
		st, _ := call("POST", "/v1/query", `{"prefix":"g/","function":"p"}`)
		slow <- st
	}()
	refused := false
	for !refused {
		select {
		case st := <-slow:
			t.Fatalf("the slow query ended (%d) and no other was refused meanwhile", st)
		case <-time.After(20 * time.Millisecond):
		}
		st, code := call("POST", "/v1/query", `{"prefix":"g/a","aggregate":{"op":"count"}}`)
		switch {
		case st == 429 && code == "too_many_requests":
			refused = true
		case st != 200:
			t.Fatalf("query while another runs: %d %s", st, code)
		}
	}
	if st := <-slow; st != 200 {
		t.Fatalf("slow query: %d", st)
	}

	resp, err := http.Get(base + "/v1/functions/f/logs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var logs struct{ Lines []struct{ Line string } }
	if err := json.NewDecoder(resp.Body).Decode(&logs); err != nil {
		t.Fatal(err)
	}
	// "stdout" logs "to stdout", "to stderr" and "via Log 42": the last
	// two lines are kept, cut at 5 bytes.
	if len(logs.Lines) != 2 || logs.Lines[0].Line != "to st" || logs.Lines[1].Line != "via L" {
		t.Fatalf("logs %+v, want the last 2 lines of 5 bytes", logs.Lines)
	}
}

func TestServeLimitUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--body-idle-timeout", "0"},
		{"--body-timeout", "-1s"},
		{"--max-inflight-body-mb", "0"},
		{"--memory-limit-mb", "-2"},
		{"--trigger-pause-after", "-1"},
		{"--trigger-pause-after", "1000001"},
		{"--trigger-paused-retention", "0"},
		{"--max-functions", "0"},
		{"--max-query-groups", "0"},
		{"--max-queries", "0"},
		{"--fn-log-lines", "0"},
		{"--fn-log-line-bytes", "0"},
		{"--fn-log-line-bytes", "2000000"},
		{"--fn-precompile-concurrency", "0"},
		{"--fn-deploy-wait", "-1s"},
	} {
		r := runCLI(nil, "", append([]string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir()}, args...)...)
		if r.code != 2 {
			t.Errorf("serve %v: exit %d, want 2 (%s)", args, r.code, r.stderr)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	base := serveOptions{fnMemoryMB: 1024, inflightBodyMB: 256}
	with := func(mb int64) serveOptions { o := base; o.memoryLimitMB, o.memoryLimitSet = mb, true; return o }
	cases := []struct {
		name       string
		o          serveOptions
		gomemlimit string
		cgroup     int64
		want       int64
		source     string
	}{
		{"auto", base, "", 0, 2304 << 20, "auto"},
		{"auto, large cgroup", base, "", 8 << 30, 2304 << 20, "auto"},
		{"auto, small cgroup", base, "", 1 << 30, (1 << 30) / 10 * 9, "cgroup"},
		{"GOMEMLIMIT", base, "1GiB", 1 << 30, 0, "GOMEMLIMIT"},
		{"flag", with(512), "1GiB", 1 << 30, 512 << 20, "--memory-limit-mb"},
		{"flag 0 is auto", with(0), "", 0, 2304 << 20, "auto"},
		{"flag 0 keeps GOMEMLIMIT", with(0), "1GiB", 0, 0, "GOMEMLIMIT"},
		{"none", with(-1), "1GiB", 1 << 30, -1, "--memory-limit-mb"},
	}
	for _, tc := range cases {
		got, source := memoryLimit(tc.o, tc.gomemlimit, tc.cgroup)
		if got != tc.want || source != tc.source {
			t.Errorf("%s: memoryLimit = %d, %s; want %d, %s", tc.name, got, source, tc.want, tc.source)
		}
	}
}

func TestCgroupLimit(t *testing.T) {
	root := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// v2: the smallest limit on the path from the cgroup to the root.
	write("memory.max", "max\n")
	write("a/memory.max", "4294967296\n")
	write("a/b/memory.max", "max\n")
	if got := cgroupLimit("0::/a/b\n", root); got != 4<<30 {
		t.Errorf("v2 = %d, want 4 GiB", got)
	}
	// A path that is not visible (a container): the root's.
	if got := cgroupLimit("0::/elsewhere\n", root); got != 0 {
		t.Errorf("v2 unlimited = %d, want 0", got)
	}
	// v1's memory controller; its "unlimited" is a huge number.
	write("memory/memory.limit_in_bytes", "9223372036854771712\n")
	write("memory/c/memory.limit_in_bytes", "1073741824\n")
	if got := cgroupLimit("4:memory:/c\n3:cpuset:/\n", root); got != 1<<30 {
		t.Errorf("v1 = %d, want 1 GiB", got)
	}
	if got := cgroupLimit("4:memory:/d\n", root); got != 0 {
		t.Errorf("v1 unlimited = %d, want 0", got)
	}
	if got := cgroupLimit("garbage", root); got != 0 {
		t.Errorf("garbage = %d", got)
	}
}
