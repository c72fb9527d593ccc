package multiraft_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
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

// scanShard returns every user record of g on node id, as key=value@version.
func scanShard(t *testing.T, c *rafttest.Cluster, id, g uint64) []string {
	t.Helper()
	var out []string
	err := c.Node(id).Storage.Scan(int(g), nil, nil, func(k, v []byte, ver uint64) bool {
		out = append(out, fmt.Sprintf("%s=%s@%d", k, v, ver))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wantDropped checks that node id holds nothing of group g: no replica in
// its engine, and an empty shard in its storage.
func wantDropped(t *testing.T, c *rafttest.Cluster, id, g uint64) {
	t.Helper()
	n := c.Node(id)
	if _, err := n.Engine.Status(g); !errors.Is(err, multiraft.ErrNoGroup) {
		t.Fatalf("node %d: Status(%d) after RemoveGroup: %v, want ErrNoGroup", id, g, err)
	}
	if a, err := n.Storage.Applied(int(g)); err != nil || a != 0 {
		t.Fatalf("node %d: shard %d applied %d, %v after DropShard", id, g, a, err)
	}
	rs, err := n.Storage.RaftStorage(int(g))
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := rs.LastIndex(); last != 0 {
		t.Fatalf("node %d: shard %d raft log ends at %d after DropShard", id, g, last)
	}
	if hs, _, err := rs.InitialState(); err != nil || hs != nil {
		t.Fatalf("node %d: shard %d hard state %v, %v after DropShard", id, g, hs, err)
	}
	if recs := scanShard(t, c, id, g); len(recs) != 0 {
		t.Fatalf("node %d: shard %d holds %d records after DropShard", id, g, len(recs))
	}
}

// TestReplicaRemovedAndAddedBack moves group 0's replica from node 1 to
// node 4 (learner, promote, remove), then node 1 deletes its replica and
// data (RemoveGroup, DropShard) while writes go on in both groups; later
// the replica comes back to node 1, empty (Join), is caught up by
// snapshot, promoted, and ends with the same data as every other node.
// Group 1 keeps its replica on node 1 throughout.
func TestReplicaRemovedAndAddedBack(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 4, Groups: 2, Voters: []uint64{1, 2, 3}})
	ctx := ctxT(t, 120*time.Second)
	const g = 0
	for grp := uint64(0); grp < 2; grp++ {
		for i := range 50 {
			if _, err := c.Put(ctx, grp, fmt.Sprintf("a%03d", i), fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Writes go on in both groups from here to the end; written counts
	// the acknowledged ones, so the test can wait for writes to happen
	// during each step.
	var (
		stop    = make(chan struct{})
		wdone   = make(chan error, 1)
		mu      sync.Mutex
		written int
	)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				wdone <- nil
				return
			default:
			}
			if _, err := c.Put(ctx, uint64(i%2), fmt.Sprintf("w%05d", i), fmt.Sprint(i)); err != nil {
				wdone <- err
				return
			}
			mu.Lock()
			written = i + 1
			mu.Unlock()
		}
	}()
	writesGoOn := func() {
		t.Helper()
		mu.Lock()
		from := written
		mu.Unlock()
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := written
			mu.Unlock()
			if n >= from+10 {
				return
			}
			select {
			case err := <-wdone:
				t.Fatalf("writer stopped: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("writes do not go on")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	reconfigure := func(cc *pb.ConfChangeSingle) *pb.ConfState {
		t.Helper()
		cs, err := c.ChangeMembership(ctx, g, change(cc))
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	// caughtUp waits until node id's replica matches the leader's log as
	// it was when the wait began.
	caughtUp := func(id uint64) {
		t.Helper()
		var target uint64
		deadline := time.Now().Add(30 * time.Second)
		for {
			lead := c.Node(c.Leader(g))
			if lead != nil {
				match, last, ok, err := lead.Engine.Progress(ctx, g)
				if err == nil && ok {
					if target == 0 {
						target = last
					}
					if match[id] >= target {
						return
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d did not catch up with group %d's log at %d", id, g, target)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Move the replica from node 1 to node 4.
	reconfigure(single(pb.ConfChangeType_ConfChangeAddLearnerNode, 4))
	caughtUp(4)
	reconfigure(single(pb.ConfChangeType_ConfChangeAddNode, 4))
	cs := reconfigure(single(pb.ConfChangeType_ConfChangeRemoveNode, 1))
	if got := slices.Sorted(slices.Values(cs.GetVoters())); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("voters after the move %v, want [2 3 4]", got)
	}
	writesGoOn()

	// Node 1 deletes its replica while the others write.
	if err := c.RemoveReplica(1, g); err != nil {
		t.Fatal(err)
	}
	wantDropped(t, c, 1, g)
	if err := c.Node(1).Engine.RemoveGroup(g); !errors.Is(err, multiraft.ErrNoGroup) {
		t.Fatalf("second RemoveGroup: %v, want ErrNoGroup", err)
	}
	writesGoOn()
	// Messages for the group still reach node 1 (the network does not
	// know); it drops them and its shard stays empty. Group 1 goes on there.
	wantDropped(t, c, 1, g)
	if _, err := c.Put(ctx, 1, "z000", "0"); err != nil {
		t.Fatal(err)
	}
	waitHas(t, c, 1, 1, "z", 1)

	// The replica comes back to node 1, empty, as a learner first.
	snapshotsSent := func() (n float64) {
		for _, id := range c.IDs() {
			n += counter(t, c.Node(id), "lambdadb_multiraft_snapshots_sent_total")
		}
		return n
	}
	sentBefore := snapshotsSent()
	if err := c.AddReplica(1, g); err != nil {
		t.Fatal(err)
	}
	reconfigure(single(pb.ConfChangeType_ConfChangeAddLearnerNode, 1))
	caughtUp(1)
	writesGoOn()
	cs = reconfigure(single(pb.ConfChangeType_ConfChangeAddNode, 1))
	if got := slices.Sorted(slices.Values(cs.GetVoters())); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
		t.Fatalf("voters after adding node 1 back %v, want [1 2 3 4]", got)
	}
	writesGoOn()
	close(stop)
	if err := <-wdone; err != nil {
		t.Fatal(err)
	}
	// Its log starts empty, and no log holds the entries up to the
	// bootstrap point: it can only have caught up from a snapshot.
	if snapshotsSent() <= sentBefore {
		t.Fatal("node 1's new replica caught up without a snapshot")
	}

	// Every node ends with the same data; node 1 has every write.
	last, err := c.Put(ctx, g, "last", "x")
	if err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(g, last)
	want := scanShard(t, c, 2, g)
	for _, id := range c.IDs() {
		if got := scanShard(t, c, id, g); !slices.Equal(got, want) {
			t.Fatalf("node %d holds %d records of group %d, node 2 %d:\n%v\n%v", id, len(got), g, len(want), got, want)
		}
	}
	waitHas(t, c, 1, g, "a", 50)
	mu.Lock()
	n := written
	mu.Unlock()
	for i := 0; i < n; i += 2 {
		if v, ok := c.Node(1).SMs[g].Get(fmt.Sprintf("w%05d", i)); !ok || v != fmt.Sprint(i) {
			t.Fatalf("node 1 lacks write w%05d of group %d: %q, %v", i, g, v, ok)
		}
	}
}
