package rafttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/kv"
	"lambdadb/multiraft"
)

// Options configure a Cluster.
type Options struct {
	Nodes, Groups int
	// Config is the template for each node's engine config (NodeID,
	// Storage, Transport, FS and SnapshotDir are filled in). Tests use
	// short ticks: default TickInterval 10ms.
	Config multiraft.Config
	// Crashable gives each node a vfs.NewCrashableMem so Crash can drop
	// what was not synced.
	Crashable bool
	// Voters are the groups' initial voters; the other nodes start their
	// replicas empty (multiraft.GroupConfig.Join), to be added with
	// ChangeMembership. Default: every node.
	Voters []uint64
}

// Node is one member of a Cluster.
type Node struct {
	ID      uint64
	FS      vfs.FS
	Storage *kv.Engine
	Engine  *multiraft.Engine
	SMs     []*KV
	Reg     *prometheus.Registry
}

// Cluster runs Nodes engines, each replicating every group, on a Network.
type Cluster struct {
	t     testing.TB
	opts  Options
	Net   *Network
	mu    sync.Mutex
	nodes map[uint64]*Node
	fs    map[uint64]vfs.FS
}

// NewCluster starts a cluster; it stops when the test ends.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Config.TickInterval == 0 {
		opts.Config.TickInterval = 10 * time.Millisecond
	}
	c := &Cluster{t: t, opts: opts, Net: NewNetwork(), nodes: map[uint64]*Node{}, fs: map[uint64]vfs.FS{}}
	for id := uint64(1); id <= uint64(opts.Nodes); id++ {
		if opts.Crashable {
			c.fs[id] = vfs.NewCrashableMem()
		} else {
			c.fs[id] = vfs.NewMem()
		}
		if err := c.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, id := range c.IDs() {
			c.Stop(id)
		}
		c.Net.Close()
	})
	return c
}

// IDs lists the running nodes.
func (c *Cluster) IDs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint64
	for id := uint64(1); id <= uint64(c.opts.Nodes); id++ {
		if c.nodes[id] != nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// Node returns a running node, or nil.
func (c *Cluster) Node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// Start opens node id from its filesystem.
func (c *Cluster) Start(id uint64) error {
	fs := c.fs[id]
	st, err := kv.Open(kv.Config{Dir: "db", FS: fs})
	if err != nil {
		return err
	}
	cfg := c.opts.Config
	cfg.NodeID, cfg.Storage, cfg.FS, cfg.SnapshotDir = id, st, fs, "snap"
	cfg.Transport = c.Net.Transport(id)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	e, err := multiraft.Open(cfg)
	if err != nil {
		st.Close()
		return err
	}
	n := &Node{ID: id, FS: fs, Storage: st, Engine: e, Reg: reg}
	voters := c.opts.Voters
	if len(voters) == 0 {
		for v := uint64(1); v <= uint64(c.opts.Nodes); v++ {
			voters = append(voters, v)
		}
	}
	join := !slices.Contains(voters, id)
	for g := 0; g < c.opts.Groups; g++ {
		rs, err := st.RaftStorage(g)
		if err != nil {
			return err
		}
		sm, err := NewKV(st, g)
		if err != nil {
			return err
		}
		gc := multiraft.GroupConfig{ID: uint64(g), Storage: rs, SM: sm, Voters: voters, Join: join}
		if join {
			gc.Voters = nil
		}
		if err := e.AddGroup(gc); err != nil {
			return err
		}
		n.SMs = append(n.SMs, sm)
	}
	c.Net.Attach(id, e)
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return nil
}

// Stop closes node id cleanly.
func (c *Cluster) Stop(id uint64) {
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if n == nil {
		return
	}
	c.Net.Attach(id, nil)
	n.Engine.Close()
	n.Storage.Close()
}

// Crash stops node id and drops every write it had not synced (the
// cluster must be Crashable).
func (c *Cluster) Crash(id uint64) {
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if n == nil {
		return
	}
	c.Net.Down(id)
	cm := n.FS.(*vfs.MemFS)
	// The clone is taken while the node is still running: whatever was
	// not synced by then is gone, as after a power cut.
	c.fs[id] = cm.CrashClone(vfs.CrashCloneCfg{})
	n.Engine.Close()
	n.Storage.Close()
}

// RemoveReplica removes node id's replica of group g for good: the
// engine stops it (multiraft.Engine.RemoveGroup), then its shard is
// deleted from the node's storage (kv.Engine.DropShard). Node.SMs[g]
// keeps the stopped state machine until AddReplica.
func (c *Cluster) RemoveReplica(id, g uint64) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("rafttest: node %d is not running", id)
	}
	if err := n.Engine.RemoveGroup(g); err != nil {
		return err
	}
	return n.Storage.DropShard(int(g))
}

