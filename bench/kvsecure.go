package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// secureTarget is kv-secure's target: secure mode keeps at least this
// share of insecure mode's throughput (TLS and token checks cost ≤ 10 %).
const secureTarget = 0.90

// kvSecureMethod describes how kv-secure measures.
const kvSecureMethod = "The same 3-node lambdadb cluster (three `lambdadb serve` processes on 127.0.0.1, data on disk in a " +
	"temporary directory) in two modes, one at a time on this machine, same load for both: insecure (plain HTTP, no " +
	"token) and secure (`--cluster-secret-file`, the same fresh 48-byte secret for the three nodes: TLS 1.3 on each node's " +
	"one address, client to node and node to node — Raft and internal RPC included —, and every request carrying " +
	"`Authorization: Bearer` with the admin token from `POST /v1/auth/bootstrap`, which the node checks on each request: " +
	"parse, SHA-256, lookup in its token cache). In rounds: each round starts a fresh cluster of each mode, the order " +
	"alternating from round to round (insecure first, then secure first, …) so that drift in the machine's load falls on " +
	"both. A ratio is the median over rounds of that round's secure/insecure ratio (of ops/s, or of p50 latency where it " +
	"says so); ops/s and latencies are those of each mode's median round. Closed-loop clients, each issuing its next " +
	"request when the previous one answers, keys drawn uniformly from the key space: the Go client (lambdadb/client, " +
	"HTTP/1.1 keep-alive; in secure mode HTTPS trusting the node's <data>/ca.pem, with client.WithAuth(token)), worker w " +
	"created for node w mod 3 with its own session, sending each key's requests to the key's shard leader; all workers " +
	"share one transport (one pool of kept-alive connections, so TLS handshakes happen once per connection, not per " +
	"request). Each cluster first takes unrecorded warm-up puts from all the clients (the clients open their connections, the " +
	"nodes fill their token caches), then the measured puts; then every key is written; then gets at each consistency level. Latencies are per request at " +
	"the client; failed requests are counted, not timed. CPU per operation: utime+stime of the three server processes " +
	"(summed) and of the benchmark process (the clients) from /proc before and after each measurement, over the " +
	"operations that succeeded: unlike ops/s it does not depend on how much of the shared machine's CPU the other " +
	"processes left to the run (10 ms ticks)."

// kvSecureWarmup is how long kv-secure puts before measuring: a third of
// a measurement, at most 3 s.
func kvSecureWarmup(sz Sizes) time.Duration { return min(sz.KVDuration/3, 3*time.Second) }

// kvSecureOps are the measurements compared: operation, consistency.
var kvSecureOps = []struct{ op, level, label string }{
	{"put", "", "put"},
	{"get", "linearizable", "linearizable get"},
	{"get", "stale", "stale get"},
}

func runKVSecure(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sz := e.Sizes
	rep := &ScenarioReport{
		Measures: fmt.Sprintf("What secure mode costs: throughput and latency of single-key puts and gets on a 3-node "+
			"lambdadb cluster with TLS 1.3 and a token check on every request, against the same cluster in insecure mode. "+
			"Target: TLS and token checks cost at most %.0f %% of throughput (secure/insecure ops/s ≥ %.2f).",
			(1-secureTarget)*100, secureTarget),
		Method: kvSecureMethod,
	}
	rep.Param("nodes per cluster", 3)
	rep.Param("shards (replicas 3)", sz.KVShards)
	rep.Param("clients (both modes)", sz.KVClients)
	rep.Param("value bytes", sz.KVValue)
	rep.Param("key space", sz.KVKeys)
	rep.Param("duration per measurement", sz.KVDuration.String())
	rep.Param("rounds", max(sz.KVRounds, 1))
	rep.Param("get consistency levels", "linearizable, stale")
	rep.Param("warm-up puts before measuring (not recorded)", kvSecureWarmup(sz).String())
	rep.Param("secure mode", "--cluster-secret-file (TLS 1.3), admin bearer token, --token-cache-ttl 30s (default)")
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	rs, err := RunKVSecure(KVConfig{
		LambdaBin: e.LambdaBin, Nodes: 3, Shards: sz.KVShards, Clients: sz.KVClients, ValueBytes: sz.KVValue,
		Keys: sz.KVKeys, Duration: sz.KVDuration, Rounds: sz.KVRounds, SkipOneClient: true, Warmup: kvSecureWarmup(sz), CPU: true,
		Levels: []string{"linearizable", "stale"}, Progress: e.Progress,
	})
	rep.Data = rs
	kvSecureMetrics(rep, rs)
	if err != nil {
		return rep, err
	}
	if err := kvSecurePlots(e, rep, rs); err != nil {
		return rep, err
	}
	return rep, nil
}

