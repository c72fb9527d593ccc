// Command nemesis runs lambdadb's fault-injection harness: a cluster of
// `lambdadb serve` processes (three at the start) under a concurrent
// register and session workload while it kills, pauses, partitions and
// slows nodes, and adds, decommissions and removes nodes (the cluster
// moves replicas meanwhile), then checks linearizability (porcupine), lost
// writes, session guarantees, convergence and the final placement. It
// prints a report and exits 1 on any violation, 2 when the harness could
// not run.
//
// With -secure the nodes run in secure mode (TLS from a random cluster
// secret, every request with the admin token the harness bootstraps).
//
//	nemesis -bin bin/lambdadb -duration 15m -secure -out bin/chaos
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"lambdadb/chaos"
)

func main() {
	var cfg chaos.Config
	var faults string
	var seed int64
	flag.StringVar(&cfg.Bin, "bin", "bin/lambdadb", "lambdadb `binary`")
	flag.DurationVar(&cfg.Duration, "duration", time.Minute, "how long to run the workload and the faults")
	flag.IntVar(&cfg.Clients, "clients", 10, "register clients")
	flag.IntVar(&cfg.Sessions, "sessions", 4, "session clients (-1 for none)")
	flag.IntVar(&cfg.Keys, "keys", 200, "shared register keys")
	flag.IntVar(&cfg.Shards, "shards", 16, "shards")
	flag.Int64Var(&seed, "seed", 0, "random seed (0: from the clock)")
	flag.StringVar(&faults, "faults", "all", "comma-separated fault kinds, \"all\" or \"none\"; kinds: "+fmt.Sprint(chaos.AllFaults))
	flag.StringVar(&cfg.OutDir, "out", "bin/chaos", "`directory` for the report, node logs, data and visualizations")
	flag.DurationVar(&cfg.Hold, "hold", 8*time.Second, "longest a fault lasts")
	flag.DurationVar(&cfg.Quiet, "quiet", 4*time.Second, "longest gap between faults")
	flag.DurationVar(&cfg.OpTimeout, "op-timeout", 5*time.Second, "client timeout per operation")
	flag.DurationVar(&cfg.CheckTimeout, "check-timeout", time.Minute, "porcupine timeout per key")
	flag.BoolVar(&cfg.KeepData, "keep-data", false, "keep the nodes' data directories after a passing run")
	flag.IntVar(&cfg.MaxNodes, "max-nodes", 5, "most members joins bring the cluster to")
	flag.DurationVar(&cfg.SettleTimeout, "settle-timeout", 3*time.Minute, "longest wait after healing for the moves to finish")
	flag.DurationVar(&cfg.MembershipCutoff, "membership-cutoff", 0, "start no membership fault in this last part of the run (default: a quarter of -duration, at most 2m)")
	flag.BoolVar(&cfg.Secure, "secure", false, "run the cluster in secure mode (TLS from a random cluster secret, bootstrapped admin token on every request)")
	flag.Parse()

	kinds, err := chaos.ParseFaults(faults)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nemesis:", err)
		os.Exit(2)
	}
	cfg.Faults = kinds
	if cfg.Faults == nil {
		cfg.Faults = []string{}
	}
	if seed == 0 {
		seed = time.Now().UnixNano() % 1e9
	}
	cfg.Seed = uint64(seed)
	cfg.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nemesis:", err)
		os.Exit(2)
	}
	rep.Write(os.Stdout)
	if f, err := os.Create(filepath.Join(cfg.OutDir, "report.txt")); err == nil {
		rep.Write(f)
		f.Close()
	}
	if !rep.OK() {
		os.Exit(1)
	}
}
