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
	// Replicas is the replication factor R of a new cluster, capped at the
	// number of nodes: the cluster map records it, and the cluster adds
	// replicas up to R as nodes join. Reopening a directory with another
	// value is an error; a joining node takes the cluster's. Default 3.
	Replicas int
	// Peers is the initial cluster (etcd's --initial-cluster), used only
	// when the data directory is created: afterwards membership lives in
	// the cluster map. Default: this node alone. A cluster of more than
	// one node needs Mux.
	Peers []Peer
	// Join is the address of any member of a running cluster that a node
	// with a new data directory joins through (--join). The node gets a
	// new Raft node number and holds no replica until the cluster moves
	// some to it. Ignored once the directory exists; exclusive with Peers.
	Join string
	// MoveConcurrency bounds the replica moves the cluster runs at once
	// (read by the metadata group's leader). Default 2.
	MoveConcurrency int
	// SnapshotBytesPerSec limits the rate at which this node sends
	// snapshots (replica moves, followers far behind). Default 64 MiB/s;
	// negative: no limit.
	SnapshotBytesPerSec int64
	// OnReplicaRemoved, when set, is called after this node deleted its
	// replica of a shard (a move off it completed), so components holding
	// state about the shard (feed readers, trigger runners) let it go.
	OnReplicaRemoved func(shard int)
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
	if c.Shards < 0 || c.Shards > MaxConfigShards {
		return fmt.Errorf("shard: Config.Shards must be 1..%d, got %d", MaxConfigShards, c.Shards)
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Replicas < 1 {
		return fmt.Errorf("shard: Config.Replicas must be positive, got %d", c.Replicas)
	}
	if err := ValidateNodeID(c.ID); err != nil {
		return err
	}
	if c.Join != "" && len(c.Peers) > 0 {
		return errors.New("shard: give Config.Peers to create a cluster or Config.Join to join one, not both")
	}
	if c.Join != "" && c.Mux == nil {
		return errors.New("shard: joining a cluster needs Config.Mux")
	}
	if c.MoveConcurrency <= 0 {
		c.MoveConcurrency = 2
	}
	if c.SnapshotBytesPerSec == 0 {
		c.SnapshotBytesPerSec = 64 << 20
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
	cfg Config
	eng *kv.Engine
	// slots holds this node's replicas by shard id, the metadata group's
	// last; nil where it holds none. Replicas come and go with moves.
	slots  []atomic.Pointer[group]
	m      *metrics
	closed atomic.Bool
	mu     sync.Mutex // serialises Close

	// engMu lets reads outside Raft (Get, scans, feeds) finish before
	// Close closes the engine; engClosed is set under its write lock.
	engMu     sync.RWMutex
	engClosed bool

	cmap        atomic.Pointer[clusterMap] // the cluster map this node has
	fresh       atomic.Bool                // cmap was read from the metadata group during this run
	mapMu       sync.Mutex                 // serialises installMap
	genesis     *clusterMap                // an initial node's first map (nil for joined nodes)
	selfNum     uint64                     // this node's Raft node number
	reconcileCh chan struct{}
	ctl         *controller

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

// Open opens the data directory, starts this node's replicas and, for a
// one-node cluster, waits until every shard can serve linearizable
// requests. A new data directory either creates a cluster (Config.Peers)
// or joins one (Config.Join).
func Open(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	eng, err := kv.Open(kv.Config{Dir: cfg.FS.PathJoin(cfg.Dir, "db"), FS: cfg.FS, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	n := &Node{cfg: cfg, eng: eng, stop: make(chan struct{}), reconcileCh: make(chan struct{}, 1),
		writeSlots: make(chan struct{}, cfg.MaxInflightWrites), readSlots: make(chan struct{}, cfg.MaxInflightReads),
		imux: http.NewServeMux(), peers: newPeerTracker()}
	n.cmap.Store(&clusterMap{})
	if n.m, err = newMetrics(cfg.Registerer, n); err != nil {
		eng.Close()
		return nil, fmt.Errorf("shard: metrics: %w", err)
	}
	if cfg.Mux != nil {
		n.rpc = newRPCClient(cfg.Mux, n.peerIDOf)
	}
	if err := n.loadMap(); err != nil {
		eng.Close()
		return nil, err
	}
	if err := n.checkIdentity(); err != nil {
		eng.Close()
		return nil, err
	}
	if err := n.openMultiRaft(); err != nil {
		eng.Close()
		return nil, err
	}
	m := n.curMap()
	n.slots = make([]atomic.Pointer[group], n.cfg.Shards+1)
	for i := range n.slots {
		s := m.shardOfSlot(i)
		has, err := n.hasState(s)
		switch {
		case err != nil:
		case has:
			err = n.startGroup(s, nil, false)
		case m.Version == 0 && m.hostsShard(cfg.ID, s):
			var voters []uint64
			for _, id := range m.Placement[i] {
				num, _ := n.numOf(id)
				voters = append(voters, num)
			}
			err = n.startGroup(s, voters, false)
		case m.shouldHost(cfg.ID, s):
			err = n.startGroup(s, nil, true)
		}
		if err != nil {
			n.Close()
			return nil, err
		}
	}
	if cfg.Mux != nil {
		// Serve internal RPC only once the replicas are in place.
		n.internal = &http.Server{Handler: n.internalHandler(), ReadHeaderTimeout: 5 * time.Second}
		go n.internal.Serve(cfg.Mux.InternalListener())
	}
	n.ctl = newController(n)
	if len(m.members()) == 1 && m.Nodes[0].ID == cfg.ID {
		// A one-node cluster elects itself at once: wait so the first
		// request succeeds, and let the controller record the node
		// active (a new cluster's map counts its nodes joining until it
		// hears from them).
		ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
		defer cancel()
		for _, g := range n.localGroups(true) {
			if err := g.waitLeader(ctx); err != nil {
				n.Close()
				return nil, err
			}
		}
		for i := 0; i < 5; i++ {
			if nd, ok := n.curMap().node(cfg.ID); ok && nd.State == StateActive && n.fresh.Load() {
				break
			}
			if err := n.ctl.step(ctx); err != nil {
				n.Close()
				return nil, fmt.Errorf("shard: recording the cluster map: %w", err)
			}
		}
	}
	n.bg.Add(5)
	go n.probeLoop()
	go n.balanceLoop()
	go n.reconcileLoop()
	go n.ctl.run()
	go n.feedTrimLoop()
	cfg.Logger.Info("node started", "node", cfg.ID, "shards", n.cfg.Shards, "members", len(m.members()), "map", m.Version)
	return n, nil
}

// loadMap sets the node's cluster map, shard count and replica count: the
// map persisted by an earlier run, or for a new data directory the map
// got by joining (Config.Join) or the genesis map of Config.Peers.
func (n *Node) loadMap() error {
	cfg := &n.cfg
	m, found, err := n.storedMap()
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	_, existing, err := n.eng.NodeMeta("id")
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	if !found {
		switch {
		case cfg.Join != "" && !existing:
			if m, err = n.join(cfg.Join); err != nil {
				return err
			}
			if cfg.Shards != 0 && cfg.Shards != m.Shards {
				return fmt.Errorf("shard: the cluster has %d shards, not %d (leave --shards out when joining)", m.Shards, cfg.Shards)
			}
			cfg.Shards = m.Shards
		default:
			// A new directory, or one from a release before the cluster
			// map: membership is the initial peer list.
			if cfg.Shards, err = resolveShards(n.eng, cfg.Shards); err != nil {
				return err
			}
			if existing {
				if have, ok, _ := n.eng.NodeMeta("peers"); ok {
					cfg.Peers = parsePeers(string(have))
				}
			} else if len(cfg.Peers) > 1 {
				if err := n.wipedCheck(cfg.Peers); err != nil {
					return err
				}
			}
			m = genesisMap(cfg.Peers, cfg.Shards, cfg.Replicas)
		}
	} else {
		if cfg.Shards != 0 && cfg.Shards != m.Shards {
			return fmt.Errorf("shard: data directory %s was created with shards=%d, not %d", cfg.Dir, m.Shards, cfg.Shards)
		}
		cfg.Shards = m.Shards
		if len(m.members()) > 1 {
			if err := n.removedCheck(m); err != nil {
				return err
			}
		}
	}
	if have, ok, _ := n.eng.NodeMeta("peers"); ok && m.Version == 0 {
		n.genesis = genesisMap(parsePeers(string(have)), m.Shards, m.Replicas)
	} else if cfg.Join == "" && !existing {
		n.genesis = m.clone()
	}
	self, ok := m.node(cfg.ID)
	switch {
	case !ok:
		return fmt.Errorf("%w: node %s is not a member of the cluster its data directory belongs to", ErrIdentity, cfg.ID)
	case self.State == StateRemoved:
		return fmt.Errorf("%w: node %s was removed from the cluster; start it with a new --id, an empty data directory and --join", ErrIdentity, cfg.ID)
	case self.Addr != cfg.Addr:
		return fmt.Errorf("%w: node %s is a member at %s, not %s", ErrIdentity, cfg.ID, self.Addr, cfg.Addr)
	}
	n.selfNum = self.Num
	n.cmap.Store(m)
	if err := n.persistMap(m); err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	return nil
}

// parsePeers parses "id=addr,id=addr".
func parsePeers(s string) []Peer {
	var out []Peer
	for _, kv := range strings.Split(s, ",") {
		if id, addr, ok := strings.Cut(kv, "="); ok {
			out = append(out, Peer{ID: id, Addr: addr})
		}
	}
	return out
}

// hosted returns shard s's local replica, or nil.
func (n *Node) hosted(s int) *group {
	i := n.slotOf(s)
	if i < 0 || i >= len(n.slots) {
		return nil
	}
	return n.slots[i].Load()
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

// checkIdentity records the node id, shard count, initial peer list and
// replica count on first open and refuses to open a directory made with
// another id or shard count. Membership itself lives in the cluster map:
// the recorded peer list is what created the cluster.
func (n *Node) checkIdentity() error {
	var peers []string
	for _, p := range n.cfg.Peers {
		peers = append(peers, p.ID+"="+p.Addr)
	}
	if err := n.checkEngine(); err != nil {
		return err
	}
	// A node that joined records the cluster's replica count and
	// compares none: it takes the cluster's.
	_, joined, err := n.eng.NodeMeta(metaJoinNonce)
	if err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	replicas := n.cfg.Replicas
	if joined {
		replicas = n.curMap().Replicas
	}
	for _, kvp := range []struct {
		name, want string
		compare    bool
	}{
		{"id", n.cfg.ID, true},
		{"shards", strconv.Itoa(n.cfg.Shards), true},
		{"peers", strings.Join(peers, ","), false},
		{"replicas", strconv.Itoa(replicas), !joined},
	} {
		if kvp.name == "peers" && joined {
			continue
		}
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
		if kvp.compare && string(have) != kvp.want {
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
	for _, g := range n.localGroups(true) {
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
	for _, g := range n.localGroups(false) {
		if g.isLeader() {
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
