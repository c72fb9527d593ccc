package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"lambdadb/client"
	"lambdadb/shard"
)

// Config configures Run. Zero values select the defaults in comments.
type Config struct {
	Bin      string        // lambdadb binary. Default "bin/lambdadb".
	OutDir   string        // report, logs, data and visualizations. Default "bin/chaos".
	Duration time.Duration // workload and faults. Default 1m.
	Clients  int           // register clients. Default 10.
	Sessions int           // session clients. Default 4.
	Keys     int           // shared register keys. Default 200.
	Shards   int           // shards. Default 16.
	Seed     uint64        // randomness of workload and nemesis. Default 1.
	Faults   []string      // fault kinds (AllFaults when nil; empty non-nil slice: none)
	// Hold and Quiet bound fault length and the gap between faults
	// (see Nemesis). Defaults 8s and 4s.
	Hold, Quiet time.Duration
	// OpTimeout is the client's timeout per operation. Default 5s.
	OpTimeout time.Duration
	// CheckTimeout bounds porcupine's search per key. Default 60s.
	CheckTimeout time.Duration
	// Log receives progress lines. Default: discard.
	Log io.Writer
	// KeepData keeps the nodes' data directories after a passing run.
	KeepData bool
	// TriggerWasm is the indexer example module for the trigger workload
	// ("" skips it). Default "bin/examples/indexer.wasm" when that exists.
	TriggerWasm string
	// TriggerWriters are the trigger workload's writers. Default 2.
	TriggerWriters int
	// MaxNodes bounds the members joins bring the cluster to. Default 5.
	MaxNodes int
	// SettleTimeout bounds the wait, after healing, for the membership
	// to settle: no move in flight, no node joining or decommissioning.
	// Default 3m.
	SettleTimeout time.Duration
	// MembershipCutoff: no membership fault starts in this last part of
	// Duration. Default Duration/4, at most 2m.
	MembershipCutoff time.Duration
	// Secure runs the cluster in secure mode: every node, joining ones
	// too, gets the same random cluster secret (a 0600 file in the data
	// directory), the harness speaks HTTPS trusting the cluster's CA and
	// sends the admin token it bootstraps with every request. Default
	// false: plain HTTP, no tokens.
	Secure bool
}

// replicas is the replication factor of the harness's clusters (serve's
// default).
const replicas = 3

