package shard_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"lambdadb/internal/clustertest"
	"lambdadb/internal/session"
	"lambdadb/shard"
)

func opCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// writer puts unique keys through random running members and records the
// acknowledged ones.
type writer struct {
	mu    sync.Mutex
	acked map[string]uint64
	fails int
}

func (w *writer) run(c *clustertest.Cluster, id int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	rng := rand.New(rand.NewPCG(uint64(id), 1))
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		ms := c.Running()
		m := ms[rng.IntN(len(ms))]
		n := m.Node()
		if n == nil {
			continue
		}
		k := fmt.Sprintf("c%d/%06d", id, i)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		r, err := n.Put(ctx, k, valueFor(k), shard.Cond{}, nil)
		cancel()
		w.mu.Lock()
		if err == nil {
			w.acked[k] = r.Version
		} else {
			w.fails++
		}
		w.mu.Unlock()
	}
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// checkAll reads every acknowledged key linearizably through every running
// member.
func checkAll(t *testing.T, c *clustertest.Cluster, acked map[string]uint64) {
	t.Helper()
	for _, m := range c.Running() {
		for k, v := range acked {
			g, err := m.Node().Get(opCtx(t, 10*time.Second), k, shard.ReadOptions{})
			if err != nil || !g.Found || g.Record.Version != v || string(g.Record.Value) != string(valueFor(k)) {
				t.Fatalf("%s: acknowledged %s (version %d): found=%v version=%d err=%v",
					m.ID, k, v, g.Found, g.Record.Version, err)
			}
		}
	}
}

func TestClusterLeaderKilled(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 8})
	w := &writer{acked: map[string]uint64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go w.run(c, i, stop, &wg)
	}
	c.Eventually(20*time.Second, "some writes", func() bool { return w.count() > 200 })
	victim := c.MostLeader()
	c.Kill(victim.ID)
	before := w.count()
	// Writes resume on the survivors.
	c.Eventually(30*time.Second, "writes resume after the kill", func() bool { return w.count() > before+200 })
	c.Restart(victim.ID)
	c.Eventually(30*time.Second, "writes continue after the restart", func() bool { return w.count() > before+400 })
	close(stop)
	wg.Wait()
	c.WaitLeaders(30 * time.Second)
	// The restarted member catches up and every acknowledged write is
	// readable through every member.
	checkAll(t, c, w.acked)
	t.Logf("acknowledged %d writes, %d failed", len(w.acked), w.fails)
}

func TestClusterMinorityPartition(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 4})
	// Find a key led by some member, then cut that member off.
	key, leader := "", (*clustertest.Member)(nil)
	for i := 0; leader == nil; i++ {
		key = fmt.Sprintf("p%d", i)
		leader = c.LeaderOf(shard.For(key, 3))
	}
	if _, err := leader.Node().Put(opCtx(t, 5*time.Second), key, []byte("before"), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	c.Faults.Isolate(leader.ID, c.IDs())
	_, err := leader.Node().Put(opCtx(t, 3*time.Second), key, []byte("minority"), shard.Cond{}, nil)
	if err == nil {
		t.Fatal("the isolated minority committed a write")
	}
	var majority *clustertest.Member
	for _, m := range c.Members {
		if m != leader {
			majority = m
			break
		}
	}
	w, err := majority.Node().Put(opCtx(t, 15*time.Second), key, []byte("majority"), shard.Cond{}, nil)
	if err != nil {
		t.Fatalf("majority write: %v", err)
	}
	// A linearizable read on the isolated member cannot succeed.
	if _, err := leader.Node().Get(opCtx(t, 2*time.Second), key, shard.ReadOptions{}); err == nil {
		t.Fatal("isolated member served a linearizable read")
	}
	c.Faults.Heal()
	// After healing, the formerly isolated member converges.
	c.Eventually(20*time.Second, "the healed member catches up", func() bool {
		g, err := leader.Node().Get(context.Background(), key, shard.ReadOptions{Consistency: shard.Stale})
		return err == nil && g.Found && g.Record.Version == w.Version && string(g.Record.Value) == "majority"
	})
}

