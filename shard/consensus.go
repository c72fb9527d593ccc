package shard

import (
	"context"
	"sync/atomic"

	"lambdadb/multiraft"
)

// consensus is one shard's replication on this node (mraft.go drives it
// through the node's multiraft engine).
type consensus interface {
	// status is the replica's view of its group.
	status() multiraft.Status
	// isLeader reports whether this replica leads the shard.
	isLeader() bool
	// leaderAddr returns the leader's address as this replica knows it,
	// or "".
	leaderAddr() string
	// notLeader is the error for a request this replica cannot lead,
	// naming the leader when known.
	notLeader() error
	// stateName is the replica's role, lower case: leader, follower,
	// candidate, ...
	stateName() string
	// propose replicates cmd and waits until this replica applied it.
	propose(ctx context.Context, cmd []byte) (uint64, applyResult, error)
	// readIndex confirms leadership and returns the commit index.
	readIndex(ctx context.Context) (uint64, error)
	// transfer hands leadership to p if it is caught up.
	transfer(p Peer) error
	// waitLeader blocks until this replica leads and can serve (one-node
	// clusters at start).
	waitLeader(ctx context.Context) error
	// stats describes the replica's log for tests and debugging.
	stats() map[string]string
	// shutdown stops the replica's own machinery, if any.
	shutdown() error
}

// group is one shard replica on this node.
type group struct {
	id  int
	fsm *fsm
	m   *metrics
	// removed is set before the replica's data is deleted (a move off
	// this node completed): local reads that see it retry elsewhere.
	removed atomic.Bool
	consensus
}