// AddReplica starts a fresh, empty replica of group g on node id
// (multiraft.GroupConfig.Join), to be added to the group with
// ChangeMembership, and makes it Node.SMs[g]. The node must hold no
// replica of g (RemoveReplica). It must not run while another goroutine
// reads the node's SMs.
func (c *Cluster) AddReplica(id, g uint64) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("rafttest: node %d is not running", id)
	}
	rs, err := n.Storage.RaftStorage(int(g))
	if err != nil {
		return err
	}
	sm, err := NewKV(n.Storage, int(g))
	if err != nil {
		return err
	}
	if err := n.Engine.AddGroup(multiraft.GroupConfig{ID: g, Storage: rs, SM: sm, Join: true}); err != nil {
		return err
	}
	c.mu.Lock()
	n.SMs[g] = sm
	c.mu.Unlock()
	return nil
}

// Leader waits until group g has a leader that every running node holding
// a replica of g agrees on, and returns it.
func (c *Cluster) Leader(g uint64) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var lead uint64
		agree := true
		for _, id := range c.IDs() {
			n := c.Node(id)
			if n == nil {
				continue
			}
			st, err := n.Engine.Status(g)
			if errors.Is(err, multiraft.ErrNoGroup) {
				continue // removed from this node
			}
			if err != nil {
				agree = false
				break
			}
			if st.IsLeader() {
				lead = id
			}
		}
		if lead != 0 && agree {
			return lead
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("group %d elected no leader", g)
	return 0
}

// retryable reports whether a proposal that failed with err may be tried
// again, perhaps on another node: it was refused, dropped, timed out, or
// its node closed or removed its replica.
func retryable(err error) bool {
	for _, e := range []error{multiraft.ErrNotLeader, multiraft.ErrDropped, context.DeadlineExceeded,
		multiraft.ErrClosed, multiraft.ErrRemoved, multiraft.ErrNoGroup} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Put proposes key=value in group g through its leader, retrying on
// leader changes, drops and removals, and returns the entry's index.
func (c *Cluster) Put(ctx context.Context, g uint64, key, value string) (uint64, error) {
	for {
		lead := c.leaderNow(g)
		if lead != nil {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			idx, res, err := lead.Engine.Propose(pctx, g, Put(key, value))
			cancel()
			if err == nil {
				if e, ok := res.(error); ok {
					return 0, e
				}
				return idx, nil
			}
			if !retryable(err) {
				return 0, err
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("put %s in group %d: %w", key, g, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *Cluster) leaderNow(g uint64) *Node {
	for _, id := range c.IDs() {
		n := c.Node(id)
		if n == nil {
			continue
		}
		if st, err := n.Engine.Status(g); err == nil && st.IsLeader() {
			return n
		}
	}
	return nil
}

// WaitApplied waits until every running node has applied index in g.
func (c *Cluster) WaitApplied(g, index uint64) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, id := range c.IDs() {
			if n := c.Node(id); n != nil && n.SMs[g].Applied() < index {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("group %d: not every node applied %d", g, index)
}

// ChangeMembership proposes cc in group g through its leader, retrying on
// leader changes, drops (one change may be pending at a time) and
// removals, and returns the configuration it made.
func (c *Cluster) ChangeMembership(ctx context.Context, g uint64, cc *pb.ConfChangeV2) (*pb.ConfState, error) {
	for {
		if lead := c.leaderNow(g); lead != nil {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, cs, err := lead.Engine.ChangeMembership(pctx, g, cc)
			cancel()
			if err == nil {
				return cs, nil
			}
			if !retryable(err) {
				return nil, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("change membership of group %d: %w", g, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
