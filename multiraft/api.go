package multiraft

import (
	"errors"
	"io"
	"strconv"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Errors returned by the engine. Callers branch on them with errors.Is.
var (
	// ErrClosed: the engine is closed.
	ErrClosed = errors.New("multiraft: closed")
	// ErrNoGroup: this node holds no replica of the group.
	ErrNoGroup = errors.New("multiraft: no such group on this node")
	// ErrNotLeader: this replica does not lead its group (NotLeaderError
	// names the leader when known).
	ErrNotLeader = errors.New("multiraft: not leader")
	// ErrDropped: the proposal was not appended, or another entry took its
	// index; it was not and will not be applied. Retrying is safe.
	ErrDropped = errors.New("multiraft: proposal dropped")
	// ErrRemoved: the replica was removed from this node (RemoveGroup)
	// while the call waited on it. For a proposal the outcome is unknown,
	// as after a timeout — the group's other replicas may still apply
	// it — unless the error also wraps ErrDropped: then it had not reached
	// raft and never will. Calls made after RemoveGroup returned fail with
	// ErrNoGroup instead.
	ErrRemoved = errors.New("multiraft: replica removed from this node")
)

// NotLeaderError is ErrNotLeader with the leader this replica knows of
// (0 when none).
type NotLeaderError struct {
	Group  uint64
	Leader uint64
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return "multiraft: not leader of group " + u64(e.Group) + " (no leader known)"
	}
	return "multiraft: not leader of group " + u64(e.Group) + " (leader is node " + u64(e.Leader) + ")"
}

// Unwrap makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Message is one raft message of one group.
type Message struct {
	Group uint64
	Msg   *pb.Message
}

// Transport carries raft messages between nodes.
type Transport interface {
	// Send queues msgs for node to, in order. It must not block on the
	// network; it may drop messages when a peer is slow or unreachable
	// (raft retransmits) and should then call Engine.ReportUnreachable.
	Send(to uint64, msgs []Message)
	// SendSnapshot streams a snapshot to node to: m is the MsgSnap
	// (metadata only) and data writes the state it describes. It returns
	// at once; done is called exactly once with the outcome. The receiver
	// hands the stream to its Engine.ReceiveSnapshot.
	SendSnapshot(to uint64, m Message, data func(io.Writer) error, done func(error))
}

// Entry is one committed raft entry as a StateMachine sees it.
type Entry struct {
	Index, Term uint64
	// Data is the proposal's payload; nil for raft's own empty entries and
	// for configuration changes.
	Data []byte
	// Result is set by Apply and handed to the proposer when it waits on
	// this node. A configuration change arrives with Result already set to
	// the configuration it made (ChangeMembership's answer): Apply leaves
	// it.
	Result any
}

// StateMachine is one group's replicated state on this node.
type StateMachine interface {
	// Applied returns the persisted applied index.
	Applied() uint64
	// Apply applies ents in order and persists, in the same batch, the
	// last entry's index and term and, when cs is non-nil, the group's new
	// ConfState. It sets each entry's Result. It must not return before
	// the batch is committed (synced or not), and must panic if storage
	// fails: the replica can no longer follow its log.
	Apply(ents []Entry, cs *pb.ConfState)
	// Restored tells the state machine that a snapshot at index replaced
	// its state.
	Restored(index uint64)
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }
