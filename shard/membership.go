package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/multiraft"
)

// Node-meta names of the locally kept copy of the cluster map.
const (
	metaMapName    = "cluster-map"         // the map's msgpack
	metaMapVersion = "cluster-map-version" // its version, 8 bytes BE
	metaJoinNonce  = "join-nonce"          // the nonce this node joined with
)

// curMap returns the cluster map this node last installed.
func (n *Node) curMap() *clusterMap { return n.cmap.Load() }

// numOf returns node id's Raft node number.
func (n *Node) numOf(id string) (uint64, bool) {
	if nd, ok := n.curMap().node(id); ok && nd.State != StateRemoved {
		return nd.Num, true
	}
	return 0, false
}

// peerIDOf returns the id of the member at addr ("" for none).
func (n *Node) peerIDOf(addr string) string {
	if nd, ok := n.curMap().nodeByAddr(addr); ok {
		return nd.ID
	}
	return ""
}

// peerByNum returns the member with Raft node number num.
func (n *Node) peerByNum(num uint64) (Peer, bool) {
	if nd, ok := n.curMap().nodeByNum(num); ok && num != 0 {
		return Peer{ID: nd.ID, Addr: nd.Addr}, true
	}
	return Peer{}, false
}

// replicasOf returns shard s's replicas as the cluster map records them,
// the preferred leader first.
func (n *Node) replicasOf(s int) []Peer { return n.curMap().replicaPeers(s) }

// memberPeers returns the members that are not removed, in number order.
func (n *Node) memberPeers() []Peer {
	var out []Peer
	for _, nd := range n.curMap().members() {
		out = append(out, Peer{ID: nd.ID, Addr: nd.Addr})
	}
	return out
}

// evictedErr fails requests on a node the cluster removed: it holds no
// replica any more and no member talks to it.
func (n *Node) evictedErr() error {
	if n.curMap().removedSelf(n.cfg.ID, n.selfNum) {
		return errorf(ErrUnavailable, "node %s was removed from the cluster: send requests to another node", n.cfg.ID)
	}
	return nil
}

// installMap makes m the node's map if it is newer than the current one
// (committed says m was read from the metadata group; a genesis map is
// not). It persists it and wakes the reconciler.
func (n *Node) installMap(m *clusterMap, committed bool) bool {
	n.mapMu.Lock()
	defer n.mapMu.Unlock()
	cur := n.cmap.Load()
	if cur != nil && m.Version <= cur.Version && !(committed && !n.fresh.Load() && m.Version == cur.Version) {
		return false
	}
	if err := n.persistMap(m); err != nil {
		n.cfg.Logger.Warn("cannot persist the cluster map", "err", err)
		return false
	}
	n.cmap.Store(m)
	if committed {
		n.fresh.Store(true)
	}
	if m.removedSelf(n.cfg.ID, n.selfNum) && (cur == nil || !cur.removedSelf(n.cfg.ID, n.selfNum)) {
		n.cfg.Logger.Error("this node was removed from the cluster: it serves nothing any more; stop it", "node", n.cfg.ID)
	}
	n.m.mapVersion.Set(float64(m.Version))
	select {
	case n.reconcileCh <- struct{}{}:
	default:
	}
	return true
}

func (n *Node) persistMap(m *clusterMap) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], m.Version)
	if err := n.eng.SetNodeMeta(metaMapName, m.encode()); err != nil {
		return err
	}
	return n.eng.SetNodeMeta(metaMapVersion, v[:])
}

// storedMap returns the map this node persisted last, if any.
func (n *Node) storedMap() (*clusterMap, bool, error) {
	b, found, err := n.eng.NodeMeta(metaMapName)
	if err != nil || !found {
		return nil, false, err
	}
	v, _, err := n.eng.NodeMeta(metaMapVersion)
	if err != nil {
		return nil, false, err
	}
	var ver uint64
	if len(v) == 8 {
		ver = binary.BigEndian.Uint64(v)
	}
	m, err := decodeMap(b, ver)
	if err != nil {
		return nil, false, err
	}
	return m, true, nil
}

