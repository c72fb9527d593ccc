package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/kv"
	"lambdadb/multiraft"
	"lambdadb/transport"
)

// Peer is one member of the initial cluster.
type Peer struct {
	ID   string
	Addr string
}

// Raft timing defaults (Config.TickInterval, Config.ElectionTimeout).
const (
	DefaultTickInterval    = 100 * time.Millisecond
	DefaultElectionTimeout = 500 * time.Millisecond
)

// DefaultMaxInflightWrites is Config.MaxInflightWrites's default. Under a
// flood of 1,000 writers on 3 nodes (LambdaBench hostile) 64 keeps the
// throughput of 256 for clients that honour Retry-After and cuts the
// handler time of admitted writes at p99 from ~720 ms to ~220 ms.
const DefaultMaxInflightWrites = 64

// Config configures a Node. Zero values select the defaults in comments.
type Config struct {
	// ID names this node. Default "n1". Fixed once the data directory exists.
	ID string
	// Addr is the address this node advertises. Default "127.0.0.1:7070".
	Addr string
	// Dir is the data directory. Default "./data".
	Dir string
	// FS is the filesystem for all state. Default vfs.Default.
	FS vfs.FS
	// Shards is the number of shards, a power of two. Fixed when the data
	// directory is created; reopening with another value is an error.
	// Default (0): the count the directory was created with, or
	// DefaultShards (64) for a new one.
	Shards int
	// Replicas is the replication factor, capped at the number of nodes.
	// Default 3.
	Replicas int
	// Peers is the initial cluster (etcd's --initial-cluster). Default: this
	// node alone. A cluster of more than one node needs Mux.
	Peers []Peer
	// Mux carries Raft and internal RPC on the node's one address. Required
	// when Peers names other nodes; a one-node cluster needs no transport.
	// The caller runs Mux.Serve and closes the Mux
	// after the Node.
	Mux *Mux
	// TickInterval is the Raft engine's tick: heartbeats go out every
	// tick and ElectionTimeout is counted in ticks. Default
	// DefaultTickInterval.
	TickInterval time.Duration
	// ElectionTimeout is Raft's heartbeat and election timeout: a follower
	// that hears nothing from its leader for a random time between one and
	// two of these starts an election. Default 500ms.
	ElectionTimeout time.Duration
	// MaxValueBytes bounds a value's size. Default 1 MiB.
	MaxValueBytes int
	// MaxInflightWrites bounds the client writes (Put, Delete, Batch with a
	// context marked by AdmitAsClient) this node has in flight, proposed
	// here or forwarded; MaxInflightReads the client reads (Get). A request beyond the bound waits up to
	// AdmissionWait for a slot, then fails with ErrOverloaded, so the
	// latency of admitted requests stays bounded under a flood. Defaults
	// DefaultMaxInflightWrites (64) and 1024; AdmissionWait default 50ms.
	MaxInflightWrites int
	MaxInflightReads  int
	AdmissionWait     time.Duration
	// RequestTimeout bounds a request without a context deadline. Default 10s.
	RequestTimeout time.Duration
	// SessionWait bounds how long a session read waits for this replica to
	// catch up with the caller's token before the shard's leader serves it
	// instead. Default 100ms.
	SessionWait time.Duration
	// StartTimeout bounds how long Open waits for every shard to elect a
	// leader. Default 30s.
	StartTimeout time.Duration
	// LogRetainEntries is how many applied entries each shard keeps in its
	// Raft log, so a briefly lagging follower catches up from the log
	// rather than a snapshot; a shard's log is truncated to this once it
	// holds twice as many. Default 10240.
	LogRetainEntries uint64
	// Registerer receives the node's metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger receives operational logs. Default: discard.
	Logger *slog.Logger
	// StatusInfo, when set, is called each time this node answers a peer's
	// status probe (every 500 ms per peer) and for its own entry of Peers;
	// its bytes reach the other nodes' Peers. It must be fast, safe for
	// concurrent use, and small: bytes over MaxStatusInfoBytes are dropped
	// (sent as nil).
	StatusInfo func() []byte

	// FeedRetainEntries bounds each shard's change feed by Raft entries:
	// records more than this many entries behind the applied index are
	// trimmed. Default 100000.
	FeedRetainEntries uint64
	// FeedRetainAge trims change-feed records older than this (by the
	// leader's clock when the entry was appended). Default 24h.
	FeedRetainAge time.Duration
	// FeedTrimInterval is how often a shard's leader considers trimming its
	// feed. Default 10s.
	FeedTrimInterval time.Duration
	// FeedTrimLimit, when set, bounds trimming: shard s's feed is never
	// trimmed past FeedTrimLimit(s) (the lowest live trigger checkpoint).
	FeedTrimLimit func(shard int) uint64
}

