package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lambdadb/internal/loopback"
)

// rebalanceValue is the value size of the rebalance scenario's data.
const rebalanceValue = 4096

// putSample is one put of the steady load.
type putSample struct {
	at  time.Duration // since the load started
	lat time.Duration
	ok  bool
}

// steadyLoad writes new keys at a fixed rate (open loop: a put is started
// every interval, whatever the earlier ones do) until stop, recording
// every put.
type steadyLoad struct {
	mu      sync.Mutex
	samples []putSample
	acked   []string
	errs    map[string]int
	start   time.Time
}

func (l *steadyLoad) run(ctx context.Context, addrs []string, rate float64, stop <-chan struct{}) {
	l.start = time.Now()
	l.errs = map[string]int{}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}, Timeout: 30 * time.Second}
	interval := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			wg.Wait()
			return
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("steady/%08d", seq)
			addr := addrs[seq%len(addrs)]
			t0 := time.Now()
			req, _ := http.NewRequestWithContext(ctx, "PUT", "http://"+addr+"/v1/kv/"+key, strings.NewReader(string(FloodValue(key, 512))))
			resp, err := hc.Do(req)
			s := putSample{at: t0.Sub(l.start), lat: time.Since(t0)}
			what := ""
			if err != nil {
				what = err.Error()
			} else {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
				resp.Body.Close()
				s.ok = resp.StatusCode/100 == 2
				if !s.ok {
					// The status and the error's code and message, so that
					// a failure can be told from another.
					what = resp.Status + " " + strings.TrimSpace(string(body))
				}
			}
			l.mu.Lock()
			l.samples = append(l.samples, s)
			if s.ok {
				l.acked = append(l.acked, key)
			} else {
				l.errs[what]++
			}
			l.mu.Unlock()
		}()
	}
}

// window returns the latencies (ms) of the puts started in [from, to) and
// how many failed.
func (l *steadyLoad) window(from, to time.Duration) (lat []float64, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.samples {
		if s.at < from || s.at >= to {
			continue
		}
		if s.ok {
			lat = append(lat, float64(s.lat.Microseconds())/1000)
		} else {
			failed++
		}
	}
	return lat, failed
}

// clusterView is the part of GET /v1/cluster the scenario reads.
type clusterView struct {
	Settled bool `json:"settled"`
	Nodes   []struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		Replicas int    `json:"replicas"`
		Leaders  int    `json:"leaders"`
	} `json:"nodes"`
	Moves []struct {
		Shard string `json:"shard"`
	} `json:"moves"`
}

func getCluster(ctx context.Context, addr string) (clusterView, error) {
	var v clusterView
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/v1/cluster", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal(b, &v)
}

// placed reports whether the cluster has settled (no move in flight or
// planned) with every one of nodes active and holding replicas within one
// of the others.
func (v clusterView) placed(nodes int) bool {
	if len(v.Moves) > 0 || !v.Settled {
		return false
	}
	active := 0
	minR, maxR := math.MaxInt, 0
	for _, n := range v.Nodes {
		if n.State != "active" {
			continue
		}
		active++
		minR, maxR = min(minR, n.Replicas), max(maxR, n.Replicas)
	}
	return active == nodes && maxR-minR <= 1
}

// leadersEven reports whether the active nodes lead shards within one of
// each other (by the answering node's view of the leaders).
func (v clusterView) leadersEven() bool {
	minL, maxL := math.MaxInt, 0
	for _, n := range v.Nodes {
		if n.State == "active" {
			minL, maxL = min(minL, n.Leaders), max(maxL, n.Leaders)
		}
	}
	return maxL-minL <= 1
}

// sumMetric adds up one unlabelled series over the nodes.
func sumMetric(ctx context.Context, addrs []string, name string) float64 {
	var t float64
	for _, a := range addrs {
		if v, err := metricValue(ctx, a, name); err == nil {
			t += v
		}
	}
	return t
}

