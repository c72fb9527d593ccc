package shard

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/planner"
)

// MetaShard is the shard number of the metadata group: a Raft group
// beside the data shards that holds the cluster map. Data shards are
// numbered below Config.Shards, which is at most MaxConfigShards.
const MetaShard = 1<<16 - 1

// MaxConfigShards bounds Config.Shards, below MetaShard.
const MaxConfigShards = 1 << 15

// Node membership states (NodeStatus.State).
const (
	StateJoining         = string(planner.Joining)
	StateActive          = string(planner.Active)
	StateDecommissioning = string(planner.Decommissioning)
	StateDecommissioned  = string(planner.Decommissioned)
	StateRemoved         = string(planner.Removed)
)

// Move phases (MoveStatus.Phase).
const (
	// PhaseLearner: the target's replica is being added as a learner
	// and filled by a snapshot and the log.
	PhaseLearner = "learner"
	// PhasePromote: the target has caught up and is being made a voter.
	PhasePromote = "promote"
	// PhaseRemove: the target votes; the source is being removed
	// (leadership handed off it first).
	PhaseRemove = "remove"
	// PhaseCancel: the move failed before promotion; the learner is
	// being removed.
	PhaseCancel = "cancel"
)

// clusterMap is the replicated membership and placement, the value of
// the metadata group's one record (key mapKey in the System space). Its
// Version is that record's version (the Raft index of its last write),
// the map version every node compares.
type clusterMap struct {
	Version  uint64 `msgpack:"-"`
	Shards   int    `msgpack:"shards"`
	Replicas int    `msgpack:"replicas"`
	// NextNum is the Raft node number the next node to join gets: numbers
	// are never reused, so a wiped node can never vote under an old one.
	NextNum uint64    `msgpack:"next_num"`
	Nodes   []mapNode `msgpack:"nodes"`
	// Placement[s] lists the node ids holding shard s's voters (s =
	// Shards for the metadata group), as last recorded: it changes when a
	// move completes, after the Raft configuration changed.
	Placement [][]string `msgpack:"placement"`
	// Leaders[s] is the preferred leader of shard s ("" for none).
	Leaders []string  `msgpack:"leaders"`
	Moves   []mapMove `msgpack:"moves"`
	// Paused stops the planner from starting new moves (moves under way
	// finish).
	Paused bool `msgpack:"paused"`
	// Rebalance asks the planner to run at once (a counter bumped by
	// POST /v1/cluster/rebalance).
	Rebalance uint64 `msgpack:"rebalance"`
	// Created is when the map was first written (Unix ns).
	Created int64 `msgpack:"created"`
}

// mapNode is one member of the cluster map.
type mapNode struct {
	ID    string `msgpack:"id"`
	Num   uint64 `msgpack:"num"`
	Addr  string `msgpack:"addr"`
	State string `msgpack:"state"`
	Since int64  `msgpack:"since"` // when State was entered (Unix ns)
	// Nonce is the random value the node joined with: the same node
	// asking again gets the same entry, another one under its name is
	// refused.
	Nonce string `msgpack:"nonce,omitempty"`
}

// mapMove is a replica move in flight.
type mapMove struct {
	Shard   int    `msgpack:"shard"` // MetaShard for the metadata group
	From    string `msgpack:"from"`  // "" when the move only adds a replica
	To      string `msgpack:"to"`
	Phase   string `msgpack:"phase"`
	Started int64  `msgpack:"started"` // Unix ns
	Note    string `msgpack:"note"`    // what it waits for, when stuck
}

// mapKey is the cluster map's key in the metadata group.
const mapKey = "cluster/map"

func (m *clusterMap) encode() []byte {
	b, err := msgpack.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("shard: encode cluster map: %v", err))
	}
	return b
}

func decodeMap(b []byte, version uint64) (*clusterMap, error) {
	m := &clusterMap{}
	if err := msgpack.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("shard: cluster map: %w", err)
	}
	if m.Shards < 1 || m.Shards > MaxConfigShards || len(m.Placement) != m.Shards+1 || len(m.Leaders) != m.Shards+1 {
		return nil, fmt.Errorf("shard: cluster map: %d shards with %d placements", m.Shards, len(m.Placement))
	}
	m.Version = version
	return m, nil
}

// clone returns a deep copy of m.
func (m *clusterMap) clone() *clusterMap {
	c := *m
	c.Nodes = slices.Clone(m.Nodes)
	c.Placement = make([][]string, len(m.Placement))
	for i, p := range m.Placement {
		c.Placement[i] = slices.Clone(p)
	}
	c.Leaders = slices.Clone(m.Leaders)
	c.Moves = slices.Clone(m.Moves)
	return &c
}

