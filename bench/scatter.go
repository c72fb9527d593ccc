package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"lambdadb/shard"
)

// ScatterConfig configures RunScatter.
type ScatterConfig struct {
	LambdaBin string // bin/lambdadb; required
	Nodes     int    // default 3
	Shards    int    // default 16
	Records   int    // records loaded under orders/; default 1,000,000
	// ValueBytes is the approximate size of each JSON record. Default 200.
	ValueBytes int
	// Runs of each method; the median is reported. Default 5.
	Runs int
	// Consistency of both the query and the pulling scan. Default
	// "linearizable".
	Consistency string
	Progress    io.Writer // progress lines; nil = none
}

// ScatterResult compares a scatter/gather aggregate with a client pulling
// every record through the scan API and aggregating itself.
type ScatterResult struct {
	Scenario    string  `json:"scenario"`
	Nodes       int     `json:"nodes"`
	Shards      int     `json:"shards"`
	Records     int     `json:"records"`
	ValueBytes  int     `json:"value_bytes"`
	Consistency string  `json:"consistency"`
	Query       string  `json:"query"`
	LoadSeconds float64 `json:"load_seconds"`

	// Wall time of each run, milliseconds.
	QueryMS []float64 `json:"query_ms"`
	PullMS  []float64 `json:"pull_ms"`
	// The warm-up run of each method (right after the nodes restart, not
	// counted in the medians), milliseconds.
	WarmupQueryMS float64 `json:"warmup_query_ms"`
	WarmupPullMS  float64 `json:"warmup_pull_ms"`
	// Speedup is median pull time / median query time.
	Speedup float64 `json:"speedup"`

	BytesScanned  uint64 `json:"bytes_scanned"`  // records read by the leaves
	BytesGathered uint64 `json:"bytes_gathered"` // between nodes, for the query
	QueryResponse int    `json:"query_response_bytes"`
	// PullBytes is what the pulling client received (HTTP bodies).
	PullBytes int64 `json:"pull_bytes"`
	// GatheredPct is bytes gathered as a percentage of bytes scanned.
	GatheredPct float64 `json:"gathered_pct"`
	// Agree reports that both methods computed the same sums.
	Agree bool `json:"agree"`
}

// RunScatter starts a lambdadb cluster, loads cfg.Records order records
// (directly into the stopped nodes' data directories, through the same
// Raft write path, so loading takes seconds rather than a million HTTP
// puts), restarts it, then times `sum amount group_by region` through
// POST /v1/query against a client pulling the records page by page
// through GET /v1/kv and summing them itself.
func RunScatter(cfg ScatterConfig) (*ScatterResult, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Shards == 0 {
		cfg.Shards = 16
	}
	if cfg.Records == 0 {
		cfg.Records = 1_000_000
	}
	if cfg.ValueBytes == 0 {
		cfg.ValueBytes = 200
	}
	if cfg.Runs == 0 {
		cfg.Runs = 5
	}
	if cfg.Consistency == "" {
		cfg.Consistency = "linearizable"
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "scatter: "+format+"\n", args...)
		}
	}
	progress("starting %d nodes", cfg.Nodes)
	c, err := StartLambdaDBWith(LambdaOptions{Bin: cfg.LambdaBin, Nodes: cfg.Nodes, Shards: cfg.Shards})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	res := &ScatterResult{Scenario: "scatter", Nodes: cfg.Nodes, Shards: cfg.Shards, Records: cfg.Records,
		ValueBytes: cfg.ValueBytes, Consistency: cfg.Consistency, Query: "sum amount group_by region over orders/"}
	began := time.Now()
	err = c.Restart(func() error {
		progress("loading %d records of ~%d B into the stopped nodes' data", cfg.Records, cfg.ValueBytes)
		return loadDirect(c, cfg, progress)
	})
	if err != nil {
		return nil, err
	}
	res.LoadSeconds = time.Since(began).Seconds()
	addr := c.Procs[0].Addr
	hc := &http.Client{Timeout: 10 * time.Minute}
	// One warm-up run of each method, not counted: the first reads after
	// the restart fill the nodes' caches, for whichever method comes first.
	t := time.Now()
	if _, _, _, err := scatterQuery(hc, addr, cfg.Consistency); err != nil {
		return nil, err
	}
	res.WarmupQueryMS = durMS(time.Since(t))
	t = time.Now()
	if _, _, err := pullAndSum(hc, addr, cfg.Consistency); err != nil {
		return nil, err
	}
	res.WarmupPullMS = durMS(time.Since(t))
	progress("warm-up (not counted): query %.0f ms, pull %.0f ms", res.WarmupQueryMS, res.WarmupPullMS)
	var qsums, psums map[string]float64
	for i := 0; i < cfg.Runs; i++ {
		// Alternate the order so neither method always runs on a warmer
		// cache.
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, q := range order {
			if q {
				t := time.Now()
				sums, st, n, err := scatterQuery(hc, addr, cfg.Consistency)
				if err != nil {
					return nil, err
				}
				res.QueryMS = append(res.QueryMS, durMS(time.Since(t)))
				res.BytesScanned, res.BytesGathered, res.QueryResponse = st.BytesScanned, st.BytesGathered, n
				qsums = sums
				progress("run %d: query %.0f ms (%d records, %d B gathered)", i+1, durMS(time.Since(t)), st.RecordsScanned, st.BytesGathered)
			} else {
				t := time.Now()
				sums, n, err := pullAndSum(hc, addr, cfg.Consistency)
				if err != nil {
					return nil, err
				}
				res.PullMS = append(res.PullMS, durMS(time.Since(t)))
				res.PullBytes = n
				psums = sums
				progress("run %d: pull %.0f ms (%d B received)", i+1, durMS(time.Since(t)), n)
			}
		}
	}
	res.Speedup = Summarize(res.PullMS).P50 / Summarize(res.QueryMS).P50
	if res.BytesScanned > 0 {
		res.GatheredPct = 100 * float64(res.BytesGathered) / float64(res.BytesScanned)
	}
	res.Agree = sameSums(qsums, psums)
	if !res.Agree {
		return res, fmt.Errorf("bench: scatter: query and pull disagree: %v vs %v", qsums, psums)
	}
	return res, nil
}

