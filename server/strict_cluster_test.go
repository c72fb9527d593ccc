package server_test

import (
	"net/url"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/clustertest"
	"lambdadb/shard"
)

// TestFeedCursorOnLaggingNode: a cursor obtained from a shard's leader is
// ahead of a follower that lags, yet valid: reading it through that
// follower must not be refused as ahead of the log (the check asks the
// leader), while a cursor ahead of the leader too still is.
func TestFeedCursorOnLaggingNode(t *testing.T) {
	t.Parallel()
	c := laggingCluster(t, 150*time.Millisecond)
	n3 := c.Member("n3")
	shards := n3.Node().Shards()

	lagged := 0
	for i := 0; i < 20 && lagged < 3; i++ {
		// A shard n3 does not lead, and its leader.
		s, leader := -1, (*clustertest.Member)(nil)
		for k := 0; k < shards; k++ {
			if l := c.LeaderOf((i + k) % shards); l != nil && l.ID != "n3" {
				s, leader = (i+k)%shards, l
				break
			}
		}
		if leader == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		base := memberURL(leader)
		if r := do(t, "PUT", base+"/v1/kv/"+url.PathEscape(shard.TagFor(s, shards)+"lag"), []byte("v")); r.status != 200 {
			t.Fatalf("PUT via %s: %d %s", leader.ID, r.status, r.body)
		}
		st, f, r := feedGet(t, base, "cursor=now")
		if st != 200 {
			t.Fatalf("feed via %s: %d %s", leader.ID, st, r.body)
		}
		cur, err := changefeed.DecodeCursor(f.Cursor, shards)
		if err != nil {
			t.Fatal(err)
		}
		if n3.Node().AppliedIndex(s) < cur[s] {
			lagged++
		}
		st, f3, r := feedGet(t, memberURL(n3), "cursor="+url.QueryEscape(f.Cursor))
		if st != 200 {
			t.Fatalf("leader %s's cursor %v read via lagging n3 (applied %d for shard %d): %d %s",
				leader.ID, cur, n3.Node().AppliedIndex(s), s, st, r.body)
		}
		next, err := changefeed.DecodeCursor(f3.Cursor, shards)
		if err != nil || next[s] < cur[s] {
			t.Fatalf("n3 answered cursor %v for %v (%v)", next, cur, err)
		}
		// Ahead of every replica: refused through the lagging node too.
		ahead := changefeed.Cursor{}
		for k, v := range cur {
			ahead[k] = v
		}
		ahead[s] += 1000
		if st, _, r := feedGet(t, memberURL(n3), "cursor="+url.QueryEscape(ahead.Encode())); st != 400 || r.code() != "bad_cursor" {
			t.Fatalf("cursor ahead of the log via n3: %d %s", st, r.body)
		}
	}
	t.Logf("n3 lagged behind the leader's cursor %d times", lagged)
	if lagged == 0 {
		t.Log("n3 never lagged behind a leader's cursor; the valid-cursor case was not exercised")
	}
}
