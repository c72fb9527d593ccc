package shard

import (
	"bytes"
	"context"
	"sync"
	"time"
)

// peerTracker keeps what this node last heard from each peer's status
// report: whether it is up, and its shards' applied indexes and leaders.
type peerTracker struct {
	self  string
	peers []Peer

	mu      sync.RWMutex
	reports map[string]*peerState
}

type peerState struct {
	up     bool
	seen   time.Time
	report StatusReport
}

func newPeerTracker(peers []Peer, self string) *peerTracker {
	t := &peerTracker{self: self, peers: peers, reports: map[string]*peerState{}}
	for _, p := range peers {
		t.reports[p.ID] = &peerState{}
	}
	return t
}

func (t *peerTracker) set(id string, up bool, rep StatusReport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.reports[id]
	st.up = up
	if up {
		st.seen = time.Now()
		st.report = rep
	}
}

func (t *peerTracker) isUp(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	st := t.reports[id]
	return st != nil && st.up
}

// leader returns the leader address of shard s that some up peer reports.
func (t *peerTracker) leader(s int) string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, st := range t.reports {
		if !st.up {
			continue
		}
		for _, sh := range st.report.Shards {
			if sh.ID == s && sh.Leader != "" {
				return sh.Leader
			}
		}
	}
	return ""
}

// shardReport returns what peer id last reported about shard s.
func (t *peerTracker) shardReport(id string, s int) (ShardReport, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	st := t.reports[id]
	if st == nil || !st.up {
		return ShardReport{}, false
	}
	for _, sh := range st.report.Shards {
		if sh.ID == s {
			return sh, true
		}
	}
	return ShardReport{}, false
}

// info reports whether peer id is up and, if so, a copy of the StatusInfo
// bytes it last reported.
func (t *peerTracker) info(id string) (bool, []byte) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	st := t.reports[id]
	if st == nil || !st.up {
		return false, nil
	}
	return true, bytes.Clone(st.report.Info)
}

// statusInfo returns Config.StatusInfo's bytes, nil when there is no
// StatusInfo or they are too large.
func (n *Node) statusInfo() []byte {
	if n.cfg.StatusInfo == nil {
		return nil
	}
	if b := n.cfg.StatusInfo(); len(b) <= MaxStatusInfoBytes {
		return b
	}
	return nil
}

// localStatus reports this node's hosted shards and its StatusInfo.
func (n *Node) localStatus() StatusReport {
	rep := StatusReport{Node: n.cfg.ID, Info: n.statusInfo()}
	for _, g := range n.groups {
		if g == nil {
			continue
		}
		rep.Shards = append(rep.Shards, ShardReport{
			ID:      g.id,
			Applied: g.fsm.applied.Load(),
			State:   g.stateName(),
			Leader:  g.leaderAddr(),
		})
	}
	return rep
}

