package shard_test

import (
	"sync"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/shard"
)

// TestMovesWithOneReplica: in a cluster of one replica per shard a move
// goes from one voter to the other (the target promoted, then the source
// removed, leaving one voter), so a joined node takes replicas and a
// decommissioned one gives them all back.
func TestMovesWithOneReplica(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Shards: 4,
		Configure: func(_ string, cfg *shard.Config) { cfg.Replicas = 1 }})
	stopWriters := sync.OnceValues(startWriters(c, 2))
	t.Cleanup(func() { stopWriters() }) // before the cluster closes
	c.Join("n2")
	st := settled(t, c, 60*time.Second)
	if k := replicaCounts(st)["n2"]; k < 2 {
		t.Fatalf("n2 holds %d replicas after joining, want 2 or 3 (%v)", k, replicaCounts(st))
	}
	if err := c.Member("n1").Node().Decommission(opCtx(t, 10*time.Second), "n2"); err != nil {
		t.Fatal(err)
	}
	c.Eventually(60*time.Second, "n2 decommissioned", func() bool {
		for _, nd := range c.Member("n1").Node().Cluster().Nodes {
			if nd.ID == "n2" {
				return nd.State == shard.StateDecommissioned
			}
		}
		return false
	})
	acked, _ := stopWriters()
	c.Kill("n2")
	checkAll(t, c, acked)
}
