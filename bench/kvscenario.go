package bench

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
)

// kvMethod describes how kv-put and kv-get measure.
const kvMethod = "One system at a time on this machine, same load for both: a 3-node lambdadb cluster " +
	"(three `lambdadb serve` processes on 127.0.0.1, data on disk in a temporary directory), then a 3-member " +
	"etcd cluster (three `etcd` processes, same), in rounds: each round starts fresh clusters, the order of the " +
	"systems alternating from round to round (lambdadb first, then etcd first, …) so that drift in the machine's " +
	"load falls on both. A ratio is the median over rounds of that round's lambdadb/etcd ratio (of ops/s, or of p50 " +
	"latency where it says so); ops/s and latencies are those of each system's median round. Closed-loop clients, each " +
	"issuing its next request when the previous one answers, keys drawn uniformly from the key space. Puts are measured " +
	"twice on each cluster: by all the clients, then right after by one client alone (same value size, key space and " +
	"duration), the latency of a put that queues behind no other; lambdadb's one client is the Go client created for " +
	"node 1, routing as below, etcd's one clientv3 client. lambdadb clients are the Go client " +
	"(lambdadb/client, HTTP/1.1 keep-alive), worker w created for node w mod 3 with its own session token, which sends " +
	"each key's requests to the key's shard leader once it has read the placement from /v1/cluster; etcd clients share 16 clientv3 clients, each " +
	"balancing its requests round-robin over all three members. Latencies are per request at the client; failed requests are counted, " +
	"not timed. Gets run after every key has been written."

// kv runs the KV measurements once for both kv scenarios of a run.
func (e *Env) kv(ctx context.Context) ([]Result, error) {
	e.kvOnce.Do(func() {
		if err := ctx.Err(); err != nil {
			e.kvErr = err
			return
		}
		sz := e.Sizes
		e.kvRes, e.kvErr = RunKV(KVConfig{
			LambdaBin: e.LambdaBin, EtcdBin: e.EtcdBin, Nodes: 3, Shards: sz.KVShards,
			Clients: sz.KVClients, ValueBytes: sz.KVValue, Keys: sz.KVKeys, Duration: sz.KVDuration, Rounds: sz.KVRounds,
			SkipPuts: !e.selected("kv-put"), SkipGets: !e.selected("kv-get"), Progress: e.Progress,
		})
	})
	return e.kvRes, e.kvErr
}

func (e *Env) kvReport() *ScenarioReport {
	sz := e.Sizes
	rep := &ScenarioReport{Method: kvMethod}
	rep.Param("nodes per system", 3)
	rep.Param("lambdadb shards (replicas 3)", sz.KVShards)
	rep.Param("clients (both systems)", sz.KVClients)
	rep.Param("value bytes", sz.KVValue)
	rep.Param("key space", sz.KVKeys)
	rep.Param("duration per measurement", sz.KVDuration.String())
	rep.Param("rounds", max(sz.KVRounds, 1))
	if e.selected("kv-put") && e.selected("kv-get") {
		rep.Note("kv-put and kv-get share one cluster per system (puts, then loading every key, then gets): their time is counted under kv-put.")
	}
	if e.EtcdBin == "" {
		rep.Note("etcd was not found: lambdadb measured alone, ratios n/a (`make etcd` installs Debian's etcd-server).")
	}
	return rep
}

