package shard

import (
	"errors"
	"fmt"
	"time"

	"lambdadb/internal/session"
	"lambdadb/kv"
)

// Errors returned by Node. The HTTP layer maps them to status codes.
var (
	ErrInvalidKey     = errors.New("shard: invalid key")
	ErrValueTooLarge  = errors.New("shard: value too large")
	ErrPrecondition   = errors.New("shard: precondition failed")
	ErrNotLeader      = errors.New("shard: not the leader")
	ErrUnavailable    = errors.New("shard: shard unavailable")
	ErrClosed         = errors.New("shard: node closed")
	ErrBadConsistency = errors.New("shard: unknown consistency level")
	ErrInvalidScan    = errors.New("shard: invalid scan")
	ErrInvalidBatch   = errors.New("shard: invalid batch")
	// ErrOverloaded means the node has as many requests in flight as its
	// admission limits allow (Config.MaxInflightWrites, MaxInflightReads):
	// retry after a moment, or elsewhere. It also matches ErrUnavailable.
	ErrOverloaded = errors.New("shard: node overloaded")
	// ErrDataDir means the data directory cannot be opened as it is.
	ErrDataDir = errors.New("shard: unusable data directory")
)

// MaxKeyBytes is the longest key accepted.
const MaxKeyBytes = 1024

// Consistency selects how a read is served.
type Consistency uint8

const (
	// Linearizable reads observe every write acknowledged before they
	// began: the leader confirms its leadership and hands out its commit
	// index (a read index), and the serving replica — the leader or a
	// follower — waits until it has applied that index.
	Linearizable Consistency = iota
	// Session reads are served by any replica whose applied index covers
	// the caller's session token for the shard.
	Session
	// Stale reads are served by the receiving replica at once.
	Stale
)

// String returns the level's API name.
func (c Consistency) String() string {
	switch c {
	case Linearizable:
		return "linearizable"
	case Session:
		return "session"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("consistency(%d)", uint8(c))
}

// ParseConsistency parses an API name ("linearizable", "session", "stale").
func ParseConsistency(s string) (Consistency, error) {
	switch s {
	case "linearizable":
		return Linearizable, nil
	case "session":
		return Session, nil
	case "stale":
		return Stale, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrBadConsistency, s)
}

// Cond is a write precondition.
type Cond struct {
	// IfMatch, when non-nil, allows the write only if the key exists at
	// exactly this version.
	IfMatch *uint64
	// IfNoneMatch allows the write only if the key is absent.
	IfNoneMatch bool
}

// Record is one stored key with its value and version (the Raft index of the
// entry that last wrote it).
type Record struct {
	Key     string
	Value   []byte
	Version uint64
}

// WriteResult is the outcome of Put or Delete. Session is the caller's token
// merged with the write's index; it is set also when the error is
// ErrPrecondition.
type WriteResult struct {
	Version uint64 // version written (Put)
	Deleted bool   // whether a key was removed (Delete)
	Session session.Token
}

// ReadOptions select a read's consistency and carry the caller's session.
type ReadOptions struct {
	Consistency Consistency
	Session     session.Token
}

// GetResult is the outcome of Get.
type GetResult struct {
	Record  Record
	Found   bool
	Session session.Token
}

// ScanRequest selects keys in [max(Prefix, Start), End) that begin with
// Prefix, in key order across all shards. Empty Start/End are unbounded.
// Limit <= 0 means DefaultScanLimit; larger than MaxScanLimit is an error.
type ScanRequest struct {
	Prefix string
	Start  string
	End    string
	Limit  int
}

// Scan limits. A page also stops once its keys and values reach
// MaxScanBytes (it always holds at least one item), so a scan of large
// values cannot exhaust a node's memory; More and Next then continue it.
const (
	DefaultScanLimit = 100
	MaxScanLimit     = 10000
	MaxScanBytes     = 4 << 20
)

// ScanResult is one page of a scan. When More is true, Next is the key to
// pass as Start to continue.
type ScanResult struct {
	Items   []Record
	Next    string
	More    bool
	Session session.Token
}

// ClusterStatus describes the nodes and shards as this node sees them.
type ClusterStatus struct {
	Node string `json:"node"`
	// MapVersion is the version of the cluster map this node has.
	MapVersion uint64 `json:"map_version"`
	// Paused: the planner starts no new moves.
	Paused bool `json:"rebalance_paused"`
	// Settled: by this node's map, no move is in flight, no node is
	// joining or decommissioning, and the planner wants no move or
	// leadership change — replicas and leaders are where they should be.
	Settled bool          `json:"settled"`
	Nodes   []NodeStatus  `json:"nodes"`
	Shards  []ShardStatus `json:"shards"`
	Moves   []MoveStatus  `json:"moves"`
}

// NodeStatus is one member node.
type NodeStatus struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	Up   bool   `json:"up"`
	// State is joining, active, decommissioning, decommissioned or
	// removed.
	State string `json:"state"`
	// Number is the node's Raft node number, never reused.
	Number uint64 `json:"number"`
	// Replicas counts the shard replicas the map places on the node and
	// Leaders the shards it leads, the metadata group's included in both
	// (as the planner counts them).
	Replicas int `json:"replicas"`
	Leaders  int `json:"leaders"`
	// Moves counts the moves in flight to or from the node.
	Moves int `json:"moves"`
	// Since is when the node entered State.
	Since time.Time `json:"since"`
}

