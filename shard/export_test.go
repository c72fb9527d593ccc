package shard

import (
	"context"
	"strconv"
)

// SnapshotAll makes every group take a Raft snapshot (and truncate its log).
func (n *Node) SnapshotAll() error {
	for _, g := range n.groups {
		if g == nil {
			continue
		}
		switch c := g.consensus.(type) {
		case *hraft:
			if err := c.raft.Snapshot().Error(); err != nil {
				return err
			}
		case *mraft:
			if err := n.mr.TruncateLog(context.Background(), uint64(g.id), g.fsm.applied.Load()); err != nil {
				return err
			}
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
	if _, ok := g.consensus.(*mraft); ok {
		i, _ := strconv.ParseUint(g.stats()["first_index"], 10, 64)
		return i
	}
	ls, err := n.eng.LogStore(s)
	if err != nil {
		panic(err)
	}
	i, _ := ls.FirstIndex()
	return i
}
