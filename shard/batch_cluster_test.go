package shard_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/shard"
)

// hostsShard reports whether member m holds a replica of shard s.
func hostsShard(m *clustertest.Member, s int) bool { return m.Node().RaftStats(s) != nil }

// A batch sent to a follower, or to a node without a replica of the shard,
// is forwarded to the leader and applied once; its system records reach
// every replica and every node reads them, forwarding as Get does.
func TestClusterBatchForwarded(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 4, Shards: 4})
	const tag = "{fw}"
	s := shard.For(tag, 4)
	leader := c.LeaderOf(s)
	var follower, outsider *clustertest.Member
	for _, m := range c.Members {
		switch {
		case !hostsShard(m, s):
			outsider = m
		case m != leader:
			follower = m
		}
	}
	if leader == nil || follower == nil || outsider == nil {
		t.Fatalf("shard %d: leader %v follower %v outsider %v", s, leader, follower, outsider)
	}

	r1, err := follower.Node().Batch(opCtx(t, 10*time.Second), []shard.Op{
		userPut(tag+"a", "user-a"),
		sysPut(tag+"m", "sys-m"),
		{Space: shard.SystemSpace, Key: tag + "n", Value: []byte("sys-n"), Cond: shard.Cond{IfNoneMatch: true}},
	}, nil)
	if err != nil || r1.Shard != s || r1.Index == 0 || len(r1.Deleted) != 3 {
		t.Fatalf("batch through the follower: %+v %v", r1, err)
	}
	r2, err := outsider.Node().Batch(opCtx(t, 10*time.Second), []shard.Op{
		{Space: shard.SystemSpace, Key: tag + "o", Value: []byte("sys-o"), Cond: shard.Cond{IfNoneMatch: true}},
		{Key: tag + "a", Delete: true, Cond: shard.Cond{IfMatch: &r1.Index}},
	}, r1.Session)
	if err != nil || r2.Index <= r1.Index || !slices.Equal(r2.Deleted, []bool{false, true}) || r2.Session.Index(s) != r2.Index {
		t.Fatalf("batch through a node without a replica: %+v %v", r2, err)
	}
	// A failed condition travels back through the forwarding.
	_, err = outsider.Node().Batch(opCtx(t, 10*time.Second), []shard.Op{
		sysPut(tag+"p", "x"),
		{Space: shard.SystemSpace, Key: tag + "m", Value: []byte("x"), Cond: shard.Cond{IfNoneMatch: true}},
	}, nil)
	if !errors.Is(err, shard.ErrPrecondition) || !strings.Contains(err.Error(), tag+"m") {
		t.Fatalf("forwarded failing batch: %v", err)
	}

	want := map[string]string{tag + "m": "sys-m", tag + "n": "sys-n", tag + "o": "sys-o"}
	version := map[string]uint64{tag + "m": r1.Index, tag + "n": r1.Index, tag + "o": r2.Index}
	for _, m := range c.Members {
		n := m.Node()
		for k, v := range want {
			g, err := n.GetIn(opCtx(t, 10*time.Second), shard.SystemSpace, k, shard.ReadOptions{})
			if err != nil || !g.Found || string(g.Record.Value) != v || g.Record.Version != version[k] {
				t.Fatalf("%s: GetIn(system, %s) = %+v %v", m.ID, k, g, err)
			}
			if g, err := n.Get(opCtx(t, 10*time.Second), k, shard.ReadOptions{}); err != nil || g.Found {
				t.Fatalf("%s: system key %s visible to Get: %+v %v", m.ID, k, g, err)
			}
		}
		if g, err := n.Get(opCtx(t, 10*time.Second), tag+"a", shard.ReadOptions{}); err != nil || g.Found {
			t.Fatalf("%s: deleted user key: %+v %v", m.ID, g, err)
		}
		sc, err := n.ScanIn(opCtx(t, 10*time.Second), shard.SystemSpace, shard.ScanRequest{Prefix: tag}, shard.ReadOptions{})
		if err != nil || len(sc.Items) != 3 || sc.More {
			t.Fatalf("%s: system scan = %+v %v", m.ID, sc, err)
		}
		us, err := n.Scan(opCtx(t, 10*time.Second), shard.ScanRequest{Prefix: tag}, shard.ReadOptions{})
		if err != nil || len(us.Items) != 0 {
			t.Fatalf("%s: user scan = %+v %v", m.ID, us, err)
		}
	}
	// Every replica holds the records itself (a stale read is local).
	for _, m := range c.Members {
		if !hostsShard(m, s) {
			continue
		}
		c.Eventually(10*time.Second, m.ID+" applies the batches", func() bool { return m.Node().Applied(s) >= r2.Index })
		g, err := m.Node().GetIn(context.Background(), shard.SystemSpace, tag+"o", shard.ReadOptions{Consistency: shard.Stale})
		if err != nil || !g.Found || g.Record.Version != r2.Index {
			t.Fatalf("%s: local system record: %+v %v", m.ID, g, err)
		}
	}
	// Route names the shard, its leader and its three replicas on every node.
	for _, m := range c.Members {
		c.Eventually(10*time.Second, m.ID+" routes to the leader", func() bool {
			rs, l, reps := m.Node().Route(tag + "x")
			cur := c.LeaderOf(s)
			return rs == s && cur != nil && l == (shard.Peer{ID: cur.ID, Addr: cur.Addr}) && len(reps) == 3 &&
				!slices.ContainsFunc(reps, func(p shard.Peer) bool { return p.ID == outsider.ID })
		})
	}
}

