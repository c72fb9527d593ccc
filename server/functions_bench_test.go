package server_test

import (
	"bytes"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
)

// BenchmarkInvokeHTTP measures warm invocations end to end over loopback
// HTTP (a real TCP connection, kept alive): echo (no KV call) and a handler
// doing one local Get. It reports the median and p99 latency.
func BenchmarkInvokeHTTP(b *testing.B) {
	ts := fnServerB(b)
	if r := doB(b, "PUT", ts+"/v1/functions/echo", wasmtest.Example(b, "echo")); r != 201 {
		b.Fatalf("deploy echo: %d", r)
	}
	if r := doB(b, "PUT", ts+"/v1/functions/faulty", wasmtest.Guest(b, "faulty")); r != 201 {
		b.Fatalf("deploy faulty: %d", r)
	}
	if r := doB(b, "PUT", ts+"/v1/kv/bench", bytes.Repeat([]byte("v"), 100)); r != 200 {
		b.Fatalf("put: %d", r)
	}
	for _, c := range []struct{ name, path, body string }{
		{"echo", "/v1/functions/echo/invoke", "hello"},
		{"get", "/v1/functions/faulty/invoke?key=bench", "get bench"},
	} {
		b.Run(c.name, func(b *testing.B) {
			doB(b, "POST", ts+c.path, []byte(c.body)) // warm up
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if r := doB(b, "POST", ts+c.path, []byte(c.body)); r != 200 {
					b.Fatalf("status %d", r)
				}
				lat = append(lat, time.Since(t0))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

func fnServerB(b *testing.B) string { return fnServerURL(b) }

func doB(b *testing.B, method, url string, body []byte) int {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
