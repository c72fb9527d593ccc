package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/testnode"
	"lambdadb/server"
)

// gauge returns the value of the metric named name in reg (0 if absent).
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
		}
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFeedSubscriberLimits: a long poll or stream past the per-client cap
// gets 429 too_many_subscribers, past the node's cap 503 overloaded — both
// JSON with Retry-After, a stream before it is upgraded.
func TestFeedSubscriberLimits(t *testing.T) {
	for _, tc := range []struct {
		name            string
		node, perClient int
		status          int
		code            string
	}{
		{"per client", 10, 2, 429, "too_many_subscribers"},
		{"per node", 2, 10, 503, "overloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			h, err := server.New(server.Config{Node: testnode.New(t), Registry: reg,
				MaxFeedSubscribers: tc.node, MaxFeedSubscribersPerClient: tc.perClient})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewServer(h)
			defer ts.Close()
			defer h.Close()
			var wg sync.WaitGroup
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if st, _, r := feedGet(t, ts.URL, "prefix=a/&wait=3s"); st != 200 {
						t.Errorf("poll within the limits: %d %s", st, r.body)
					}
				}()
			}
			waitFor(t, "two polls open", func() bool { return gauge(t, reg, "lambdadb_feed_subscribers") == 2 })
			st, _, r := feedGet(t, ts.URL, "prefix=b/&wait=1s")
			var e struct{ Code string }
			_ = json.Unmarshal(r.body, &e)
			if st != tc.status || e.Code != tc.code || r.header.Get("Retry-After") == "" {
				t.Fatalf("third poll: %d %s (Retry-After %q), want %d %s", st, r.body, r.header.Get("Retry-After"), tc.status, tc.code)
			}
			u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/v1/feed?prefix=c/"
			_, resp, err := websocket.DefaultDialer.Dial(u, nil)
			if err == nil || resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("stream past the limit: err %v, response %v", err, resp)
			}
			wg.Wait()
			if st, _, r := feedGet(t, ts.URL, "prefix=b/&wait=10ms"); st != 200 {
				t.Fatalf("after the polls ended: %d %s", st, r.body)
			}
		})
	}
}

// TestFeedSlowConsumerDropped: a WebSocket consumer that stops reading is
// disconnected once a message cannot leave within the write timeout,
// holding nothing on the node afterwards; it resumes from the cursor of the
// last message it read and misses nothing.
func TestFeedSlowConsumerDropped(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := server.New(server.Config{Node: testnode.New(t), Registry: reg, FeedWriteTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	defer h.Close()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(128 << 10) // a small window (above loopback MSS): the node's sends block soon
		}
		return c, err
	}}
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/v1/feed?prefix=big/"
	conn, _, err := d.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, "the stream subscribed", func() bool { return gauge(t, reg, "lambdadb_feed_subscribers") == 1 })
	t0 := time.Now()
	value := make([]byte, 512<<10)
	const n = 48 // 24 MiB: more than the socket buffers hold
	for i := range n {
		do(t, "PUT", fmt.Sprintf("%s/v1/kv/big/%02d", ts.URL, i), value)
	}
	waitFor(t, "the slow stream dropped", func() bool {
		return gauge(t, reg, "lambdadb_feed_streams_dropped_total") == 1 && gauge(t, reg, "lambdadb_feed_subscribers") == 0
	})
	t.Logf("dropped after %v", time.Since(t0))
	// What reached the consumer, then a resume from its last cursor.
	seen := map[string]bool{}
	cursor := ""
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var f feedResp
		if err := conn.ReadJSON(&f); err != nil {
			t.Logf("read: %v", err)
			break
		}
		for _, c := range f.Changes {
			seen[c.Key] = true
		}
		cursor = f.Cursor
	}
	t.Logf("read %d before the cut, at %v", len(seen), time.Since(t0))
	if len(seen) == n {
		t.Fatalf("every change reached a consumer that never read: the stream was not cut")
	}
	q := "prefix=big/&wait=1s"
	if cursor != "" {
		q += "&cursor=" + cursor
	} else {
		q += "&cursor=beginning"
	}
	for len(seen) < n {
		st, f, r := feedGet(t, ts.URL, q+"")
		if st != 200 || len(f.Changes) == 0 {
			t.Fatalf("resuming with %d of %d seen: %d %s", len(seen), n, st, r.body)
		}
		for _, c := range f.Changes {
			seen[c.Key] = true
		}
		q = "prefix=big/&wait=1s&cursor=" + f.Cursor
	}
}
