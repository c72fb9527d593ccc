package shard_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/shard"
)

// settled waits until every running member has the same map version, no
// move is in flight and the planner wants nothing more.
func settled(t *testing.T, c *clustertest.Cluster, timeout time.Duration) shard.ClusterStatus {
	t.Helper()
	var st shard.ClusterStatus
	c.Eventually(timeout, "membership settled", func() bool {
		run := c.Running()
		v := run[0].Node().Cluster().MapVersion
		for _, m := range run {
			n := m.Node()
			if !n.MembershipSettled() || n.Cluster().MapVersion != v {
				return false
			}
		}
		st = run[0].Node().Cluster()
		return true
	})
	return st
}

// replicaCounts returns the replicas each node holds by the cluster map.
func replicaCounts(st shard.ClusterStatus) map[string]int {
	out := map[string]int{}
	for _, nd := range st.Nodes {
		out[nd.ID] = nd.Replicas
	}
	return out
}

// hostedShards returns how many data-shard replicas member id really runs.
func hostedShards(n *shard.Node) int {
	k := 0
	for s := 0; s < n.Shards(); s++ {
		if n.RaftStats(s) != nil {
			k++
		}
	}
	return k
}

// startWriters runs writers against the cluster until the returned stop
// is called, which returns what they had acknowledged.
func startWriters(c *clustertest.Cluster, k int) func() (map[string]uint64, int) {
	w := &writer{acked: map[string]uint64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < k; i++ {
		wg.Add(1)
		go w.run(c, 100+i, stop, &wg)
	}
	return func() (map[string]uint64, int) {
		close(stop)
		wg.Wait()
		return w.acked, w.fails
	}
}

func TestJoinRebalancesAndLosesNothing(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 8})
	stop := startWriters(c, 4)
	time.Sleep(300 * time.Millisecond)

	n4 := c.Join("n4")
	st := settled(t, c, 90*time.Second)
	acked, fails := stop()
	counts := replicaCounts(st)
	// 9 groups (8 shards and the metadata group) × 3 replicas on 4 nodes:
	// every node within one of the mean 6.75.
	for id, k := range counts {
		if k < 6 || k > 7 {
			t.Errorf("%s holds %d replicas, want 6 or 7 (%v)", id, k, counts)
		}
	}
	for _, nd := range st.Nodes {
		if nd.State != shard.StateActive {
			t.Errorf("%s is %s, want active", nd.ID, nd.State)
		}
		if nd.Number == 0 {
			t.Errorf("%s has no node number", nd.ID)
		}
	}
	if nd := st.Nodes[len(st.Nodes)-1]; nd.ID != "n4" || nd.Number != 4 {
		t.Errorf("the joined node is %+v, want n4 with number 4", nd)
	}
	// The replicas the map places are the replicas the nodes run.
	c.Eventually(30*time.Second, "replicas deleted off the old nodes", func() bool {
		for _, m := range c.Running() {
			want := 0
			for _, s := range m.Node().Cluster().Shards {
				for _, r := range s.Replicas {
					if r.Node == m.ID {
						want++
					}
				}
			}
			if hostedShards(m.Node()) != want {
				return false
			}
		}
		return true
	})
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged")
	}
	t.Logf("%d writes acknowledged, %d failed during the join", len(acked), fails)
	checkAll(t, c, acked)
	_ = n4
}

func TestDecommissionMovesEverythingOff(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4})
	// Three nodes and three replicas: nowhere to move n1's.
	err := c.Member("n1").Node().Decommission(opCtx(t, 10*time.Second), "n1")
	if !errors.Is(err, shard.ErrMembership) {
		t.Fatalf("decommissioning one of 3 nodes with 3 replicas: %v, want ErrMembership", err)
	}
	if err := c.Member("n1").Node().Decommission(opCtx(t, 10*time.Second), "n9"); !errors.Is(err, shard.ErrUnknownNode) {
		t.Fatalf("decommissioning an unknown node: %v, want ErrUnknownNode", err)
	}
	c.Join("n4")
	settled(t, c, 60*time.Second)

	stop := startWriters(c, 3)
	if err := c.Member("n2").Node().Decommission(opCtx(t, 10*time.Second), "n1"); err != nil {
		t.Fatal(err)
	}
	c.Eventually(90*time.Second, "n1 decommissioned", func() bool {
		for _, nd := range c.Member("n2").Node().Cluster().Nodes {
			if nd.ID == "n1" {
				return nd.State == shard.StateDecommissioned
			}
		}
		return false
	})
	c.Eventually(30*time.Second, "n1 holds no replica", func() bool {
		n := c.Member("n1").Node()
		return hostedShards(n) == 0 && n.RaftStats(shard.MetaShard) == nil
	})
	acked, _ := stop()
	c.Kill("n1")
	checkAll(t, c, acked)
}

