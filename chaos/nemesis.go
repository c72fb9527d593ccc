package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
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
)

// AllFaults lists every fault kind.
var AllFaults = []string{FaultKill, FaultKillLeader, FaultPause, FaultPauseLeader, FaultPartition,
	FaultPartitionLeader, FaultCut, FaultOneWay, FaultOneWayRaft, FaultDelay}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Kind   string
	Desc   string
	Start  int64 // history clock
	End    int64 // when healed
	Errors []string
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
	Logf  func(format string, args ...any)

	mu      sync.Mutex
	records []FaultRecord
}

// Records returns the faults injected so far.
func (n *Nemesis) Records() []FaultRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]FaultRecord(nil), n.records...)
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
		kind := n.Kinds[rng.IntN(len(n.Kinds))]
		first := n.start(ctx, rng, kind, "")
		hold := between(n.Hold)
		var second *activeFault
		// A third of the time a fault of the other family (process or
		// network) joins in: a node killed or frozen during a partition,
		// or partitioned while another node is down.
		if others := otherFamily(n.Kinds, kind); len(others) > 0 && rng.IntN(3) == 0 {
			if sleepCtx(ctx, hold/3) {
				second = n.start(ctx, rng, others[rng.IntN(len(others))], " (during "+kind+")")
			}
		}
		sleepCtx(ctx, hold)
		// Heal even when ctx has ended: the final checks need a whole cluster.
		hctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if second != nil {
			n.heal(hctx, second)
		}
		n.heal(hctx, first)
		if err := n.Cluster.WaitHealthy(hctx, 30*time.Second); err != nil {
			first.rec.Errors = append(first.rec.Errors, "after heal: "+err.Error())
			n.logf("         cluster not healthy after healing: %v", err)
		}
		cancel()
		n.mu.Lock()
		n.records = append(n.records, first.rec)
		if second != nil {
			n.records = append(n.records, second.rec)
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
}

func (n *Nemesis) start(ctx context.Context, rng *rand.Rand, kind, note string) *activeFault {
	f := &activeFault{rec: FaultRecord{Kind: kind, Start: n.History.Now()}}
	heal, desc, err := n.inject(ctx, rng, kind)
	f.heal, f.rec.Desc = heal, desc+note
	if err != nil {
		f.rec.Errors = append(f.rec.Errors, "inject: "+err.Error())
	}
	n.logf("%7.1fs  %s", float64(f.rec.Start)/1e9, f.rec.Desc)
	return f
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

// processFaults act on processes; the others on the network.
var processFaults = map[string]bool{FaultKill: true, FaultKillLeader: true, FaultPause: true, FaultPauseLeader: true}

// otherFamily returns the kinds of the other family than kind's.
func otherFamily(kinds []string, kind string) []string {
	var out []string
	for _, k := range kinds {
		if processFaults[k] != processFaults[kind] {
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

// HealAll ends every fault: resumes paused nodes, restarts killed ones and
// clears every fault rule.
func (c *Cluster) HealAll(ctx context.Context) error {
	for _, p := range c.Procs {
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
