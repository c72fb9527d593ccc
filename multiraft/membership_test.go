package multiraft_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/multiraft"
	"lambdadb/multiraft/rafttest"
)

func change(changes ...*pb.ConfChangeSingle) *pb.ConfChangeV2 {
	return &pb.ConfChangeV2{Changes: changes}
}

func single(t pb.ConfChangeType, node uint64) *pb.ConfChangeSingle {
	return &pb.ConfChangeSingle{Type: t.Enum(), NodeId: &node}
}

// waitHas waits until node id's replica of group g holds keys k0..k(n-1).
func waitHas(t *testing.T, c *rafttest.Cluster, id, g uint64, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < n; {
		if v, ok := c.Node(id).SMs[g].Get(fmt.Sprintf("%s%03d", prefix, i)); ok && v == fmt.Sprint(i) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d, group %d: %s%03d missing", id, g, prefix, i)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplicaMove moves group replicas from node 1 to node 4, which
// starts empty: added as a learner it catches up by snapshot, then is
// promoted and node 1 removed — one step at a time in group 0, as one
// joint change in group 1 — while writes go on. The groups then serve
// from {2,3,4} without node 1, and node 4 keeps its place across a
// restart.
func TestReplicaMove(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 4, Groups: 2, Voters: []uint64{1, 2, 3}})
	ctx := ctxT(t, 90*time.Second)
	put := func(g uint64, prefix string, n int) {
		t.Helper()
		for i := range n {
			if _, err := c.Put(ctx, g, fmt.Sprintf("%s%03d", prefix, i), fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for g := uint64(0); g < 2; g++ {
		put(g, "a", 100)
	}
	// Node 4 takes no part until it is added.
	if st, err := c.Node(4).Engine.Status(0); err != nil || st.IsLeader() {
		t.Fatalf("node 4 before it is added: %+v, %v", st, err)
	}

	for g := uint64(0); g < 2; g++ {
		cs, err := c.ChangeMembership(ctx, g, change(single(pb.ConfChangeType_ConfChangeAddLearnerNode, 4)))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(cs.GetLearners(), 4) || slices.Contains(cs.GetVoters(), 4) {
			t.Fatalf("group %d after adding a learner: %v", g, cs)
		}
		waitHas(t, c, 4, g, "a", 100)
	}
	sent := 0.0
	for _, id := range c.IDs() {
		sent += counter(t, c.Node(id), "lambdadb_multiraft_snapshots_sent_total")
	}
	if sent == 0 {
		t.Fatal("the new replicas caught up without a snapshot")
	}

	// Writes go on during the moves.
	done := make(chan error, 1)
	go func() {
		for i := range 100 {
			if _, err := c.Put(ctx, uint64(i%2), fmt.Sprintf("b%03d", i/2), fmt.Sprint(i/2)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	// Group 0: promote, then remove.
	cs, err := c.ChangeMembership(ctx, 0, change(single(pb.ConfChangeType_ConfChangeAddNode, 4)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cs.GetVoters(), 4) || slices.Contains(cs.GetLearners(), 4) {
		t.Fatalf("group 0 after promoting: %v", cs)
	}
	if cs, err = c.ChangeMembership(ctx, 0, change(single(pb.ConfChangeType_ConfChangeRemoveNode, 1))); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(slices.Values(cs.GetVoters())); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("group 0 voters %v, want [2 3 4]", got)
	}
	// Group 1: both at once, through a joint configuration the leader
	// leaves by itself.
	if cs, err = c.ChangeMembership(ctx, 1, change(single(pb.ConfChangeType_ConfChangeAddNode, 4),
		single(pb.ConfChangeType_ConfChangeRemoveNode, 1))); err != nil {
		t.Fatal(err)
	}
	if len(cs.GetVotersOutgoing()) == 0 {
		t.Fatalf("group 1 after a two-voter change: %v, want a joint configuration", cs)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Node 1 goes; the groups serve from {2,3,4}.
	c.Stop(1)
	for g := uint64(0); g < 2; g++ {
		put(g, "c", 50)
		for _, id := range []uint64{2, 3, 4} {
			waitHas(t, c, id, g, "b", 50)
			waitHas(t, c, id, g, "c", 50)
		}
	}
	// Node 4 is a voter for good: after a restart it still counts, with
	// node 2 down the groups still commit (3 and 4 are a majority of
	// {2,3,4}, and would not be of {1,2,3}).
	c.Stop(4)
	if err := c.Start(4); err != nil {
		t.Fatal(err)
	}
	c.Stop(2)
	for g := uint64(0); g < 2; g++ {
		put(g, "d", 20)
		waitHas(t, c, 4, g, "d", 20)
	}
}

// TestChangeMembershipOnFollower: only the leader proposes changes.
func TestChangeMembershipOnFollower(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 1})
	lead := c.Leader(0)
	for _, id := range c.IDs() {
		if id == lead {
			continue
		}
		_, _, err := c.Node(id).Engine.ChangeMembership(ctxT(t, 5*time.Second), 0, change(single(pb.ConfChangeType_ConfChangeAddLearnerNode, 9)))
		if !errors.Is(err, multiraft.ErrNotLeader) {
			t.Fatalf("change on follower %d: %v, want ErrNotLeader", id, err)
		}
		return
	}
}
