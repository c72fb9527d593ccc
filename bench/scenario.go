package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Scenario is one LambdaBench experiment. Run measures and returns its
// section of the report; the suite fills in Name, Rerun, Started, Seconds
// and Error. A scenario starts every process it needs and stops them
// before it returns.
type Scenario struct {
	Name  string // stable: reports are compared across runs by name
	Title string
	Run   func(ctx context.Context, env *Env) (*ScenarioReport, error)
}

// Scenarios is the registry, in the order a full run executes them. A new
// scenario is one entry here.
var Scenarios = []Scenario{
	{Name: "kv-put", Title: "KV puts: lambdadb vs etcd, 3 nodes each", Run: runKVPut},
	{Name: "kv-get", Title: "KV gets by consistency level: lambdadb vs etcd, 3 nodes each", Run: runKVGet},
	{Name: "kv-secure", Title: "KV puts and gets: lambdadb in secure mode (TLS 1.3, tokens) vs insecure, 3 nodes each", Run: runKVSecure},
	{Name: "idle", Title: "Idle cost of a 3-node lambdadb cluster by shard count", Run: runIdle},
	{Name: "sandbox-start", Title: "Sandbox start latency by state (the paper's Figure 5)", Run: runSandboxStart},
	{Name: "density", Title: "Paused sandboxes per GiB until the memory budget binds (the paper's Figure 6)", Run: runDensity},
	{Name: "burst", Title: "100 outstanding 200 ms invocations (the paper's Figure 2)", Run: runBurst},
	{Name: "burst-after-deploy", Title: "Bursts of 200 ms calls on the other nodes right after a deploy", Run: runBurstAfterDeploy},
	{Name: "trigger", Title: "Change delivery to handlers by sandbox state; etcd watch as reference", Run: runTrigger},
	{Name: "scatter", Title: "Aggregate next to the data vs pulling every record", Run: runScatter},
	{Name: "billing", Title: "Billing a Gmail-shaped RPC mix at 100 ms vs 1 ms granularity", Run: runBilling},
	{Name: "hostile", Title: "Careless and hostile clients: idle long polls, dead WebSockets, stalled uploads, 1,000 writers", Run: runHostile},
	{Name: "rebalance", Title: "A fourth node joins a loaded 3-node cluster under a steady write load", Run: runRebalance},
}

