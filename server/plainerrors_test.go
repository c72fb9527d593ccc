package server_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"lambdadb/server"
)

// jsonServer serves s over loopback HTTP as serve does, net/http's own
// answers wrapped into JSON, with headers bounded to 4 KiB.
func jsonServer(t *testing.T, s *server.Server) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(s)
	ts.Config.MaxHeaderBytes = 4 << 10
	ts.Listener = s.WrapListener(ts.Config, ts.Listener)
	ts.Start()
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

// rawExchange sends raw requests on one connection and reads an answer
// to each; it stops at a connection the server closed.
func rawExchange(t *testing.T, addr string, raws ...string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var out []*http.Response
	for _, raw := range raws {
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatalf("write %.40q: %v", raw, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to %.40q: %v", raw, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer to %.40q: %v", raw, err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
	}
	return out
}

// TestPlainErrorsAreJSON: what net/http answers by itself before any
// handler runs (requests it cannot parse), what ServeMux answers by itself
// (CONNECT, the target *) and what the WebSocket upgrader refuses are JSON
// error objects like every other answer — these were text/plain (or
// empty). Answers from handlers are left alone, even one whose body looks
// like net/http's own.
func TestPlainErrorsAreJSON(t *testing.T) {
	addr := jsonServer(t, newServer(t, server.Config{}))
	const host = "Host: x\r\n"
	for _, tt := range []struct {
		name, raw string
		status    int
		code, msg string
	}{
		{"bad escape in the path", "GET /v1/kv/%zz HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "malformed request"},
		{"garbage request line", "GARBAGE\r\n\r\n", 400, "bad_request", "malformed request"},
		{"missing Host", "GET /v1/kv/a HTTP/1.1\r\n\r\n", 400, "bad_request", "missing required Host header"},
		{"bad header name", "GET /v1/kv/a HTTP/1.1\r\n" + host + "Bad Header: x\r\n\r\n", 400, "bad_request", "invalid header name"},
		{"conflicting Content-Length", "PUT /v1/kv/a HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400, "bad_request", "malformed request"},
		{"headers too large", "GET /v1/kv/a HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("h", 16<<10) + "\r\n\r\n", 431, "headers_too_large", "limit is 4096 bytes"},
		{"unknown Transfer-Encoding", "PUT /v1/kv/a HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\nabc", 501, "unsupported_transfer_encoding", "only chunked"},
		{"unknown HTTP version", "GET /v1/kv/a HTTP/2.5\r\n" + host + "\r\n", 505, "unsupported_http_version", "HTTP/1.1"},
		{"unknown Expect", "GET /v1/kv/a HTTP/1.1\r\n" + host + "Expect: magic\r\n\r\n", 417, "expectation_failed", "100-continue"},
		{"target *", "GET * HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "*"},
		{"CONNECT", "CONNECT x:80 HTTP/1.1\r\n" + host + "\r\n", 404, "not_found", "CONNECT x:80"},
		{"WebSocket without a key", "GET /v1/feed HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, "bad_handshake", "Sec-WebSocket-Key"},
		{"WebSocket of another version", "GET /v1/feed HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400, "bad_handshake", "version"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := rawExchange(t, addr, tt.raw)[0]
			b, _ := io.ReadAll(resp.Body)
			var e struct{ Error, Code string }
			if err := json.Unmarshal(b, &e); err != nil || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s %q: not a JSON error (%v)", resp.StatusCode, resp.Header.Get("Content-Type"), b, err)
			}
			if resp.StatusCode != tt.status || e.Code != tt.code || !strings.Contains(e.Error, tt.msg) {
				t.Fatalf("%d %s, want %d %s saying %q", resp.StatusCode, b, tt.status, tt.code, tt.msg)
			}
		})
	}

	t.Run("handlers' answers untouched", func(t *testing.T) {
		// A value that reads like net/http's own 400, served on a
		// connection between other requests, comes back as stored; a
		// malformed request after them is answered in JSON.
		plain := "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"
		put := "PUT /v1/kv/plain HTTP/1.1\r\n" + host + "Content-Length: " + strconv.Itoa(len(plain)) + "\r\n\r\n" + plain
		get := "GET /v1/kv/plain HTTP/1.1\r\n" + host + "\r\n"
		opts := "OPTIONS * HTTP/1.1\r\n" + host + "\r\n"
		rs := rawExchange(t, addr, put, get, opts, get, "GET /v1/kv/%zz HTTP/1.1\r\n"+host+"\r\n")
		for i, want := range []int{200, 200, 200, 200, 400} {
			if rs[i].StatusCode != want {
				t.Fatalf("answer %d: %d, want %d", i, rs[i].StatusCode, want)
			}
		}
		for _, i := range []int{1, 3} {
			if b, _ := io.ReadAll(rs[i].Body); string(b) != plain {
				t.Fatalf("answer %d: %q, want the value as stored", i, b)
			}
		}
		if rs[4].Header.Get("Content-Type") != "application/json" {
			t.Fatalf("malformed request after others: %s", rs[4].Header)
		}
	})
}
