package shard

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"lambdadb/planner"
)

// rpcMoves asks the metadata leader for the moves in flight.
const rpcMoves = "/internal/v1/moves"

type movesResp struct {
	rpcError
	Moves []MoveStatus `msgpack:"moves"`
}

// Moves returns the replica moves in flight with their progress, as the
// metadata group's leader sees them (when it cannot be asked, as this
// node's map records them, without progress).
func (n *Node) Moves() []MoveStatus {
	if g := n.hosted(MetaShard); g != nil && g.isLeader() {
		return n.localMoves()
	}
	if leader := n.leaderOf(MetaShard); leader != "" && leader != n.cfg.Addr && n.rpc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var resp movesResp
		if err := n.rpc.call(ctx, "GET", leader, rpcMoves, nil, &resp); err == nil && resp.rpcError.err() == nil {
			return resp.Moves
		}
	}
	return n.localMoves()
}

// localMoves reports the moves of this node's map with what its
// controller last saw of them.
func (n *Node) localMoves() []MoveStatus {
	m := n.curMap()
	out := []MoveStatus{}
	for _, mv := range m.Moves {
		ms := MoveStatus{Shard: shardName(mv.Shard), From: mv.From, To: mv.To, Phase: mv.Phase,
			Started: time.Unix(0, mv.Started).UTC()}
		if n.ctl != nil {
			n.ctl.mu.Lock()
			p := n.ctl.progress[mv.Shard]
			n.ctl.mu.Unlock()
			ms.Applied, ms.Target, ms.Waiting = p.applied, p.target, p.waiting
		}
		if nd, ok := m.node(mv.To); ok && n.tr != nil {
			ms.BytesSent = n.tr.SnapshotBytesSent(uint64(mv.Shard), nd.Num)
		}
		out = append(out, ms)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// Decommission starts moving every replica off node id; the node becomes
// decommissioned once it holds none (it keeps serving until then). It
// fails with ErrUnknownNode for no such member and ErrMembership when the
// other active nodes could not hold every shard's replicas.
func (n *Node) Decommission(ctx context.Context, id string) error {
	_, err := n.metaUpdate(ctx, func(m *clusterMap) error {
		nd, ok := m.node(id)
		if !ok || nd.State == StateRemoved {
			return fmt.Errorf("%w: %s", ErrUnknownNode, id)
		}
		switch nd.State {
		case StateDecommissioning, StateDecommissioned:
			return errNoChange
		}
		m.setState(id, StateDecommissioning)
		if short := planner.Compute(plannerInput(m, 0)).Short; len(short) > 0 {
			active := 0
			for _, x := range m.Nodes {
				if x.State == StateActive || x.State == StateJoining {
					active++
				}
			}
			return fmt.Errorf("%w: without %s, %d active node(s) cannot hold %d replicas of %d shard(s); add a node first (lambdadb serve --join)",
				ErrMembership, id, active, m.Replicas, len(short))
		}
		return nil
	})
	if err == nil {
		n.cfg.Logger.Info("node decommissioning", "node", id)
	}
	return err
}

// RemoveNode forgets node id, which must be down (or decommissioned): its
// replicas are rebuilt on the other nodes as capacity allows, and its
// Raft node number is never used again. A node that is up and still holds
// replicas is refused (ErrMembership): decommission it, or stop it first.
func (n *Node) RemoveNode(ctx context.Context, id string) error {
	_, err := n.metaUpdate(ctx, func(m *clusterMap) error {
		nd, ok := m.node(id)
		if !ok {
			return fmt.Errorf("%w: %s", ErrUnknownNode, id)
		}
		if nd.State == StateRemoved {
			return errNoChange
		}
		reps, _ := m.replicaCount(id)
		up := id == n.cfg.ID || n.peers.isUp(id)
		if up && reps > 0 {
			return fmt.Errorf("%w: node %s is up and holds %d replica(s): decommission it (lambdadb node decommission %s), or stop it first",
				ErrMembership, id, reps, id)
		}
		others := 0
		for _, x := range m.Nodes {
			if x.ID != id && (x.State == StateActive || x.State == StateJoining) {
				others++
			}
		}
		if others == 0 {
			return fmt.Errorf("%w: %s is the last active node", ErrMembership, id)
		}
		m.setState(id, StateRemoved)
		// Moves to the removed node will never finish.
		for i := range m.Moves {
			if m.Moves[i].To == id && m.Moves[i].Phase != PhaseRemove {
				m.Moves[i].Phase = PhaseCancel
			}
		}
		return nil
	})
	if err == nil {
		n.cfg.Logger.Info("node removed", "node", id)
	}
	return err
}

// Rebalance resumes the planner if paused and has it plan at once.
func (n *Node) Rebalance(ctx context.Context) error {
	_, err := n.metaUpdate(ctx, func(m *clusterMap) error {
		m.Paused = false
		m.Rebalance++
		return nil
	})
	return err
}

// PauseRebalance stops (paused) or resumes the planner: moves under way
// finish, no new ones start.
func (n *Node) PauseRebalance(ctx context.Context, paused bool) error {
	_, err := n.metaUpdate(ctx, func(m *clusterMap) error {
		if m.Paused == paused {
			return errNoChange
		}
		m.Paused = paused
		return nil
	})
	return err
}

// MembershipSettled reports whether no move is in flight, no node is
// joining or decommissioning, and every shard has its replicas and
// preferred leaders where the planner wants them (tests and benchmarks
// wait for it).
func (n *Node) MembershipSettled() bool {
	m := n.curMap()
	if len(m.Moves) > 0 {
		return false
	}
	for _, nd := range m.Nodes {
		if nd.State == StateJoining || nd.State == StateDecommissioning {
			return false
		}
	}
	plan := planner.Compute(plannerInput(m, 0))
	return len(plan.Moves) == 0 && len(plan.Transfers) == 0 && !slices.ContainsFunc(m.Placement, func(p []string) bool { return len(p) == 0 })
}
