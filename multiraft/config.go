package multiraft

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/kv"
)

// Defaults of Config.
const (
	DefaultTickInterval      = 100 * time.Millisecond
	DefaultElectionTicks     = 10
	DefaultHeartbeatTicks    = 1
	DefaultMaxSizePerMsg     = 256 << 10
	DefaultMaxInflightMsgs   = 256
	DefaultMaxInflightBytes  = 8 << 20
	DefaultMaxUncommitted    = 32 << 20
	DefaultMaxCommittedBytes = 16 << 20
	DefaultMaxWriteBytes     = 4 << 20
	DefaultLogRetainEntries  = 10000
)

// Config configures an Engine. Zero values select the defaults in comments.
type Config struct {
	// NodeID is this node's raft id in every group. Required, non-zero.
	NodeID uint64
	// Storage is the node's Pebble engine: raft logs, hard state and the
	// state machines' data. Required.
	Storage *kv.Engine
	// Transport carries messages to other nodes. Required when any group
	// has replicas on other nodes.
	Transport Transport
	// FS and SnapshotDir hold snapshots received and not yet installed.
	// Default vfs.Default and "" (the working directory: set it).
	FS          vfs.FS
	SnapshotDir string
	// TickInterval is the length of one raft tick. Default 100ms.
	TickInterval time.Duration
	// ElectionTicks is raft's election timeout in ticks (randomised by raft
	// to between one and two of it). Default 10.
	ElectionTicks int
	// HeartbeatTicks is how often a leader sends heartbeats, in ticks.
	// Default 1.
	HeartbeatTicks int
	// Workers is the number of scheduler workers. Default GOMAXPROCS.
	Workers int
	// MaxSizePerMsg bounds the entries in one append message (at least one
	// entry is always sent). Default 256 KiB.
	MaxSizePerMsg uint64
	// MaxInflightMsgs and MaxInflightBytes bound the append messages in
	// flight to one follower. Default 256 and 8 MiB.
	MaxInflightMsgs  int
	MaxInflightBytes uint64
	// MaxUncommittedBytes bounds a leader's uncommitted tail; proposals
	// beyond it are dropped (retryable). Default 32 MiB.
	MaxUncommittedBytes uint64
	// MaxCommittedBytes bounds the committed entries applied in one pass.
	// Default 16 MiB.
	MaxCommittedBytes uint64
	// MaxWriteBytes bounds one log-writer batch (one sync); a larger queue
	// is written in several. Default 4 MiB.
	MaxWriteBytes int
	// LogRetainEntries is how many applied entries a group keeps in its log
	// for followers that lag; older ones are truncated (never past the
	// applied index, never while a snapshot is being sent). Default 10000.
	LogRetainEntries uint64
	// Fatal is called when the node can no longer follow its log (a failed
	// log write). Default: panic. It must not return normally in
	// production; tests may record the error and stop.
	Fatal func(error)
	// Registerer receives the engine's metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger receives operational logs. Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.NodeID == 0 {
		return errors.New("multiraft: Config.NodeID is required")
	}
	if c.Storage == nil {
		return errors.New("multiraft: Config.Storage is required")
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.TickInterval < 0 || c.ElectionTicks < 0 || c.HeartbeatTicks < 0 || c.Workers < 0 {
		return fmt.Errorf("multiraft: negative Config setting")
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if c.HeartbeatTicks >= c.ElectionTicks {
		return fmt.Errorf("multiraft: Config.HeartbeatTicks (%d) must be below ElectionTicks (%d)", c.HeartbeatTicks, c.ElectionTicks)
	}
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = DefaultMaxSizePerMsg
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if c.MaxUncommittedBytes == 0 {
		c.MaxUncommittedBytes = DefaultMaxUncommitted
	}
	if c.MaxCommittedBytes == 0 {
		c.MaxCommittedBytes = DefaultMaxCommittedBytes
	}
	if c.MaxWriteBytes <= 0 {
		c.MaxWriteBytes = DefaultMaxWriteBytes
	}
	if c.LogRetainEntries == 0 {
		c.LogRetainEntries = DefaultLogRetainEntries
	}
	if c.Fatal == nil {
		c.Fatal = func(err error) { panic(err) }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
