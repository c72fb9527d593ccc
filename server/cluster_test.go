package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/internal/session"
	"lambdadb/server"
	"lambdadb/shard"
)

// laggingCluster starts three nodes serving the API, n3 hearing from the
// others late by lag, so its replicas fall behind their leaders.
func laggingCluster(t *testing.T, lag time.Duration) *clustertest.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3,
		Handler: func(n *shard.Node) (http.Handler, error) {
			return server.New(server.Config{Node: n})
		},
	})
	c.Faults.Delay("n1", "n3", lag)
	c.Faults.Delay("n2", "n3", lag)
	return c
}

// TestSessionAcrossNodes writes through one node and reads through every
// node — one of them lagging behind its leaders — carrying the session
// token: each read must see the write.
func TestSessionAcrossNodes(t *testing.T) {
	t.Parallel()
	c := laggingCluster(t, 100*time.Millisecond)

	hc := &http.Client{Timeout: 30 * time.Second}
	do := func(method, addr, path, body, tok string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set(session.Header, tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	tok := ""
	for i := range 10 {
		key, value := fmt.Sprintf("/v1/kv/ryw/%d", i), fmt.Sprintf("value-%d", i)
		writer := c.Members[i%2] // n1 or n2
		resp, b := do(http.MethodPut, writer.Addr, key, value, tok)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT via %s: %d %s", writer.ID, resp.StatusCode, b)
		}
		tok = resp.Header.Get(session.Header)
		for _, m := range c.Members {
			resp, b := do(http.MethodGet, m.Addr, key, "", tok)
			if resp.StatusCode != http.StatusOK || b != value {
				t.Fatalf("session GET %s via %s = %d %q, want %q", key, m.ID, resp.StatusCode, b, value)
			}
			next, err := session.Decode(resp.Header.Get(session.Header))
			if err != nil {
				t.Fatal(err)
			}
			prev, _ := session.Decode(tok)
			if !next.Covers(prev) {
				t.Fatalf("GET via %s returned token %v not covering %v", m.ID, next, prev)
			}
			tok = next.Encode()
		}
	}
}