func TestClusterSnapshotCatchUp(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 writes")
	}
	c := clustertest.Start(t, clustertest.Options{Shards: 2, LogRetainEntries: 256})
	// Take down a member that leads nothing, so the writes need no election.
	var follower *clustertest.Member
	c.Eventually(20*time.Second, "a member leading no shard", func() bool {
		for _, m := range c.Members {
			if !m.Node().Leads(0) && !m.Node().Leads(1) {
				follower = m
				return true
			}
		}
		return false
	})
	c.Kill(follower.ID)
	live := c.Running()
	acked := map[string]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for wkr := 0; wkr < 32; wkr++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := wkr; i < 10000; i += 32 {
				k := fmt.Sprintf("s%05d", i)
				// A write may fail while leadership moves (the machine is
				// busy and two replicas are left); the key's value is fixed,
				// so retrying until one attempt is acknowledged is safe.
				var r shard.WriteResult
				var err error
				for try := 0; try < 20; try++ {
					r, err = live[(i+try)%len(live)].Node().Put(opCtx(t, 10*time.Second), k, valueFor(k), shard.Cond{}, nil)
					if err == nil {
						break
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[k] = r.Version
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Wait until the leaders have snapshotted and truncated their logs past
	// what the follower holds.
	c.Eventually(30*time.Second, "the leaders snapshot", func() bool {
		for s := 0; s < 2; s++ {
			l := c.LeaderOf(s)
			if l == nil || l.Node().RaftStats(s)["last_snapshot_index"] == "0" {
				return false
			}
		}
		return true
	})
	c.Restart(follower.ID)
	m := c.Member(follower.ID)
	c.Eventually(60*time.Second, "the follower catches up", func() bool {
		for s := 0; s < 2; s++ {
			l := c.LeaderOf(s)
			if l == nil || m.Node().Applied(s) < l.Node().Applied(s) {
				return false
			}
		}
		return true
	})
	for s := 0; s < 2; s++ {
		if st := m.Node().RaftStats(s); st["last_snapshot_index"] == "0" {
			t.Fatalf("shard %d caught up without a snapshot: %v", s, st)
		}
	}
	for k, v := range acked {
		g, err := m.Node().Get(context.Background(), k, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil || !g.Found || g.Record.Version != v {
			t.Fatalf("caught-up follower lacks %s: %+v %v", k, g, err)
		}
	}
}

// A session token from a write through one member gives read-your-writes
// through every other member, even when replication to them is slowed.
func TestClusterSessionReadYourWrites(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 4})
	for _, from := range c.IDs() {
		for _, to := range c.IDs() {
			if from != to {
				c.Faults.Delay(from, to, 2*time.Millisecond)
			}
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 150; i++ {
		k := fmt.Sprintf("ryw%d", i%20)
		val := fmt.Sprintf("v%d", i)
		a := c.Members[rng.IntN(3)]
		w, err := a.Node().Put(opCtx(t, 10*time.Second), k, []byte(val), shard.Cond{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range c.Members {
			g, err := b.Node().Get(opCtx(t, 10*time.Second), k, shard.ReadOptions{Consistency: shard.Session, Session: w.Session})
			if err != nil {
				t.Fatal(err)
			}
			if !g.Found || g.Record.Version < w.Version {
				t.Fatalf("write %s=%s at %d through %s; session read through %s saw version %d", k, val, w.Version, a.ID, b.ID, g.Record.Version)
			}
		}
	}
}

// Reads that carry their session never go back in time, whichever member
// serves them.
func TestClusterMonotonicReads(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 2})
	c.Faults.Delay("n1", "n3", 3*time.Millisecond)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := c.Members[i%3]
			_, _ = m.Node().Put(opCtx(t, 5*time.Second), "mono", []byte(fmt.Sprint(i)), shard.Cond{}, nil)
		}
	}()
	var tok session.Token
	var last uint64
	for i := 0; i < 300; i++ {
		m := c.Members[i%3]
		g, err := m.Node().Get(opCtx(t, 10*time.Second), "mono", shard.ReadOptions{Consistency: shard.Session, Session: tok})
		if err != nil {
			t.Fatal(err)
		}
		if g.Record.Version < last {
			t.Fatalf("read %d through %s went back from version %d to %d", i, m.ID, last, g.Record.Version)
		}
		last, tok = g.Record.Version, g.Session
	}
	close(stop)
	wg.Wait()
}

func TestClusterLeadersSpread(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 8})
	c.Eventually(30*time.Second, "each member leads two or three shards", func() bool {
		for _, m := range c.Members {
			k := 0
			for s := 0; s < 8; s++ {
				if m.Node().Leads(s) {
					k++
				}
			}
			if k != 2 && k != 3 {
				return false
			}
		}
		return true
	})
	// Leadership may still be moving to preferred leaders; the view settles
	// on every node up and every shard led, with three replicas each.
	var st shard.ClusterStatus
	c.Eventually(30*time.Second, "the cluster view shows every node up and every shard led", func() bool {
		st = c.Members[0].Node().Cluster()
		for _, n := range st.Nodes {
			if !n.Up {
				return false
			}
		}
		for _, s := range st.Shards {
			if s.Leader == "" {
				return false
			}
		}
		return len(st.Nodes) == 3 && len(st.Shards) == 8
	})
	for _, s := range st.Shards {
		if len(s.Replicas) != 3 {
			t.Fatalf("shard view %+v", s)
		}
		for _, r := range s.Replicas {
			if r.State == "unknown" {
				t.Fatalf("replica state unknown in %+v", s)
			}
		}
	}
}

