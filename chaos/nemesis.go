package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"lambdadb/shard"
)

// Fault kinds the nemesis knows.
const (
	FaultKill            = "kill"             // kill -9 a random node, restart it later
	FaultKillLeader      = "kill-leader"      // kill -9 the node leading the most shards
	FaultPause           = "pause"            // SIGSTOP a random node, SIGCONT later
	FaultPauseLeader     = "pause-leader"     // SIGSTOP the node leading the most shards
	FaultPartition       = "partition"        // isolate a random node from the others
	FaultPartitionLeader = "partition-leader" // isolate the node leading the most shards
	FaultCut             = "cut"              // cut the link between two nodes; the third sees both
	FaultOneWay          = "oneway"           // drop everything from one node to another
	FaultOneWayRaft      = "oneway-raft"      // drop Raft traffic from one node to another
	FaultDelay           = "delay"            // 20-150ms on every message from one node

	// Membership faults: the cluster moves replicas after each, while the
	// other faults go on.
	FaultJoin         = "join"         // start a new node with an empty data directory and --join
	FaultDecommission = "decommission" // decommission a node; its process stops once it is decommissioned
	FaultRemove       = "remove"       // kill -9 a node, then forget it (DELETE /v1/cluster/nodes/{id})
)

// AllFaults lists every fault kind.
var AllFaults = []string{FaultKill, FaultKillLeader, FaultPause, FaultPauseLeader, FaultPartition,
	FaultPartitionLeader, FaultCut, FaultOneWay, FaultOneWayRaft, FaultDelay,
	FaultJoin, FaultDecommission, FaultRemove}

// membershipFaults change the cluster's membership.
var membershipFaults = map[string]bool{FaultJoin: true, FaultDecommission: true, FaultRemove: true}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Kind   string
	Desc   string
	Start  int64 // history clock
	End    int64 // when healed (a decommission: when the node was decommissioned)
	Errors []string
	// Refused: a membership change the cluster refused (409).
	Refused bool
}

// Nemesis injects one fault at a time: it waits a quiet interval, injects
// a fault, holds it, heals it, waits for the cluster to be healthy, and
// repeats.
type Nemesis struct {
	Cluster *Cluster
	History *History
	Kinds   []string
	Seed    uint64
	// Hold bounds how long a fault lasts (uniform in [Hold/4, Hold]).
	// Default 8s.
	Hold time.Duration
	// Quiet bounds the interval between faults (uniform in
	// [Quiet/4, Quiet]). Default 4s.
	Quiet time.Duration
	// MaxNodes bounds the members a join may bring the cluster to.
	// Default 5.
	MaxNodes int
	// Replicas is the cluster's replication factor: a decommission or a
	// remove needs Replicas+1 active members. Default 3.
	Replicas int
	// MembershipCutoff: no membership fault starts when less than this
	// remains before ctx's deadline, so that the moves they cause can
	// finish while the other faults go on. Default 0.
	MembershipCutoff time.Duration
	// DecommissionTimeout bounds the wait for a decommissioned node.
	// Default 5m.
	DecommissionTimeout time.Duration
	Logf                func(format string, args ...any)

	mu      sync.Mutex
	records []*activeFault
	leaving map[string]bool // decommissioning nodes (still members)
	joins   int
	watch   sync.WaitGroup // decommission watchers
	stopped chan struct{}  // closed by StopWatching
	// rebuiltHook replaces rebuilt in tests.
	rebuiltHook func() bool
}

// Records returns the faults injected so far.
func (n *Nemesis) Records() []FaultRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]FaultRecord, 0, len(n.records))
	for _, f := range n.records {
		r := f.rec
		r.Errors = append([]string(nil), r.Errors...)
		if f.doneAt > 0 {
			r.End = f.doneAt
		}
		r.Desc += f.note
		r.Errors = append(r.Errors, f.lateErrors...)
		out = append(out, r)
	}
	return out
}