func runRebalance(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sz := e.Sizes
	rep := &ScenarioReport{
		Measures: "Adding a fourth node to a loaded three-node cluster under a steady write load: how long until " +
			"replicas and leaders are spread within one of even, how many bytes moved against the ideal, and what " +
			"the clients saw meanwhile; then how long a decommission takes, and getting back to three copies " +
			"after a dead node is removed.",
		Method: fmt.Sprintf("Three `lambdadb serve` processes (64 shards, 3 replicas, the default move "+
			"concurrency 2 and snapshot rate 64 MiB/s per node) are loaded with %d MiB of %d-byte values; "+
			"the peak put rate of 32 closed-loop clients is measured, then an open-loop load of half that rate "+
			"(512-byte values, new keys, round robin over the nodes' HTTP API) runs for %v before a fourth "+
			"process starts with `--join`, during the moves, and for %v after. Balanced: no move in flight and "+
			"every node within one of the others in replicas (`settled`: the planner wants nothing more), and "+
			"then also in the shards it leads (GET /v1/cluster every 250 ms). The p99 during the moves is over "+
			"the puts started from the join until the replicas are even. "+
			"Bytes moved is the sum of lambdadb_snapshot_bytes_sent_total over the nodes. The ideal is a "+
			"quarter of all replicas' bytes, the mean snapshot size times 3 × 65 groups / 4; since every "+
			"replica is about the same size (keys hash to shards), the ratio counts the snapshots beyond the "+
			"necessary ones, resent or moved back and forth. A snapshot carries a shard's records and its "+
			"change feed (which here still holds every write), so it is about twice the loaded data. "+
			"Then, with the load stopped: n4 is decommissioned (timed until its state is decommissioned, it "+
			"holds nothing and the three others are settled), a fifth node joins and takes its share, and n1 "+
			"is killed with SIGKILL and removed (timed from `DELETE /v1/cluster/nodes/n1` until the three live "+
			"nodes hold every shard's three replicas again).",
			sz.RebalanceMB, rebalanceValue, sz.RebalanceSteady, sz.RebalanceSteady),
	}
	rep.Param("data_mib", sz.RebalanceMB)
	rep.Param("value_bytes", rebalanceValue)
	c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 3, Shards: 64})
	if err != nil {
		return rep, err
	}
	defer c.Stop()
	addrs := c.Addrs()

	// Load.
	e.logf("loading %d MiB into 3 nodes", sz.RebalanceMB)
	keys := sz.RebalanceMB << 20 / rebalanceValue
	kv := NewLambdaKV(addrs, 32)
	var next atomic.Int64
	var loadErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= keys || ctx.Err() != nil {
					return
				}
				k := fmt.Sprintf("data/%08d", i)
				var err error
				for try := 0; try < 5; try++ {
					if err = kv.Put(ctx, w, k, FloodValue(k, rebalanceValue)); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					loadErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := loadErr.Load().(error); err != nil {
		return rep, fmt.Errorf("bench: loading: %w", err)
	}
	loadRate := float64(sz.RebalanceMB) / time.Since(t0).Seconds()

	// Peak.
	peak := Writers{Addrs: addrs, N: 32, ValueBytes: 512, Prefix: "peak/"}.Run(ctx, 5*time.Second)
	rate := peak.Rate() / 2
	rep.Param("steady_puts_per_s", math.Round(rate))
	e.logf("peak %.0f puts/s; steady load at %.0f/s", peak.Rate(), rate)

	load := &steadyLoad{}
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); load.run(ctx, addrs, rate, stop) }()
	_ = sleepCtx(ctx, sz.RebalanceSteady)

	// Join.
	bytesBefore := sumMetric(ctx, addrs, "lambdadb_snapshot_bytes_sent_total")
	snapsBefore := sumMetric(ctx, addrs, "lambdadb_multiraft_snapshots_sent_total")
	a4, err := loopback.FreeAddrs(1)
	if err != nil {
		close(stop)
		<-loadDone
		return rep, err
	}
	dir4 := filepath.Join(c.dir, "n4")
	joinAt := time.Since(load.start)
	p4, err := start("n4", c.dir, e.LambdaBin, "serve", "--id", "n4", "--addr", a4[0], "--data", dir4, "--join", addrs[0])
	if err != nil {
		close(stop)
		<-loadDone
		return rep, err
	}
	p4.Addr, p4.Dir = a4[0], dir4
	c.Procs = append(c.Procs, p4)
	e.logf("n4 joined; waiting for replicas and leaders to spread")
	deadline := time.Now().Add(sz.RebalanceTimeout)
	var balancedAt, placedAt time.Duration
	var lastView clusterView
	maxMoves := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		v, err := getCluster(ctx, addrs[0])
		if err == nil {
			lastView = v
			maxMoves = max(maxMoves, len(v.Moves))
			now := time.Since(load.start)
			if placedAt == 0 && v.placed(4) {
				placedAt = now
			}
			if placedAt > 0 && v.placed(4) && v.leadersEven() {
				balancedAt = now
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	all := append(append([]string(nil), addrs...), a4[0])
	bytesMoved := sumMetric(ctx, all, "lambdadb_snapshot_bytes_sent_total") - bytesBefore
	snaps := sumMetric(ctx, all, "lambdadb_multiraft_snapshots_sent_total") - snapsBefore
	if placedAt > 0 {
		_ = sleepCtx(ctx, sz.RebalanceSteady)
	}
	close(stop)
	<-loadDone
	end := time.Since(load.start)

	if placedAt == 0 {
		rep.Metric("time_to_replicas_even_s", math.NaN(), "s")
	} else {
		rep.Metric("time_to_replicas_even_s", (placedAt - joinAt).Seconds(), "s")
	}
	if balancedAt == 0 {
		rep.Metric("time_to_balanced_s", math.NaN(), "s")
		var nodes []string
		for _, n := range lastView.Nodes {
			nodes = append(nodes, fmt.Sprintf("%s %s: %d replicas, %d leaders", n.ID, n.State, n.Replicas, n.Leaders))
		}
		rep.Note("not balanced within %v; last seen: settled %v, %d moves; %s", sz.RebalanceTimeout,
			lastView.Settled, len(lastView.Moves), strings.Join(nodes, "; "))
	} else {
		rep.Metric("time_to_balanced_s", (balancedAt - joinAt).Seconds(), "s")
	}
	rep.Metric("bytes_moved_mib", bytesMoved/(1<<20), "MiB")
	rep.Metric("snapshots_sent", snaps, "")
	ideal := math.NaN()
	if snaps > 0 {
		ideal = bytesMoved / snaps * 3 * 65 / 4
	}
	rep.Metric("bytes_moved_over_ideal", bytesMoved/ideal, "×")
	rep.Metric("moves_in_flight_max", float64(maxMoves), "")

	during := placedAt
	if during == 0 {
		during = end
	}
	before, fb := load.window(0, joinAt)
	while, fw := load.window(joinAt, during)
	after, fa := load.window(during, end)
	sb, sw, sa := Summarize(before), Summarize(while), Summarize(after)
	rep.Metric("client_errors", float64(fb+fw+fa), "")
	rep.Metric("put_p99_before_ms", sb.P99, "ms")
	rep.Metric("put_p99_during_ms", sw.P99, "ms")
	rep.Metric("put_p99_after_ms", sa.P99, "ms")
	rep.Metric("put_p99_during_over_before", sw.P99/sb.P99, "×")
	rep.Tables = append(rep.Tables, Table{Title: "Puts of the steady load", Columns: []string{"phase", "puts", "failed", "p50 ms", "p99 ms"},
		Rows: [][]string{
			{"before the join", fmt.Sprint(len(before)), fmt.Sprint(fb), fmt.Sprintf("%.2f", sb.P50), fmt.Sprintf("%.2f", sb.P99)},
			{"during the moves", fmt.Sprint(len(while)), fmt.Sprint(fw), fmt.Sprintf("%.2f", sw.P50), fmt.Sprintf("%.2f", sw.P99)},
			{"after", fmt.Sprint(len(after)), fmt.Sprint(fa), fmt.Sprintf("%.2f", sa.P50), fmt.Sprintf("%.2f", sa.P99)},
		}})
	if len(load.errs) > 0 {
		var es []string
		for what, k := range load.errs {
			es = append(es, fmt.Sprintf("%d × %s", k, what))
		}
		sort.Strings(es)
		rep.Note("client errors: %s", strings.Join(es, "; "))
	}

	// Every acknowledged put of the steady load, and a sample of the
	// loaded data, read back through the new node.
	missing, wrong, err := VerifyAcked(ctx, a4[0], load.acked, 512)
	if err != nil {
		rep.Note("verifying through n4: %v", err)
	}
	var sample []string
	for i := 0; i < keys; i += max(1, keys/2000) {
		sample = append(sample, fmt.Sprintf("data/%08d", i))
	}
	m2, w2, err := VerifyAcked(ctx, a4[0], sample, rebalanceValue)
	if err != nil {
		rep.Note("verifying the loaded data through n4: %v", err)
	}
	rep.Metric("acked_missing_or_wrong", float64(missing+wrong+m2+w2), "")
	rep.Metric("peak_puts_per_s", peak.Rate(), "ops/s")
	rep.Metric("load_mib_per_s", loadRate, "MiB/s")

	if err := rebalancePlots(e, rep, load, joinAt, placedAt, balancedAt); err != nil {
		rep.Note("plots: %v", err)
	}
	if placedAt > 0 {
		if err := shrinkAndReplace(ctx, e, rep, c, sz.RebalanceTimeout); err != nil {
			rep.Note("decommission and replace: %v", err)
		}
	}
	return rep, nil
}

// shrinkAndReplace times the other membership operations on the loaded
// cluster (n1–n4, balanced; no client load): n4 is decommissioned until
// its state is decommissioned and it holds nothing, then stopped; a fifth
// node joins and the replicas spread; n1 is killed (SIGKILL) and removed,
// until its replicas are rebuilt on the three others.
func shrinkAndReplace(ctx context.Context, e *Env, rep *ScenarioReport, c *Cluster, timeout time.Duration) error {
	n1, n2, n4 := c.Procs[0], c.Procs[1], c.Procs[3]
	waitFor := func(addr, what string, ok func(clusterView) bool) (time.Duration, error) {
		t0 := time.Now()
		var last clusterView
		for time.Since(t0) < timeout && ctx.Err() == nil {
			if v, err := getCluster(ctx, addr); err == nil {
				last = v
				if ok(v) {
					return time.Since(t0), nil
				}
			}
			time.Sleep(250 * time.Millisecond)
		}
		var nodes []string
		for _, n := range last.Nodes {
			nodes = append(nodes, fmt.Sprintf("%s %s: %d replicas", n.ID, n.State, n.Replicas))
		}
		return 0, fmt.Errorf("%s: not within %v; last seen: settled %v, %d moves; %s", what, timeout,
			last.Settled, len(last.Moves), strings.Join(nodes, "; "))
	}
	call := func(method, addr, path string) error {
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(body))
		}
		return nil
	}
	stateOf := func(v clusterView, id string) (string, int) {
		for _, n := range v.Nodes {
			if n.ID == id {
				return n.State, n.Replicas
			}
		}
		return "", 0
	}

	e.logf("decommissioning n4")
	if err := call("POST", n1.Addr, "/v1/cluster/nodes/n4/decommission"); err != nil {
		return err
	}
	d, err := waitFor(n1.Addr, "decommission of n4", func(v clusterView) bool {
		st, r := stateOf(v, "n4")
		return st == "decommissioned" && r == 0 && v.placed(3)
	})
	if err != nil {
		return err
	}
	rep.Metric("time_to_decommission_s", d.Seconds(), "s")
	n4.Stop()

	a5, err := loopback.FreeAddrs(1)
	if err != nil {
		return err
	}
	e.logf("n4 decommissioned in %.1f s; n5 joins, then n1 is killed and removed", d.Seconds())
	dir5 := filepath.Join(c.dir, "n5")
	p5, err := start("n5", c.dir, e.LambdaBin, "serve", "--id", "n5", "--addr", a5[0], "--data", dir5, "--join", n1.Addr)
	if err != nil {
		return err
	}
	p5.Addr, p5.Dir = a5[0], dir5
	c.Procs = append(c.Procs, p5)
	if _, err := waitFor(n1.Addr, "n5's share", func(v clusterView) bool { return v.placed(4) }); err != nil {
		return err
	}
	n1.Kill()
	if err := call("DELETE", n2.Addr, "/v1/cluster/nodes/n1"); err != nil {
		return err
	}
	d, err = waitFor(n2.Addr, "3 copies after removing n1", func(v clusterView) bool {
		st, _ := stateOf(v, "n1")
		return st == "removed" && v.placed(3)
	})
	if err != nil {
		return err
	}
	rep.Metric("time_to_three_copies_after_remove_s", d.Seconds(), "s")
	return nil
}