// genesisMap is the map of a cluster created from peers: every node
// joining (the controller marks each active once it is up), numbers by
// position (1, 2, ...), shard s on min(replicas, len(peers)) consecutive
// peers from s mod len(peers) (its first is the preferred leader), the
// metadata group on the first ones. Every initial node computes the same.
func genesisMap(peers []Peer, shards, replicas int) *clusterMap {
	m := &clusterMap{Shards: shards, Replicas: replicas, NextNum: uint64(len(peers) + 1),
		Placement: make([][]string, shards+1), Leaders: make([]string, shards+1)}
	for i, p := range peers {
		// Joining until the cluster hears from it: an initial node that
		// starts late with its new (empty) data directory is told apart
		// from one that served and lost its data.
		m.Nodes = append(m.Nodes, mapNode{ID: p.ID, Num: uint64(i + 1), Addr: p.Addr, State: StateJoining})
	}
	r := min(replicas, len(peers))
	for s := 0; s <= shards; s++ {
		start := s % len(peers)
		if s == shards {
			start = 0
		}
		for i := 0; i < r; i++ {
			m.Placement[s] = append(m.Placement[s], peers[(start+i)%len(peers)].ID)
		}
		m.Leaders[s] = m.Placement[s][0]
	}
	return m
}

// slot returns shard s's index in Placement and Leaders (Shards for the
// metadata group), or -1.
func (m *clusterMap) slot(s int) int {
	if s == MetaShard {
		return m.Shards
	}
	if s < 0 || s >= m.Shards {
		return -1
	}
	return s
}

// shardOfSlot is slot's inverse.
func (m *clusterMap) shardOfSlot(i int) int {
	if i == m.Shards {
		return MetaShard
	}
	return i
}

func (m *clusterMap) node(id string) (mapNode, bool) {
	for _, n := range m.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return mapNode{}, false
}

func (m *clusterMap) nodeByNum(num uint64) (mapNode, bool) {
	for _, n := range m.Nodes {
		if n.Num == num {
			return n, true
		}
	}
	return mapNode{}, false
}

func (m *clusterMap) nodeByAddr(addr string) (mapNode, bool) {
	for _, n := range m.Nodes {
		if n.Addr == addr && n.State != StateRemoved {
			return n, true
		}
	}
	return mapNode{}, false
}

func (m *clusterMap) setState(id, state string) {
	for i := range m.Nodes {
		if m.Nodes[i].ID == id && m.Nodes[i].State != state {
			m.Nodes[i].State, m.Nodes[i].Since = state, time.Now().UnixNano()
		}
	}
}

// members returns the nodes that are not removed, in number order.
func (m *clusterMap) members() []mapNode {
	var out []mapNode
	for _, n := range m.Nodes {
		if n.State != StateRemoved {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Num < out[j].Num })
	return out
}

// moveOf returns shard s's move in flight.
func (m *clusterMap) moveOf(s int) (mapMove, int, bool) {
	for i, mv := range m.Moves {
		if mv.Shard == s {
			return mv, i, true
		}
	}
	return mapMove{}, -1, false
}

// shouldHost reports whether node id should hold a replica of shard s:
// it is in the placement or the target of a move.
func (m *clusterMap) shouldHost(id string, s int) bool {
	i := m.slot(s)
	if i < 0 {
		return false
	}
	if slices.Contains(m.Placement[i], id) {
		return true
	}
	if mv, _, ok := m.moveOf(s); ok && (mv.To == id || mv.From == id) {
		return true
	}
	return false
}

// replicaPeers returns shard s's replicas as peers, the preferred leader
// first.
func (m *clusterMap) replicaPeers(s int) []Peer {
	i := m.slot(s)
	if i < 0 {
		return nil
	}
	out := make([]Peer, 0, len(m.Placement[i]))
	if pref := m.Leaders[i]; pref != "" && slices.Contains(m.Placement[i], pref) {
		if n, ok := m.node(pref); ok {
			out = append(out, Peer{ID: n.ID, Addr: n.Addr})
		}
	}
	for _, id := range m.Placement[i] {
		if id == m.Leaders[i] && len(out) > 0 {
			continue
		}
		if n, ok := m.node(id); ok {
			out = append(out, Peer{ID: n.ID, Addr: n.Addr})
		}
	}
	return out
}

// replicaCount returns how many voters node id holds and leads (by
// preference).
func (m *clusterMap) replicaCount(id string) (replicas, preferred int) {
	for i, p := range m.Placement {
		if slices.Contains(p, id) {
			replicas++
		}
		if m.Leaders[i] == id {
			preferred++
		}
	}
	return replicas, preferred
}
