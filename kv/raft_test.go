package kv

import (
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// kvFSM is the smallest state machine over one shard: each command "k=v"
// puts v under k at the entry's index.
type kvFSM struct {
	e     *Engine
	shard int
}

func (f *kvFSM) Apply(l *raft.Log) interface{} {
	a := f.e.NewApply(f.shard)
	defer a.Close()
	k, v, _ := cut(string(l.Data))
	if err := a.Put([]byte(k), []byte(v), l.Index); err != nil {
		return err
	}
	return a.Commit(l.Index)
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	// The snapshot lets Raft discard log entries: make the applied state
	// they produced durable first.
	if err := f.e.SyncWAL(); err != nil {
		return nil, err
	}
	s, err := f.e.SnapshotShard(f.shard)
	if err != nil {
		return nil, err
	}
	return &kvFSMSnapshot{s}, nil
}

func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.e.RestoreShard(f.shard, rc)
}

type kvFSMSnapshot struct{ s *ShardSnapshot }

func (s *kvFSMSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *kvFSMSnapshot) Release() { s.s.Close() }

type raftNode struct {
	r        *raft.Raft
	leaderCh chan bool
	fsm      *kvFSM
}

func startRaft(t *testing.T, e *Engine, fs vfs.FS, shard int, bootstrap bool) *raftNode {
	t.Helper()
	leaderCh := make(chan bool, 16)
	cfg := raft.DefaultConfig()
	cfg.LocalID = "n1"
	cfg.HeartbeatTimeout = 50 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.SnapshotThreshold = 1 << 30 // snapshots only on request
	cfg.SnapshotInterval = time.Hour
	cfg.TrailingLogs = 5
	cfg.NotifyCh = leaderCh
	cfg.LogOutput = io.Discard

	logs := logStore(t, e, shard)
	stable := stableStore(t, e, shard)
	snaps := newSnapStore(t, fs, fmt.Sprintf("snaps/%d", shard), 2)
	addr, trans := raft.NewInmemTransport("")
	if bootstrap {
		conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: cfg.LocalID, Address: addr}}}
		if err := raft.BootstrapCluster(cfg, logs, stable, snaps, trans, conf); err != nil {
			t.Fatalf("BootstrapCluster: %v", err)
		}
	} else {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil || !has {
			t.Fatalf("HasExistingState = %v, %v; want true", has, err)
		}
	}
	fsm := &kvFSM{e: e, shard: shard}
	r, err := raft.NewRaft(cfg, fsm, logs, stable, snaps, trans)
	if err != nil {
		t.Fatalf("NewRaft: %v", err)
	}
	n := &raftNode{r: r, leaderCh: leaderCh, fsm: fsm}
	select {
	case <-leaderCh:
	case <-time.After(10 * time.Second):
		r.Shutdown()
		t.Fatal("no leader within 10s")
	}
	return n
}

func (n *raftNode) apply(t *testing.T, cmd string) uint64 {
	t.Helper()
	f := n.r.Apply([]byte(cmd), 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("Apply(%q): %v", cmd, err)
	}
	if err, _ := f.Response().(error); err != nil {
		t.Fatalf("FSM Apply(%q): %v", cmd, err)
	}
	return f.Index()
}

// TestRaftSingleNode runs hashicorp/raft on the stores: bootstrap (which
// relies on the "not found" text), applies, a snapshot with log compaction,
// and a restart that restores the snapshot and replays the log tail.
func TestRaftSingleNode(t *testing.T) {
	fs := vfs.NewMem()
	e := openEngine(t, fs, "db")
	defer e.Close()
	const shard = 11

	n := startRaft(t, e, fs, shard, true)
	var last uint64
	index := map[int]uint64{} // Raft index that wrote k<i>
	for i := 0; i < 30; i++ {
		last = n.apply(t, fmt.Sprintf("k%02d=v%d", i, i))
		index[i] = last
	}
	if err := n.r.Snapshot().Error(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	ls := logStore(t, e, shard)
	first, _ := ls.FirstIndex()
	if first <= 1 {
		t.Fatalf("log not compacted after snapshot: first index %d", first)
	}
	for i := 30; i < 40; i++ {
		last = n.apply(t, fmt.Sprintf("k%02d=v%d", i, i))
		index[i] = last
	}
	// An overwrite after the snapshot.
	last = n.apply(t, "k00=new")
	if err := n.r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	wantApplied(t, e, shard, last)

	// Wipe the shard's state machine: the restart must rebuild it from the
	// snapshot and the log.
	if err := e.RestoreShard(shard, bytesReader(buildSnapshot())); err != nil {
		t.Fatal(err)
	}
	wantApplied(t, e, shard, 0)

	n = startRaft(t, e, fs, shard, false)
	defer n.r.Shutdown()
	// A barrier waits until every entry of the log has been applied.
	if err := n.r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 40; i++ {
		wantRecord(t, e, shard, fmt.Sprintf("k%02d", i), "v"+strconv.Itoa(i), index[i])
	}
	rec, ok, err := e.Get(shard, []byte("k00"))
	if err != nil || !ok || string(rec.Value) != "new" || rec.Version != last {
		t.Fatalf("k00 = %q@%d %v %v; want new@%d", rec.Value, rec.Version, ok, err, last)
	}
	if a, _ := e.Applied(shard); a < last {
		t.Fatalf("applied %d after restart; want >= %d", a, last)
	}
}