func (c *Config) setDefaults() error {
	if c.ID == "" {
		c.ID = "n1"
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:7070"
	}
	if c.Dir == "" {
		c.Dir = "./data"
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Shards < 0 || c.Shards > kv.MaxShards {
		return fmt.Errorf("shard: Config.Shards must be 1..%d, got %d", kv.MaxShards, c.Shards)
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Replicas < 1 {
		return fmt.Errorf("shard: Config.Replicas must be positive, got %d", c.Replicas)
	}
	if len(c.Peers) == 0 {
		c.Peers = []Peer{{ID: c.ID, Addr: c.Addr}}
	}
	var self bool
	for _, p := range c.Peers {
		if p.ID == c.ID {
			self = true
		}
	}
	if !self {
		return fmt.Errorf("shard: Config.Peers does not name this node %q", c.ID)
	}
	ids, addrs := map[string]bool{}, map[string]bool{}
	for _, p := range c.Peers {
		if p.ID == "" || p.Addr == "" || ids[p.ID] || addrs[p.Addr] {
			return fmt.Errorf("shard: Config.Peers: empty or duplicate id or address in %v", c.Peers)
		}
		ids[p.ID], addrs[p.Addr] = true, true
		if p.ID == c.ID && p.Addr != c.Addr {
			return fmt.Errorf("shard: Config.Peers gives %s the address %s, but Addr is %s", p.ID, p.Addr, c.Addr)
		}
	}
	if len(c.Peers) > 1 && c.Mux == nil {
		return errors.New("shard: a multi-node cluster needs Config.Mux")
	}
	if c.ElectionTimeout <= 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.TickInterval <= 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = 1 << 20
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxInflightWrites <= 0 {
		c.MaxInflightWrites = DefaultMaxInflightWrites
	}
	if c.MaxInflightReads <= 0 {
		c.MaxInflightReads = 1024
	}
	if c.AdmissionWait <= 0 {
		c.AdmissionWait = 50 * time.Millisecond
	}
	if c.SessionWait <= 0 {
		c.SessionWait = 100 * time.Millisecond
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.FeedRetainEntries == 0 {
		c.FeedRetainEntries = 100000
	}
	if c.FeedRetainAge <= 0 {
		c.FeedRetainAge = 24 * time.Hour
	}
	if c.FeedTrimInterval <= 0 {
		c.FeedTrimInterval = 10 * time.Second
	}
	if c.LogRetainEntries == 0 {
		c.LogRetainEntries = 10240
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Node is this process's share of the cluster: its storage engine and one
// Raft group per shard it replicates.
type Node struct {
	cfg    Config
	eng    *kv.Engine
	groups []*group // by shard id; nil where this node holds no replica
	m      *metrics
	closed atomic.Bool
	mu     sync.Mutex // serialises Close

	// engMu lets reads outside Raft (Get, scans, feeds) finish before
	// Close closes the engine; engClosed is set under its write lock.
	engMu     sync.RWMutex
	engClosed bool

	peerOf     map[string]string // address → node id
	numOf      map[string]uint64 // node id → raft node number (position in Peers + 1)
	mr         *multiraft.Engine // the Raft engine: every shard replica of this node
	tr         *transport.Transport
	rpc        *rpcClient
	writeSlots chan struct{} // admission: one token per client write in flight
	readSlots  chan struct{} // and per client read
	fwdMu      sync.Mutex
	fwd        map[string]*forwarder // by leader address
	internal   *http.Server
	imux       *http.ServeMux // internal RPC routes (rpc.go)
	extMu      sync.Mutex
	ext        map[string]http.Handler // HandleInternal's routes
	peers      *peerTracker
	stop       chan struct{}
	bg         sync.WaitGroup
}

// Open opens the data directory, starts one Raft group per shard and waits
// until every shard can serve linearizable requests.
func Open(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	eng, err := kv.Open(kv.Config{Dir: cfg.FS.PathJoin(cfg.Dir, "db"), FS: cfg.FS, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	if cfg.Shards, err = resolveShards(eng, cfg.Shards); err != nil {
		eng.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, eng: eng, groups: make([]*group, cfg.Shards), stop: make(chan struct{}),
		writeSlots: make(chan struct{}, cfg.MaxInflightWrites), readSlots: make(chan struct{}, cfg.MaxInflightReads),
		peerOf: map[string]string{}, numOf: map[string]uint64{}, imux: http.NewServeMux()}
	for i, p := range cfg.Peers {
		n.peerOf[p.Addr] = p.ID
		n.numOf[p.ID] = uint64(i + 1)
	}
	n.peers = newPeerTracker(cfg.Peers, cfg.ID)
	if err := n.checkIdentity(); err != nil {
		eng.Close()
		return nil, err
	}
	if n.m, err = newMetrics(cfg.Registerer, n); err != nil {
		eng.Close()
		return nil, fmt.Errorf("shard: metrics: %w", err)
	}
	if cfg.Mux != nil {
		n.rpc = newRPCClient(cfg.Mux, func(addr string) string { return n.peerOf[addr] })
	}
	if err := n.openMultiRaft(); err != nil {
		eng.Close()
		return nil, err
	}
	for s := 0; s < cfg.Shards; s++ {
		if !n.hosts(s) {
			continue
		}
		g, err := n.startMultiRaftGroup(s)
		if err != nil {
			n.Close()
			return nil, err
		}
		n.groups[s] = g
	}
	if cfg.Mux != nil {
		// Serve internal RPC only once n.groups is complete.
		n.internal = &http.Server{Handler: n.internalHandler(), ReadHeaderTimeout: 5 * time.Second}
		go n.internal.Serve(cfg.Mux.InternalListener())
	}
	if len(cfg.Peers) == 1 {
		// A one-node cluster elects itself at once: wait so the first
		// request succeeds.
		ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
		defer cancel()
		for _, g := range n.groups {
			if err := g.waitLeader(ctx); err != nil {
				n.Close()
				return nil, err
			}
		}
	} else {
		n.bg.Add(2)
		go n.probeLoop()
		go n.balanceLoop()
	}
	n.bg.Add(1)
	go n.feedTrimLoop()
	cfg.Logger.Info("node started", "node", cfg.ID, "shards", cfg.Shards, "peers", len(cfg.Peers))
	return n, nil
}

// hosts reports whether this node holds a replica of shard s.
func (n *Node) hosts(s int) bool {
	for _, p := range n.replicasOf(s) {
		if p.ID == n.cfg.ID {
			return true
		}
	}
	return false
}

// hosted returns shard s's local group, or nil.
func (n *Node) hosted(s int) *group {
	if s < 0 || s >= len(n.groups) {
		return nil
	}
	return n.groups[s]
}

// DefaultShards is the shard count of a new data directory when
// Config.Shards is 0.
const DefaultShards = 64

// ErrShardCount is a shard count a new data directory cannot have.
var ErrShardCount = errors.New("shard: the shard count must be a power of two")

// resolveShards returns the shard count to open with: want, or when want
// is 0 the count the data directory was created with, or DefaultShards
// for a new one. A new directory's count must be a power of two, so that
// a shard can later be split by doubling the count; a directory created
// with another count by an earlier release keeps it (checkIdentity
// refuses a different one).
func resolveShards(eng *kv.Engine, want int) (int, error) {
	have, found, err := eng.NodeMeta("shards")
	if err != nil {
		return 0, fmt.Errorf("shard: %w", err)
	}
	if found {
		stored, err := strconv.Atoi(string(have))
		if err != nil || stored < 1 {
			return 0, fmt.Errorf("shard: data directory records shards=%q", have)
		}
		if want == 0 {
			return stored, nil
		}
		return want, nil // checkIdentity compares
	}
	if want == 0 {
		want = DefaultShards
	}
	if want&(want-1) != 0 {
		return 0, fmt.Errorf("%w, not %d (a shard splits by doubling the count)", ErrShardCount, want)
	}
	return want, nil
}

// checkIdentity records the node id, shard count, peer list and replica
// count on first open and refuses to open a directory made with other
// values.
func (n *Node) checkIdentity() error {
	var peers []string
	for _, p := range n.cfg.Peers {
		peers = append(peers, p.ID+"="+p.Addr)
	}
	if err := n.checkEngine(); err != nil {
		return err
	}
	// Placement is computed from the peer list (in order), the replica
	// count and the shard count, so none of them may change.
	for _, kvp := range []struct{ name, want string }{
		{"id", n.cfg.ID},
		{"shards", strconv.Itoa(n.cfg.Shards)},
		{"peers", strings.Join(peers, ",")},
		{"replicas", strconv.Itoa(n.cfg.Replicas)},
	} {
		have, found, err := n.eng.NodeMeta(kvp.name)
		if err != nil {
			return fmt.Errorf("shard: %w", err)
		}
		if !found {
			if err := n.eng.SetNodeMeta(kvp.name, []byte(kvp.want)); err != nil {
				return fmt.Errorf("shard: %w", err)
			}
			continue
		}
		if string(have) != kvp.want {
			return fmt.Errorf("shard: data directory %s was created with %s=%s, not %s",
				n.cfg.Dir, kvp.name, have, kvp.want)
		}
	}
	return nil
}

// engineName is recorded in every data directory this release creates
// (node meta "engine").
const engineName = "multiraft"

// checkEngine refuses a data directory written by the earlier replication
// engine (one hashicorp/raft instance per shard, before the "engine"
// record existed): its Raft logs are in another format, and reading its
// shards as if they were this engine's would misread them.
func (n *Node) checkEngine() error {
	have, found, err := n.eng.NodeMeta("engine")
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	if !found {
		_, existing, err := n.eng.NodeMeta("id")
		if err != nil {
			return fmt.Errorf("shard: %w", err)
		}
		if existing {
			have = []byte("hashicorp")
		} else {
			have = []byte(engineName)
			if err := n.eng.SetNodeMeta("engine", have); err != nil {
				return fmt.Errorf("shard: %w", err)
			}
		}
	}
	if string(have) != engineName {
		return fmt.Errorf("%w: data directory %s was written by the %s replication engine of an earlier release, "+
			"which this release cannot read: export its keys with that release (lambdadb scan --json) and write them "+
			"into a cluster started on empty data directories; see docs/operations.md, Upgrading", ErrDataDir, n.cfg.Dir, have)
	}
	return nil
}

// replicasOf places shard s on min(Replicas, len(Peers)) consecutive peers
// starting at s mod len(Peers).
func (n *Node) replicasOf(s int) []Peer {
	peers := n.cfg.Peers
	r := min(n.cfg.Replicas, len(peers))
	out := make([]Peer, 0, r)
	for i := 0; i < r; i++ {
		out = append(out, peers[(s+i)%len(peers)])
	}
	return out
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.ID }

// Shards returns the number of shards.
func (n *Node) Shards() int { return n.cfg.Shards }

// Close stops every Raft group and closes storage.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed.Swap(true) {
		return nil
	}
	close(n.stop)
	n.bg.Wait()
	if n.internal != nil {
		n.internal.Close()
	}
	var errs []error
	for _, g := range n.groups {
		if g == nil {
			continue
		}
		if err := g.shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.mr != nil {
		if err := n.mr.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.tr != nil {
		if err := n.tr.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	n.engMu.Lock()
	n.engClosed = true
	n.engMu.Unlock()
	if err := n.eng.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Node) ledCount() int {
	c := 0
	for _, g := range n.groups {
		if g != nil && g.isLeader() {
			c++
		}
	}
	return c
}

// engRLock read-locks the engine for a read outside Raft; false means the
// node closed (nothing is locked then).
func (n *Node) engRLock() bool {
	// Only Close takes the write lock. Waiting behind it would deadlock a
	// reader that already holds a read lock (a scatter leaf's snapshot
	// whose handler reads through the node) while Close waits for that
	// very snapshot: a closing node refuses new readers instead.
	if !n.engMu.TryRLock() {
		return false
	}
	if n.engClosed {
		n.engMu.RUnlock()
		return false
	}
	return true
}

// Node-local values live beside the node's own metadata, outside every
// shard: they are neither replicated nor part of snapshots.
const localMetaPrefix = "local/"

// LocalMeta returns the node-local value name (see SetLocalMeta).
func (n *Node) LocalMeta(name string) (value []byte, found bool, err error) {
	if !n.engRLock() {
		return nil, false, ErrClosed
	}
	defer n.engMu.RUnlock()
	return n.eng.NodeMeta(localMetaPrefix + name)
}

// SetLocalMeta durably stores a value that belongs to this node only (a
// component's own bookkeeping, such as its function meters).
func (n *Node) SetLocalMeta(name string, value []byte) error {
	if !n.engRLock() {
		return ErrClosed
	}
	defer n.engMu.RUnlock()
	return n.eng.SetNodeMeta(localMetaPrefix+name, value)
}
