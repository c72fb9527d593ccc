package shard_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/shard"
)

// TestFeedFromNodeWithoutReplica: with four nodes and three replicas, each
// node lacks some shards; it still reads their feeds (from the leader).
func TestFeedFromNodeWithoutReplica(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 4, Shards: 4})
	ctx := context.Background()
	n1 := c.Members[0].Node()
	want := map[int]int{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("f/%d", i)
		if _, err := n1.Put(ctx, k, []byte("v"), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
		want[shard.For(k, 4)]++
	}
	remote := 0
	for _, m := range c.Members {
		n := m.Node()
		for s := 0; s < 4; s++ {
			// A forwarded read may reach a replica a moment behind (the
			// leader it knew of may have handed over): the feed is a prefix
			// that completes.
			var got int
			c.Eventually(10*time.Second, fmt.Sprintf("%s reads shard %d's feed", m.ID, s), func() bool {
				got = 0
				after := uint64(0)
				for {
					p, err := n.ReadFeed(ctx, s, after, 7, shard.ReadOptions{Consistency: shard.Stale})
					if err != nil {
						t.Fatalf("%s shard %d: %v", m.ID, s, err)
					}
					got += len(p.Changes)
					if !p.More {
						return got == want[s]
					}
					after = p.Applied
				}
			})
			if !n.Hosts(s) {
				remote++
				if got != want[s] {
					t.Fatalf("%s (no replica) read %d changes of shard %d, want %d", m.ID, got, s, want[s])
				}
			}
		}
	}
	if remote == 0 {
		t.Fatal("every node hosts every shard: nothing was read remotely")
	}
}
