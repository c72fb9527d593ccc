package shard_test

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/internal/clustertest"
	"lambdadb/kv"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// truth sums what each namespace's records occupy by scanning the data.
func truth(t *testing.T, n *shard.Node, ro shard.ReadOptions) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	req := shard.ScanRequest{Limit: shard.MaxScanLimit}
	for {
		r, err := n.Scan(ctx, req, ro)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range r.Items {
			out[namespace.Of(it.Key)] += int64(len(it.Key) + len(it.Value))
		}
		if !r.More {
			return out
		}
		req.Start = r.Next
	}
}

func usage(t *testing.T, n *shard.Node, ro shard.ReadOptions) map[string]int64 {
	t.Helper()
	u, err := n.NamespaceBytes(ctx, ro)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestNamespaceBytes: the state machine's totals follow puts, overwrites,
// deletes, batches and refused conditions, per namespace, and survive a
// restart.
func TestNamespaceBytes(t *testing.T) {
	fs := vfs.NewMem()
	cfg := shard.Config{FS: fs, Dir: "/d"}
	n := open(t, cfg)
	if u := usage(t, n, shard.ReadOptions{}); len(u) != 0 {
		t.Fatalf("empty node: %v", u)
	}
	put := func(key, val string, c shard.Cond) {
		t.Helper()
		if _, err := n.Put(ctx, key, []byte(val), c, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		put(fmt.Sprintf("k%d", i), "value", shard.Cond{})
		put(namespace.Key("acme", fmt.Sprintf("k%d", i)), "vv", shard.Cond{})
		put(namespace.Key("beta", fmt.Sprintf("{t}k%d", i)), "vvv", shard.Cond{IfNoneMatch: true})
	}
	put("k1", "a much longer value than before", shard.Cond{}) // blind overwrite
	check := func(what string) {
		t.Helper()
		want, got := truth(t, n, shard.ReadOptions{}), usage(t, n, shard.ReadOptions{})
		if !maps.Equal(want, got) {
			t.Fatalf("%s: totals %v, data %v", what, got, want)
		}
	}
	check("puts")
	// Refused conditions change nothing.
	if _, err := n.Put(ctx, "k3", []byte("xxxxxxxxxxxxxxxx"), shard.Cond{IfNoneMatch: true}, nil); err == nil {
		t.Fatal("IfNoneMatch on an existing key succeeded")
	}
	if _, err := n.Batch(ctx, []shard.Op{{Key: namespace.Key("beta", "{t}k1"), Value: []byte("yyyyyyyyy")},
		{Key: namespace.Key("beta", "{t}new"), Value: []byte("z"), Cond: shard.Cond{IfMatch: ver(1)}}}, nil); err == nil {
		t.Fatal("batch with a failing condition succeeded")
	}
	check("refused writes")
	// Batches: blind and conditional puts, deletes, system records (not counted).
	if _, err := n.Batch(ctx, []shard.Op{
		{Key: namespace.Key("beta", "{t}k1"), Value: []byte("yyyyyyyyyyyy")},
		{Key: namespace.Key("beta", "{t}k2"), Delete: true},
		{Key: namespace.Key("beta", "{t}absent"), Delete: true},
		{Key: namespace.Key("beta", "{t}new"), Value: []byte("z"), Cond: shard.Cond{IfNoneMatch: true}},
		{Space: shard.SystemSpace, Key: "{t}sys", Value: []byte("not user data")},
	}, nil); err != nil {
		t.Fatal(err)
	}
	check("batch")
	for i := range 50 {
		if _, err := n.Delete(ctx, namespace.Key("acme", fmt.Sprintf("k%d", i)), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Delete(ctx, "never-written", shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	check("deletes")
	if _, ok := usage(t, n, shard.ReadOptions{})["acme"]; ok {
		t.Fatal("a namespace without data still has a total")
	}
	before := usage(t, n, shard.ReadOptions{})
	n.Close()
	n = open(t, cfg)
	if after := usage(t, n, shard.ReadOptions{}); !maps.Equal(before, after) {
		t.Fatalf("after restart %v, before %v", after, before)
	}
	check("after restart")
}

// TestClusterNamespaceBytes: every replica holds the same totals, which
// match the data, including a replica restarted meanwhile.
func TestClusterNamespaceBytes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	defer c.Close()
	live := c.Running()
	write := func(i int) {
		t.Helper()
		n := live[i%len(live)].Node()
		key := namespace.Key([]string{"default", "acme", "beta"}[i%3], fmt.Sprintf("k%03d", i%40))
		var err error
		for try := range 20 { // idempotent: retry what a kill cut off
			if try > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			if i%7 == 6 {
				_, err = n.Delete(opCtx(t, 10*time.Second), key, shard.Cond{}, nil)
			} else {
				_, err = n.Put(opCtx(t, 10*time.Second), key, make([]byte, i%13), shard.Cond{}, nil)
			}
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 150 {
		write(i)
	}
	restarted := c.Members[2].ID
	c.Kill(restarted)
	live = c.Running()
	for i := 150; i < 250; i++ {
		write(i)
	}
	c.Restart(restarted)
	want := truth(t, c.Members[0].Node(), shard.ReadOptions{Consistency: shard.Linearizable})
	if len(want) != 3 {
		t.Fatalf("data of %d namespaces: %v", len(want), want)
	}
	c.Eventually(30*time.Second, "every replica's totals match the data", func() bool {
		for _, m := range c.Members {
			u, err := m.Node().NamespaceBytes(ctx, shard.ReadOptions{Consistency: shard.Stale})
			if err != nil || !maps.Equal(u, want) {
				return false
			}
		}
		return true
	})
}

// TestNamespaceBytesCountsOlderData: a shard whose data predates the
// accounting (no totals, no init record) counts it on its next apply.
func TestNamespaceBytesCountsOlderData(t *testing.T) {
	fs := vfs.NewMem()
	cfg := shard.Config{FS: fs, Dir: "/d", Shards: 4}
	n := open(t, cfg)
	for i := range 40 {
		if _, err := n.Put(ctx, namespace.Key([]string{"default", "acme"}[i%2], fmt.Sprintf("k%d", i)), []byte("0123456789"), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	want := truth(t, n, shard.ReadOptions{})
	n.Close()
	// Remove what the accounting wrote, as if an older version had
	// written the data.
	eng, err := kv.Open(kv.Config{Dir: "/d/db", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for s := range 4 {
		var keys [][]byte
		if err := eng.ScanIn(s, kv.System, []byte("quota/"), []byte("quota0"), func(k, _ []byte, _ uint64) bool {
			keys = append(keys, append([]byte(nil), k...))
			return true
		}); err != nil {
			t.Fatal(err)
		}
		applied, err := eng.Applied(s)
		if err != nil {
			t.Fatal(err)
		}
		a := eng.NewApply(s)
		for _, k := range keys {
			if err := a.DeleteIn(kv.System, k); err != nil {
				t.Fatal(err)
			}
			removed++
		}
		if err := a.Commit(applied); err != nil {
			t.Fatal(err)
		}
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	if removed < 4 {
		t.Fatalf("removed %d accounting records", removed)
	}
	n = open(t, cfg)
	// One write per shard, to keys of a third namespace (a shard's first
	// apply, its new leader's empty entry, may already have counted).
	done := map[int]bool{}
	for i := 0; len(done) < 4; i++ {
		k := namespace.Key("gamma", fmt.Sprintf("x%d", i))
		if s := shard.For(k, 4); !done[s] {
			done[s] = true
			if _, err := n.Put(ctx, k, []byte("v"), shard.Cond{}, nil); err != nil {
				t.Fatal(err)
			}
			want["gamma"] += int64(len(k) + 1)
		}
	}
	if got := usage(t, n, shard.ReadOptions{}); !maps.Equal(got, want) {
		t.Fatalf("totals %v, data %v", got, want)
	}
}