func TestRemoveDeadNodeRebuildsReplicas(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4})
	c.Join("n4")
	settled(t, c, 60*time.Second)
	stop := startWriters(c, 3)
	time.Sleep(200 * time.Millisecond)
	c.Kill("n2")
	n1 := c.Member("n1").Node()
	if err := n1.RemoveNode(opCtx(t, 10*time.Second), "n1"); !errors.Is(err, shard.ErrMembership) {
		t.Fatalf("removing a live node that holds replicas: %v, want ErrMembership", err)
	}
	c.Eventually(10*time.Second, "n2 seen down", func() bool {
		for _, nd := range n1.Cluster().Nodes {
			if nd.ID == "n2" {
				return !nd.Up
			}
		}
		return false
	})
	if err := n1.RemoveNode(opCtx(t, 10*time.Second), "n2"); err != nil {
		t.Fatal(err)
	}
	st := settled(t, c, 90*time.Second)
	for _, s := range st.Shards {
		if len(s.Replicas) != 3 {
			t.Errorf("shard %d has %d replicas, want 3", s.ID, len(s.Replicas))
		}
		for _, r := range s.Replicas {
			if r.Node == "n2" {
				t.Errorf("shard %d still placed on the removed n2", s.ID)
			}
		}
	}
	acked, _ := stop()
	checkAll(t, c, acked)

	// The removed node's name is free, but its old number is never used
	// again; its old data directory is refused.
	if err := c.RestartErr("n2"); !errors.Is(err, shard.ErrIdentity) {
		t.Fatalf("restarting the removed n2: %v, want ErrIdentity", err)
	}
}

func TestWipedNodeCannotRejoinUnderItsName(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4})
	settled(t, c, 30*time.Second)
	c.Kill("n3")
	c.Wipe("n3")
	err := c.RestartErr("n3")
	if !errors.Is(err, shard.ErrIdentity) {
		t.Fatalf("a wiped initial node restarting with --peers: %v, want ErrIdentity", err)
	}
	if _, err := c.JoinErr("n2"); !errors.Is(err, shard.ErrIdentity) {
		t.Fatalf("joining under a member's name: %v, want ErrIdentity", err)
	}
	// A new name joins fine and gets a new number.
	m := c.Join("n5")
	c.Eventually(10*time.Second, "n5 counted", func() bool {
		for _, nd := range m.Node().Cluster().Nodes {
			if nd.ID == "n5" {
				return nd.Number == 4 && fmt.Sprint(nd.State) == shard.StateActive
			}
		}
		return false
	})
}

// TestMoveSurvivesCrashes crashes a node at a step of a replica move —
// the target while it is a learner being filled, the shard's leader
// then, the source while it is being removed, the metadata leader — and
// restarts it: the moves finish, every shard ends with three voters where
// the map places them, and no acknowledged write is lost.
func TestMoveSurvivesCrashes(t *testing.T) {
	for _, tc := range []struct {
		phase, victim string
	}{
		{shard.PhaseLearner, "target"},
		{shard.PhaseLearner, "shard-leader"},
		{shard.PhaseRemove, "source"},
		{shard.PhaseRemove, "meta-leader"},
	} {
		t.Run(tc.phase+"/"+tc.victim, func(t *testing.T) {
			c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4,
				Configure: func(id string, cfg *shard.Config) { cfg.MoveConcurrency = 1 }})
			stop := startWriters(c, 3)
			c.Join("n4")
			var victim string
			c.Eventually(60*time.Second, "a move in phase "+tc.phase, func() bool {
				for _, m := range c.Running() {
					for _, mv := range m.Node().Moves() {
						if mv.Phase != tc.phase || mv.Shard == "meta" {
							continue
						}
						switch tc.victim {
						case "target":
							victim = mv.To
						case "source":
							victim = mv.From
						case "shard-leader":
							var s int
							fmt.Sscan(mv.Shard, &s)
							if l := c.LeaderOf(s); l != nil {
								victim = l.ID
							}
						case "meta-leader":
							if l := c.LeaderOf(shard.MetaShard); l != nil {
								victim = l.ID
							}
						}
						return victim != ""
					}
				}
				return false
			})
			t.Logf("crashing %s (%s) during a move's %s step", victim, tc.victim, tc.phase)
			c.Kill(victim)
			time.Sleep(700 * time.Millisecond)
			c.Restart(victim)
			st := settled(t, c, 90*time.Second)
			acked, fails := stop()
			t.Logf("%d writes acknowledged, %d failed", len(acked), fails)
			for _, s := range st.Shards {
				if len(s.Replicas) != 3 {
					t.Errorf("shard %d has %d replicas, want 3", s.ID, len(s.Replicas))
				}
			}
			checkAll(t, c, acked)
		})
	}
}

