package shard

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"time"
)

// peerTracker keeps what this node last heard from each peer's status
// report: whether it is up, and its shards' applied indexes and leaders.
type peerTracker struct {
	mu      sync.RWMutex
	reports map[string]*peerState
}

type peerState struct {
	up     bool
	addr   string
	seen   time.Time
	report StatusReport
}

func newPeerTracker() *peerTracker {
	return &peerTracker{reports: map[string]*peerState{}}
}

func (t *peerTracker) set(id, addr string, up bool, rep StatusReport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.reports[id]
	if st == nil {
		st = &peerState{}
		t.reports[id] = st
	}
	st.up, st.addr = up, addr
	if up {
		st.seen = time.Now()
		st.report = rep
	}
}

// retain forgets the peers not in keep.
func (t *peerTracker) retain(keep map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.reports {
		if !keep[id] {
			delete(t.reports, id)
		}
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

// newestMap returns the address of an up peer with the highest map
// version, and that version.
func (t *peerTracker) newestMap() (string, uint64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var addr string
	var v uint64
	for _, st := range t.reports {
		if st.up && st.report.MapVersion > v {
			addr, v = st.addr, st.report.MapVersion
		}
	}
	return addr, v
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
	rep := StatusReport{Node: n.cfg.ID, Info: n.statusInfo(), MapVersion: n.curMap().Version}
	if !n.fresh.Load() {
		rep.MapVersion = 0
	}
	for _, g := range n.localGroups(true) {
		st := g.status()
		sr := ShardReport{
			ID:      g.id,
			Applied: g.fsm.applied.Load(),
			State:   g.stateName(),
			Leader:  g.leaderAddr(),
			Term:    st.Term,
		}
		if cs := g.fsm.conf.Load(); cs != nil && st.IsLeader() {
			sr.Voters, sr.Learners, sr.Outgoing = cs.GetVoters(), cs.GetLearners(), cs.GetVotersOutgoing()
		}
		rep.Shards = append(rep.Shards, sr)
	}
	return rep
}

// probeLoop polls every member's status twice a second and keeps the
// cluster map current.
func (n *Node) probeLoop() {
	defer n.bg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		keep := map[string]bool{}
		for _, p := range n.memberPeers() {
			if p.ID == n.cfg.ID {
				continue
			}
			keep[p.ID] = true
			if n.rpc == nil {
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
				n.peers.set(p.ID, p.Addr, err == nil && rep.Node == p.ID, rep)
			}()
		}
		wg.Wait()
		n.peers.retain(keep)
		n.syncMap()
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// balanceLoop spreads leadership: each node that leads a shard whose
// preferred leader (the cluster map's, set by the planner) is another
// member hands it over once that replica is up and caught up.
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
		m := n.curMap()
		for _, g := range n.localGroups(true) {
			if !g.isLeader() || time.Now().Before(backoff[g.id]) {
				continue
			}
			if _, _, moving := m.moveOf(g.id); moving {
				continue
			}
			i := m.slot(g.id)
			if i < 0 {
				continue
			}
			pref := m.Leaders[i]
			if pref == "" || pref == n.cfg.ID || !n.peers.isUp(pref) {
				continue
			}
			num, ok := n.numOf(pref)
			if cs := g.fsm.conf.Load(); !ok || cs == nil || !slices.Contains(cs.GetVoters(), num) {
				continue
			}
			rep, ok := n.peers.shardReport(pref, g.id)
			if !ok || rep.Applied+64 < g.fsm.applied.Load() {
				continue
			}
			err := g.transfer(Peer{ID: pref})
			if err != nil {
				backoff[g.id] = time.Now().Add(3 * time.Second)
				n.cfg.Logger.Debug("leadership transfer failed", "shard", g.id, "to", pref, "err", err)
			}
		}
	}
}

// ReplicationFactor returns the cluster's replication factor R as this
// node's map records it (a shard may hold fewer replicas while the
// cluster has fewer nodes).
func (n *Node) ReplicationFactor() int { return n.curMap().Replicas }

// Cluster reports the nodes, shards and moves as this node sees them
// (without asking another node: the moves' progress is known only on the
// metadata leader — Moves asks it).
func (n *Node) Cluster() ClusterStatus {
	m := n.curMap()
	st := ClusterStatus{Node: n.cfg.ID, MapVersion: m.Version, Paused: m.Paused, Settled: n.MembershipSettled()}
	up := func(id string) bool {
		if id == n.cfg.ID {
			return !n.closed.Load()
		}
		return n.peers.isUp(id)
	}
	leaders := map[string]int{}
	for s := 0; s < n.cfg.Shards; s++ {
		ss := ShardStatus{ID: s}
		leaderAddr := n.leaderOf(s)
		for _, p := range n.replicasOf(s) {
			if p.Addr == leaderAddr {
				ss.Leader = p.ID
				leaders[p.ID]++
			}
			rs := ReplicaStatus{Node: p.ID}
			if p.ID == n.cfg.ID && n.hosted(s) != nil {
				g := n.hosted(s)
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
	// The metadata group's leader counts too, as its replicas count in
	// Replicas and as the planner counts it when it evens out leaders.
	if addr := n.leaderOf(MetaShard); addr != "" {
		for _, p := range n.replicasOf(MetaShard) {
			if p.Addr == addr {
				leaders[p.ID]++
			}
		}
	}
	for _, nd := range m.Nodes {
		reps, _ := m.replicaCount(nd.ID)
		ns := NodeStatus{ID: nd.ID, Addr: nd.Addr, Up: nd.State != StateRemoved && up(nd.ID), State: nd.State,
			Number: nd.Num, Replicas: reps, Leaders: leaders[nd.ID], Since: time.Unix(0, nd.Since).UTC()}
		if nd.Since == 0 {
			ns.Since = time.Time{}
		}
		for _, mv := range m.Moves {
			if mv.From == nd.ID || mv.To == nd.ID {
				ns.Moves++
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	st.Moves = n.localMoves()
	return st
}

// Route says where key lives: its shard, the shard's leader as this node
// knows it (zero Peer when unknown), and its replicas in preference order
// (the first is the shard's preferred leader).
func (n *Node) Route(key string) (shard int, leader Peer, replicas []Peer) {
	shard = For(key, n.cfg.Shards)
	replicas = n.replicasOf(shard)
	if addr := n.leaderOf(shard); addr != "" {
		if id := n.peerIDOf(addr); id != "" {
			leader = Peer{ID: id, Addr: addr}
		}
	}
	return shard, leader, replicas
}

// Peers returns the cluster's members (including this node, excluding
// removed ones), in the order of their Raft node numbers, with whether this node currently sees each one up (this
// node is always up) and the latest StatusInfo bytes received from it (for
// this node, Config.StatusInfo's at the call). The Info slices are the
// caller's.
func (n *Node) Peers() []PeerState {
	members := n.memberPeers()
	out := make([]PeerState, 0, len(members))
	for _, p := range members {
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
