package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
	"lambdadb/shard"
)

// limitServer serves the API over TCP with cfg (Node and Registry are
// filled in) and returns the test server, the node and the registry.
func limitServer(t *testing.T, cfg server.Config) (*httptest.Server, *shard.Node, *prometheus.Registry) {
	t.Helper()
	if cfg.Node == nil {
		cfg.Node = testnode.New(t)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts, cfg.Node, cfg.Registry
}

// bodyBytesInFlight reads the budget gauge.
func bodyBytesInFlight(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == server.MetricBodyBytesInFlight {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", server.MetricBodyBytesInFlight)
	return 0
}

// waitInFlight waits until the budget gauge shows want.
func waitInFlight(t *testing.T, reg *prometheus.Registry, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := bodyBytesInFlight(t, reg)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", server.MetricBodyBytesInFlight, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialRaw opens a TCP connection to ts that fails any I/O after 30 s.
func dialRaw(t *testing.T, ts *httptest.Server) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return conn
}

// rawResponse reads one response from br within 5 s and returns it with
// its body and the API error code.
func rawResponse(t *testing.T, conn net.Conn, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response within 5 s: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("response body: %v", err)
	}
	var e struct{ Code string }
	_ = json.Unmarshal(b, &e)
	return resp, e.Code
}

// wantClosed fails unless the server closes conn within 5 s.
func wantClosed(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := br.ReadByte()
	if err == nil {
		t.Fatal("the server sent more after the response")
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection not closed: %v", err)
	}
}

func wantBodyTimeout(t *testing.T, resp *http.Response, code string, start time.Time) {
	t.Helper()
	if resp.StatusCode != http.StatusRequestTimeout || code != "body_timeout" {
		t.Fatalf("got %d %q, want 408 body_timeout", resp.StatusCode, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("answered after %v", d)
	}
}

// TestBodyIdleTimeout sends half of a PUT body and then nothing: the
// request must be answered 408 body_timeout within the idle timeout (plus
// slack), the connection closed, the key not written and the budget
// given back.
func TestBodyIdleTimeout(t *testing.T) {
	t.Parallel()
	ts, node, reg := limitServer(t, server.Config{BodyIdleTimeout: 200 * time.Millisecond})
	conn := dialRaw(t, ts)
	start := time.Now()
	fmt.Fprintf(conn, "PUT /v1/kv/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("x", 500))
	br := bufio.NewReader(conn)
	resp, code := rawResponse(t, conn, br)
	wantBodyTimeout(t, resp, code, start)
	if len(resp.Header.Values("X-Session")) == 0 {
		t.Errorf("a /v1/kv answer lacks X-Session")
	}
	wantClosed(t, conn, br)
	if res, err := node.Get(t.Context(), "stalled", shard.ReadOptions{}); err != nil || res.Found {
		t.Fatalf("Get(stalled) = %+v, %v; want not found", res, err)
	}
	waitInFlight(t, reg, 0)
}

// TestChunkedBodyStalls sends one chunk of a chunked body and then
// nothing: cut by the idle timeout.
func TestChunkedBodyStalls(t *testing.T) {
	t.Parallel()
	ts, _, reg := limitServer(t, server.Config{BodyIdleTimeout: 200 * time.Millisecond})
	conn := dialRaw(t, ts)
	start := time.Now()
	fmt.Fprintf(conn, "PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	br := bufio.NewReader(conn)
	resp, code := rawResponse(t, conn, br)
	wantBodyTimeout(t, resp, code, start)
	wantClosed(t, conn, br)
	waitInFlight(t, reg, 0)
}

// TestChunkedBodyNeverEnds trickles a chunked body that never ends, fast
// enough for the idle timeout: the total timeout cuts it.
func TestChunkedBodyNeverEnds(t *testing.T) {
	t.Parallel()
	ts, _, _ := limitServer(t, server.Config{BodyIdleTimeout: time.Second, BodyTimeout: 500 * time.Millisecond})
	conn := dialRaw(t, ts)
	start := time.Now()
	fmt.Fprintf(conn, "PUT /v1/kv/endless HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := io.WriteString(conn, "1\r\nx\r\n"); err != nil {
				return
			}
		}
	}()
	br := bufio.NewReader(conn)
	resp, code := rawResponse(t, conn, br)
	wantBodyTimeout(t, resp, code, start)
	wantClosed(t, conn, br)
}

// TestInflightBodyBudget fills a 1 MiB budget with one stalled upload: a
// second upload gets 503 overloaded with Retry-After, and succeeds once
// the first has finished.
func TestInflightBodyBudget(t *testing.T) {
	t.Parallel()
	ts, _, reg := limitServer(t, server.Config{
		MaxInflightBodyBytes: 1 << 20,
		InflightBodyWait:     100 * time.Millisecond,
		BodyIdleTimeout:      20 * time.Second,
	})
	const size = 768 << 10
	value := bytes.Repeat([]byte("v"), size)

	first := dialRaw(t, ts)
	fmt.Fprintf(first, "PUT /v1/kv/first HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	if _, err := first.Write(value[:size/2]); err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, reg, size)

	// Headers alone: the answer must not need the body.
	second := dialRaw(t, ts)
	fmt.Fprintf(second, "PUT /v1/kv/second HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	resp, code := rawResponse(t, second, bufio.NewReader(second))
	if resp.StatusCode != http.StatusServiceUnavailable || code != "overloaded" {
		t.Fatalf("second upload: %d %q, want 503 overloaded", resp.StatusCode, code)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After = %q, want 1", ra)
	}
	// A chunked upload reserves its route's maximum: 1 MiB for a value,
	// refused; 64 KiB for a query, which fits beside the stalled upload.
	resp, err := http.Post(ts.URL+"/v1/kv/chunked", "", io.MultiReader(strings.NewReader("v")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/v1/kv/chunked", io.MultiReader(strings.NewReader("v")))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("chunked PUT of a value: %d, want 503", resp.StatusCode)
	}
	resp, err = http.Post(ts.URL+"/v1/query", "application/json",
		io.MultiReader(strings.NewReader(`{"aggregate":{"op":"count"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chunked query: %d, want 200", resp.StatusCode)
	}
	// Body-less requests are not affected.
	resp, err = http.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}

	if _, err := first.Write(value[size/2:]); err != nil {
		t.Fatal(err)
	}
	resp, _ = rawResponse(t, first, bufio.NewReader(first))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first upload: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodPut, ts.URL+"/v1/kv/second", bytes.NewReader(value))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("second upload, retried: %d", resp.StatusCode)
	}
	waitInFlight(t, reg, 0)
}

// TestBodyLimitsSlowHandler checks that the idle timeout covers only the
// body: a handler that runs longer than it after reading its body
// completes, and a chunked upload gives back what it did not use.
func TestBodyLimitsSlowHandler(t *testing.T) {
	t.Parallel()
	node := testnode.New(t)
	reg := prometheus.NewRegistry()
	e, err := lambda.New(lambda.Config{Store: node, NodeID: node.ID(), CacheDir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	ts, _, _ := limitServer(t, server.Config{Node: node, Functions: e, Registry: reg,
		BodyIdleTimeout: 200 * time.Millisecond})

	// Chunked (no length): reserves 32 MiB until the module is read.
	module := wasmtest.Example(t, "sleep")
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/v1/functions/sleep", io.MultiReader(bytes.NewReader(module)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("deploy: %d", resp.StatusCode)
	}

	client := &http.Client{Transport: &http.Transport{}} // one connection, reused
	for range 2 {
		resp, err := client.Post(ts.URL+"/v1/functions/sleep/invoke", "text/plain", strings.NewReader("700"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "slept 700 ms" {
			t.Fatalf("invoke: %d %s", resp.StatusCode, b)
		}
	}
	waitInFlight(t, reg, 0)
}

func TestNewRejectsNegativeBodyLimits(t *testing.T) {
	t.Parallel()
	for _, cfg := range []server.Config{
		{BodyIdleTimeout: -1},
		{BodyTimeout: -1},
		{MaxInflightBodyBytes: -1},
		{InflightBodyWait: -1},
	} {
		cfg.Node = testnode.New(t)
		if _, err := server.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a negative limit", cfg)
		}
	}
}

// TestLargeUploadsLeaveRoomForSmall: bodies over 1 MiB may fill the budget
// only up to seven eighths, so stalled large uploads never shut out small
// writes: with an 8 MiB budget and a stalled 4 MiB upload, a second 4 MiB
// upload (which would fill the budget) is refused while a 512 KiB value is
// written.
func TestLargeUploadsLeaveRoomForSmall(t *testing.T) {
	t.Parallel()
	ts, _, reg := limitServer(t, server.Config{
		MaxInflightBodyBytes: 8 << 20,
		MaxValueBytes:        8 << 20,
		InflightBodyWait:     100 * time.Millisecond,
		BodyIdleTimeout:      20 * time.Second,
	})
	const large = 4 << 20
	stalled := dialRaw(t, ts)
	fmt.Fprintf(stalled, "PUT /v1/kv/large HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", large)
	if _, err := stalled.Write(make([]byte, large/2)); err != nil {
		t.Fatal(err)
	}
	waitInFlight(t, reg, large)

	second := dialRaw(t, ts)
	fmt.Fprintf(second, "PUT /v1/kv/large2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", large)
	resp, code := rawResponse(t, second, bufio.NewReader(second))
	if resp.StatusCode != http.StatusServiceUnavailable || code != "overloaded" {
		t.Fatalf("second large upload: %d %q, want 503 overloaded", resp.StatusCode, code)
	}
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/v1/kv/small", bytes.NewReader(make([]byte, 512<<10)))
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode/100 != 2 {
		t.Fatalf("small value beside the stalled upload: %d, want 2xx", resp2.StatusCode)
	}
}