// probeLoop polls every peer's status twice a second.
func (n *Node) probeLoop() {
	defer n.bg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for _, p := range n.cfg.Peers {
			if p.ID == n.cfg.ID {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				var rep StatusReport
				err := n.rpc.call(ctx, "GET", p.Addr, rpcStatus, nil, &rep)
				if len(rep.Info) > MaxStatusInfoBytes {
					rep.Info = nil
				}
				n.peers.set(p.ID, err == nil && rep.Node == p.ID, rep)
			}()
		}
		wg.Wait()
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// balanceLoop spreads leadership: a shard's preferred leader is its first
// replica (placement rotates it across nodes), so each node that leads a
// shard it is not preferred for hands it over once the preferred replica is
// up and caught up.
func (n *Node) balanceLoop() {
	defer n.bg.Done()
	backoff := map[int]time.Time{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		for _, g := range n.groups {
			if g == nil || !g.isLeader() || time.Now().Before(backoff[g.id]) {
				continue
			}
			pref := g.replicas[0]
			if pref.ID == n.cfg.ID || !n.peers.isUp(pref.ID) {
				continue
			}
			rep, ok := n.peers.shardReport(pref.ID, g.id)
			if !ok || rep.Applied+64 < g.fsm.applied.Load() {
				continue
			}
			err := g.transfer(pref)
			if err != nil {
				backoff[g.id] = time.Now().Add(3 * time.Second)
				n.cfg.Logger.Debug("leadership transfer failed", "shard", g.id, "to", pref.ID, "err", err)
			}
		}
	}
}

// Cluster reports the nodes and shards as this node sees them.
func (n *Node) Cluster() ClusterStatus {
	st := ClusterStatus{Node: n.cfg.ID}
	up := func(id string) bool {
		if id == n.cfg.ID {
			return !n.closed.Load()
		}
		return n.peers.isUp(id)
	}
	for _, p := range n.cfg.Peers {
		st.Nodes = append(st.Nodes, NodeStatus{ID: p.ID, Addr: p.Addr, Up: up(p.ID)})
	}
	for s := 0; s < n.cfg.Shards; s++ {
		ss := ShardStatus{ID: s}
		leaderAddr := n.leaderOf(s)
		for _, p := range n.replicasOf(s) {
			if p.Addr == leaderAddr {
				ss.Leader = p.ID
			}
			rs := ReplicaStatus{Node: p.ID}
			if p.ID == n.cfg.ID {
				g := n.groups[s]
				rs.Applied = g.fsm.applied.Load()
				rs.State = g.stateName()
			} else if rep, ok := n.peers.shardReport(p.ID, s); ok {
				rs.Applied, rs.State = rep.Applied, rep.State
			} else {
				rs.State = "unknown"
			}
			ss.Replicas = append(ss.Replicas, rs)
		}
		st.Shards = append(st.Shards, ss)
	}
	return st
}

// Route says where key lives: its shard, the shard's leader as this node
// knows it (zero Peer when unknown), and its replicas in preference order
// (the first is the shard's preferred leader).
func (n *Node) Route(key string) (shard int, leader Peer, replicas []Peer) {
	shard = For(key, n.cfg.Shards)
	replicas = n.replicasOf(shard)
	if addr := n.leaderOf(shard); addr != "" {
		if id, ok := n.peerOf[addr]; ok {
			leader = Peer{ID: id, Addr: addr}
		}
	}
	return shard, leader, replicas
}

// Peers returns the cluster's members (including this node), in the order
// of Config.Peers, with whether this node currently sees each one up (this
// node is always up) and the latest StatusInfo bytes received from it (for
// this node, Config.StatusInfo's at the call). The Info slices are the
// caller's.
func (n *Node) Peers() []PeerState {
	out := make([]PeerState, 0, len(n.cfg.Peers))
	for _, p := range n.cfg.Peers {
		ps := PeerState{Peer: p}
		if p.ID == n.cfg.ID {
			ps.Up, ps.Info = true, n.statusInfo()
		} else {
			ps.Up, ps.Info = n.peers.info(p.ID)
		}
		out = append(out, ps)
	}
	return out
}

// RaftStats describes local shard s's Raft replica (first_index,
// last_snapshot_index, state) (nil when
// this node holds no replica of it).
func (n *Node) RaftStats(s int) map[string]string {
	g := n.hosted(s)
	if g == nil {
		return nil
	}
	return g.stats()
}

// LeaderAddr returns the address of shard s's leader as this node knows
// it, or "" when it knows none.
func (n *Node) LeaderAddr(s int) string {
	if s < 0 || s >= n.cfg.Shards {
		return ""
	}
	return n.leaderOf(s)
}

// Leads reports whether this node currently leads shard s.
func (n *Node) Leads(s int) bool {
	g := n.hosted(s)
	return g != nil && g.isLeader()
}

// Applied returns local shard s's applied index (0 when not hosted).
func (n *Node) Applied(s int) uint64 {
	g := n.hosted(s)
	if g == nil {
		return 0
	}
	return g.fsm.applied.Load()
}
