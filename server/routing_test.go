package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"lambdadb/client"
	"lambdadb/internal/clustertest"
	"lambdadb/server"
	"lambdadb/shard"
)

// TestClientRoutesToLeader: a Go client created for one node learns the
// placement and sends each key's requests to its shard's leader (no
// forwarding hop), and when that leader dies it falls back to its base
// node and follows the new leader — without losing a write.
func TestClientRoutesToLeader(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	const shards = 4
	var mu sync.Mutex
	served := map[string]string{} // key → node that received the last PUT
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: shards,
		Handler: func(n *shard.Node) (http.Handler, error) {
			h, err := server.New(server.Config{Node: n})
			if err != nil {
				return nil, err
			}
			id := n.ID()
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPut {
					mu.Lock()
					served[strings.TrimPrefix(r.URL.Path, "/v1/kv/")] = id
					mu.Unlock()
				}
				h.ServeHTTP(w, r)
			}), nil
		},
	})
	// Leaders settle on each shard's preferred replica (Members[s mod 3]);
	// until then the balance loop moves them.
	c.Eventually(30*time.Second, "leaders on their preferred replicas", func() bool {
		for s := range shards {
			if l := c.LeaderOf(s); l == nil || l != c.Members[s%len(c.Members)] {
				return false
			}
		}
		return true
	})
	base := c.Members[0]
	cl, err := client.New("http://" + base.Addr)
	if err != nil {
		t.Fatal(err)
	}
	// One key per shard, none of them led by the base node if possible.
	keys := make([]string, shards)
	for s := range keys {
		keys[s] = shard.TagFor(s, shards) + "k"
	}
	leaderID := func(key string) string {
		if l := c.LeaderOf(shard.For(key, shards)); l != nil {
			return l.ID
		}
		return ""
	}
	put := func(key string, v int) {
		t.Helper()
		if _, err := cl.Put(t.Context(), key, fmt.Appendf(nil, "%d", v)); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	v := 0
	c.Eventually(20*time.Second, "the client sends every key to its leader", func() bool {
		ok := true
		for _, k := range keys {
			v++
			put(k, v)
			mu.Lock()
			got := served[k]
			mu.Unlock()
			ok = ok && got == leaderID(k)
		}
		return ok
	})
	for range 20 {
		for _, k := range keys {
			v++
			put(k, v)
			mu.Lock()
			got := served[k]
			mu.Unlock()
			if want := leaderID(k); got != want {
				t.Fatalf("put %s went to %s; its leader is %s", k, got, want)
			}
		}
	}

	// Kill a leader that is not the base node.
	var victim string
	for _, k := range keys {
		if id := leaderID(k); id != base.ID {
			victim = id
			break
		}
	}
	if victim == "" {
		t.Skip("the base node leads every shard")
	}
	// A put in flight to a node as it dies fails with an unknown outcome
	// (the connection breaks): retry such failures; the client must
	// recover within a few attempts.
	putRetry := func(key string, v int) {
		t.Helper()
		var err error
		for range 5 {
			if _, err = cl.Put(t.Context(), key, fmt.Appendf(nil, "%d", v)); err == nil {
				return
			}
		}
		t.Fatalf("put %s: %v", key, err)
	}
	c.Kill(victim)
	last := map[string]int{}
	c.Eventually(30*time.Second, "the client follows the new leaders", func() bool {
		ok := true
		for _, k := range keys {
			v++
			putRetry(k, v)
			last[k] = v
			mu.Lock()
			got := served[k]
			mu.Unlock()
			ok = ok && got == leaderID(k) && got != victim
		}
		return ok
	})
	for _, k := range keys {
		it, found, err := cl.Get(t.Context(), k, client.WithConsistency(client.Linearizable))
		if err != nil || !found || string(it.Value) != fmt.Sprint(last[k]) {
			t.Fatalf("get %s = %q, %v, %v; want %d", k, it.Value, found, err, last[k])
		}
	}

	// With the victim back, kill the node the client was created for:
	// keyed requests go on through the nodes it learnt.
	c.Restart(victim)
	c.WaitLeaders(30 * time.Second)
	c.Kill(base.ID)
	for range 5 {
		for _, k := range keys {
			v++
			putRetry(k, v)
			last[k] = v
		}
	}
	for _, k := range keys {
		it, found, err := cl.Get(t.Context(), k, client.WithConsistency(client.Linearizable))
		if err != nil || !found || string(it.Value) != fmt.Sprint(last[k]) {
			t.Fatalf("get %s with the base node down = %q, %v, %v; want %d", k, it.Value, found, err, last[k])
		}
	}
}
