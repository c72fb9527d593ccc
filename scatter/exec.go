package scatter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/lambda"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Cluster is what the executor needs of the local shard node; *shard.Node
// satisfies it.
type Cluster interface {
	ID() string
	Shards() int
	Replicas(s int) []shard.Peer
	Leader(s int) shard.Peer
	Peers() []shard.PeerState
	OpenShard(ctx context.Context, s int, ro shard.ReadOptions) (*shard.ShardSnapshot, error)
	CallInternal(ctx context.Context, addr, path string, req, resp any) error
}

// Functions runs function leaves and combines; *lambda.Engine satisfies it.
type Functions interface {
	Get(ctx context.Context, name string) (*lambda.Function, error)
	CallLeaf(ctx context.Context, c lambda.LeafCall) (lambda.Result, error)
	CallCombine(ctx context.Context, c lambda.CombineCall) (lambda.Result, error)
}

// Defaults.
const (
	DefaultFanIn        = 8
	DefaultHedgeAfter   = time.Second
	DefaultQueryTimeout = 2 * time.Minute
	DefaultMaxQueries   = 32
	DefaultMaxGroups    = 10000
	// MaxQueryTimeout bounds a query's own timeout.
	MaxQueryTimeout = time.Hour
	// MaxPartBytes bounds one encoded partial result (a leaf's or a
	// combine's output) and the sum of one combine's inputs.
	MaxPartBytes = lambda.MaxMessageBytes
)