// WaitMembership waits up to d for every decommissioned node's process
// to be stopped; it reports whether they all were.
func (n *Nemesis) WaitMembership(d time.Duration) bool {
	done := make(chan struct{})
	go func() { n.watch.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// StopWatching ends the decommission watchers still waiting.
func (n *Nemesis) StopWatching() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped == nil {
		n.stopped = make(chan struct{})
	}
	select {
	case <-n.stopped:
	default:
		close(n.stopped)
	}
}

func (n *Nemesis) logf(format string, args ...any) {
	if n.Logf != nil {
		n.Logf(format, args...)
	}
}

// Run injects faults until ctx ends; the last fault is healed before it
// returns.
func (n *Nemesis) Run(ctx context.Context) {
	if n.Hold <= 0 {
		n.Hold = 8 * time.Second
	}
	if n.Quiet <= 0 {
		n.Quiet = 4 * time.Second
	}
	if n.MaxNodes <= 0 {
		n.MaxNodes = 5
	}
	if n.Replicas <= 0 {
		n.Replicas = 3
	}
	if n.DecommissionTimeout <= 0 {
		n.DecommissionTimeout = 5 * time.Minute
	}
	n.mu.Lock()
	if n.stopped == nil {
		n.stopped = make(chan struct{})
	}
	if n.leaving == nil {
		n.leaving = map[string]bool{}
	}
	n.mu.Unlock()
	if len(n.Kinds) == 0 {
		return
	}
	rng := rand.New(rand.NewPCG(n.Seed, 77))
	between := func(d time.Duration) time.Duration {
		return d/4 + time.Duration(rng.Int64N(int64(d-d/4)+1))
	}
	for {
		if !sleepCtx(ctx, between(n.Quiet)) {
			return
		}
		kind := n.pick(ctx, rng)
		if kind == "" {
			continue // only membership faults, none possible now
		}
		first := n.start(ctx, rng, kind, "")
		hold := between(n.Hold)
		var second *activeFault
		// A third of the time a fault of the other family (process or
		// network) joins in: a node killed or frozen during a partition,
		// or partitioned while another node is down; either during a
		// membership change.
		if others := otherFamily(n.Kinds, kind); len(others) > 0 && rng.IntN(3) == 0 {
			if sleepCtx(ctx, hold/3) {
				second = n.start(ctx, rng, others[rng.IntN(len(others))], " (during "+kind+")")
			}
		}
		sleepCtx(ctx, hold)
		// Heal even when ctx has ended: the final checks need a whole
		// cluster. Each heal has its own time, so that one that takes
		// long (a node restarted into a partition) does not leave the
		// other none.
		if second != nil {
			n.healFor(60*time.Second, second)
		}
		n.healFor(60*time.Second, first)
		hctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := n.Cluster.WaitHealthy(hctx, 30*time.Second); err != nil {
			first.rec.Errors = append(first.rec.Errors, "after heal: "+err.Error())
			n.logf("         cluster not healthy after healing: %v", err)
		}
		cancel()
		n.mu.Lock()
		n.records = append(n.records, first)
		if second != nil {
			n.records = append(n.records, second)
		}
		n.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}

type activeFault struct {
	rec  FaultRecord
	heal func(context.Context) error
	// Set later under Nemesis.mu by a decommission's watcher.
	doneAt     int64
	note       string
	lateErrors []string
}

// pick chooses the next fault kind: at random, except that the first
// fault is a join when joins are enabled (so that replicas move under all
// the faults that follow), and a membership fault the cluster cannot take
// now is replaced by one it can (a join when too few nodes are active to
// lose one, a decommission or remove when MaxNodes are members), or by a
// fault of another kind. It returns "" when no kind is possible.
func (n *Nemesis) pick(ctx context.Context, rng *rand.Rand) string {
	var memb, other []string
	for _, k := range n.Kinds {
		if membershipFaults[k] {
			memb = append(memb, k)
		} else {
			other = append(other, k)
		}
	}
	anyOther := func() string {
		if len(other) == 0 {
			return ""
		}
		return other[rng.IntN(len(other))]
	}
	allowed := true
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < n.MembershipCutoff {
		allowed = false
	}
	n.mu.Lock()
	joins := n.joins
	n.mu.Unlock()
	if allowed && joins == 0 && slices.Contains(memb, FaultJoin) && n.possible(FaultJoin) {
		return FaultJoin
	}
	kind := n.Kinds[rng.IntN(len(n.Kinds))]
	if !membershipFaults[kind] {
		return kind
	}
	if !allowed {
		return anyOther()
	}
	if n.possible(kind) {
		return kind
	}
	for _, i := range rng.Perm(len(memb)) {
		if n.possible(memb[i]) {
			return memb[i]
		}
	}
	return anyOther()
}

// active returns the members that are not leaving.
func (n *Nemesis) active() []*Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*Proc
	for _, p := range n.Cluster.Members() {
		if !n.leaving[p.ID] {
			out = append(out, p)
		}
	}
	return out
}

// possible reports whether membership fault kind can run now.
func (n *Nemesis) possible(kind string) bool {
	switch kind {
	case FaultJoin:
		return len(n.Cluster.Members()) < n.MaxNodes && len(n.Cluster.Running()) > 0
	case FaultDecommission:
		return len(n.active()) >= n.Replicas+1
	case FaultRemove:
		rebuilt := n.rebuilt
		if n.rebuiltHook != nil {
			rebuilt = n.rebuiltHook
		}
		return len(n.active()) >= n.Replicas+1 && rebuilt()
	}
	return true
}

// rebuilt reports whether every replica a removed node held has been
// rebuilt elsewhere. Removing a second node before then could take two
// of a shard's three voters for good — a quorum no cluster can recover
// (the operator's mistake, not the cluster's), so the nemesis waits.
func (n *Nemesis) rebuilt() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, _, err := n.Cluster.View(ctx)
	if err != nil {
		return false
	}
	for _, nd := range st.Nodes {
		if nd.State == shard.StateRemoved && (nd.Replicas > 0 || nd.Moves > 0) {
			return false
		}
	}
	return true
}

