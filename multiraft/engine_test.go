package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"lambdadb/multiraft"
	"lambdadb/multiraft/rafttest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// counter reads one of a node's metrics.
func counter(t *testing.T, n *rafttest.Node, name string) float64 {
	t.Helper()
	mfs, err := n.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		if h := m.GetHistogram(); h != nil {
			return h.GetSampleSum()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestSingleNodeManyGroups(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 1, Groups: 32})
	ctx := ctxT(t, 30*time.Second)
	for g := uint64(0); g < 32; g++ {
		idx, err := c.Put(ctx, g, "k", fmt.Sprint(g))
		if err != nil {
			t.Fatal(err)
		}
		if idx <= 5 {
			t.Fatalf("group %d: index %d is not past the bootstrap point", g, idx)
		}
	}
	n := c.Node(1)
	for g := range 32 {
		if v, ok := n.SMs[g].Get("k"); !ok || v != fmt.Sprint(g) {
			t.Fatalf("group %d: k = %q, %v", g, v, ok)
		}
	}
	// ReadIndex on a one-node group answers at once with an index that
	// covers the write.
	idx, err := n.Engine.ReadIndex(ctx, 3)
	if err != nil || idx < 6 {
		t.Fatalf("ReadIndex = %d, %v", idx, err)
	}
}

func TestReplicatesAndConverges(t *testing.T) {
	const groups = 16
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: groups})
	ctx := ctxT(t, 60*time.Second)
	var wg sync.WaitGroup
	last := make([]uint64, groups)
	errs := make(chan error, groups)
	for g := uint64(0); g < groups; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				idx, err := c.Put(ctx, g, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d-%d", g, i))
				if err != nil {
					errs <- err
					return
				}
				last[g] = idx
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for g := uint64(0); g < groups; g++ {
		c.WaitApplied(g, last[g])
		for _, id := range c.IDs() {
			for i := range 20 {
				if v, ok := c.Node(id).SMs[g].Get(fmt.Sprintf("k%d", i)); !ok || v != fmt.Sprintf("v%d-%d", g, i) {
					t.Fatalf("node %d group %d k%d = %q, %v", id, g, i, v, ok)
				}
			}
		}
	}
	// Followers refuse proposals and reads with the leader's id.
	lead := c.Leader(0)
	for _, id := range c.IDs() {
		if id == lead {
			continue
		}
		_, _, err := c.Node(id).Engine.Propose(ctx, 0, rafttest.Put("x", "y"))
		var nl *multiraft.NotLeaderError
		if !errors.As(err, &nl) || nl.Leader != lead {
			t.Fatalf("propose on follower %d: %v (leader %d)", id, err, lead)
		}
		if _, err := c.Node(id).Engine.ReadIndex(ctx, 0); !errors.Is(err, multiraft.ErrNotLeader) {
			t.Fatalf("read index on follower: %v", err)
		}
	}
}

// TestOneSyncPerBatch: appends of many groups share log syncs.
func TestOneSyncPerBatch(t *testing.T) {
	const groups = 32
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 1, Groups: groups})
	ctx := ctxT(t, 60*time.Second)
	n := c.Node(1)
	before := counter(t, n, "lambdadb_multiraft_log_syncs_total")
	var wg sync.WaitGroup
	for g := uint64(0); g < groups; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				if _, err := c.Put(ctx, g, fmt.Sprint(i), "v"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	syncs := counter(t, n, "lambdadb_multiraft_log_syncs_total") - before
	t.Logf("%d proposals, %.0f syncs", groups*30, syncs)
	if syncs >= groups*30 {
		t.Fatalf("%.0f syncs for %d proposals: appends of different groups did not share a sync", syncs, groups*30)
	}
}

func TestLinearizableReadIndex(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 2})
	ctx := ctxT(t, 30*time.Second)
	for i := range 10 {
		idx, err := c.Put(ctx, 1, "k", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		lead := c.Node(c.Leader(1))
		ri, err := lead.Engine.ReadIndex(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ri < idx {
			t.Fatalf("read index %d is behind the acknowledged write at %d", ri, idx)
		}
	}
}

// TestLeaderFailover stops the leader of a group under writes: no
// acknowledged write is lost, and the stopped node catches up on restart.
func TestLeaderFailover(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 4})
	ctx := ctxT(t, 60*time.Second)
	acked := map[string]string{}
	var last uint64
	for i := range 20 {
		k := fmt.Sprintf("a%d", i)
		idx, err := c.Put(ctx, 2, k, "1")
		if err != nil {
			t.Fatal(err)
		}
		acked[k], last = "1", idx
	}
	old := c.Leader(2)
	c.Stop(old)
	for i := range 20 {
		k := fmt.Sprintf("b%d", i)
		idx, err := c.Put(ctx, 2, k, "2")
		if err != nil {
			t.Fatal(err)
		}
		acked[k], last = "2", idx
	}
	if lead := c.Leader(2); lead == old {
		t.Fatalf("stopped node %d still leads", old)
	}
	if err := c.Start(old); err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(2, last)
	for _, id := range c.IDs() {
		for k, v := range acked {
			if got, ok := c.Node(id).SMs[2].Get(k); !ok || got != v {
				t.Fatalf("node %d lost acknowledged %s=%s (got %q, %v)", id, k, v, got, ok)
			}
		}
	}
}