// Lookup returns the registered scenario called name.
func Lookup(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// aliases expand older scenario names.
var aliases = map[string][]string{"kv": {"kv-put", "kv-get"}}

// Select returns the scenarios named in a comma-separated list ("" or
// "all": every one), in registry order.
func Select(list string) ([]Scenario, error) {
	list = strings.TrimSpace(list)
	if list == "" || list == "all" {
		return Scenarios, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if ex, ok := aliases[n]; ok {
			for _, e := range ex {
				want[e] = true
			}
			continue
		}
		if _, ok := Lookup(n); !ok {
			var names []string
			for _, s := range Scenarios {
				names = append(names, s.Name)
			}
			return nil, fmt.Errorf("bench: unknown scenario %q (have %s)", n, strings.Join(names, ", "))
		}
		want[n] = true
	}
	var out []Scenario
	for _, s := range Scenarios {
		if want[s.Name] {
			out = append(out, s)
		}
	}
	return out, nil
}

// Sizes are the sizes of every scenario's workload. QuickSizes and
// FullSizes are the two profiles; flags may override single fields.
type Sizes struct {
	// kv-put, kv-get, kv-secure
	KVClients  int           // concurrent closed-loop clients, same for both systems
	KVValue    int           // value size in bytes
	KVKeys     int           // key space
	KVDuration time.Duration // per measurement
	KVShards   int           // lambdadb shards
	KVRounds   int           // rounds of the whole comparison (fresh clusters each)

	// idle
	IdleShards []int         // shard counts, a fresh 3-node cluster each
	IdleSettle time.Duration // wait after the cluster is ready, before sampling
	IdleWindow time.Duration // sampling window

	// sandbox-start
	StartWarm    int // warm invocations
	StartRestart int // restarts
	StartCold    int // cold starts and first compiles (distinct modules)
	StartProcess int // fork/exec of /bin/true
	StartPython  int // python3 -c pass

	// density
	DensityBudgetMB int // --fn-memory-mb of the node

	// burst
	BurstOutstanding int           // outstanding invocations
	BurstDuration    time.Duration // how long they are kept outstanding
	BurstSleepMS     int           // what each invocation sleeps

	// burst-after-deploy (sleeping BurstSleepMS)
	AfterDeployBursts []int // calls of each burst, a fresh function each

	// trigger
	TriggerChanges        int // preloaded changes for the delivery rate
	TriggerSamples        int // put → handler samples with a paused sandbox (and feed/watch samples)
	TriggerStoppedSamples int // put → handler samples with a stopped sandbox

	// scatter
	ScatterRecords    int // records under orders/
	ScatterValueBytes int // size of each JSON record
	ScatterRuns       int // runs of each method (median reported)

	// billing
	BillingCalls       int   // invocations per granularity
	BillingConcurrency int   // concurrent callers
	BillingSeed        int64 // seed of the Gmail-shaped sampler

	// hostile
	HostileDuration     time.Duration // writes per phase
	HostileWriters      int           // writers of the 1-node phases
	HostileValue        int           // their value size, bytes
	HostilePolls        int           // idle long polls
	HostilePollWait     time.Duration // their wait
	HostileSockets      int           // never-reading WebSocket streams
	HostileUploads      int           // stalled uploads
	HostileUploadMB     int           // their declared size
	HostileFloodWriters int           // writers on 3 nodes

	// rebalance
	RebalanceMB      int           // data loaded before the join, MiB
	RebalanceSteady  time.Duration // steady load before the join and after balance
	RebalanceTimeout time.Duration // longest wait for balance
}

// QuickSizes fit `make bench-quick` in about 8 minutes on a 2-core machine
// (kv-secure about 1.5 of them).
var QuickSizes = Sizes{
	KVClients: 64, KVValue: 256, KVKeys: 2000, KVDuration: 3 * time.Second, KVShards: 16, KVRounds: 3,
	IdleShards: []int{16, 64}, IdleSettle: 5 * time.Second, IdleWindow: 10 * time.Second,
	StartWarm: 100, StartRestart: 20, StartCold: 4, StartProcess: 50, StartPython: 10,
	DensityBudgetMB:  256,
	BurstOutstanding: 100, BurstDuration: 30 * time.Second, BurstSleepMS: 200,
	AfterDeployBursts: []int{60, 100},
	TriggerChanges:    5000, TriggerSamples: 100, TriggerStoppedSamples: 20,
	ScatterRecords: 100_000, ScatterValueBytes: 200, ScatterRuns: 3,
	BillingCalls: 400, BillingConcurrency: 32, BillingSeed: 1,
	HostileDuration: 5 * time.Second, HostileWriters: 16, HostileValue: 10 << 10, HostilePolls: 1000,
	HostilePollWait: 3 * time.Second, HostileSockets: 500, HostileUploads: 100, HostileUploadMB: 32,
	HostileFloodWriters: 1000,
	RebalanceMB:         100, RebalanceSteady: 10 * time.Second, RebalanceTimeout: 90 * time.Second,
}

// FullSizes are `make bench`'s (well under 30 minutes).
var FullSizes = Sizes{
	KVClients: 64, KVValue: 256, KVKeys: 10000, KVDuration: 15 * time.Second, KVShards: 16, KVRounds: 3,
	IdleShards: []int{16, 64, 256}, IdleSettle: 10 * time.Second, IdleWindow: 20 * time.Second,
	StartWarm: 500, StartRestart: 50, StartCold: 10, StartProcess: 200, StartPython: 30,
	DensityBudgetMB:  1024,
	BurstOutstanding: 100, BurstDuration: 60 * time.Second, BurstSleepMS: 200,
	AfterDeployBursts: []int{60, 100},
	TriggerChanges:    20000, TriggerSamples: 300, TriggerStoppedSamples: 50,
	ScatterRecords: 1_000_000, ScatterValueBytes: 200, ScatterRuns: 5,
	BillingCalls: 2000, BillingConcurrency: 32, BillingSeed: 1,
	HostileDuration: 15 * time.Second, HostileWriters: 16, HostileValue: 10 << 10, HostilePolls: 1000,
	HostilePollWait: 10 * time.Second, HostileSockets: 500, HostileUploads: 100, HostileUploadMB: 32,
	HostileFloodWriters: 1000,
	RebalanceMB:         1024, RebalanceSteady: 20 * time.Second, RebalanceTimeout: 10 * time.Minute,
}

// Env is what scenarios run with. One goroutine runs the scenarios, one
// at a time.
type Env struct {
	Quick     bool
	Sizes     Sizes
	LambdaBin string    // bin/lambdadb
	EtcdBin   string    // etcd 3.4; "" when not available (scenarios note it)
	Python    string    // python3; "" when not available
	Examples  string    // directory of the example handlers (<name>.wasm)
	OutDir    string    // the run's directory: plots go here
	Progress  io.Writer // progress lines (the suite prefixes them)
	// RerunFlags are the command-line flags that reproduce this run's
	// sizes, without -scenarios.
	RerunFlags string
	// Selected names the scenarios of this run.
	Selected []string

	kvOnce sync.Once
	kvRes  []Result
	kvErr  error
}

// selected reports whether scenario name is part of this run.
func (e *Env) selected(name string) bool {
	for _, s := range e.Selected {
		if s == name {
			return true
		}
	}
	return false
}

// Wasm reads an example handler's module.
func (e *Env) Wasm(name string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(e.Examples, name+".wasm"))
	if err != nil {
		return nil, fmt.Errorf("bench: %w (make examples builds it)", err)
	}
	return b, nil
}