// localGroups returns the replicas this node holds; the metadata group's
// last when withMeta.
func (n *Node) localGroups(withMeta bool) []*group {
	out := make([]*group, 0, len(n.slots))
	for i := range n.slots {
		if i == len(n.slots)-1 && !withMeta {
			break
		}
		if g := n.slots[i].Load(); g != nil {
			out = append(out, g)
		}
	}
	return out
}

// slotOf returns shard s's index in n.slots, or -1.
func (n *Node) slotOf(s int) int {
	if s == MetaShard {
		return len(n.slots) - 1
	}
	if s < 0 || s >= n.cfg.Shards {
		return -1
	}
	return s
}

// hasState reports whether shard s has Raft state in this node's storage.
func (n *Node) hasState(s int) (bool, error) {
	applied, err := n.eng.Applied(s)
	if err != nil {
		return false, err
	}
	if applied > 0 {
		return true, nil
	}
	rs, err := n.eng.RaftStorage(s)
	if err != nil {
		return false, err
	}
	last, err := rs.LastIndex()
	return last > 0, err
}

// startGroup adds shard s's replica to the engine: resuming its state,
// or bootstrapped with voters, or (join) empty, to be filled by its
// leader once it adds this node.
func (n *Node) startGroup(s int, voters []uint64, join bool) error {
	i := n.slotOf(s)
	if i < 0 || n.slots[i].Load() != nil {
		return nil
	}
	f, err := newFSM(s, n.eng)
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	f.onApply = func(k int) { n.m.applied.Add(float64(k)) }
	rs, err := n.eng.RaftStorage(s)
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	sm := &mraftSM{f: f, rs: rs}
	if err := n.mr.AddGroup(multiraft.GroupConfig{ID: uint64(s), Storage: rs, SM: sm, Voters: voters, Join: join}); err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	sm.loadConf()
	g := &group{id: s, fsm: f, m: n.m, consensus: &mraft{n: n, id: s}}
	n.slots[i].Store(g)
	n.cfg.Logger.Info("replica started", "shard", s, "join", join)
	return nil
}

// removeReplica stops shard s's local replica and deletes its data: the
// replica was removed from the shard's configuration (a move off this
// node completed). Readers of the replica finish first.
func (n *Node) removeReplica(s int) error {
	i := n.slotOf(s)
	g := n.slots[i].Load()
	if g == nil {
		return nil
	}
	g.removed.Store(true)
	n.slots[i].Store(nil)
	if err := n.mr.RemoveGroup(uint64(s)); err != nil && !errors.Is(err, multiraft.ErrNoGroup) {
		return fmt.Errorf("shard: remove replica %d: %w", s, err)
	}
	// A read that raced with the deletion sees g.removed afterwards and
	// is retried elsewhere (checkRemoved).
	if !n.engRLock() {
		return ErrClosed
	}
	defer n.engMu.RUnlock()
	if err := n.eng.DropShard(s); err != nil {
		return fmt.Errorf("shard: remove replica %d: %w", s, err)
	}
	n.cfg.Logger.Info("replica removed and its data deleted", "shard", s)
	if n.cfg.OnReplicaRemoved != nil {
		n.cfg.OnReplicaRemoved(s)
	}
	return nil
}

// reconcileLoop keeps the local replicas in line with the cluster map:
// it starts (empty) the replicas a move adds to this node and removes
// those the map no longer places here once a move off this node
// completed. It deletes only on a map read from the metadata group during
// this run, never on the copy persisted by an earlier one.
func (n *Node) reconcileLoop() {
	defer n.bg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-n.reconcileCh:
		}
		n.reconcile()
	}
}

func (n *Node) reconcile() {
	m := n.curMap()
	self := n.cfg.ID
	for i := range n.slots {
		if n.closed.Load() {
			return
		}
		s := m.shardOfSlot(i)
		want := m.shouldHost(self, s)
		have := n.slots[i].Load() != nil
		switch {
		case want && !have:
			st, err := n.hasState(s)
			if err == nil {
				err = n.startGroup(s, nil, !st)
			}
			if err != nil && !n.closed.Load() {
				n.cfg.Logger.Warn("cannot start replica", "shard", s, "err", err)
			}
		case !want && have && n.fresh.Load():
			if err := n.removeReplica(s); err != nil && !n.closed.Load() {
				n.cfg.Logger.Warn("cannot remove replica", "shard", s, "err", err)
			}
		}
	}
}

