package shard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/session"
	"lambdadb/kv"
)

// Peer is one member of the initial cluster.
type Peer struct {
	ID   string
	Addr string
}

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
	// Shards is the number of shards. Default 16. Fixed when the data
	// directory is created; reopening with another value is an error.
	Shards int
	// Replicas is the replication factor, capped at the number of nodes.
	// Default 3.
	Replicas int
	// Peers is the initial cluster (etcd's --initial-cluster). Default: this
	// node alone. This version runs one-node clusters only.
	Peers []Peer
	// MaxValueBytes bounds a value's size. Default 1 MiB.
	MaxValueBytes int
	// RequestTimeout bounds a request without a context deadline. Default 10s.
	RequestTimeout time.Duration
	// SessionWait bounds how long a session read waits for this replica to
	// catch up with the caller's token before falling back to a
	// linearizable read. Default 1s.
	SessionWait time.Duration
	// StartTimeout bounds how long Open waits for every shard to elect a
	// leader. Default 30s.
	StartTimeout time.Duration
	// SnapshotThreshold is the number of log entries between snapshots of a
	// shard. Default 8192.
	SnapshotThreshold uint64
	// TrailingLogs is the number of entries kept after a snapshot, so a
	// briefly lagging follower needs no snapshot. Default 10240.
	TrailingLogs uint64
	// Registerer receives the node's metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger receives operational logs. Default: discard.
	Logger *slog.Logger
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
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.Shards < 1 || c.Shards > kv.MaxShards {
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
	if len(c.Peers) > 1 {
		return errors.New("shard: multi-node clusters are not supported by this version; omit --peers")
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = 1 << 20
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.SessionWait <= 0 {
		c.SessionWait = time.Second
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
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
	groups []*group
	m      *metrics
	closed atomic.Bool
	mu     sync.Mutex // serialises Close
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
	n := &Node{cfg: cfg, eng: eng}
	if err := n.checkIdentity(); err != nil {
		eng.Close()
		return nil, err
	}
	if n.m, err = newMetrics(cfg.Registerer, n); err != nil {
		eng.Close()
		return nil, fmt.Errorf("shard: metrics: %w", err)
	}
	for s := 0; s < cfg.Shards; s++ {
		g, err := n.startGroup(s)
		if err != nil {
			n.Close()
			return nil, err
		}
		n.groups = append(n.groups, g)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	defer cancel()
	for _, g := range n.groups {
		if err := g.waitLeader(ctx); err != nil {
			n.Close()
			return nil, err
		}
	}
	cfg.Logger.Info("shards ready", "node", cfg.ID, "shards", cfg.Shards)
	return n, nil
}

// checkIdentity records the node id and shard count on first open and
// refuses to open a directory made with other values.
func (n *Node) checkIdentity() error {
	for _, kvp := range []struct{ name, want string }{
		{"id", n.cfg.ID},
		{"shards", strconv.Itoa(n.cfg.Shards)},
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

func (n *Node) startGroup(s int) (*group, error) {
	logs, err := n.eng.LogStore(s)
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	stable, err := n.eng.StableStore(s)
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	snaps, err := kv.NewSnapshotStore(n.cfg.FS, n.cfg.FS.PathJoin(n.cfg.Dir, "snapshots", fmt.Sprintf("%05d", s)), 2)
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	f, err := newFSM(s, n.eng)
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	f.onApply = func(k int) { n.m.applied.Add(float64(k)) }
	g := &group{id: s, fsm: f, m: n.m, leaderCh: make(chan bool, 16)}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.NoSnapshotRestoreOnStart = true
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.CommitTimeout = 10 * time.Millisecond
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.SnapshotInterval = 10 * time.Second
	rc.NotifyCh = g.leaderCh
	rc.Logger = hclog.New(&hclog.LoggerOptions{
		Name:   fmt.Sprintf("raft.%d", s),
		Level:  hclog.Warn,
		Output: slogWriter{n.cfg.Logger},
	})

	addr := raft.ServerAddress(n.cfg.Addr)
	_, trans := raft.NewInmemTransport(addr)
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("shard: %d: %w", s, err)
	}
	r, err := raft.NewRaft(rc, f, logs, stable, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("shard: %d: start raft: %w", s, err)
	}
	g.raft = r
	g.start()
	if !existing {
		var servers []raft.Server
		for _, p := range n.replicasOf(s) {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			g.shutdown()
			return nil, fmt.Errorf("shard: %d: bootstrap: %w", s, err)
		}
	}
	return g, nil
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

// waitLeader blocks until the group is a ready leader (one-node clusters).
func (g *group) waitLeader(ctx context.Context) error {
	for {
		if g.ready.Load() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: shard %d elected no leader: %v", ErrUnavailable, g.id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
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
	var errs []error
	for _, g := range n.groups {
		if err := g.shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.eng.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Node) ledCount() int {
	c := 0
	for _, g := range n.groups {
		if g.raft.State() == raft.Leader {
			c++
		}
	}
	return c
}

func (n *Node) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, n.cfg.RequestTimeout)
}

// Put stores value under key if cond holds.
func (n *Node) Put(ctx context.Context, key string, value []byte, cond Cond, tok session.Token) (WriteResult, error) {
	if len(value) > n.cfg.MaxValueBytes {
		return WriteResult{Session: tok}, errorf(ErrValueTooLarge, "value is %d bytes, the limit is %d", len(value), n.cfg.MaxValueBytes)
	}
	return n.write(ctx, newCommand(opPut, key, value, cond), tok)
}

// Delete removes key if cond holds.
func (n *Node) Delete(ctx context.Context, key string, cond Cond, tok session.Token) (WriteResult, error) {
	return n.write(ctx, newCommand(opDelete, key, nil, cond), tok)
}

func (n *Node) write(ctx context.Context, cmd command, tok session.Token) (WriteResult, error) {
	res := WriteResult{Session: tok}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := ValidateKey(cmd.Key); err != nil {
		return res, err
	}
	if cmd.Cond == condIfMatch && cmd.Version == 0 {
		return res, errorf(ErrPrecondition, "no key has version 0")
	}
	opName := map[uint8]string{opPut: "put", opDelete: "delete"}[cmd.Op]
	s := For(cmd.Key, n.cfg.Shards)
	g := n.groups[s]
	if g.raft.State() != raft.Leader {
		n.m.writes.WithLabelValues(opName, "not_leader").Inc()
		return res, g.notLeader()
	}
	b, err := encodeCommand(cmd)
	if err != nil {
		return res, err
	}
	ctx, cancel := n.ctx(ctx)
	defer cancel()
	timeout := time.Until(deadline(ctx))
	f := g.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		n.m.writes.WithLabelValues(opName, "error").Inc()
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return res, g.notLeader()
		case errors.Is(err, raft.ErrRaftShutdown):
			return res, ErrClosed
		case isRaftUnavailable(err):
			return res, errorf(ErrUnavailable, "shard %d: %v (the write may or may not have been applied)", s, err)
		}
		return res, fmt.Errorf("shard: %d: apply: %w", s, err)
	}
	res.Session = tok.Merge(session.Token{s: f.Index()})
	ar, ok := f.Response().(applyResult)
	if !ok {
		return res, fmt.Errorf("shard: %d: unexpected apply response %T", s, f.Response())
	}
	if ar.err != nil {
		n.m.writes.WithLabelValues(opName, "precondition_failed").Inc()
		return res, ar.err
	}
	n.m.writes.WithLabelValues(opName, "ok").Inc()
	res.Version, res.Deleted = ar.version, ar.deleted
	return res, nil
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// prepareRead blocks until group g may serve a read at ro's consistency.
func (n *Node) prepareRead(ctx context.Context, g *group, ro ReadOptions) error {
	switch ro.Consistency {
	case Stale:
		return nil
	case Session:
		need := ro.Session.Index(g.id)
		if g.fsm.applied.Load() >= need {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, n.cfg.SessionWait)
		err := g.fsm.waitApplied(wctx, need)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: shard %d: %v", ErrUnavailable, g.id, ctx.Err())
		}
		// This replica is behind the caller: a linearizable read covers
		// every committed write, so it covers the token.
		n.m.sessionFallbacks.Inc()
		return g.linearizable(ctx)
	case Linearizable:
		return g.linearizable(ctx)
	}
	return errorf(ErrBadConsistency, "%d", ro.Consistency)
}

// Get reads key at ro's consistency.
func (n *Node) Get(ctx context.Context, key string, ro ReadOptions) (GetResult, error) {
	res := GetResult{Session: ro.Session}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := ValidateKey(key); err != nil {
		return res, err
	}
	ctx, cancel := n.ctx(ctx)
	defer cancel()
	s := For(key, n.cfg.Shards)
	g := n.groups[s]
	if err := n.prepareRead(ctx, g, ro); err != nil {
		return res, err
	}
	rec, found, err := n.eng.Get(s, []byte(key))
	if err != nil {
		return res, fmt.Errorf("shard: %w", err)
	}
	// pending is at least the state the read observed.
	res.Session = ro.Session.Merge(session.Token{s: g.fsm.pending.Load()})
	n.m.reads.WithLabelValues(ro.Consistency.String()).Inc()
	res.Found = found
	res.Record = Record{Key: key, Value: rec.Value, Version: rec.Version}
	return res, nil
}

// Scan returns one page of keys in key order across every shard.
func (n *Node) Scan(ctx context.Context, req ScanRequest, ro ReadOptions) (ScanResult, error) {
	res := ScanResult{Session: ro.Session}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if req.Limit <= 0 {
		req.Limit = DefaultScanLimit
	}
	if req.Limit > MaxScanLimit {
		return res, errorf(ErrInvalidScan, "limit %d exceeds %d", req.Limit, MaxScanLimit)
	}
	lo, hi := scanBounds(req)
	if hi != nil && string(lo) >= string(hi) {
		return res, nil
	}
	ctx, cancel := n.ctx(ctx)
	defer cancel()
	errs := make([]error, len(n.groups))
	var wg sync.WaitGroup
	for i, g := range n.groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.prepareRead(ctx, g, ro)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	r := n.eng.NewReader()
	defer r.Close()
	tok := session.Token{}
	var all []Record
	for s := range n.groups {
		a, err := r.Applied(s)
		if err != nil {
			return res, fmt.Errorf("shard: %w", err)
		}
		tok.Observe(s, a)
		count := 0
		err = r.Scan(s, lo, hi, func(k, v []byte, ver uint64) bool {
			all = append(all, Record{Key: string(k), Value: append([]byte(nil), v...), Version: ver})
			count++
			return count <= req.Limit
		})
		if err != nil {
			return res, fmt.Errorf("shard: %w", err)
		}
	}
	sortRecords(all)
	if len(all) > req.Limit {
		res.More, res.Next = true, all[req.Limit].Key
		all = all[:req.Limit]
	}
	res.Items = all
	res.Session = ro.Session.Merge(tok)
	n.m.reads.WithLabelValues(ro.Consistency.String()).Inc()
	return res, nil
}

// scanBounds returns [lo, hi) for req; hi nil is unbounded.
func scanBounds(req ScanRequest) (lo, hi []byte) {
	lo = []byte(req.Prefix)
	if req.Start > req.Prefix {
		lo = []byte(req.Start)
	}
	if req.Prefix != "" {
		hi = prefixEnd([]byte(req.Prefix))
	}
	if req.End != "" && (hi == nil || req.End < string(hi)) {
		hi = []byte(req.End)
	}
	return lo, hi
}

func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Cluster reports the nodes and shards as this node sees them.
func (n *Node) Cluster() ClusterStatus {
	st := ClusterStatus{Node: n.cfg.ID}
	for _, p := range n.cfg.Peers {
		st.Nodes = append(st.Nodes, NodeStatus{ID: p.ID, Addr: p.Addr, Up: p.ID == n.cfg.ID && !n.closed.Load()})
	}
	for _, g := range n.groups {
		_, leader := g.raft.LeaderWithID()
		ss := ShardStatus{ID: g.id, Leader: string(leader)}
		for _, p := range n.replicasOf(g.id) {
			rs := ReplicaStatus{Node: p.ID}
			if p.ID == n.cfg.ID {
				rs.Applied = g.fsm.applied.Load()
				rs.State = strings.ToLower(g.raft.State().String())
			}
			ss.Replicas = append(ss.Replicas, rs)
		}
		st.Shards = append(st.Shards, ss)
	}
	return st
}

// slogWriter adapts hclog's line output to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		w.l.Warn(sc.Text())
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}