func (c *Config) setDefaults() {
	if c.Bin == "" {
		c.Bin = "bin/lambdadb"
	}
	if c.OutDir == "" {
		c.OutDir = "bin/chaos"
	}
	if c.Duration <= 0 {
		c.Duration = time.Minute
	}
	if c.TriggerWasm == "" {
		if _, err := os.Stat("bin/examples/indexer.wasm"); err == nil {
			c.TriggerWasm = "bin/examples/indexer.wasm"
		}
	}
	if c.TriggerWriters <= 0 {
		c.TriggerWriters = 2
	}
	if c.Clients <= 0 {
		c.Clients = 10
	}
	if c.Sessions < 0 {
		c.Sessions = 0
	} else if c.Sessions == 0 {
		c.Sessions = 4
	}
	if c.Keys <= 0 {
		c.Keys = 200
	}
	if c.Shards <= 0 {
		c.Shards = 16
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Faults == nil {
		c.Faults = AllFaults
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 5 * time.Second
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 60 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.MaxNodes <= 0 {
		c.MaxNodes = 5
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = 3 * time.Minute
	}
	if c.MembershipCutoff <= 0 {
		c.MembershipCutoff = min(c.Duration/4, 2*time.Minute)
	}
}

// Run starts a cluster, runs the workload under the nemesis for
// cfg.Duration, heals everything, reads every key through every node,
// checks convergence and the history, and returns the report. An error
// means the harness itself could not run (the report may be partial);
// violations are in the report (Report.OK).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	started := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Log, format+"\n", args...) }
	rep := &Report{Config: cfg}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return rep, err
	}
	dataDir := filepath.Join(cfg.OutDir, "data")
	if err := os.RemoveAll(dataDir); err != nil {
		return rep, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return rep, err
	}
	mode := "insecure mode"
	if cfg.Secure {
		mode = "secure mode: TLS, cluster secret, admin token"
	}
	logf("starting 3 nodes (%s, %s), data and logs in %s", cfg.Bin, mode, dataDir)
	cl, err := StartCluster(ctx, ClusterConfig{Bin: cfg.Bin, Dir: dataDir, Shards: cfg.Shards, Secure: cfg.Secure})
	if err != nil {
		return rep, err
	}
	defer cl.Stop()

	hist := NewHistory()
	var keys []string
	for i := 0; i < cfg.Keys; i++ {
		keys = append(keys, fmt.Sprintf("r/%04d", i))
	}
	wl := &Workload{Cluster: cl, History: hist, Keys: keys, Clients: cfg.Clients, Sessions: cfg.Sessions,
		Timeout: cfg.OpTimeout, Seed: cfg.Seed}
	nem := &Nemesis{Cluster: cl, History: hist, Kinds: cfg.Faults, Seed: cfg.Seed, Hold: cfg.Hold, Quiet: cfg.Quiet,
		MaxNodes: cfg.MaxNodes, Replicas: replicas, MembershipCutoff: cfg.MembershipCutoff, Logf: logf}
	mw := &MoveWatcher{Cluster: cl, History: hist}
	logf("running %d register clients and %d session clients on %d keys for %v; faults: %v",
		cfg.Clients, cfg.Sessions, cfg.Keys, cfg.Duration, cfg.Faults)
	var tw *TriggerWorkload
	if cfg.TriggerWasm != "" {
		tw = &TriggerWorkload{Cluster: cl, Wasm: cfg.TriggerWasm, Writers: cfg.TriggerWriters, Timeout: cfg.OpTimeout, Seed: cfg.Seed}
		logf("trigger workload: deploying %s and a trigger on %q; %d writers", cfg.TriggerWasm, triggerPrefix, cfg.TriggerWriters)
		if err := tw.Setup(ctx); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			tw = nil
		}
	}
	qw := &QueryWorkload{Cluster: cl, Timeout: cfg.OpTimeout, Seed: cfg.Seed}
	logf("query workload: writing %s records, then sum/count queries through random nodes", queryPrefix)
	if err := qw.Setup(ctx); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		qw = nil
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	mctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	go mw.Run(mctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); wl.Run(wctx) }()
	go func() { defer wg.Done(); nem.Run(wctx) }()
	if tw != nil {
		wg.Add(1)
		go func() { defer wg.Done(); tw.Run(wctx) }()
	}
	if qw != nil {
		wg.Add(1)
		go func() { defer wg.Done(); qw.Run(wctx) }()
	}
	wg.Wait()
	cancel()
	rep.Workload = time.Since(started)

	logf("healing every fault and waiting for a healthy cluster")
	if err := cl.HealAll(ctx); err != nil {
		rep.Errors = append(rep.Errors, "heal: "+err.Error())
	}
	if err := cl.WaitHealthy(ctx, 90*time.Second); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	logf("waiting for the membership to settle: decommissioned nodes stopped, no move in flight (at most %v)", cfg.SettleTimeout)
	settleStart := time.Now()
	if !nem.WaitMembership(cfg.SettleTimeout) {
		nem.StopWatching()
		nem.WaitMembership(5 * time.Second)
	}
	settled, why := settle(ctx, cl, cfg.SettleTimeout-time.Since(settleStart))
	mw.Poll(ctx)
	stopWatching()
	rep.Membership = checkMembership(ctx, cl, replicas, 10*time.Second)
	rep.Membership.Settled, rep.Membership.SettleTime = settled, time.Since(settleStart)
	if !settled {
		rep.Membership.Problems = append(rep.Membership.Problems, fmt.Sprintf("not settled %v after healing: %s", cfg.SettleTimeout, why))
	}
	if !settled || len(rep.Membership.Problems) > 0 {
		rep.StatusFiles = dumpStatus(ctx, cl, cfg.OutDir)
	}
	rep.Faults = nem.Records()
	rep.Moves = mw.Moves()
	for _, f := range rep.Faults {
		if f.Kind == FaultJoin && len(f.Errors) == 0 && len(rep.Moves) == 0 {
			rep.Membership.Problems = append(rep.Membership.Problems, "a node joined, but no replica move was seen")
			break
		}
	}
	logf("membership: members %v, left %v, %d moves seen, settled %v after %v", rep.Membership.Members, rep.Membership.Left,
		len(rep.Moves), settled, rep.Membership.SettleTime.Round(time.Second))

	if tw != nil {
		logf("trigger workload: waiting for every acknowledged put's index entry")
		rep.TriggerAcked, rep.TriggerMissing = tw.Check(ctx, 90*time.Second)
		rep.TriggerSummary = tw.Summary()
	}

	if qw != nil {
		rep.QuerySummary, rep.QueryWrong = qw.Summary(), qw.Wrong()
	}

	logf("final reads of %d keys through every node", len(wl.AllKeys()))
	rep.FinalReadErrors = finalReads(ctx, cl, hist, wl.AllKeys())

	logf("waiting for every replica to apply the same index, then comparing shard hashes")
	rep.Converged, rep.Convergence = converge(ctx, cl)

	ops := hist.Ops()
	rep.count(ops)
	rep.SessionOps = wl.SessionOps()
	rep.SessionViolations = wl.Violations()

	logf("checking %d operations", len(ops))
	var notes []porcupine.Annotation
	for _, f := range rep.Faults {
		notes = append(notes, porcupine.Annotation{Tag: "nemesis", Start: f.Start, End: f.End, Description: f.Kind, Details: f.Desc,
			BackgroundColor: "#f8d7da"})
	}
	checkStart := time.Now()
	rep.Check = Check(ops, CheckOptions{Timeout: cfg.CheckTimeout, OutDir: cfg.OutDir, Annotations: notes})
	rep.CheckTime = time.Since(checkStart)
	rep.Elapsed = time.Since(started)

	if !rep.OK() {
		if f, err := os.Create(filepath.Join(cfg.OutDir, "history.jsonl")); err == nil {
			_ = WriteJSONL(f, ops)
			f.Close()
			rep.HistoryFile = f.Name()
		}
	}
	cl.Stop()
	if rep.OK() && !cfg.KeepData {
		_ = os.RemoveAll(dataDir)
	}
	return rep, nil
}