// kvSecureMetrics fills rep's metrics, table and notes from the results
// of RunKVSecure (possibly partial: what is missing reads n/a).
func kvSecureMetrics(rep *ScenarioReport, rs []Result) {
	type pair struct{ ins, sec []*Result }
	pairs := make([]pair, len(kvSecureOps))
	for i, o := range kvSecureOps {
		pairs[i] = pair{kvRounds(rs, sysInsecure, o.op, o.level), kvRounds(rs, sysSecure, o.op, o.level)}
	}
	// The ratios first: the report's summary shows the first metric.
	for i, o := range kvSecureOps {
		rep.Metric(o.label+" ops/s ratio secure/insecure", pairedRatio(pairs[i].sec, pairs[i].ins), "×")
	}
	for i, o := range kvSecureOps {
		rep.Metric(o.label+" server CPU per op ratio secure/insecure", pairedRatioOf(pairs[i].sec, pairs[i].ins, nodeCPUOf), "×")
	}
	for i, o := range kvSecureOps {
		rep.Metric(o.label+" client CPU per op ratio secure/insecure", pairedRatioOf(pairs[i].sec, pairs[i].ins, clientCPUOf), "×")
	}
	for i, o := range kvSecureOps {
		rep.Metric(o.label+" p50 ratio secure/insecure (higher: secure slower)", pairedRatioOf(pairs[i].sec, pairs[i].ins, p50Of), "×")
	}
	for i, o := range kvSecureOps {
		for _, m := range []struct {
			name string
			r    *Result
		}{{sysInsecure, medianRound(pairs[i].ins)}, {sysSecure, medianRound(pairs[i].sec)}} {
			rep.Metric(m.name+" "+o.label+" ops/s", opsOf(m.r), "ops/s")
			rep.Metric(m.name+" "+o.label+" p50", latOf(m.r, false), "ms")
			rep.Metric(m.name+" "+o.label+" p99", latOf(m.r, true), "ms")
		}
		for _, m := range []struct {
			name string
			rs   []*Result
		}{{sysInsecure, pairs[i].ins}, {sysSecure, pairs[i].sec}} {
			rep.Metric(m.name+" "+o.label+" server CPU per op (3 nodes, median of rounds)", medianOf(m.rs, nodeCPUOf), "µs")
			rep.Metric(m.name+" "+o.label+" client CPU per op (median of rounds)", medianOf(m.rs, clientCPUOf), "µs")
		}
	}
	var met, missed []string
	for i, o := range kvSecureOps {
		ratioNote(rep, o.label+" ops/s ratio secure/insecure", pairs[i].sec, pairs[i].ins)
		ratioNoteOf(rep, o.label+" server CPU per op ratio secure/insecure", pairs[i].sec, pairs[i].ins, nodeCPUOf)
		switch r := pairedRatio(pairs[i].sec, pairs[i].ins); {
		case math.IsNaN(r):
		case r >= secureTarget:
			met = append(met, fmt.Sprintf("%s %.2f", o.label, r))
		default:
			missed = append(missed, fmt.Sprintf("%s %.2f", o.label, r))
		}
	}
	if len(met) > 0 {
		rep.Note("Target secure/insecure ops/s ≥ %.2f met (median ratio): %s.", secureTarget, strings.Join(met, ", "))
	}
	if len(missed) > 0 {
		rep.Note("Target secure/insecure ops/s ≥ %.2f missed (median ratio): %s.", secureTarget, strings.Join(missed, ", "))
	}
	rep.Tables = append(rep.Tables, resultRows(rs))
	errorNotes(rep, rs)
}

// nodeCPUOf and clientCPUOf are r's CPU time per operation (µs) of the
// servers and of the clients; NaN when not measured.
func nodeCPUOf(r *Result) float64   { return cpuOf(r, r.NodeCPUus) }
func clientCPUOf(r *Result) float64 { return cpuOf(r, r.ClientCPUus) }

func cpuOf(r *Result, v float64) float64 {
	if r == nil || v == 0 {
		return math.NaN()
	}
	return v
}

// medianOf is the median of f over rs, ignoring NaNs (the mean of the
// middle two for an even count); NaN for none.
func medianOf(rs []*Result, f func(*Result) float64) float64 {
	var v []float64
	for _, r := range rs {
		if x := f(r); !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

// kvSecurePlots draws throughput (insecure vs secure per operation) and
// latency (p50 and p99 of each mode's median round per operation).
func kvSecurePlots(e *Env, rep *ScenarioReport, rs []Result) error {
	ins, sec := Series{Name: "insecure"}, Series{Name: "secure (TLS 1.3 + token)"}
	p50, p99 := Series{Name: "p50"}, Series{Name: "p99"}
	var cats, latCats []string
	for _, o := range kvSecureOps {
		cats = append(cats, o.label)
		i, s := medianRound(kvRounds(rs, sysInsecure, o.op, o.level)), medianRound(kvRounds(rs, sysSecure, o.op, o.level))
		ins.Values = append(ins.Values, opsOf(i))
		sec.Values = append(sec.Values, opsOf(s))
		for _, x := range []struct {
			mode string
			r    *Result
		}{{sysInsecure, i}, {sysSecure, s}} {
			latCats = append(latCats, o.label+", "+x.mode)
			p50.Values = append(p50.Values, latOf(x.r, false))
			p99.Values = append(p99.Values, latOf(x.r, true))
		}
	}
	tp := "kv-secure-throughput.svg"
	if err := WriteBars(filepath.Join(e.OutDir, tp), Bars{
		Title:  fmt.Sprintf("kv-secure: throughput, 3 nodes, %d clients, %d-byte values", e.Sizes.KVClients, e.Sizes.KVValue),
		YLabel: "operations per second", Categories: cats, Series: []Series{ins, sec},
	}); err != nil {
		return err
	}
	lp := "kv-secure-latency.svg"
	if err := WriteBars(filepath.Join(e.OutDir, lp), Bars{
		Title:  "kv-secure: latency at the client",
		YLabel: "milliseconds", Categories: latCats, Series: []Series{p50, p99},
	}); err != nil {
		return err
	}
	rep.Plots = append(rep.Plots, tp, lp)
	return nil
}
