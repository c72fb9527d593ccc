// Command lambdabench runs the LambdaBench suite: the OpenLambda paper's
// experiments on lambdadb and its KV paths against etcd, on this machine.
// Each run writes report.json, report.md and SVG plots into its own
// directory and prints progress to stderr.
//
//	go run ./bench/cmd/lambdabench -quick                 # every scenario, small sizes (make bench-quick)
//	go run ./bench/cmd/lambdabench                        # every scenario, full sizes (make bench)
//	go run ./bench/cmd/lambdabench -scenarios kv-put,kv-get -duration 10s
//
// It needs bin/lambdadb and bin/examples (make build examples) and, for the
// etcd comparisons, etcd 3.4 (make etcd).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"lambdadb/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lambdabench:", err)
		os.Exit(1)
	}
}

func run() error {
	var names []string
	for _, s := range bench.Scenarios {
		names = append(names, s.Name)
	}
	var (
		quick    = flag.Bool("quick", false, "small sizes: the whole suite in about 8 minutes")
		scen     = flag.String("scenarios", "all", "comma-separated scenarios: "+strings.Join(names, ", ")+" (kv = kv-put,kv-get)")
		out      = flag.String("out", "", "directory for the report and plots (default bench/results/<UTC timestamp>)")
		bin      = flag.String("bin", "bin/lambdadb", "lambdadb binary")
		etcd     = flag.String("etcd", "etcd", "etcd 3.4 binary (empty: measure lambdadb alone)")
		python   = flag.String("python", "python3", "python3, a process-start reference (empty: skip)")
		examples = flag.String("examples", "bin/examples", "directory of the example handlers (.wasm)")
		list     = flag.Bool("list", false, "list the scenarios and exit")
		sz       = sizeFlags()
	)
	flag.Parse()
	if *list {
		for _, s := range bench.Scenarios {
			fmt.Printf("%-14s %s\n", s.Name, s.Title)
		}
		return nil
	}
	scenarios, err := bench.Select(*scen)
	if err != nil {
		return err
	}
	sizes := bench.FullSizes
	if *quick {
		sizes = bench.QuickSizes
	}
	sz.apply(&sizes)

	if _, err := os.Stat(*bin); err != nil {
		return fmt.Errorf("%w (make build writes it)", err)
	}
	if _, err := os.Stat(*examples); err != nil {
		return fmt.Errorf("%w (make examples writes it)", err)
	}
	etcdBin := lookPath(*etcd, "etcd not found; measuring lambdadb alone (make etcd installs it)")
	pythonBin := bench.ResolvePython(lookPath(*python, "python3 not found; sandbox-start has no python reference point"))

	started := time.Now().UTC()
	dir := *out
	if dir == "" {
		dir = filepath.Join("bench", "results", started.Format("20060102T150405Z"))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var rerun []string
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "scenarios", "out", "list":
		default:
			rerun = append(rerun, bench.ShellQuote("-"+f.Name+"="+f.Value.String()))
		}
	})
	env := &bench.Env{
		Quick: *quick, Sizes: sizes, LambdaBin: *bin, EtcdBin: etcdBin, Python: pythonBin,
		Examples: *examples, OutDir: dir, Progress: os.Stderr, RerunFlags: strings.Join(rerun, " "),
	}
	rep := &bench.Report{
		Suite: "LambdaBench", Started: started, Quick: *quick,
		Command: "go run ./bench/cmd/lambdabench " + quoteArgs(os.Args[1:]),
		Machine: bench.CollectMachine(ctx, etcdBin, pythonBin),
	}
	fmt.Fprintf(os.Stderr, "LambdaBench: %d scenarios, %s sizes, writing %s\n", len(scenarios), map[bool]string{true: "quick", false: "full"}[*quick], dir)
	fmt.Fprintf(os.Stderr, "machine: %s\n", rep.Machine.Summary())
	runErr := bench.RunSuite(ctx, env, scenarios, rep)
	if err := rep.Write(dir); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Println(strings.Repeat("-", 80))
	for _, s := range rep.Scenarios {
		if s.Error != "" {
			fmt.Printf("%-14s FAILED: %s\n", s.Name, s.Error)
			continue
		}
		for i, m := range s.Metrics {
			if i == 3 {
				break
			}
			fmt.Printf("%-14s %s: %s %s\n", s.Name, m.Name, fmt.Sprintf("%.4g", m.Value), m.Unit)
		}
	}
	fmt.Printf("report: %s\n", filepath.Join(dir, "report.md"))
	return runErr
}