// finalReads reads every key through every node (linearizable, retried)
// and records the reads as Final operations.
func finalReads(ctx context.Context, cl *Cluster, hist *History, keys []string) []string {
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	work := make(chan string)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range work {
				for _, p := range cl.Members() {
					ni := procNum(p)
					c, _ := cl.Client(p, cl.hc)
					var last error
					for attempt := 0; attempt < 20; attempt++ {
						op := Op{Client: 3000 + ni, Kind: Get, Key: key, Node: p.ID, Final: true, Call: hist.Now()}
						rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						it, found, err := c.Get(rctx, key, client.WithConsistency(client.Linearizable))
						cancel()
						op.Return = hist.Now()
						if err == nil {
							op.Found, op.Got, op.Version = found, string(it.Value), it.Version
							hist.Add(op)
							last = nil
							break
						}
						last = err
						if ctx.Err() != nil {
							break // interrupted: report, do not retry
						}
						time.Sleep(500 * time.Millisecond)
					}
					if last != nil {
						mu.Lock()
						errs = append(errs, fmt.Sprintf("final read of %s via %s: %v", key, p.ID, last))
						mu.Unlock()
					}
				}
			}
		}()
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	sort.Strings(errs)
	return errs
}

// converge waits until every replica of every shard reports the same
// applied index twice in a row, then compares per-shard hashes of every
// node's data (read with stale scans, which each node serves from its own
// replicas).
func converge(ctx context.Context, cl *Cluster) (bool, []string) {
	deadline := time.Now().Add(90 * time.Second)
	var prev string
	var detail []string
	for {
		sig, diff := appliedSignature(ctx, cl)
		if diff == "" && sig == prev {
			break
		}
		prev = sig
		if time.Now().After(deadline) {
			return false, []string{"replicas did not reach the same applied index: " + diff}
		}
		time.Sleep(500 * time.Millisecond)
	}
	procs := cl.Members()
	if len(procs) == 0 {
		return false, []string{"no member left"}
	}
	hashes := map[string]map[int]string{} // node → shard → hash
	for _, p := range procs {
		h, err := shardHashes(ctx, cl, p)
		if err != nil {
			return false, []string{fmt.Sprintf("stale scan via %s: %v", p.ID, err)}
		}
		hashes[p.ID] = h
	}
	ok := true
	first := procs[0].ID
	for s := 0; s < cl.Shards; s++ {
		for _, p := range procs[1:] {
			if hashes[p.ID][s] != hashes[first][s] {
				ok = false
				detail = append(detail, fmt.Sprintf("shard %d: %s has %s, %s has %s", s, first, short(hashes[first][s]), p.ID, short(hashes[p.ID][s])))
			}
		}
	}
	if ok {
		detail = append(detail, fmt.Sprintf("%d shards identical on %d nodes", cl.Shards, len(procs)))
	}
	return ok, detail
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// appliedSignature returns each node's applied index per local replica,
// and a description of the first shard whose replicas differ ("" if none).
func appliedSignature(ctx context.Context, cl *Cluster) (sig, diff string) {
	applied := map[int]map[string]uint64{}
	procs := cl.Members()
	for _, p := range procs {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cl.Status(sctx, p)
		cancel()
		if err != nil {
			return "", fmt.Sprintf("%s: %v", p.ID, err)
		}
		for _, s := range st.Shards {
			for _, r := range s.Replicas {
				if r.Node == p.ID { // a node's own replicas, read directly
					if applied[s.ID] == nil {
						applied[s.ID] = map[string]uint64{}
					}
					applied[s.ID][p.ID] = r.Applied
				}
			}
		}
	}
	for s := 0; s < cl.Shards; s++ {
		var vals []uint64
		for _, p := range procs {
			v, ok := applied[s][p.ID]
			if ok {
				vals = append(vals, v)
			}
			sig += fmt.Sprintf("%d:%s=%d ", s, p.ID, v)
		}
		for _, v := range vals {
			if v != vals[0] && diff == "" {
				diff = fmt.Sprintf("shard %d applied %v", s, applied[s])
			}
		}
	}
	return sig, diff
}

// shardHashes hashes node p's data per shard: SHA-256 over key, version and
// value of every record, in key order.
func shardHashes(ctx context.Context, cl *Cluster, p *Proc) (map[int]string, error) {
	c, err := cl.Client(p, cl.hc)
	if err != nil {
		return nil, err
	}
	sums := map[int]hash.Hash{}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for it, err := range c.ScanAll(sctx, "", client.ScanOptions{Limit: 1000, Consistency: client.Stale}) {
		if err != nil {
			return nil, err
		}
		s := shard.For(it.Key, cl.Shards)
		if sums[s] == nil {
			sums[s] = sha256.New()
		}
		fmt.Fprintf(sums[s], "%q %d %q\n", it.Key, it.Version, it.Value)
	}
	out := map[int]string{}
	for s := 0; s < cl.Shards; s++ {
		out[s] = "empty"
		if sums[s] != nil {
			out[s] = hex.EncodeToString(sums[s].Sum(nil))
		}
	}
	return out, nil
}

// procNum returns the number in node p's id ("n4" → 4), or 0.
func procNum(p *Proc) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(p.ID, "n"))
	return n
}
