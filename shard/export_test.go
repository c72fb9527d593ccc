package shard

import (
	"context"
	"strconv"
)

// SnapshotAll truncates every local shard's Raft log at its applied index,
// so a follower that needs older entries must catch up by snapshot.
func (n *Node) SnapshotAll() error {
	for _, g := range n.localGroups(false) {
		if err := n.mr.TruncateLog(context.Background(), uint64(g.id), g.fsm.applied.Load()); err != nil {
			return err
		}
	}
	return nil
}

// LogFirstIndex returns the first index in shard s's Raft log.
func (n *Node) LogFirstIndex(s int) uint64 {
	g := n.hosted(s)
	if g == nil {
		return 0
	}
	i, _ := strconv.ParseUint(g.stats()["first_index"], 10, 64)
	return i
}

// Reconf changes shard s's Raft configuration on this node, which must
// lead it, without touching the cluster map (op: learner, promote,
// remove, transfer; node is a Raft node number).
func (n *Node) Reconf(ctx context.Context, s int, op string, node uint64) error {
	resp := n.serveReconf(ctx, reconfReq{Shard: s, Op: op, Node: node})
	return resp.rpcError.err()
}