func (n *Nemesis) start(ctx context.Context, rng *rand.Rand, kind, note string) *activeFault {
	f := &activeFault{rec: FaultRecord{Kind: kind, Start: n.History.Now()}}
	var heal func(context.Context) error
	var desc string
	var err error
	if membershipFaults[kind] {
		heal, desc, err = n.injectMembership(rng, kind, f)
	} else {
		heal, desc, err = n.inject(ctx, rng, kind)
	}
	f.heal, f.rec.Desc = heal, desc+note
	if err != nil {
		f.rec.Errors = append(f.rec.Errors, "inject: "+err.Error())
	}
	n.logf("%7.1fs  %s", float64(f.rec.Start)/1e9, f.rec.Desc)
	return f
}

// healFor heals f within d, whatever the run's context.
func (n *Nemesis) healFor(d time.Duration, f *activeFault) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	n.heal(ctx, f)
}

func (n *Nemesis) heal(ctx context.Context, f *activeFault) {
	if f.heal != nil {
		if err := f.heal(ctx); err != nil {
			f.rec.Errors = append(f.rec.Errors, "heal: "+err.Error())
		}
	}
	f.rec.End = n.History.Now()
	n.logf("%7.1fs  healed %s after %.1fs", float64(f.rec.End)/1e9, f.rec.Kind, float64(f.rec.End-f.rec.Start)/1e9)
}

// processFaults act on processes; the others on the network (or, for
// membershipFaults, on the membership).
var processFaults = map[string]bool{FaultKill: true, FaultKillLeader: true, FaultPause: true, FaultPauseLeader: true}

// otherFamily returns the kinds that may join a fault of kind: of the
// other family than kind's (process or network), or for a membership
// fault any process or network fault. A membership fault never joins
// another fault.
func otherFamily(kinds []string, kind string) []string {
	var out []string
	for _, k := range kinds {
		switch {
		case membershipFaults[k]:
		case membershipFaults[kind], processFaults[k] != processFaults[kind]:
			out = append(out, k)
		}
	}
	return out
}