// A replica too far behind a session token hands the read to the leader
// rather than making the client wait: with Raft traffic from the leader to
// one follower cut (internal RPC still flows), a session read through that
// follower still sees the write.
func TestClusterSessionReadForwardsWhenBehind(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Shards: 1})
	leader := c.LeaderOf(0)
	var follower *clustertest.Member
	for _, m := range c.Members {
		if m != leader {
			follower = m
			break
		}
	}
	c.Faults.DropRaft(leader.ID, follower.ID)
	for i := 0; i < 3; i++ {
		k := fmt.Sprintf("fwd%d", i)
		w, err := leader.Node().Put(opCtx(t, 10*time.Second), k, []byte("v"), shard.Cond{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if follower.Node().Applied(0) >= w.Version {
			t.Fatalf("follower already applied %d; the delay did not hold it back", w.Version)
		}
		g, err := follower.Node().Get(opCtx(t, 10*time.Second), k, shard.ReadOptions{Consistency: shard.Session, Session: w.Session})
		if err != nil || !g.Found || g.Record.Version != w.Version {
			t.Fatalf("session read through the lagging follower: %+v %v", g, err)
		}
		// The same holds for a linearizable read, which must not wait for
		// the follower to catch up either.
		lin, err := follower.Node().Get(opCtx(t, 3*time.Second), k, shard.ReadOptions{})
		if err != nil || !lin.Found || lin.Record.Version != w.Version {
			t.Fatalf("linearizable read through the lagging follower: %+v %v", lin, err)
		}
		if !g.Session.Covers(w.Session) {
			t.Fatalf("returned token %v does not cover %v", g.Session, w.Session)
		}
	}
}

// A slow disk on one member (random latency, mean 3 ms, on every write,
// sync and create of its filesystem) slows that member but loses nothing:
// writes keep flowing through every member, the slow member is killed and
// restarted, and every acknowledged write is read back through every member.
func TestClusterSlowDisk(t *testing.T) {
	slow := "n1" // preferred leader of a third of the shards
	c := clustertest.Start(t, clustertest.Options{Shards: 8,
		WrapFS: func(id string, fs vfs.FS) vfs.FS {
			if id != slow {
				return fs
			}
			return errorfs.Wrap(fs, errorfs.RandomLatency(errorfs.Writes, 3*time.Millisecond, 1, 0))
		}})
	w := &writer{acked: map[string]uint64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go w.run(c, i, stop, &wg)
	}
	c.Eventually(30*time.Second, "writes on a cluster with a slow disk", func() bool { return w.count() > 300 })
	c.Kill(slow)
	before := w.count()
	c.Eventually(30*time.Second, "writes after the slow member died", func() bool { return w.count() > before+200 })
	c.Restart(slow)
	before = w.count()
	c.Eventually(30*time.Second, "writes after the slow member returned", func() bool { return w.count() > before+200 })
	close(stop)
	wg.Wait()
	c.WaitLeaders(30 * time.Second)
	checkAll(t, c, w.acked)
	t.Logf("acknowledged %d writes, %d failed", len(w.acked), w.fails)
}