// A follower restored from a snapshot holds the system records.
func TestClusterBatchSnapshotCatchUp(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 1, LogRetainEntries: 32})
	var follower *clustertest.Member
	c.Eventually(20*time.Second, "a member not leading", func() bool {
		for _, m := range c.Members {
			if !m.Node().Leads(0) {
				follower = m
				return true
			}
		}
		return false
	})
	killedAt := follower.Node().Applied(0)
	c.Kill(follower.ID)
	live := c.Running()
	version := map[string]uint64{}
	for i := 0; i < 400; i++ {
		tag := fmt.Sprintf("{b%03d}", i)
		var r shard.BatchResult
		var err error
		// Each batch is idempotent (fixed keys and values): retry it until
		// one attempt is acknowledged.
		for try := 0; try < 20; try++ {
			r, err = live[(i+try)%len(live)].Node().Batch(opCtx(t, 10*time.Second),
				[]shard.Op{userPut(tag+"u", tag), sysPut(tag+"s", tag)}, nil)
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		version[tag] = r.Index
	}
	// The leader's log no longer reaches back to what the follower has.
	c.Eventually(30*time.Second, "the leader snapshots and truncates", func() bool {
		l := c.LeaderOf(0)
		return l != nil && l.Node().RaftStats(0)["last_snapshot_index"] != "0" && l.Node().LogFirstIndex(0) > killedAt+1
	})
	c.Restart(follower.ID)
	m := c.Member(follower.ID)
	c.Eventually(60*time.Second, "the follower catches up", func() bool {
		l := c.LeaderOf(0)
		return l != nil && m.Node().Applied(0) >= l.Node().Applied(0)
	})
	if st := m.Node().RaftStats(0); st["last_snapshot_index"] == "0" {
		t.Fatalf("caught up without a snapshot: %v", st)
	}
	ro := shard.ReadOptions{Consistency: shard.Stale}
	for tag, v := range version {
		g, err := m.Node().GetIn(context.Background(), shard.SystemSpace, tag+"s", ro)
		if err != nil || !g.Found || g.Record.Version != v || string(g.Record.Value) != tag {
			t.Fatalf("restored follower lacks system record %ss: %+v %v", tag, g, err)
		}
	}
	sc, err := m.Node().ScanIn(context.Background(), shard.SystemSpace, shard.ScanRequest{Limit: 1000}, ro)
	items := 0
	for _, it := range sc.Items {
		if !strings.HasPrefix(it.Key, "quota/") { // stored-byte totals (usage.go)
			items++
		}
	}
	if err != nil || items != len(version) {
		t.Fatalf("system scan of the restored follower: %d items, %v", items, err)
	}
}

// batchWriter sends batches of four ops (two per space, some conditional)
// through random running members and records which were acknowledged.
type batchWriter struct {
	mu      sync.Mutex
	acked   map[string]uint64 // tag → batch index
	unknown []string          // tags of failed batches: applied or not
}

func batchOps(tag string) []shard.Op {
	return []shard.Op{
		{Key: tag + "/a", Value: []byte(tag), Cond: shard.Cond{IfNoneMatch: true}},
		{Key: tag + "/b", Value: []byte(tag)},
		{Space: shard.SystemSpace, Key: tag + "/s", Value: []byte(tag)},
		{Space: shard.SystemSpace, Key: tag + "/t", Value: []byte(tag), Cond: shard.Cond{IfNoneMatch: true}},
	}
}

func (w *batchWriter) run(c *clustertest.Cluster, id int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	rng := rand.New(rand.NewPCG(uint64(id), 2))
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		ms := c.Running()
		n := ms[rng.IntN(len(ms))].Node()
		if n == nil {
			continue
		}
		tag := fmt.Sprintf("{w%d-%d}", id, i)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		r, err := n.Batch(ctx, batchOps(tag), nil)
		cancel()
		w.mu.Lock()
		if err == nil {
			w.acked[tag] = r.Index
		} else {
			w.unknown = append(w.unknown, tag)
		}
		w.mu.Unlock()
	}
}