// logf writes one progress line.
func (e *Env) logf(format string, args ...any) {
	fmt.Fprintf(e.Progress, format+"\n", args...)
}

// Rerun returns the command that reruns scenario name with this run's sizes.
func (e *Env) Rerun(name string) string {
	cmd := "make build examples etcd && go run ./bench/cmd/lambdabench"
	if e.RerunFlags != "" {
		cmd += " " + e.RerunFlags
	}
	return cmd + " -scenarios " + name
}

// RunSuite runs scenarios one after the other and returns the report. A
// failed scenario is recorded and the others still run; the error joins
// every failure. The report is written to env.OutDir after each scenario,
// so an interrupted run leaves what it measured.
func RunSuite(ctx context.Context, env *Env, scenarios []Scenario, r *Report) error {
	var errs []error
	progress := env.Progress
	if progress == nil {
		progress = io.Discard
	}
	defer func() { env.Progress = progress }()
	for _, sc := range scenarios {
		env.Selected = append(env.Selected, sc.Name)
	}
	for i, sc := range scenarios {
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("bench: %s not run: %w", sc.Name, ctx.Err()))
			break
		}
		start := time.Now()
		env.Progress = &prefixWriter{w: progress, prefix: func() string {
			return fmt.Sprintf("[%s %d/%d %s] ", time.Since(r.Started).Round(time.Second), i+1, len(scenarios), sc.Name)
		}}
		env.logf("start: %s", sc.Title)
		load := LoadAvg()
		rep, err := sc.Run(ctx, env)
		if rep == nil {
			rep = &ScenarioReport{}
		}
		rep.Name, rep.Started, rep.Seconds = sc.Name, start.UTC(), time.Since(start).Seconds()
		rep.LoadBefore, rep.LoadAfter = load, LoadAvg()
		if rep.Title == "" {
			rep.Title = sc.Title
		}
		rep.Rerun = env.Rerun(sc.Name)
		if err != nil {
			rep.Error = err.Error()
			errs = append(errs, fmt.Errorf("bench: %s: %w", sc.Name, err))
			env.logf("FAILED after %.0f s: %v", rep.Seconds, err)
		} else {
			env.logf("done in %.0f s", rep.Seconds)
		}
		r.Scenarios = append(r.Scenarios, rep)
		r.Finished = time.Now().UTC()
		if werr := r.Write(env.OutDir); werr != nil {
			errs = append(errs, werr)
		}
	}
	return errors.Join(errs...)
}

// prefixWriter prefixes every line written through it.
type prefixWriter struct {
	w      io.Writer
	prefix func() string
	mid    bool // in the middle of a line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if !p.mid {
			if _, err := io.WriteString(p.w, p.prefix()); err != nil {
				return 0, err
			}
		}
		i := strings.IndexByte(string(b), '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i+1]
		}
		if _, err := p.w.Write(chunk); err != nil {
			return 0, err
		}
		p.mid = i < 0
		b = b[len(chunk):]
	}
	return n, nil
}

// ShellQuote returns s as one POSIX shell word: unchanged when it holds
// only characters the shell leaves alone, else in single quotes.
func ShellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
