// Command lambdabench runs LambdaBench scenarios against lambdadb and its
// reference peers on this machine and prints the results.
//
//	go run ./bench/cmd/lambdabench -scenarios kv -duration 10s
//	go run ./bench/cmd/lambdabench -scenarios trigger -changes 20000
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"lambdadb/bench"
)

func main() {
	var (
		bin      = flag.String("bin", "bin/lambdadb", "lambdadb binary")
		etcd     = flag.String("etcd", "etcd", "etcd 3.4 binary (empty to skip etcd)")
		clients  = flag.Int("clients", 64, "concurrent closed-loop clients")
		value    = flag.Int("value", 256, "value size in bytes")
		keys     = flag.Int("keys", 10000, "key space")
		duration = flag.Duration("duration", 10*time.Second, "length of each measurement")
		shards   = flag.Int("shards", 16, "lambdadb shards")
		jsonOut  = flag.String("json", "", "also write results as JSON to this file")
		scen     = flag.String("scenarios", "kv", "comma-separated scenarios: kv, trigger")
		changes  = flag.Int("changes", 20000, "trigger: changes preloaded for the delivery rate")
		samples  = flag.Int("samples", 300, "trigger: latency samples")
		wasm     = flag.String("wasm", "bin/examples/indexer.wasm", "trigger: the indexer example module")
	)
	flag.Parse()
	etcdBin := *etcd
	if etcdBin != "" {
		p, err := exec.LookPath(etcdBin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "lambdabench: etcd not found (%v); measuring lambdadb alone\n", err)
			etcdBin = ""
		} else {
			etcdBin = p
		}
	}
	var results []any
	for _, sc := range strings.Split(*scen, ",") {
		switch sc {
		case "kv":
			results = append(results, runKV(*bin, etcdBin, *clients, *value, *keys, *duration, *shards))
		case "trigger":
			r, err := bench.RunTrigger(bench.TriggerConfig{LambdaBin: *bin, EtcdBin: etcdBin, Wasm: *wasm,
				Shards: *shards, Changes: *changes, Clients: *clients, Samples: *samples, Progress: os.Stderr})
			if err != nil {
				fmt.Fprintln(os.Stderr, "lambdabench:", err)
				os.Exit(1)
			}
			fmt.Println(strings.Repeat("-", 100))
			b, _ := json.MarshalIndent(r, "", "  ")
			fmt.Println(string(b))
			results = append(results, r)
		default:
			fmt.Fprintf(os.Stderr, "lambdabench: unknown scenario %q (kv, trigger)\n", sc)
			os.Exit(2)
		}
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "lambdabench:", err)
			os.Exit(1)
		}
	}
}

func runKV(bin, etcdBin string, clients, value, keys int, duration time.Duration, shards int) []bench.Result {
	res, err := bench.RunKV(bench.KVConfig{
		LambdaBin: bin, EtcdBin: etcdBin, Clients: clients, ValueBytes: value,
		Keys: keys, Duration: duration, Shards: shards, Progress: os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "lambdabench:", err)
		os.Exit(1)
	}
	fmt.Println(strings.Repeat("-", 100))
	for _, r := range res {
		fmt.Println(r)
	}
	printRatios(res)
	return res
}

func printRatios(res []bench.Result) {
	find := func(sys, op, c string) *bench.Result {
		for i := range res {
			if res[i].System == sys && res[i].Op == op && res[i].Consistency == c {
				return &res[i]
			}
		}
		return nil
	}
	etcdPut, etcdLin := find("etcd", "put", ""), find("etcd", "get", "linearizable")
	if etcdPut == nil || etcdLin == nil {
		return
	}
	fmt.Println(strings.Repeat("-", 100))
	if p := find("lambdadb", "put", ""); p != nil {
		fmt.Printf("put throughput lambdadb/etcd: %.2f\n", p.OpsPerSec/etcdPut.OpsPerSec)
	}
	for _, c := range []string{"linearizable", "session", "stale"} {
		if g := find("lambdadb", "get", c); g != nil {
			fmt.Printf("get %-12s lambdadb / etcd linearizable get: %.2f\n", c, g.OpsPerSec/etcdLin.OpsPerSec)
		}
	}
}