// lookPath resolves a binary, or returns "" (with a warning) when it is
// not available.
func lookPath(name, missing string) string {
	if name == "" {
		return ""
	}
	p, err := exec.LookPath(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lambdabench:", missing)
		return ""
	}
	return p
}

// sizes holds the flags that override single sizes of the profile.
type sizes struct {
	clients, value, keys, shards, rounds      *int
	duration, burstDuration                   *time.Duration
	changes, samples, stoppedSamples, density *int
	billingCalls, scatterRecords              *int
	seed                                      *int64
}

func sizeFlags() *sizes {
	return &sizes{
		clients:        flag.Int("clients", 0, "kv, kv-secure: concurrent closed-loop clients, both systems (0: profile)"),
		value:          flag.Int("value", 0, "kv: value size in bytes (0: profile)"),
		keys:           flag.Int("keys", 0, "kv: key space (0: profile)"),
		shards:         flag.Int("shards", 0, "kv, trigger: lambdadb shards (0: profile)"),
		duration:       flag.Duration("duration", 0, "kv, kv-secure: length of each measurement (0: profile)"),
		rounds:         flag.Int("rounds", 0, "kv, kv-secure: rounds of the comparison, fresh clusters each, order alternating (0: profile)"),
		burstDuration:  flag.Duration("burst-duration", 0, "burst: how long invocations are kept outstanding (0: profile)"),
		changes:        flag.Int("changes", 0, "trigger: changes preloaded for the delivery rate (0: profile)"),
		samples:        flag.Int("samples", 0, "trigger: latency samples with a paused sandbox (0: profile)"),
		stoppedSamples: flag.Int("stopped-samples", 0, "trigger: latency samples with a stopped sandbox (0: profile)"),
		density:        flag.Int("density-mb", 0, "density: the node's sandbox memory budget in MiB (0: profile)"),
		billingCalls:   flag.Int("billing-calls", 0, "billing: invocations per granularity (0: profile)"),
		scatterRecords: flag.Int("scatter-records", 0, "scatter: records aggregated (0: profile)"),
		seed:           flag.Int64("seed", 0, "billing: seed of the Gmail-shaped trace (0: profile)"),
	}
}

func (s *sizes) apply(z *bench.Sizes) {
	set := func(dst *int, v int) {
		if v > 0 {
			*dst = v
		}
	}
	set(&z.KVClients, *s.clients)
	set(&z.KVValue, *s.value)
	set(&z.KVKeys, *s.keys)
	set(&z.KVShards, *s.shards)
	set(&z.KVRounds, *s.rounds)
	set(&z.TriggerChanges, *s.changes)
	set(&z.TriggerSamples, *s.samples)
	set(&z.TriggerStoppedSamples, *s.stoppedSamples)
	set(&z.DensityBudgetMB, *s.density)
	set(&z.BillingCalls, *s.billingCalls)
	set(&z.ScatterRecords, *s.scatterRecords)
	if *s.duration > 0 {
		z.KVDuration = *s.duration
	}
	if *s.burstDuration > 0 {
		z.BurstDuration = *s.burstDuration
	}
	if *s.seed != 0 {
		z.BillingSeed = *s.seed
	}
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = bench.ShellQuote(a)
	}
	return strings.Join(q, " ")
}