// checkRemoved fails a local read of g that may have raced with the
// deletion of g's data, so that it is retried at another replica.
func checkRemoved(g *group) error {
	if g.removed.Load() {
		return errorf(ErrNotLeader, "shard %d: the replica here was just removed", g.id)
	}
	return nil
}

// ErrIdentity is returned when this node's identity conflicts with the
// cluster's: a wiped node whose name the cluster still counts.
var ErrIdentity = errors.New("shard: node identity conflict")

// peerMap asks the given nodes for their committed cluster map and
// returns the newest one got, with the address it came from (nil when no
// node answered with one: a cluster being created, or all down).
func (n *Node) peerMap(peers []Peer) (*clusterMap, string) {
	if n.rpc == nil {
		return nil, ""
	}
	var best *clusterMap
	var from string
	for _, p := range peers {
		if p.ID == n.cfg.ID {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var resp mapResp
		err := n.rpc.call(ctx, "POST", p.Addr, rpcMap, mapReq{}, &resp)
		cancel()
		if err != nil || !resp.Found || resp.rpcError.err() != nil {
			continue
		}
		if m, err := decodeMap(resp.Map, resp.Version); err == nil && (best == nil || m.Version > best.Version) {
			best, from = m, p.Addr
		}
	}
	return best, from
}

// wipedCheck refuses to bootstrap a new data directory under a name that
// a running cluster already counts: a node that lost its data would
// otherwise vote with an empty log. Peers that do not answer (a cluster
// being created) are skipped.
func (n *Node) wipedCheck(peers []Peer) error {
	m, from := n.peerMap(peers)
	if m == nil {
		return nil
	}
	// A node the cluster has not heard from yet (still joining) is an
	// initial node starting late, not one that lost its data.
	if nd, ok := m.node(n.cfg.ID); ok && nd.State != StateRemoved && nd.State != StateJoining {
		return fmt.Errorf("%w: data directory %s is empty, but the cluster (asked through %s) already counts node %s "+
			"(number %d, %s): a node that lost its data must not rejoin under its old name; remove it "+
			"(lambdadb node remove %s) and start this node with a new --id and --join %s, or restore its data directory",
			ErrIdentity, n.cfg.Dir, from, nd.ID, nd.Num, nd.State, nd.ID, from)
	}
	return nil
}

// removedCheck refuses to restart a node the cluster removed while it
// was down.
func (n *Node) removedCheck(m *clusterMap) error {
	var peers []Peer
	for _, nd := range m.members() {
		peers = append(peers, Peer{ID: nd.ID, Addr: nd.Addr})
	}
	cur, from := n.peerMap(peers)
	if cur == nil || cur.Version <= m.Version {
		return nil
	}
	if nd, ok := cur.node(n.cfg.ID); ok && nd.State == StateRemoved {
		return fmt.Errorf("%w: node %s was removed from the cluster while it was down (asked through %s); "+
			"its data directory cannot serve again: start a node with a new --id, an empty data directory and --join %s",
			ErrIdentity, n.cfg.ID, from, from)
	}
	return nil
}

// removedSelf reports whether m records node id, Raft number num, as
// removed — or counts another node (a new number) under its name.
func (m *clusterMap) removedSelf(id string, num uint64) bool {
	nd, ok := m.node(id)
	return ok && (nd.State == StateRemoved || nd.Num != num)
}

// hostsShard reports whether the map places node id on shard s now
// (voter at rest, not counting moves).
func (m *clusterMap) hostsShard(id string, s int) bool {
	i := m.slot(s)
	return i >= 0 && slices.Contains(m.Placement[i], id)
}

// confOf returns shard s's configuration as this node's replica applied
// it (nil when not hosted).
func (n *Node) confOf(s int) *pb.ConfState {
	g := n.hosted(s)
	if g == nil {
		return nil
	}
	return g.fsm.conf.Load()
}
