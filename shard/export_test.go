package shard

// SnapshotAll makes every group take a Raft snapshot (and truncate its log).
func (n *Node) SnapshotAll() error {
	for _, g := range n.groups {
		if err := g.consensus.(*hraft).raft.Snapshot().Error(); err != nil {
			return err
		}
	}
	return nil
}

// LogFirstIndex returns the first index in shard s's Raft log.
func (n *Node) LogFirstIndex(s int) uint64 {
	ls, err := n.eng.LogStore(s)
	if err != nil {
		panic(err)
	}
	i, _ := ls.FirstIndex()
	return i
}