// inject starts one fault and returns how to heal it.
func (n *Nemesis) inject(ctx context.Context, rng *rand.Rand, kind string) (heal func(context.Context) error, desc string, err error) {
	c := n.Cluster
	ids := c.IDs()
	random := func() string { return ids[rng.IntN(len(ids))] }
	leader := func() string {
		led, err := c.Leaders(ctx)
		if err != nil {
			return random()
		}
		best := random()
		for _, id := range ids {
			if led[id] > led[best] {
				best = id
			}
		}
		return best
	}
	ledDesc := func(id string) string {
		led, err := c.Leaders(ctx)
		if err != nil {
			return ""
		}
		return fmt.Sprintf(" (leading %d of %d shards)", led[id], c.Shards)
	}
	other := func(id string) string {
		for {
			if o := random(); o != id {
				return o
			}
		}
	}
	setRules := func(rules []shard.FaultRule) error { return c.SetFaults(ctx, rules) }

	clearRules := func(ctx context.Context) error { return c.SetFaults(ctx, nil) }

	switch kind {
	case FaultKill, FaultKillLeader:
		id := random()
		if kind == FaultKillLeader {
			id = leader()
		}
		desc = "kill -9 " + id + ledDesc(id)
		p := c.Proc(id)
		p.Kill()
		return func(ctx context.Context) error { return c.Restart(ctx, p) }, desc, nil
	case FaultPause, FaultPauseLeader:
		id := random()
		if kind == FaultPauseLeader {
			id = leader()
		}
		desc = "SIGSTOP " + id + ledDesc(id)
		p := c.Proc(id)
		p.Pause()
		return func(context.Context) error { p.Resume(); return nil }, desc, nil
	case FaultPartition, FaultPartitionLeader:
		id := random()
		if kind == FaultPartitionLeader {
			id = leader()
		}
		desc = "isolate " + id + ledDesc(id) + " from " + strings.Join(without(ids, id), ",")
		var rules []shard.FaultRule
		for _, o := range without(ids, id) {
			rules = append(rules, shard.FaultRule{From: id, To: o, Drop: true}, shard.FaultRule{From: o, To: id, Drop: true})
		}
		return clearRules, desc, setRules(rules)
	case FaultCut:
		a := random()
		b := other(a)
		desc = fmt.Sprintf("cut %s-%s (both ways; the others still see both)", a, b)
		return clearRules, desc, setRules([]shard.FaultRule{{From: a, To: b, Drop: true}, {From: b, To: a, Drop: true}})
	case FaultOneWay, FaultOneWayRaft:
		from := random()
		if rng.IntN(2) == 0 {
			from = leader()
		}
		to := other(from)
		r := shard.FaultRule{From: from, To: to, Drop: true, RaftOnly: kind == FaultOneWayRaft}
		what := "all traffic"
		if r.RaftOnly {
			what = "Raft traffic"
		}
		desc = fmt.Sprintf("drop %s %s→%s (one way)%s", what, from, to, ledDesc(from))
		return clearRules, desc, setRules([]shard.FaultRule{r})
	case FaultDelay:
		from := random()
		if rng.IntN(2) == 0 {
			from = leader()
		}
		d := time.Duration(20+rng.IntN(131)) * time.Millisecond
		var rules []shard.FaultRule
		for _, o := range without(ids, from) {
			rules = append(rules, shard.FaultRule{From: from, To: o, Delay: d})
		}
		desc = fmt.Sprintf("delay %v on every message from %s%s", d, from, ledDesc(from))
		return clearRules, desc, setRules(rules)
	}
	return nil, "unknown fault " + kind, fmt.Errorf("chaos: unknown fault %q", kind)
}