// TestFeedReadsFollowAMovedShard reads a shard's feed through n1 while
// n1's replica of it moves to n4: the reads go on through the shard's
// leader, from the same position, and miss no change and repeat none.
func TestFeedReadsFollowAMovedShard(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4})
	c.Join("n4")
	settled(t, c, 60*time.Second)
	n1 := c.Member("n1").Node()
	// A shard n1 holds, which decommissioning n1 moves away.
	s := -1
	for i := 0; i < n1.Shards(); i++ {
		if n1.RaftStats(i) != nil {
			s = i
			break
		}
	}
	if s < 0 {
		t.Fatal("n1 holds no shard")
	}
	var keys []string
	for i := 0; len(keys) < 5000; i++ {
		if k := fmt.Sprintf("f/%05d", i); shard.For(k, n1.Shards()) == s {
			keys = append(keys, k)
		}
	}
	// The writer goes on until 100 changes were written after n1's
	// replica was removed.
	var written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		extra := 0
		for i, k := range keys {
			for {
				if _, err := c.Member("n2").Node().Put(opCtx(t, 5*time.Second), k, []byte(k), shard.Cond{}, nil); err == nil {
					break
				}
			}
			written.Store(int64(i + 1))
			if n1.RaftStats(s) == nil {
				if extra++; extra == 100 {
					return
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if err := n1.Decommission(opCtx(t, 10*time.Second), "n1"); err != nil {
		t.Fatal(err)
	}
	var seen []string
	var after uint64
	deadline := time.Now().Add(120 * time.Second)
	finished := false
	for time.Now().Before(deadline) {
		select {
		case <-done:
			finished = true
		default:
		}
		if finished && len(seen) >= int(written.Load()) {
			break
		}
		p, err := n1.ReadFeedQuery(opCtx(t, 5*time.Second), s, shard.FeedQuery{After: after, Limit: 50, Prefix: "f/"}, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil {
			t.Logf("feed read: %v", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for _, ch := range p.Changes {
			seen = append(seen, ch.Key)
			after = ch.Index
		}
		if p.Applied > after {
			after = p.Applied
		}
	}
	if !finished {
		t.Fatal("n1's replica was never removed")
	}
	n := int(written.Load())
	if len(seen) != n {
		t.Fatalf("read %d changes through n1, want %d", len(seen), n)
	}
	for i, k := range keys[:n] {
		if seen[i] != k {
			t.Fatalf("change %d is %s, want %s: out of order, missed or repeated", i, seen[i], k)
		}
	}
}

// A replica removed from its shard's Raft configuration lives on until
// the move that removed it is recorded complete, but the group no longer
// writes to it: the leader it last heard from must not stay its answer
// once leadership moves (the controller asked the old leader of a move's
// shard forever, and the move never completed).
func TestRemovedReplicaForgetsItsLeader(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 2})
	n1 := c.Member("n1").Node()
	if err := n1.PauseRebalance(opCtx(t, 10*time.Second), true); err != nil {
		t.Fatal(err)
	}
	const s = 0
	num := map[string]uint64{}
	for _, nd := range n1.Cluster().Nodes {
		num[nd.ID] = nd.Number
	}
	// Remove a follower's replica from shard s's configuration behind the
	// map's back, so that it stays hosted.
	leader := c.LeaderOf(s)
	var gone, other *clustertest.Member
	for _, m := range c.Running() {
		switch {
		case m == leader:
		case gone == nil:
			gone = m
		default:
			other = m
		}
	}
	if err := leader.Node().Reconf(opCtx(t, 10*time.Second), s, "remove", num[gone.ID]); err != nil {
		t.Fatal(err)
	}
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); shard.For(k, 2) == s {
			key = k
		}
	}
	c.Eventually(10*time.Second, gone.ID+" sees the old leader", func() bool {
		_, l, _ := gone.Node().Route(key)
		return l.ID == leader.ID || l.ID == ""
	})
	// Move the leadership to the remaining voter.
	c.Eventually(20*time.Second, other.ID+" leads shard 0", func() bool {
		if cur := c.LeaderOf(s); cur != nil && cur.ID == other.ID {
			return true
		} else if cur != nil {
			_ = cur.Node().Reconf(opCtx(t, 5*time.Second), s, "transfer", num[other.ID])
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
	c.Eventually(10*time.Second, gone.ID+" names the new leader", func() bool {
		_, l, _ := gone.Node().Route(key)
		return l.ID == other.ID
	})
}

// TestLateInitialNodeStarts: an initial node that starts, with its new
// data directory, after the others created the cluster is not taken for
// one that lost its data — until the cluster has heard from it.
func TestLateInitialNodeStarts(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4, StartLater: []string{"n3"}})
	n1 := c.Member("n1").Node()
	c.Eventually(30*time.Second, "the cluster map written", func() bool { return n1.Cluster().MapVersion > 0 })
	w, err := n1.Put(opCtx(t, 10*time.Second), "early", valueFor("early"), shard.Cond{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Restart("n3") // its first start
	c.Eventually(30*time.Second, "n3 active", func() bool {
		for _, nd := range n1.Cluster().Nodes {
			if nd.ID == "n3" {
				return nd.State == shard.StateActive
			}
		}
		return false
	})
	checkAll(t, c, map[string]uint64{"early": w.Version})

	// Now that it served, a wiped n3 is refused.
	c.Kill("n3")
	c.Wipe("n3")
	if err := c.RestartErr("n3"); !errors.Is(err, shard.ErrIdentity) {
		t.Fatalf("a wiped n3 restarting: %v, want ErrIdentity", err)
	}
}