// rebalancePlots draws puts per second and their p99 per second over the
// run, with the join and the balanced moment marked.
func rebalancePlots(e *Env, rep *ScenarioReport, l *steadyLoad, joinAt, placedAt, balancedAt time.Duration) error {
	l.mu.Lock()
	perSec := map[int][]float64{}
	last := 0
	for _, s := range l.samples {
		sec := int(s.at / time.Second)
		last = max(last, sec)
		if s.ok {
			perSec[sec] = append(perSec[sec], float64(s.lat.Microseconds())/1000)
		}
	}
	l.mu.Unlock()
	var xs, ops, p99 []float64
	for sec := 0; sec <= last; sec++ {
		xs = append(xs, float64(sec))
		ops = append(ops, float64(len(perSec[sec])))
		lat := perSec[sec]
		sort.Float64s(lat)
		v := Percentile(lat, 0.99)
		if math.IsNaN(v) {
			v = 0
		}
		p99 = append(p99, v)
	}
	rep.Data = map[string]any{"seconds": xs, "puts_per_s": ops, "p99_ms": p99,
		"join_s": joinAt.Seconds(), "replicas_even_s": placedAt.Seconds(), "balanced_s": balancedAt.Seconds()}
	marks := []Mark{{Name: "n4 joins", X: joinAt.Seconds()}}
	if placedAt > 0 {
		marks = append(marks, Mark{Name: "replicas even", X: placedAt.Seconds()})
	}
	if balancedAt > 0 {
		marks = append(marks, Mark{Name: "leaders even", X: balancedAt.Seconds()})
	}
	for _, p := range []struct {
		file, title, ylabel string
		ys                  []float64
	}{
		{"rebalance-throughput.svg", "Acknowledged puts per second while a fourth node joins", "puts/s", ops},
		{"rebalance-p99.svg", "Put latency p99 per second while a fourth node joins", "ms", p99},
	} {
		if err := WriteLines(filepath.Join(e.OutDir, p.file), Lines{Title: p.title, XLabel: "seconds", YLabel: p.ylabel,
			Curves: []Curve{{Name: "steady load", X: xs, Y: p.ys}}, VLines: marks}); err != nil {
			return err
		}
		rep.Plots = append(rep.Plots, p.file)
	}
	return nil
}