// TestPartitionedLeader: a leader cut off from the others steps down
// (CheckQuorum); what it could not commit is not acknowledged, and after
// healing every node converges on the majority's log.
func TestPartitionedLeader(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 1})
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.Put(ctx, 0, "before", "1"); err != nil {
		t.Fatal(err)
	}
	old := c.Leader(0)
	c.Net.Isolate(old, c.IDs()...)
	// A proposal on the isolated leader is never acknowledged.
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, _, err := c.Node(old).Engine.Propose(pctx, 0, rafttest.Put("lost", "x"))
	cancel()
	if err == nil {
		t.Fatal("an isolated leader acknowledged a write")
	}
	// The majority elects another leader and keeps writing.
	var idx uint64
	deadline := time.Now().Add(20 * time.Second)
	for {
		var lead *rafttest.Node
		for _, id := range c.IDs() {
			if st, _ := c.Node(id).Engine.Status(0); id != old && st.IsLeader() {
				lead = c.Node(id)
			}
		}
		if lead != nil {
			if idx, _, err = lead.Engine.Propose(ctx, 0, rafttest.Put("after", "2")); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the majority elected no leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Net.Heal()
	c.WaitApplied(0, idx)
	for _, id := range c.IDs() {
		sm := c.Node(id).SMs[0]
		if v, ok := sm.Get("after"); !ok || v != "2" {
			t.Fatalf("node %d: after = %q, %v", id, v, ok)
		}
		if v, ok := sm.Get("before"); !ok || v != "1" {
			t.Fatalf("node %d: before = %q, %v", id, v, ok)
		}
		if _, ok := sm.Get("lost"); ok {
			// It may have committed only if the old leader was not
			// really cut off; with the link cut it must not.
			t.Fatalf("node %d applied a write proposed on the isolated leader", id)
		}
	}
}

// TestSnapshotCatchUp: a follower that missed more than the retained log
// gets a snapshot streamed, installs it and then follows the log.
func TestSnapshotCatchUp(t *testing.T) {
	cfg := multiraft.Config{LogRetainEntries: 10}
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 2, Config: cfg})
	ctx := ctxT(t, 60*time.Second)
	lead := c.Leader(1)
	var lagger uint64
	for _, id := range c.IDs() {
		if id != lead {
			lagger = id
			break
		}
	}
	c.Stop(lagger)
	var last uint64
	for i := range 100 {
		idx, err := c.Put(ctx, 1, fmt.Sprintf("k%03d", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		last = idx
	}
	// The live nodes truncate their logs past what the lagger has.
	deadline := time.Now().Add(10 * time.Second)
	for {
		first, _ := c.Node(c.Leader(1)).Engine.FirstIndex(1)
		if first > 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader's log was not truncated (first index %d)", first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Start(lagger); err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(1, last)
	sent := 0.0
	for _, id := range c.IDs() {
		sent += counter(t, c.Node(id), "lambdadb_multiraft_snapshots_sent_total")
	}
	if sent == 0 {
		t.Fatal("the lagging follower caught up without a snapshot: the test did not test snapshots")
	}
	for i := range 100 {
		if v, ok := c.Node(lagger).SMs[1].Get(fmt.Sprintf("k%03d", i)); !ok || v != fmt.Sprint(i) {
			t.Fatalf("lagger: k%03d = %q, %v", i, v, ok)
		}
	}
	// And it follows the log from there.
	idx, err := c.Put(ctx, 1, "later", "x")
	if err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(1, idx)
	if v, ok := c.Node(lagger).SMs[1].Get("later"); !ok || v != "x" {
		t.Fatalf("lagger after snapshot: later = %q, %v", v, ok)
	}
}

// TestCrashLosesNoAcknowledgedWrite crashes nodes (unsynced writes
// dropped) under load: every acknowledged write is on every node after
// restart.
func TestCrashLosesNoAcknowledgedWrite(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 4, Crashable: true})
	ctx := ctxT(t, 90*time.Second)
	acked := make([]map[string]bool, 4)
	var mu sync.Mutex
	for g := range acked {
		acked[g] = map[string]bool{}
	}
	var last [4]uint64
	write := func(round int) {
		var wg sync.WaitGroup
		for g := uint64(0); g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 15 {
					k := fmt.Sprintf("r%d-%d", round, i)
					idx, err := c.Put(ctx, g, k, "v")
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					acked[g][k] = true
					last[g] = max(last[g], idx)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	for round := range 3 {
		done := make(chan struct{})
		go func() { write(round); close(done) }()
		time.Sleep(50 * time.Millisecond)
		victim := c.Leader(uint64(round % 4))
		c.Crash(victim)
		<-done
		if err := c.Start(victim); err != nil {
			t.Fatal(err)
		}
	}
	for g := uint64(0); g < 4; g++ {
		c.WaitApplied(g, last[g])
		for _, id := range c.IDs() {
			for k := range acked[g] {
				if _, ok := c.Node(id).SMs[g].Get(k); !ok {
					t.Fatalf("node %d group %d lost acknowledged %s", id, g, k)
				}
			}
		}
	}
}

func TestTransferLeader(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 1})
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.Put(ctx, 0, "k", "v"); err != nil {
		t.Fatal(err)
	}
	lead := c.Leader(0)
	to := lead%3 + 1
	deadline := time.Now().Add(10 * time.Second)
	for c.Leader(0) != to {
		if time.Now().After(deadline) {
			t.Fatalf("leadership did not move from %d to %d", lead, to)
		}
		if n := c.Node(c.Leader(0)); n != nil {
			_ = n.Engine.TransferLeader(0, to)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