// Config configures an Executor. The zero value of each optional field
// selects its default.
type Config struct {
	// Cluster is the local shard node. Required.
	Cluster Cluster
	// Functions runs function queries; nil refuses them (ErrNoFunctions).
	Functions Functions
	// FanIn bounds the children of a combine: with more nodes than this,
	// intermediate combine levels are added. Default DefaultFanIn.
	FanIn int
	// HedgeAfter is how long an attempt (a leaf or a sub-tree) may run
	// before, once others have finished and it has taken three times the
	// slowest of them, its shards are also started on other replicas; the
	// first answer wins. Default DefaultHedgeAfter.
	HedgeAfter time.Duration
	// QueryTimeout bounds a query without its own timeout. Default
	// DefaultQueryTimeout.
	QueryTimeout time.Duration
	// LeafConcurrency bounds the leaves running at once on this node
	// across all queries. Default GOMAXPROCS.
	LeafConcurrency int
	// MaxQueries bounds the queries this node roots at once; more fail
	// with ErrOverloaded. Default DefaultMaxQueries.
	MaxQueries int
	// MaxSubQueries bounds the sub-queries from other nodes this node
	// runs at once; more are refused, and their senders read those
	// shards elsewhere. Default 4 × MaxQueries.
	MaxSubQueries int
	// MaxGroups bounds the groups of a built-in aggregate's answer (its
	// group_by values). A leaf or combine that holds more stops and the
	// query fails with ErrTooManyGroups: the answer would be larger still.
	// Every node checks its own leaves and combines against its own
	// value. Default DefaultMaxGroups.
	MaxGroups int
	// Logger receives retries and hedges at debug level. Default
	// slog.Default().
	Logger *slog.Logger
	// Registerer receives the executor's metrics (lambdadb_queries_total,
	// lambdadb_query_duration_seconds, ...). Default: none.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() error {
	if c.Cluster == nil {
		return errors.New("scatter: Config.Cluster is required")
	}
	if c.FanIn == 0 {
		c.FanIn = DefaultFanIn
	}
	if c.FanIn < 2 {
		return fmt.Errorf("scatter: FanIn %d < 2", c.FanIn)
	}
	if c.HedgeAfter <= 0 {
		c.HedgeAfter = DefaultHedgeAfter
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = DefaultQueryTimeout
	}
	if c.LeafConcurrency <= 0 {
		c.LeafConcurrency = runtime.GOMAXPROCS(0)
	}
	if c.MaxQueries <= 0 {
		c.MaxQueries = DefaultMaxQueries
	}
	if c.MaxSubQueries <= 0 {
		c.MaxSubQueries = 4 * c.MaxQueries
	}
	if c.MaxGroups <= 0 {
		c.MaxGroups = DefaultMaxGroups
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Executor plans and runs queries rooted at this node and serves the
// sub-queries other nodes send it (InternalHandler).
type Executor struct {
	cfg     Config
	leafSem chan struct{}
	queries chan struct{}
	subs    chan struct{}

	activeLeaves atomic.Int64
	m            *metrics
}

// New returns an Executor.
func New(cfg Config) (*Executor, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	x := &Executor{
		cfg:     cfg,
		leafSem: make(chan struct{}, cfg.LeafConcurrency),
		queries: make(chan struct{}, cfg.MaxQueries),
		subs:    make(chan struct{}, cfg.MaxSubQueries),
	}
	m, err := newMetrics(cfg.Registerer, x)
	if err != nil {
		return nil, err
	}
	x.m = m
	return x, nil
}

// ActiveLeaves is the number of leaves running on this node now.
func (x *Executor) ActiveLeaves() int64 { return x.activeLeaves.Load() }

// Response is a finished query.
type Response struct {
	// Result is the built-in aggregate's value (Partial.Result), or the
	// function's root combine output as raw bytes.
	Result any
	// Raw is the function's root combine output (function queries).
	Raw   []byte
	Stats Stats
}

// Stats describe how a query ran.
type Stats struct {
	Shards         int     `json:"shards"`
	Nodes          int     `json:"nodes"`
	Levels         int     `json:"levels"`
	RecordsScanned uint64  `json:"records_scanned"`
	RecordsSkipped uint64  `json:"records_skipped"`
	NoField        uint64  `json:"records_without_field"`
	BytesScanned   uint64  `json:"bytes_scanned"`
	BytesGathered  uint64  `json:"bytes_gathered"`
	ElapsedMS      float64 `json:"elapsed_ms"`
	// FunctionVersion is the deploy of a function query's function that
	// every leaf and combine ran.
	FunctionVersion uint64 `json:"function_version,omitempty"`
	// Retries counts leaves started again after a failure; Hedges those
	// also started elsewhere because they were slow.
	Retries int `json:"retries"`
	Hedges  int `json:"hedges"`
	// PerLevel times each level of the tree: 0 = the leaves, the last =
	// the root combine.
	PerLevel []LevelStat `json:"per_level"`
	// PerShard lists each shard's leaf, in shard order.
	PerShard []LeafStat `json:"per_shard"`
}

// LevelStat is one level of the tree.
type LevelStat struct {
	Level int    `json:"level" msgpack:"l"`
	Kind  string `json:"kind" msgpack:"k"` // "leaf", "combine" or "root"
	Count int    `json:"count" msgpack:"c"`
	// MaxMS is the slowest member's wall time: a leaf's run, or a combine
	// node's time from receiving its sub-query to answering it.
	MaxMS float64 `json:"max_ms" msgpack:"m"`
	// CombineMS is the slowest member's time merging its inputs.
	CombineMS float64 `json:"combine_ms,omitempty" msgpack:"cm"`
}

// LeafStat is one shard's leaf, as it counted in the result.
type LeafStat struct {
	Shard   int     `json:"shard" msgpack:"s"`
	Node    string  `json:"node" msgpack:"n"`
	Applied uint64  `json:"applied_index" msgpack:"a"`
	Records uint64  `json:"records" msgpack:"r"`
	Bytes   uint64  `json:"bytes" msgpack:"b"`
	MS      float64 `json:"ms" msgpack:"t"`
}

// Run plans q and runs it with this node as the root.
func (x *Executor) Run(ctx context.Context, q Query) (*Response, error) {
	began := time.Now()
	res, err := x.run(ctx, q)
	x.m.queries.WithLabelValues(queryOutcome(err)).Inc()
	if err == nil {
		x.m.duration.Observe(time.Since(began).Seconds())
		x.m.retries.Add(float64(res.Stats.Retries))
		x.m.hedges.Add(float64(res.Stats.Hedges))
		x.m.scanned.Add(float64(res.Stats.BytesScanned))
		x.m.gathered.Add(float64(res.Stats.BytesGathered))
	}
	return res, err
}

func (x *Executor) run(ctx context.Context, q Query) (*Response, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	if q.Function != "" {
		if x.cfg.Functions == nil {
			return nil, ErrNoFunctions
		}
		// Refuse an unknown function or one without the entry points
		// before fanning out.
		f, err := x.cfg.Functions.Get(ctx, q.Function)
		if err != nil {
			return nil, fmt.Errorf("scatter: %w", err)
		}
		if !f.Has("leaf") || !f.Has("combine") {
			return nil, fmt.Errorf("%w: %q needs Leaf and Combine to run a query (it has %s)", lambda.ErrNoEntrypoint, f.Name, strings.Join(f.Entrypoints, ", "))
		}
		switch {
		case q.FunctionVersion == 0:
			q.FunctionVersion = f.Version
		case q.FunctionVersion != f.Version:
			return nil, fmt.Errorf("scatter: %w: %q is at version %d, not %d", lambda.ErrConflict, f.Name, f.Version, q.FunctionVersion)
		}
	}
	select {
	case x.queries <- struct{}{}:
		defer func() { <-x.queries }()
	default:
		return nil, fmt.Errorf("%w: this node runs %d queries (the limit)", ErrOverloaded, cap(x.queries))
	}
	timeout := q.Timeout
	if timeout == 0 {
		timeout = x.cfg.QueryTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	began := time.Now()
	n := x.cfg.Cluster.Shards()
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	plan := x.plan(q, all)
	out := x.execute(ctx, q, plan, true)
	if out.fatal != nil {
		return nil, out.fatal
	}
	if len(out.failed) > 0 || len(out.covered) < n {
		// Out of time: every shard not read is missing (failures the
		// deadline caused among them). Else the shards that failed on
		// every replica are the cause.
		ie := &IncompleteError{Errors: map[int]string{}, Tried: map[int][]string{}}
		switch err := ctx.Err(); {
		case errors.Is(err, context.DeadlineExceeded):
			ie.TimedOut = true
			for s := 0; s < n; s++ {
				if _, ok := out.covered[s]; !ok {
					ie.Missing = append(ie.Missing, s)
					ie.Errors[s] = "not read before the deadline"
					if f, ok := out.failed[s]; ok {
						ie.Errors[s], ie.Tried[s] = f.Err, f.Tried
					}
				}
			}
		case err != nil:
			return nil, fmt.Errorf("scatter: query: %w", err) // the caller cancelled
		default:
			for s := 0; s < n; s++ {
				if f, ok := out.failed[s]; ok {
					ie.Missing = append(ie.Missing, s)
					ie.Errors[s], ie.Tried[s] = f.Err, f.Tried
				}
			}
		}
		return nil, ie
	}
	res := &Response{}
	st := &res.Stats
	st.Shards = n
	st.Nodes = len(out.nodes)
	st.Levels = out.height + 1
	st.BytesGathered = out.gathered
	st.Retries, st.Hedges = out.retries, out.hedges
	st.FunctionVersion = q.FunctionVersion
	for _, l := range out.leaves {
		st.RecordsScanned += l.Records
		st.BytesScanned += l.Bytes
		st.PerShard = append(st.PerShard, l)
	}
	sort.Slice(st.PerShard, func(i, j int) bool { return st.PerShard[i].Shard < st.PerShard[j].Shard })
	for lv := 0; lv <= out.height; lv++ {
		ls, ok := out.levels[lv]
		if !ok {
			continue
		}
		if lv == out.height {
			ls.Kind = "root"
		}
		st.PerLevel = append(st.PerLevel, *ls)
	}
	if q.Aggregate != nil {
		p, err := decodePartial(out.part)
		if err != nil {
			return nil, err
		}
		st.RecordsSkipped, st.NoField = p.Skipped, p.NoField
		res.Result = p.Result(*q.Aggregate)
	} else {
		res.Raw = out.part
		res.Result = out.part
	}
	st.ElapsedMS = ms(time.Since(began))
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// planNode is a sub-tree: a node, the shards it reads, the nodes whose
// combined results it combines. Addresses are not part of it: each node
// resolves members from its own configuration.
type planNode struct {
	ID       string     `msgpack:"id"`
	Shards   []int      `msgpack:"shards"`
	Children []planNode `msgpack:"children"`
}

// allShards lists the shards of the sub-tree.
func (p planNode) allShards() []int {
	out := slices.Clone(p.Shards)
	for _, c := range p.Children {
		out = append(out, c.allShards()...)
	}
	return out
}

// assignment maps each shard of the sub-tree to the node reading it.
func (p planNode) assignment(into map[int]string) {
	for _, s := range p.Shards {
		into[s] = p.ID
	}
	for _, c := range p.Children {
		c.assignment(into)
	}
}

// plan assigns each shard to a replica and builds the combine tree with
// this node at the root.
func (x *Executor) plan(q Query, shards []int) planNode {
	self := x.cfg.Cluster.ID()
	up := x.upPeers()
	load := map[string]int{}
	byNode := map[string][]int{}
	for _, s := range shards {
		p, ok := x.choose(q, s, nil, up, load)
		if !ok {
			// No replica is known up: try the preferred one anyway; the
			// attempt fails and the shard is retried or reported.
			p = x.cfg.Cluster.Replicas(s)[0]
		}
		load[p.ID]++
		byNode[p.ID] = append(byNode[p.ID], s)
	}
	root := planNode{ID: self, Shards: byNode[self]}
	var others []planNode
	for _, ps := range x.cfg.Cluster.Peers() { // config order: stable plans
		if ps.ID != self && len(byNode[ps.ID]) > 0 {
			others = append(others, planNode{ID: ps.ID, Shards: byNode[ps.ID]})
		}
	}
	root.Children = tree(others, x.cfg.FanIn)
	return root
}

// tree arranges nodes under a parent with at most fanIn children each.
func tree(nodes []planNode, fanIn int) []planNode {
	if len(nodes) <= fanIn {
		return nodes
	}
	per := (len(nodes) + fanIn - 1) / fanIn
	var out []planNode
	for i := 0; i < len(nodes); i += per {
		group := nodes[i:min(i+per, len(nodes))]
		head := group[0]
		head.Children = tree(group[1:], fanIn)
		out = append(out, head)
	}
	return out
}

func (x *Executor) upPeers() map[string]bool {
	up := map[string]bool{}
	for _, p := range x.cfg.Cluster.Peers() {
		if p.Up {
			up[p.ID] = true
		}
	}
	return up
}

// choose picks the replica to read shard s: not in tried, up; for
// Linearizable the leader when it qualifies; the least loaded, then this
// node, then the leader, then the preferred order.
func (x *Executor) choose(q Query, s int, tried map[string]bool, up map[string]bool, load map[string]int) (shard.Peer, bool) {
	self := x.cfg.Cluster.ID()
	leader := x.cfg.Cluster.Leader(s)
	var cands []shard.Peer
	for _, p := range x.cfg.Cluster.Replicas(s) {
		if !tried[p.ID] && up[p.ID] {
			cands = append(cands, p)
		}
	}
	if q.Consistency == shard.Linearizable && leader.ID != "" {
		for _, p := range cands {
			if p.ID == leader.ID {
				cands = []shard.Peer{p}
				break
			}
		}
	}
	if len(cands) == 0 {
		// Perhaps only this node's view is stale: any untried replica.
		for _, p := range x.cfg.Cluster.Replicas(s) {
			if !tried[p.ID] {
				cands = append(cands, p)
			}
		}
	}
	if len(cands) == 0 {
		return shard.Peer{}, false
	}
	rank := func(p shard.Peer) int {
		r := 0
		if p.ID != self {
			r += 2
		}
		if p.ID != leader.ID {
			r++
		}
		return r
	}
	best := cands[0]
	for _, p := range cands[1:] {
		if load[p.ID] < load[best.ID] || load[p.ID] == load[best.ID] && rank(p) < rank(best) {
			best = p
		}
	}
	return best, true
}

// failure is a shard no replica answered, as far as an executor tried.
type failure struct {
	Err   string   `msgpack:"err"`
	Tried []string `msgpack:"tried"`
}

// outcome is what executing a sub-tree produced.
type outcome struct {
	part     []byte           // the combined result over covered
	covered  map[int]struct{} // shards whose leaves the part includes
	failed   map[int]failure
	fatal    error // an error retrying cannot fix (a handler's fault)
	leaves   []LeafStat
	levels   map[int]*LevelStat
	gathered uint64
	nodes    map[string]struct{}
	height   int // this sub-tree's root combine level
	retries  int
	hedges   int
}

// attempt is one unit of work in flight: a local leaf or a remote
// sub-tree.
type attempt struct {
	node    shard.Peer
	plan    planNode // remote: the sub-tree sent
	shard   int      // local leaf
	local   bool
	shards  []int
	assign  map[int]string
	started time.Time
	hedged  bool
	cancel  context.CancelFunc
}

// result is an attempt's answer.
type result struct {
	a   *attempt
	out outcome
	err error // the attempt failed as a whole (transport, timeout)
}

// execute runs plan (rooted at this node) to completion: every shard
// covered, failed on every replica, or a fatal error. Leaves and
// sub-trees that fail are retried on other replicas; slow ones are
// hedged.
func (x *Executor) execute(ctx context.Context, q Query, plan planNode, root bool) outcome {
	began := time.Now()
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll() // anything still running
	self := shard.Peer{ID: x.cfg.Cluster.ID()}
	acc, err := x.newAccumulator(q)
	out := outcome{covered: map[int]struct{}{}, failed: map[int]failure{}, levels: map[int]*LevelStat{},
		nodes: map[string]struct{}{self.ID: {}}, height: 1}
	if err != nil {
		out.fatal = err
		return out
	}
	results := make(chan result, 16)
	inflight := map[int]int{}
	tried := map[int]map[string]bool{}
	attempts := map[int]int{}
	live := map[*attempt]bool{}
	var slowest time.Duration
	finished := 0
	load := map[string]int{}

	launch := func(a *attempt) {
		a.started = time.Now()
		actx, cancel := context.WithCancel(ctx)
		a.cancel = cancel
		live[a] = true
		for _, s := range a.shards {
			inflight[s]++
			attempts[s]++
		}
		load[a.node.ID] += len(a.shards)
		go func() {
			var r result
			if a.local {
				r = result{a: a, out: x.localLeaf(actx, q, a.shard)}
			} else {
				o, err := x.remote(actx, q, a.node, a.plan)
				r = result{a: a, out: o, err: err}
			}
			// execute may have returned: its deferred cancel ends ctx.
			select {
			case results <- r:
			case <-ctx.Done():
			}
		}()
	}
	localLeaf := func(s int) *attempt {
		return &attempt{node: self, shard: s, local: true, shards: []int{s}, assign: map[int]string{s: self.ID}}
	}
	remote := func(p planNode) *attempt {
		a := &attempt{node: shard.Peer{ID: p.ID}, plan: p, shards: p.allShards(), assign: map[int]string{}}
		p.assignment(a.assign)
		return a
	}
	// replan starts shards again on replicas not yet tried (excluding
	// also avoid, for hedges), one flat sub-query per node.
	replan := func(shards []int, avoid map[int]string) []int {
		up := x.upPeers()
		byNode := map[string][]int{}
		var hopeless []int
		for _, s := range shards {
			t := triedOf(tried, s)
			if a := avoid[s]; a != "" {
				t = maps.Clone(t)
				t[a] = true
			}
			p, ok := x.choose(q, s, t, up, load)
			if !ok || attempts[s] > 2*len(x.cfg.Cluster.Replicas(s))+2 {
				hopeless = append(hopeless, s)
				continue
			}
			byNode[p.ID] = append(byNode[p.ID], s)
		}
		ids := make([]string, 0, len(byNode))
		for id := range byNode {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			if id == self.ID {
				for _, s := range byNode[id] {
					launch(localLeaf(s))
				}
				continue
			}
			launch(remote(planNode{ID: id, Shards: byNode[id]}))
		}
		return hopeless
	}

	for _, s := range plan.Shards {
		launch(localLeaf(s))
	}
	for _, c := range plan.Children {
		launch(remote(c))
	}
	pending := func() bool {
		for _, s := range plan.allShards() {
			if _, ok := out.covered[s]; ok {
				continue
			}
			if _, ok := out.failed[s]; ok {
				continue
			}
			return true
		}
		return false
	}
	tick := time.NewTicker(max(x.cfg.HedgeAfter/4, 10*time.Millisecond))
	defer tick.Stop()
	var combineTime time.Duration
	var maxChildHeight int
	for pending() && out.fatal == nil {
		select {
		case <-ctx.Done():
			// The caller's deadline or cancellation: what is not covered
			// is reported as not answered.
			goto done
		case <-tick.C:
			if finished == 0 {
				continue
			}
			for a := range live {
				age := time.Since(a.started)
				if a.hedged || age < x.cfg.HedgeAfter || age < 3*slowest {
					continue
				}
				a.hedged = true
				var redo []int
				for _, s := range a.shards {
					if _, ok := out.covered[s]; !ok {
						redo = append(redo, s)
					}
				}
				if len(redo) == 0 {
					continue
				}
				x.cfg.Logger.Debug("scatter: hedging a slow attempt", "node", a.node.ID, "shards", redo, "age", age)
				out.hedges += len(redo)
				// Hopeless shards stay with the slow attempt.
				replan(redo, a.assign)
			}
		case r := <-results:
			a := r.a
			delete(live, a)
			a.cancel()
			finished++
			load[a.node.ID] -= len(a.shards)
			for _, s := range a.shards {
				inflight[s]--
			}
			if d := time.Since(a.started); d > slowest && r.err == nil {
				slowest = d
			}
			o := r.out
			if o.fatal != nil {
				out.fatal = o.fatal
				break
			}
			if r.err != nil {
				x.cfg.Logger.Debug("scatter: attempt failed", "node", a.node.ID, "shards", a.shards, "err", r.err)
				o = outcome{failed: map[int]failure{}}
				for _, s := range a.shards {
					if a.assign[s] == a.node.ID {
						o.failed[s] = failure{Err: r.err.Error(), Tried: []string{a.node.ID}}
					}
				}
			}
			out.gathered += o.gathered
			// Merge what the attempt covered unless another attempt (a
			// hedge) already covered some of it: partials cannot be split.
			overlap := false
			for s := range o.covered {
				if _, ok := out.covered[s]; ok {
					overlap = true
				}
			}
			if len(o.covered) > 0 && !overlap {
				t := time.Now()
				if err := acc.add(o.part); err != nil {
					out.fatal = err
					break
				}
				combineTime += time.Since(t)
				for s := range o.covered {
					out.covered[s] = struct{}{}
				}
				out.leaves = append(out.leaves, o.leaves...)
				for id := range o.nodes {
					out.nodes[id] = struct{}{}
				}
				if !a.local {
					maxChildHeight = max(maxChildHeight, o.height)
					for lv, ls := range o.levels {
						mergeLevel(out.levels, lv, ls)
					}
				} else {
					mergeLevel(out.levels, 0, &LevelStat{Kind: "leaf", Count: 1, MaxMS: o.leaves[0].MS})
				}
			}
			// Attempts left with nothing to add (hedges that lost) stop.
			for b := range live {
				useful := false
				for _, s := range b.shards {
					if _, ok := out.covered[s]; !ok {
						useful = true
						break
					}
				}
				if !useful {
					b.cancel()
				}
			}
			var redo []int
			for _, s := range a.shards {
				if _, ok := out.covered[s]; ok {
					continue
				}
				if f, ok := o.failed[s]; ok {
					for _, id := range f.Tried {
						setIn(tried, s, id)
					}
				}
				if inflight[s] > 0 {
					continue // a hedge or the original still runs
				}
				redo = append(redo, s)
			}
			if len(redo) > 0 {
				out.retries += len(redo)
				for _, s := range replan(redo, nil) {
					why := "no replica left to try"
					if f, ok := o.failed[s]; ok {
						why = f.Err
					}
					out.failed[s] = failure{Err: why, Tried: slices.Sorted(maps.Keys(tried[s]))}
				}
			}
			if root && len(out.failed) > 0 {
				goto done // the query cannot complete: stop at once
			}
		}
	}
done:
	for a := range live {
		a.cancel() // attempts no longer needed
	}
	if out.fatal != nil {
		return out
	}
	complete := len(out.failed) == 0
	for _, s := range plan.allShards() {
		if _, ok := out.covered[s]; !ok {
			complete = false
		}
	}
	switch {
	case len(out.covered) == 0:
	case root && !complete:
		// The query fails: combining what was read would be wasted work
		// (and its error would hide which shards are missing).
	case ctx.Err() != nil:
		// Out of time (or cancelled): nothing to combine with.
		out.covered = map[int]struct{}{}
	default:
		t := time.Now()
		part, err := acc.result(ctx)
		switch {
		case err == nil:
			combineTime += time.Since(t)
			out.part = part
		case fatal(err) || root:
			out.fatal = err
			return out
		default:
			// This node could not combine (overloaded, closing): what it
			// read counts as failed here, for the parent to read again
			// elsewhere.
			for s := range out.covered {
				out.failed[s] = failure{Err: err.Error(), Tried: []string{self.ID}}
			}
			out.covered = map[int]struct{}{}
			out.leaves = nil
		}
	}
	out.height = maxChildHeight + 1
	mergeLevel(out.levels, out.height, &LevelStat{Kind: "combine", Count: 1, MaxMS: ms(time.Since(began)), CombineMS: ms(combineTime)})
	return out
}

func mergeLevel(levels map[int]*LevelStat, lv int, ls *LevelStat) {
	cur := levels[lv]
	if cur == nil {
		c := *ls
		c.Level = lv
		levels[lv] = &c
		return
	}
	cur.Count += ls.Count
	cur.MaxMS = max(cur.MaxMS, ls.MaxMS)
	cur.CombineMS = max(cur.CombineMS, ls.CombineMS)
}

func triedOf(m map[int]map[string]bool, s int) map[string]bool {
	if m[s] == nil {
		m[s] = map[string]bool{}
	}
	return m[s]
}

func setIn(m map[int]map[string]bool, s int, id string) { triedOf(m, s)[id] = true }

// accumulator combines parts at one node: built-in partials merge as
// they arrive; a function's parts go to one Combine call at the end.
type accumulator interface {
	add(part []byte) error
	result(ctx context.Context) ([]byte, error)
}

func (x *Executor) newAccumulator(q Query) (accumulator, error) {
	if q.Aggregate != nil {
		return &builtinAcc{spec: *q.Aggregate, p: NewPartial(), maxGroups: x.cfg.MaxGroups}, nil
	}
	if x.cfg.Functions == nil {
		return nil, ErrNoFunctions
	}
	return &fnAcc{fns: x.cfg.Functions, name: q.Function, version: q.FunctionVersion}, nil
}

type builtinAcc struct {
	spec      Spec
	p         *Partial
	maxGroups int
}

func (b *builtinAcc) add(part []byte) error {
	p, err := decodePartial(part)
	if err != nil {
		return err
	}
	b.p.Merge(b.spec, p)
	if len(b.p.Groups) > b.maxGroups {
		return tooManyGroups(b.spec, b.maxGroups)
	}
	return nil
}

// tooManyGroups is the error of an answer that would hold more than max
// groups.
func tooManyGroups(s Spec, max int) error {
	return fmt.Errorf("%w: group_by %q makes more than %d groups, the most an answer holds; narrow the prefix or range, or group by a coarser field",
		ErrTooManyGroups, s.GroupBy, max)
}

func (b *builtinAcc) result(context.Context) ([]byte, error) { return encodePartial(b.p) }

type fnAcc struct {
	fns     Functions
	name    string
	version uint64
	parts   [][]byte
	size    int
}

func (f *fnAcc) add(part []byte) error {
	f.size += len(part)
	if f.size > MaxPartBytes {
		return fmt.Errorf("%w: the parts to combine exceed %d bytes", lambda.ErrRequestTooLarge, MaxPartBytes)
	}
	f.parts = append(f.parts, part)
	return nil
}

func (f *fnAcc) result(ctx context.Context) ([]byte, error) {
	res, err := f.fns.CallCombine(ctx, lambda.CombineCall{Name: f.name, Version: f.version, Parts: f.parts})
	if err != nil {
		return nil, fmt.Errorf("scatter: combine: %w", err)
	}
	return res.Body, nil
}

// localLeaf runs shard s's leaf on this node.
func (x *Executor) localLeaf(ctx context.Context, q Query, s int) (out outcome) {
	out = outcome{covered: map[int]struct{}{}, failed: map[int]failure{}}
	// A defect in aggregating some record must fail the query, not the
	// node (every replica holds the record: it is not retried).
	defer func() {
		if r := recover(); r != nil {
			x.cfg.Logger.Error("scatter: leaf panicked", "shard", s, "panic", r, "stack", string(debug.Stack()))
			out = outcome{covered: map[int]struct{}{}, failed: map[int]failure{},
				fatal: fmt.Errorf("scatter: the leaf of shard %d on %s failed: %v", s, x.cfg.Cluster.ID(), r)}
		}
	}()
	select {
	case x.leafSem <- struct{}{}:
		defer func() { <-x.leafSem }()
	case <-ctx.Done():
		out.failed[s] = failure{Err: ctx.Err().Error()}
		return out
	}
	x.activeLeaves.Add(1)
	x.m.leaves.Inc()
	defer x.activeLeaves.Add(-1)
	began := time.Now()
	self := x.cfg.Cluster.ID()
	ro := shard.ReadOptions{Consistency: q.Consistency, Session: q.Session}
	lo, hi := q.bounds()
	snap, err := x.cfg.Cluster.OpenShard(ctx, s, ro)
	if err != nil {
		out.failed[s] = failure{Err: err.Error(), Tried: []string{self}}
		return out
	}
	defer snap.Close()
	// The node closing waits for the snapshot: end the leaf then.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-snap.Closing():
			stop()
		case <-ctx.Done():
		}
	}()
	stat := LeafStat{Shard: s, Node: self, Applied: snap.Applied()}
	var part []byte
	if q.Aggregate != nil {
		p := NewPartial()
		// Every key in [lo, hi) is the namespace's: an aggregate sees the
		// user key after the namespace's qualifier.
		qual := len(namespace.Key(q.Namespace, ""))
		err = snap.Scan(ctx, lo, hi, func(k, v []byte) bool {
			p.Add(*q.Aggregate, k[qual:], v)
			return len(p.Groups) <= x.cfg.MaxGroups
		})
		if err == nil && len(p.Groups) > x.cfg.MaxGroups {
			// Another replica would find as many: the query fails.
			out.fatal = fmt.Errorf("scatter: leaf of shard %d on %s: %w", s, self, tooManyGroups(*q.Aggregate, x.cfg.MaxGroups))
			return out
		}
		stat.Records, stat.Bytes = p.Scanned, p.BytesScanned
		if err == nil {
			part, err = encodePartial(p)
		}
	} else {
		var res lambda.Result
		res, err = x.cfg.Functions.CallLeaf(ctx, lambda.LeafCall{
			Name: q.Function, Version: q.FunctionVersion, Prefix: q.Prefix, Session: q.Session, Consistency: q.Consistency,
			Scan: func(ctx context.Context, prefix, start string, limit int) ([]shard.Record, string, bool, error) {
				return leafPage(ctx, snap, lo, hi, prefix, start, limit, &stat)
			},
		})
		if err != nil && fatal(err) {
			out.fatal = fmt.Errorf("scatter: leaf of shard %d on %s: %w", s, self, err)
			return out
		}
		part = res.Body
		if err == nil && len(part) > MaxPartBytes {
			out.fatal = fmt.Errorf("%w: the leaf of shard %d returned %d bytes, the limit is %d", lambda.ErrRequestTooLarge, s, len(part), MaxPartBytes)
			return out
		}
	}
	if err != nil {
		out.failed[s] = failure{Err: err.Error(), Tried: []string{self}}
		return out
	}
	stat.MS = ms(time.Since(began))
	out.part = part
	out.covered[s] = struct{}{}
	out.leaves = []LeafStat{stat}
	out.nodes = map[string]struct{}{self: {}}
	return out
}

// leafPage serves one page of a function leaf's scan from its shard's
// snapshot, within the query's range.
func leafPage(ctx context.Context, snap *shard.ShardSnapshot, qlo, qhi []byte, prefix, start string, limit int, st *LeafStat) ([]shard.Record, string, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", false, err
	}
	lo := string(qlo)
	lo = max(lo, prefix, start)
	hi := qhi
	if pe := prefixEnd(prefix); pe != nil && (hi == nil || string(pe) < string(hi)) {
		hi = pe
	}
	if hi != nil && lo >= string(hi) {
		return nil, "", false, nil
	}
	var items []shard.Record
	next, more := "", false
	size := 0
	err := snap.Scan(ctx, []byte(lo), hi, func(k, v []byte) bool {
		// Pages are bounded like every scan's: large values cannot make
		// one page exhaust memory (or exceed a host message).
		if len(items) == limit || len(items) > 0 && size+len(k)+len(v) > shard.MaxScanBytes {
			next, more = string(k), true
			return false
		}
		size += len(k) + len(v)
		items = append(items, shard.Record{Key: string(k), Value: slices.Clone(v)})
		st.Records++
		st.Bytes += uint64(len(k) + len(v))
		return true
	})
	return items, next, more, err
}

// fatal reports errors another replica would repeat: the handler's own
// faults, a missing function or entry point. A handler that gave up because
// the cluster failed one of its calls (no leader, a node closing) is not
// at fault.
func fatal(err error) bool {
	for _, e := range []error{shard.ErrUnavailable, shard.ErrNotLeader, shard.ErrClosed, lambda.ErrClosed, lambda.ErrOverloaded,
		context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return false
		}
	}
	for _, e := range []error{lambda.ErrHandler, lambda.ErrMemoryLimit, lambda.ErrTimeout, lambda.ErrNotFound,
		lambda.ErrConflict, lambda.ErrNoEntrypoint, lambda.ErrRequestTooLarge, ErrInvalidQuery, ErrNoFunctions} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