func (w *batchWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// scanSpace returns every record of space sp under prefix through n.
func scanSpace(t *testing.T, n *shard.Node, sp shard.Space, prefix string) map[string]shard.Record {
	t.Helper()
	out := map[string]shard.Record{}
	req := shard.ScanRequest{Prefix: prefix, Limit: shard.MaxScanLimit}
	for {
		r, err := n.ScanIn(opCtx(t, 20*time.Second), sp, req, shard.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range r.Items {
			out[it.Key] = it
		}
		if !r.More {
			return out
		}
		req.Start = r.Next
	}
}

// While batches run, the leader of the most shards is killed and
// restarted: every acknowledged batch is then wholly present through every
// member, at its index, and every other batch is wholly present or absent.
func TestClusterBatchLeaderKilled(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 8})
	w := &batchWriter{acked: map[string]uint64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go w.run(c, i, stop, &wg)
	}
	c.Eventually(20*time.Second, "some batches", func() bool { return w.count() > 150 })
	victim := c.MostLeader()
	c.Kill(victim.ID)
	before := w.count()
	c.Eventually(30*time.Second, "batches resume after the kill", func() bool { return w.count() > before+150 })
	c.Restart(victim.ID)
	c.Eventually(30*time.Second, "batches continue after the restart", func() bool { return w.count() > before+300 })
	close(stop)
	wg.Wait()
	c.WaitLeaders(30 * time.Second)

	for _, m := range c.Running() {
		recs := scanSpace(t, m.Node(), shard.UserSpace, "{w")
		for k, v := range scanSpace(t, m.Node(), shard.SystemSpace, "{w") {
			recs["sys:"+k] = v
		}
		// versions returns the version of each of tag's four records
		// through m (0 for an absent one).
		versions := func(tag string) []uint64 {
			var out []uint64
			for i, op := range batchOps(tag) {
				k := op.Key
				if op.Space == shard.SystemSpace {
					k = "sys:" + k
				}
				r, ok := recs[k]
				if ok && !bytes.Equal(r.Value, []byte(tag)) {
					t.Fatalf("%s: op %d of %s holds %q", m.ID, i, tag, r.Value)
				}
				out = append(out, r.Version)
				delete(recs, k)
			}
			return out
		}
		for tag, idx := range w.acked {
			if got := versions(tag); !slices.Equal(got, []uint64{idx, idx, idx, idx}) {
				t.Fatalf("%s: acknowledged batch %s at %d has versions %v", m.ID, tag, idx, got)
			}
		}
		applied := 0
		for _, tag := range w.unknown {
			got := versions(tag)
			if slices.Equal(got, []uint64{0, 0, 0, 0}) {
				continue
			}
			if got[0] == 0 || !slices.Equal(got, []uint64{got[0], got[0], got[0], got[0]}) {
				t.Fatalf("%s: batch %s is partially applied: versions %v", m.ID, tag, got)
			}
			applied++
		}
		for k := range recs {
			t.Fatalf("%s: %d records of no batch, such as %q", m.ID, len(recs), k)
		}
		t.Logf("%s: %d acknowledged batches whole, %d of %d failed batches applied whole", m.ID, len(w.acked), applied, len(w.unknown))
	}
}

// StatusInfo bytes set on one node show up in the others' Peers within a
// few probes, and vanish when the node goes down.
func TestClusterPeersStatusInfo(t *testing.T) {
	var info atomic.Pointer[[]byte]
	set := func(b []byte) { info.Store(&b) }
	set([]byte("hello"))
	c := clustertest.Start(t, clustertest.Options{Shards: 2, Configure: func(id string, cfg *shard.Config) {
		if id == "n1" {
			cfg.StatusInfo = func() []byte { return *info.Load() }
		}
	}})
	n2 := c.Member("n2").Node()
	peerInfo := func(id string) (shard.PeerState, bool) {
		for _, p := range n2.Peers() {
			if p.ID == id {
				return p, true
			}
		}
		return shard.PeerState{}, false
	}
	wait := func(what string, want []byte, up bool) {
		t.Helper()
		c.Eventually(5*time.Second, what, func() bool {
			p, ok := peerInfo("n1")
			return ok && p.Up == up && bytes.Equal(p.Info, want) && (p.Info == nil) == (want == nil)
		})
	}
	wait("n2 sees n1's info", []byte("hello"), true)
	set([]byte("functions=7"))
	wait("n2 sees n1's new info", []byte("functions=7"), true)
	set(make([]byte, shard.MaxStatusInfoBytes+1))
	wait("oversize info is dropped", nil, true)
	set(bytes.Repeat([]byte("x"), shard.MaxStatusInfoBytes))
	wait("info at the limit arrives", bytes.Repeat([]byte("x"), shard.MaxStatusInfoBytes), true)

	ps := n2.Peers()
	if len(ps) != 3 {
		t.Fatalf("Peers = %+v", ps)
	}
	for i, p := range ps {
		if p.Peer != (shard.Peer{ID: c.Members[i].ID, Addr: c.Members[i].Addr}) || !p.Up {
			t.Fatalf("Peers[%d] = %+v", i, p)
		}
		if p.ID != "n1" && p.Info != nil {
			t.Fatalf("%s reports info %q without a StatusInfo", p.ID, p.Info)
		}
	}
	if p := c.Member("n1").Node().Peers()[0]; !p.Up || len(p.Info) != shard.MaxStatusInfoBytes {
		t.Fatalf("n1's own entry: up %v, %d bytes of info", p.Up, len(p.Info))
	}

	c.Kill("n1")
	wait("n2 sees n1 down", nil, false)
}