// MoveStatus is one replica move in flight.
type MoveStatus struct {
	// Shard is the shard moved; "meta" for the metadata group.
	Shard string `json:"shard"`
	From  string `json:"from,omitempty"`
	To    string `json:"to"`
	// Phase is learner (being filled), promote, remove or cancel.
	Phase string `json:"phase"`
	// Applied and Target: the target replica's log position and the
	// leader's (a learner has caught up when they meet).
	Applied uint64 `json:"applied"`
	Target  uint64 `json:"target"`
	// BytesSent counts the snapshot bytes sent to the target so far.
	BytesSent int64     `json:"bytes_sent"`
	Started   time.Time `json:"started"`
	// Waiting names what the move waits for, when it waits.
	Waiting string `json:"waiting,omitempty"`
}

// ShardStatus is one shard's Raft group.
type ShardStatus struct {
	ID       int             `json:"id"`
	Leader   string          `json:"leader"`
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one replica of a shard.
type ReplicaStatus struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied"`
	State   string `json:"state,omitempty"`
}

// Space selects one of a shard's two key spaces.
type Space uint8

const (
	// UserSpace holds the keys of the KV API.
	UserSpace Space = 0
	// SystemSpace holds lambdadb's own replicated records (function registry,
	// later trigger definitions and checkpoints). The KV API, scans of
	// UserSpace and (later) change feeds never see it.
	SystemSpace Space = 1
)

// String returns the space's name.
func (sp Space) String() string {
	switch sp {
	case UserSpace:
		return "user"
	case SystemSpace:
		return "system"
	}
	return fmt.Sprintf("space(%d)", uint8(sp))
}

// kvSpace maps sp to the engine's space; ok is false for an unknown space.
func (sp Space) kvSpace() (kv.Space, bool) {
	switch sp {
	case UserSpace:
		return kv.UserData, true
	case SystemSpace:
		return kv.System, true
	}
	return 0, false
}

// Op is one write of a Batch.
type Op struct {
	Space  Space
	Key    string
	Value  []byte // for a put
	Delete bool   // delete Key instead of putting Value
	Cond   Cond
}

// BatchResult is the outcome of Batch. Session is the caller's token merged
// with the batch's index; like WriteResult's, it is set also when the error
// is ErrPrecondition.
type BatchResult struct {
	Shard   int
	Index   uint64 // Raft index of the batch: the version of every put in it
	Deleted []bool // per op: whether a delete removed a key
	Session session.Token
}

// Limits of a batch.
const (
	// MaxBatchOps bounds the number of ops in one batch.
	MaxBatchOps = 1000
	// MaxSystemValueBytes bounds one SystemSpace value (function modules are
	// up to 32 MiB).
	MaxSystemValueBytes = 40 << 20
	// MaxBatchBytes bounds the sum of a batch's key and value sizes, so
	// that the batch fits one Raft entry and one internal RPC.
	MaxBatchBytes = 48 << 20
)

// PeerState is one cluster member as this node sees it.
type PeerState struct {
	Peer
	// Up is whether the member answered its last status probe (always true
	// for this node).
	Up bool
	// Info is the member's latest Config.StatusInfo bytes (nil when it has
	// none or is down).
	Info []byte
}

// MaxStatusInfoBytes bounds Config.StatusInfo's bytes: longer ones are not
// sent (the report carries nil instead).
const MaxStatusInfoBytes = 64 << 10