func sameSums(a, b map[string]float64) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || v-w > 1e-6*max(1, v) || w-v > 1e-6*max(1, v) {
			return false
		}
	}
	return true
}

var orderRegions = []string{"eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south"}

// orderValue is one ~size-byte JSON order.
func orderValue(rng *rand.Rand, i, size int) []byte {
	v := fmt.Sprintf(`{"region":%q,"amount":%d.%02d,"customer":"c%07d","sku":"sku-%05d","qty":%d,"note":"`,
		orderRegions[rng.IntN(len(orderRegions))], rng.IntN(500), rng.IntN(100), rng.IntN(1_000_000), rng.IntN(50_000), 1+rng.IntN(9))
	pad := max(size-len(v)-2, 0)
	return []byte(v + strings.Repeat("x", pad) + `"}`)
}

// loadDirect opens the cluster's nodes in this process on their data
// directories and addresses, writes the records as per-shard batches
// through Raft, waits until every replica has applied them, and closes
// the nodes.
func loadDirect(c *Cluster, cfg ScatterConfig, progress func(string, ...any)) error {
	var peers []shard.Peer
	for _, p := range c.Procs {
		peers = append(peers, shard.Peer{ID: p.Name, Addr: p.Addr})
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var nodes []*shard.Node
	var muxes []*shard.Mux
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
		for _, m := range muxes {
			_ = m.Close()
		}
	}()
	errs := make(chan error, len(c.Procs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range c.Procs {
		ln, err := listenRetry(p.Addr)
		if err != nil {
			return err
		}
		m, err := shard.NewMux(ln, shard.MuxConfig{NodeID: p.Name})
		if err != nil {
			ln.Close()
			return fmt.Errorf("bench: %w", err)
		}
		go func() { _ = m.Serve() }()
		muxes = append(muxes, m)
		wg.Add(1)
		go func(p *Proc, m *shard.Mux) {
			defer wg.Done()
			n, err := shard.Open(shard.Config{ID: p.Name, Addr: p.Addr, Dir: p.Dir, Shards: cfg.Shards,
				Peers: peers, Mux: m, Logger: quiet})
			if err != nil {
				errs <- fmt.Errorf("bench: open %s for loading: %w", p.Name, err)
				return
			}
			mu.Lock()
			nodes = append(nodes, n)
			mu.Unlock()
		}(p, m)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	n := nodes[0]
	byShard := make([][]shard.Op, cfg.Shards)
	rng := rand.New(rand.NewPCG(42, 7))
	for i := 0; i < cfg.Records; i++ {
		key := fmt.Sprintf("orders/%09d", i)
		s := shard.For(key, cfg.Shards)
		byShard[s] = append(byShard[s], shard.Op{Key: key, Value: orderValue(rng, i, cfg.ValueBytes)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var done sync.WaitGroup
	var loaded, failed sync.Map
	var count int64
	var countMu sync.Mutex
	last := time.Now()
	for s := range byShard {
		done.Add(1)
		go func(s int) {
			defer done.Done()
			ops := byShard[s]
			for len(ops) > 0 {
				k := min(len(ops), 1000)
				var err error
				for try := 0; try < 20; try++ {
					if _, err = n.Batch(ctx, ops[:k], nil); err == nil {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if err != nil {
					failed.Store(s, err)
					return
				}
				ops = ops[k:]
				countMu.Lock()
				count += int64(k)
				if time.Since(last) > 5*time.Second {
					last = time.Now()
					progress("loaded %d of %d", count, cfg.Records)
				}
				countMu.Unlock()
			}
			loaded.Store(s, true)
		}(s)
	}
	done.Wait()
	var ferr error
	failed.Range(func(k, v any) bool {
		ferr = fmt.Errorf("bench: loading shard %v: %w", k, v.(error))
		return false
	})
	if ferr != nil {
		return ferr
	}
	// Every replica applies everything before the nodes close.
	for {
		behind := false
		for s := 0; s < cfg.Shards; s++ {
			var top uint64
			for _, x := range nodes {
				top = max(top, x.AppliedIndex(s))
			}
			for _, x := range nodes {
				if x.Hosts(s) && x.AppliedIndex(s) < top {
					behind = true
				}
			}
		}
		if !behind {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("bench: replicas did not catch up: %w", ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
	progress("loaded %d records", cfg.Records)
	return nil
}

func listenRetry(addr string) (net.Listener, error) {
	var err error
	for i := 0; i < 100; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("bench: listen %s: %w", addr, err)
}

type queryStats struct {
	RecordsScanned uint64 `json:"records_scanned"`
	BytesScanned   uint64 `json:"bytes_scanned"`
	BytesGathered  uint64 `json:"bytes_gathered"`
}

// scatterQuery runs the aggregate through POST /v1/query.
func scatterQuery(hc *http.Client, addr, consistency string) (map[string]float64, queryStats, int, error) {
	body := fmt.Sprintf(`{"prefix":"orders/","aggregate":{"op":"sum","field":"amount","group_by":"region"},"consistency":%q}`, consistency)
	resp, err := hc.Post("http://"+addr+"/v1/query", "application/json", strings.NewReader(body))
	if err != nil {
		return nil, queryStats{}, 0, fmt.Errorf("bench: query: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, queryStats{}, 0, fmt.Errorf("bench: query: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, queryStats{}, 0, fmt.Errorf("bench: query: %s: %s", resp.Status, b)
	}
	var out struct {
		Result []struct {
			Group any     `json:"group"`
			Value float64 `json:"value"`
		} `json:"result"`
		Stats queryStats `json:"stats"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, queryStats{}, 0, fmt.Errorf("bench: query: %w", err)
	}
	sums := map[string]float64{}
	for _, g := range out.Result {
		if name, ok := g.Group.(string); ok {
			sums[name] = g.Value
		}
	}
	return sums, out.Stats, len(b), nil
}

// pullAndSum is what a client without scatter/gather does: page through
// every record and aggregate locally.
func pullAndSum(hc *http.Client, addr, consistency string) (map[string]float64, int64, error) {
	sums := map[string]float64{}
	var received int64
	start := ""
	for {
		q := url.Values{"prefix": {"orders/"}, "limit": {"10000"}, "consistency": {consistency}}
		if start != "" {
			q.Set("start", start)
		}
		resp, err := hc.Get("http://" + addr + "/v1/kv?" + q.Encode())
		if err != nil {
			return nil, received, fmt.Errorf("bench: scan: %w", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, received, fmt.Errorf("bench: scan: %w", err)
		}
		received += int64(len(b))
		if resp.StatusCode != http.StatusOK {
			return nil, received, fmt.Errorf("bench: scan: %s: %s", resp.Status, b)
		}
		var page struct {
			Items []struct {
				Value []byte `json:"value"`
			} `json:"items"`
			Next *string `json:"next"`
		}
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(&page); err != nil {
			return nil, received, fmt.Errorf("bench: scan: %w", err)
		}
		for _, it := range page.Items {
			var rec struct {
				Region string  `json:"region"`
				Amount float64 `json:"amount"`
			}
			if json.Unmarshal(it.Value, &rec) == nil {
				sums[rec.Region] += rec.Amount
			}
		}
		if page.Next == nil {
			return sums, received, nil
		}
		start = *page.Next
	}
}