// resultsOf returns the results of operation op.
func resultsOf(rs []Result, op string) []Result {
	var out []Result
	for _, r := range rs {
		if r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

// kvRounds returns the results of system/op/consistency, one per round.
func kvRounds(rs []Result, system, op, consistency string) []*Result {
	return kvRoundsN(rs, system, op, consistency, 0)
}

// kvRoundsN is kvRounds of the results measured by clients clients (0: any).
func kvRoundsN(rs []Result, system, op, consistency string, clients int) []*Result {
	var out []*Result
	for i := range rs {
		if rs[i].System == system && rs[i].Op == op && rs[i].Consistency == consistency &&
			(clients == 0 || rs[i].Clients == clients) {
			out = append(out, &rs[i])
		}
	}
	return out
}

// medianRound returns the result whose ops/s is the median of rs (the
// lower middle one of an even count); nil for none.
func medianRound(rs []*Result) *Result {
	if len(rs) == 0 {
		return nil
	}
	s := slices.Clone(rs)
	slices.SortStableFunc(s, func(a, b *Result) int { return cmp.Compare(a.OpsPerSec, b.OpsPerSec) })
	return s[(len(s)-1)/2]
}

// pairedRatios returns, for each round both a and b measured, a's ops/s
// over b's, in round order.
func pairedRatios(a, b []*Result) []float64 { return pairedRatiosOf(a, b, opsOf) }

// pairedRatiosOf is pairedRatios of the quantity f.
func pairedRatiosOf(a, b []*Result, f func(*Result) float64) []float64 {
	var out []float64
	for _, x := range a {
		for _, y := range b {
			if x.Round == y.Round {
				out = append(out, ratio(f(x), f(y)))
			}
		}
	}
	return out
}

// pairedRatio is the median of pairedRatios (the mean of the middle two
// for an even count); NaN for none.
func pairedRatio(a, b []*Result) float64 { return pairedRatioOf(a, b, opsOf) }

// pairedRatioOf is pairedRatio of the quantity f.
func pairedRatioOf(a, b []*Result, f func(*Result) float64) float64 {
	r := pairedRatiosOf(a, b, f)
	if len(r) == 0 {
		return math.NaN()
	}
	slices.Sort(r)
	if len(r)%2 == 0 {
		return (r[len(r)/2-1] + r[len(r)/2]) / 2
	}
	return r[len(r)/2]
}

// ratioNote records each round's ratio next to the median.
func ratioNote(rep *ScenarioReport, what string, a, b []*Result) { ratioNoteOf(rep, what, a, b, opsOf) }

// ratioNoteOf is ratioNote of the quantity f.
func ratioNoteOf(rep *ScenarioReport, what string, a, b []*Result, f func(*Result) float64) {
	r := pairedRatiosOf(a, b, f)
	if len(r) < 2 {
		return
	}
	parts := make([]string, len(r))
	for i, x := range r {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	rep.Note("%s by round: %s (median %.2f).", what, strings.Join(parts, ", "), pairedRatioOf(a, b, f))
}

func opsOf(r *Result) float64 {
	if r == nil {
		return math.NaN()
	}
	return r.OpsPerSec
}

// p50Of is r's median latency in ms, for pairedRatioOf.
func p50Of(r *Result) float64 { return latOf(r, false) }

func latOf(r *Result, p99 bool) float64 {
	if r == nil || r.Ops == 0 {
		return math.NaN()
	}
	if p99 {
		return r.P99us / 1000
	}
	return r.P50us / 1000
}

func resultRows(rs []Result) Table {
	t := Table{Columns: []string{"round", "system", "operation", "consistency", "ops/s", "p50", "p99", "ops", "errors"}}
	for _, r := range rs {
		t.Rows = append(t.Rows, []string{fmt.Sprint(max(r.Round, 1)), r.System, opLabel(r), orDash(r.Consistency),
			formatValue(r.OpsPerSec, ""), fmtMicros(r.P50us), fmtMicros(r.P99us),
			fmt.Sprint(r.Ops), fmt.Sprint(r.Errors)})
	}
	return t
}

func errorNotes(rep *ScenarioReport, rs []Result) {
	for _, r := range rs {
		if r.Errors > 0 {
			rep.Note("round %d, %s %s %s: %d failed requests, first: %s", max(r.Round, 1), r.System, opLabel(r), r.Consistency, r.Errors, r.FirstError)
		}
	}
}

func runKVPut(ctx context.Context, e *Env) (*ScenarioReport, error) {
	rep := e.kvReport()
	rep.Measures = "Write throughput and latency of single-key puts: lambdadb (each put committed by its shard's " +
		"Raft group, synced on a majority) against etcd 3.4 (one Raft group), same clients and values; and the " +
		"latency of a put from one client alone, with nothing to queue behind."
	all, err := e.kv(ctx)
	rs := resultsOf(all, "put")
	rep.Data = rs
	if err != nil {
		return rep, err
	}
	n := max(e.Sizes.KVClients, 1)
	lr, er := kvRoundsN(rs, "lambdadb", "put", "", n), kvRoundsN(rs, "etcd", "put", "", n)
	l, et := medianRound(lr), medianRound(er)
	l1r, e1r := kvRoundsN(rs, "lambdadb", "put", "", 1), kvRoundsN(rs, "etcd", "put", "", 1)
	l1, e1 := medianRound(l1r), medianRound(e1r)
	rep.Metric("put ops/s ratio lambdadb/etcd", pairedRatio(lr, er), "×")
	ratioNote(rep, "put ops/s ratio lambdadb/etcd", lr, er)
	rep.Metric("lambdadb put ops/s", opsOf(l), "ops/s")
	rep.Metric("lambdadb put p50", latOf(l, false), "ms")
	rep.Metric("lambdadb put p99", latOf(l, true), "ms")
	rep.Metric("etcd put ops/s", opsOf(et), "ops/s")
	rep.Metric("etcd put p50", latOf(et, false), "ms")
	rep.Metric("etcd put p99", latOf(et, true), "ms")
	rep.Metric("1-client put ops/s ratio lambdadb/etcd", pairedRatio(l1r, e1r), "×")
	rep.Metric("1-client put p50 ratio lambdadb/etcd (lower: lambdadb faster)", pairedRatioOf(l1r, e1r, p50Of), "×")
	ratioNote(rep, "1-client put ops/s ratio lambdadb/etcd", l1r, e1r)
	ratioNoteOf(rep, "1-client put p50 ratio lambdadb/etcd", l1r, e1r, p50Of)
	rep.Metric("lambdadb 1-client put ops/s", opsOf(l1), "ops/s")
	rep.Metric("lambdadb 1-client put p50", latOf(l1, false), "ms")
	rep.Metric("lambdadb 1-client put p99", latOf(l1, true), "ms")
	rep.Metric("etcd 1-client put ops/s", opsOf(e1), "ops/s")
	rep.Metric("etcd 1-client put p50", latOf(e1, false), "ms")
	rep.Metric("etcd 1-client put p99", latOf(e1, true), "ms")
	rep.Tables = append(rep.Tables, resultRows(rs))
	errorNotes(rep, rs)
	latCats, lat := []string{"lambdadb", "etcd"}, []*Result{l, et}
	if n > 1 {
		latCats = []string{"lambdadb, " + plural(n, "client"), "etcd, " + plural(n, "client"), "lambdadb, 1 client", "etcd, 1 client"}
		lat = append(lat, l1, e1)
	}
	if err := kvPlots(e, rep, "kv-put", []string{"put"}, [][2]*Result{{l, et}}, latCats, lat); err != nil {
		return rep, err
	}
	return rep, nil
}

func runKVGet(ctx context.Context, e *Env) (*ScenarioReport, error) {
	rep := e.kvReport()
	rep.Measures = "Read throughput and latency of single-key gets at every consistency level each system " +
		"offers: lambdadb linearizable (leader confirms leadership, reads coalesced), session (any replica that " +
		"has applied the client's token) and stale (any replica, at once); etcd linearizable (ReadIndex) and " +
		"serializable (the member's local state)."
	all, err := e.kv(ctx)
	rs := resultsOf(all, "get")
	rep.Data = rs
	if err != nil {
		return rep, err
	}
	lLinR, lSesR, lStaR := kvRounds(rs, "lambdadb", "get", "linearizable"), kvRounds(rs, "lambdadb", "get", "session"), kvRounds(rs, "lambdadb", "get", "stale")
	eLinR, eSerR := kvRounds(rs, "etcd", "get", "linearizable"), kvRounds(rs, "etcd", "get", "serializable")
	lLin, lSes, lSta := medianRound(lLinR), medianRound(lSesR), medianRound(lStaR)
	eLin, eSer := medianRound(eLinR), medianRound(eSerR)
	rep.Metric("linearizable get ops/s ratio lambdadb/etcd", pairedRatio(lLinR, eLinR), "×")
	rep.Metric("lambdadb session get / etcd linearizable get ops/s", pairedRatio(lSesR, eLinR), "×")
	rep.Metric("lambdadb stale get / etcd serializable get ops/s", pairedRatio(lStaR, eSerR), "×")
	ratioNote(rep, "linearizable get ops/s ratio lambdadb/etcd", lLinR, eLinR)
	ratioNote(rep, "stale / serializable get ops/s ratio", lStaR, eSerR)
	for _, x := range []struct {
		name string
		r    *Result
	}{{"lambdadb linearizable", lLin}, {"lambdadb session", lSes}, {"lambdadb stale", lSta},
		{"etcd linearizable", eLin}, {"etcd serializable", eSer}} {
		rep.Metric(x.name+" get ops/s", opsOf(x.r), "ops/s")
		rep.Metric(x.name+" get p50", latOf(x.r, false), "ms")
		rep.Metric(x.name+" get p99", latOf(x.r, true), "ms")
	}
	rep.Tables = append(rep.Tables, resultRows(rs))
	rep.Note("Comparable pairs: linearizable with linearizable; a lambdadb session read gives the client " +
		"read-after-write, which in etcd takes a linearizable read (a serializable read from another member may " +
		"miss the client's own write); stale and serializable both read one replica's state without a check.")
	errorNotes(rep, rs)
	if err := kvPlots(e, rep, "kv-get",
		[]string{"linearizable", "session (lambdadb only)", "stale / serializable"},
		[][2]*Result{{lLin, eLin}, {lSes, nil}, {lSta, eSer}},
		[]string{"lambdadb linearizable", "lambdadb session", "lambdadb stale", "etcd linearizable", "etcd serializable"},
		[]*Result{lLin, lSes, lSta, eLin, eSer}); err != nil {
		return rep, err
	}
	rep.Note("Session reads here follow no write of their own: every replica has applied each client's token, so a " +
		"session read costs what a stale read does. A session read right after the client's own write may wait up to " +
		"100 ms for its replica, or be served by the leader.")
	return rep, nil
}

// kvPlots draws throughput (lambdadb vs etcd per category) and latency
// (p50 and p99 per labelled result).
func kvPlots(e *Env, rep *ScenarioReport, name string, cats []string, pairs [][2]*Result, latCats []string, lat []*Result) error {
	ldb, etcd := Series{Name: "lambdadb"}, Series{Name: "etcd 3.4"}
	for _, p := range pairs {
		ldb.Values = append(ldb.Values, opsOf(p[0]))
		etcd.Values = append(etcd.Values, opsOf(p[1]))
	}
	tp := name + "-throughput.svg"
	if err := WriteBars(filepath.Join(e.OutDir, tp), Bars{
		Title:  fmt.Sprintf("%s: throughput, 3 nodes, %d clients, %d-byte values", name, e.Sizes.KVClients, e.Sizes.KVValue),
		YLabel: "operations per second", Categories: cats, Series: []Series{ldb, etcd},
	}); err != nil {
		return err
	}
	p50, p99 := Series{Name: "p50"}, Series{Name: "p99"}
	for _, r := range lat {
		p50.Values = append(p50.Values, latOf(r, false))
		p99.Values = append(p99.Values, latOf(r, true))
	}
	lp := name + "-latency.svg"
	if err := WriteBars(filepath.Join(e.OutDir, lp), Bars{
		Title:  name + ": latency at the client",
		YLabel: "milliseconds", Categories: latCats, Series: []Series{p50, p99},
	}); err != nil {
		return err
	}
	rep.Plots = append(rep.Plots, tp, lp)
	return nil
}