// injectMembership makes membership change kind. Nothing heals it: a
// joined node stays, a decommissioned one is stopped by a watcher once
// the cluster marks it decommissioned (f's end), a removed one is gone.
// It does not stop when the run's context ends: a change half made would
// leave the final checks a cluster in an unknown state.
func (n *Nemesis) injectMembership(rng *rand.Rand, kind string, f *activeFault) (heal func(context.Context) error, desc string, err error) {
	c := n.Cluster
	ctx := context.Background()
	held := func(id string) string {
		st, _, err := c.View(ctx)
		if err != nil {
			return ""
		}
		for _, nd := range st.Nodes {
			if nd.ID == id {
				return fmt.Sprintf(" (holding %d replicas, leading %d shards)", nd.Replicas, nd.Leaders)
			}
		}
		return ""
	}
	switch kind {
	case FaultJoin:
		through := pickOne(rng, c.Running())
		if through == nil {
			return nil, "join: no running member", errors.New("no running member to join through")
		}
		p, err := c.Join(ctx, through, 45*time.Second)
		id := "a new node"
		if p != nil {
			id = p.ID
		}
		desc = fmt.Sprintf("join %s through %s (%d members)", id, through.ID, len(c.Members()))
		if err == nil {
			n.mu.Lock()
			n.joins++
			n.mu.Unlock()
		}
		return nil, desc, err
	case FaultDecommission:
		victim := pickOne(rng, n.active())
		desc = "decommission " + victim.ID + held(victim.ID)
		err := c.Decommission(ctx, victim.ID, 30*time.Second)
		if errors.Is(err, errRefused) {
			f.rec.Refused = true
			return nil, desc + " — refused: " + err.Error(), nil
		}
		if err != nil {
			return nil, desc, err
		}
		n.mu.Lock()
		n.leaving[victim.ID] = true
		n.watch.Add(1)
		n.mu.Unlock()
		go n.awaitDecommissioned(victim, f)
		return nil, desc, nil
	case FaultRemove:
		victim := pickOne(rng, n.active())
		desc = "kill -9 and remove " + victim.ID + held(victim.ID)
		victim.retire("removed", true)
		return nil, desc, c.Remove(ctx, victim.ID, 45*time.Second)
	}
	return nil, "unknown fault " + kind, fmt.Errorf("chaos: unknown fault %q", kind)
}

// awaitDecommissioned waits until the cluster marks p decommissioned,
// then stops its process for good and notes when on f.
func (n *Nemesis) awaitDecommissioned(p *Proc, f *activeFault) {
	defer n.watch.Done()
	c := n.Cluster
	deadline := time.Now().Add(n.DecommissionTimeout)
	var last string
	for {
		st, via, err := c.View(context.Background())
		switch {
		case err != nil:
			last = err.Error()
		case nodeState(st, p.ID) == shard.StateDecommissioned:
			p.retire("decommissioned", false)
			now := n.History.Now()
			n.mu.Lock()
			delete(n.leaving, p.ID)
			f.doneAt = now
			f.note = fmt.Sprintf("; decommissioned after %.1fs, process stopped", float64(now-f.rec.Start)/1e9)
			n.mu.Unlock()
			n.logf("%7.1fs  %s decommissioned (%s sees it), process stopped", float64(now)/1e9, p.ID, via.ID)
			return
		default:
			last = fmt.Sprintf("%s sees %s %s with %d moves in flight", via.ID, p.ID, nodeState(st, p.ID), len(st.Moves))
		}
		if time.Now().After(deadline) {
			n.mu.Lock()
			f.lateErrors = append(f.lateErrors, fmt.Sprintf("not decommissioned after %v: %s", n.DecommissionTimeout, last))
			n.mu.Unlock()
			return
		}
		select {
		case <-n.stopped:
			n.mu.Lock()
			f.lateErrors = append(f.lateErrors, "not decommissioned when the run ended: "+last)
			n.mu.Unlock()
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// HealAll ends every fault: resumes paused nodes, restarts killed ones and
// clears every fault rule.
func (c *Cluster) HealAll(ctx context.Context) error {
	for _, p := range c.Members() {
		p.Resume()
		if err := p.Restart(); err != nil {
			return err
		}
	}
	return c.SetFaults(ctx, nil)
}

// ParseFaults parses a comma-separated list of fault kinds ("all" for
// every kind, "none" for none).
func ParseFaults(s string) ([]string, error) {
	switch s {
	case "", "all":
		return AllFaults, nil
	case "none":
		return nil, nil
	}
	known := map[string]bool{}
	for _, k := range AllFaults {
		known[k] = true
	}
	var out []string
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if !known[k] {
			return nil, fmt.Errorf("chaos: unknown fault %q (known: %s)", k, strings.Join(AllFaults, ","))
		}
		out = append(out, k)
	}
	return out, nil
}

// countKinds counts faults by kind, in AllFaults order.
func countKinds(recs []FaultRecord) []string {
	n := map[string]int{}
	for _, r := range recs {
		n[r.Kind]++
	}
	var out []string
	for _, k := range AllFaults {
		if n[k] > 0 {
			out = append(out, fmt.Sprintf("%s %d", k, n[k]))
		}
	}
	return out
}

func without(ids []string, id string) []string {
	var out []string
	for _, x := range ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
