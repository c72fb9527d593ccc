package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"lambdadb/client"
)

// TriggerConfig configures RunTrigger.
type TriggerConfig struct {
	LambdaBin string
	EtcdBin   string // "" skips the etcd watch reference
	Wasm      string // a module whose OnChanges writes for each change (the indexer example)
	Nodes     int    // default 3
	Shards    int    // default 16
	Changes   int    // changes preloaded for the delivery-rate measurement; default 20000
	Clients   int    // writers for the preload; default 64
	Samples   int    // feed, watch and put → handler (paused) latency samples; default 300
	// StoppedSamples is the number of put → handler samples with a
	// stopped sandbox; default 50.
	StoppedSamples int
	// States are the sandbox states to measure, each on its own cluster:
	// "paused" (keep-alive 10m: a paused sandbox waits on every node) and
	// "stopped" (keep-alive 1ms: every delivery restarts one). Default both.
	States   []string
	Progress io.Writer
}

func (c *TriggerConfig) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.Changes == 0 {
		c.Changes = 20000
	}
	if c.Clients == 0 {
		c.Clients = 64
	}
	if c.Samples == 0 {
		c.Samples = 300
	}
	if c.StoppedSamples == 0 {
		c.StoppedSamples = 50
	}
	if len(c.States) == 0 {
		c.States = []string{"paused", "stopped"}
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// TriggerResult is what RunTrigger measured.
type TriggerResult struct {
	Nodes            int            `json:"nodes"`
	FeedLatencyP50MS float64        `json:"feed_latency_p50_ms"` // put ack → long-poll subscriber on another node has it
	FeedLatencyP99MS float64        `json:"feed_latency_p99_ms"` //
	EtcdWatchP50MS   float64        `json:"etcd_watch_p50_ms"`   // put ack → watcher on another member has it (0: not run)
	EtcdWatchP99MS   float64        `json:"etcd_watch_p99_ms"`   //
	States           []TriggerState `json:"states"`

	FeedLatencyMS []float64 `json:"-"`
	EtcdWatchMS   []float64 `json:"-"`
}

// TriggerState is what RunTrigger measured with one sandbox state.
type TriggerState struct {
	State     string `json:"state"`      // paused or stopped
	KeepAlive string `json:"keep_alive"` // the nodes' --fn-keep-alive
	// Put → the handler's write readable (linearizable read, polled).
	Samples      int     `json:"samples"`
	LatencyP50MS float64 `json:"latency_p50_ms"`
	LatencyP90MS float64 `json:"latency_p90_ms"`
	LatencyP99MS float64 `json:"latency_p99_ms"`
	// SampleStarts counts the handler's sandbox starts by kind during the
	// latency samples (the function's cluster-wide meter).
	SampleStarts map[string]uint64 `json:"sample_starts"`
	// A trigger created with start=beginning over Changes preloaded
	// changes: how fast they were delivered, with how many handler calls.
	Changes          int     `json:"changes"`
	DeliverySeconds  float64 `json:"delivery_seconds"`
	ChangesPerSec    float64 `json:"changes_per_sec"`
	Invocations      uint64  `json:"invocations"`
	InvocationsPer1k float64 `json:"invocations_per_1000_changes"`

	LatencyMS []float64 `json:"-"`
}

// RunTrigger measures change delivery on lambdadb clusters, one per
// sandbox state (and etcd watch latency for reference).
func RunTrigger(cfg TriggerConfig) (TriggerResult, error) {
	cfg.defaults()
	res := TriggerResult{Nodes: cfg.Nodes}
	wasm, err := os.ReadFile(cfg.Wasm)
	if err != nil {
		return res, fmt.Errorf("bench: %w (make examples builds it)", err)
	}
	for i, state := range cfg.States {
		st, err := triggerState(cfg, wasm, state, i == 0, &res)
		res.States = append(res.States, st)
		if err != nil {
			return res, err
		}
	}
	if cfg.EtcdBin != "" {
		fmt.Fprintf(cfg.Progress, "starting %d-member etcd cluster: watch latency, %d puts\n", cfg.Nodes, cfg.Samples)
		e, err := StartEtcd(cfg.EtcdBin, cfg.Nodes)
		if err != nil {
			return res, err
		}
		defer e.Stop()
		wl, err := etcdWatchLatency(context.Background(), e.Addrs(), cfg.Samples)
		if err != nil {
			return res, err
		}
		res.EtcdWatchMS = Millis(wl)
		res.EtcdWatchP50MS, res.EtcdWatchP99MS = durMS(quantileOf(wl, 0.5)), durMS(quantileOf(wl, 0.99))
	}
	return res, nil
}

// triggerState measures one sandbox state on a cluster of its own; the
// first state also measures feed latency into res.
func triggerState(cfg TriggerConfig, wasm []byte, state string, feed bool, res *TriggerResult) (TriggerState, error) {
	st := TriggerState{State: state, Changes: cfg.Changes}
	samples, gap := cfg.Samples, time.Duration(0)
	switch state {
	case "paused":
		st.KeepAlive = "10m"
	case "stopped":
		// The keep-alive stops a sandbox idle 1 ms within 10 ms (its
		// reaper's period); a gap of 60 ms between puts leaves none paused.
		st.KeepAlive, samples, gap = "1ms", cfg.StoppedSamples, 60*time.Millisecond
	default:
		return st, fmt.Errorf("bench: unknown sandbox state %q (paused, stopped)", state)
	}
	fmt.Fprintf(cfg.Progress, "%s: starting %d-node lambdadb cluster, --fn-keep-alive %s\n", state, cfg.Nodes, st.KeepAlive)
	c, err := StartLambdaDBWith(LambdaOptions{Bin: cfg.LambdaBin, Nodes: cfg.Nodes, Shards: cfg.Shards,
		Args: []string{"--fn-keep-alive", st.KeepAlive}})
	if err != nil {
		return st, err
	}
	defer c.Stop()
	ctx := context.Background()
	cl, err := client.New("http://" + c.Addrs()[0])
	if err != nil {
		return st, fmt.Errorf("bench: %w", err)
	}
	if _, err := cl.Deploy(ctx, "bench-indexer", wasm, client.DeployOptions{}); err != nil {
		return st, fmt.Errorf("bench: deploy: %w", err)
	}
	kv := NewLambdaKV(c.Addrs(), cfg.Clients)

	if feed {
		// Feed latency: a long-poll subscriber on one node, puts through another.
		fmt.Fprintf(cfg.Progress, "lambdadb: feed latency, %d puts\n", cfg.Samples)
		sub, err := client.New("http://" + c.Addrs()[len(c.Addrs())-1])
		if err != nil {
			return st, fmt.Errorf("bench: %w", err)
		}
		lat, err := feedLatency(ctx, cl, sub, cfg.Samples)
		if err != nil {
			return st, err
		}
		res.FeedLatencyMS = Millis(lat)
		res.FeedLatencyP50MS, res.FeedLatencyP99MS = durMS(quantileOf(lat, 0.5)), durMS(quantileOf(lat, 0.99))
	}

	// Put → handler latency.
	if _, err := cl.CreateTrigger(ctx, "lat", client.Trigger{Function: "bench-indexer", Prefix: "lat/"}); err != nil {
		return st, fmt.Errorf("bench: create trigger: %w", err)
	}
	// Warm-up, not measured: deliveries on every shard, so every node has
	// compiled the module (and, for "paused", holds a paused sandbox).
	fmt.Fprintf(cfg.Progress, "%s: warm-up, %d puts over every shard\n", state, 3*cfg.Shards)
	for i := 0; i < 3*cfg.Shards; i++ {
		if _, err := cl.Put(ctx, fmt.Sprintf("lat/warm-%d", i), []byte("v")); err != nil {
			return st, fmt.Errorf("bench: put: %w", err)
		}
	}
	for i := 0; i < 3*cfg.Shards; i++ {
		if err := waitIndexed(ctx, cl, fmt.Sprintf("lat/warm-%d", i), time.Now()); err != nil {
			return st, err
		}
	}
	before, err := cl.Function(ctx, "bench-indexer")
	if err != nil {
		return st, fmt.Errorf("bench: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "%s: put → handler latency, %d puts, %v apart\n", state, samples, gap)
	var tl []time.Duration
	for i := 0; i < samples; i++ {
		time.Sleep(gap)
		d, err := putAndWait(ctx, cl, fmt.Sprintf("lat/%d", i))
		if err != nil {
			return st, err
		}
		tl = append(tl, d)
	}
	after, err := cl.Function(ctx, "bench-indexer")
	if err != nil {
		return st, fmt.Errorf("bench: %w", err)
	}
	st.SampleStarts = map[string]uint64{}
	for k, n := range after.Starts {
		if d := n - before.Starts[k]; d > 0 {
			st.SampleStarts[k] = d
		}
	}
	st.Samples, st.LatencyMS = len(tl), Millis(tl)
	sum := Summarize(st.LatencyMS)
	st.LatencyP50MS, st.LatencyP90MS, st.LatencyP99MS = sum.P50, sum.P90, sum.P99
	fmt.Fprintf(cfg.Progress, "  p50 %.1f ms, p99 %.1f ms, sandbox starts: %s\n", sum.P50, sum.P99, fmtCounts(st.SampleStarts))

	// Delivery rate: preload, then a trigger from the beginning.
	fmt.Fprintf(cfg.Progress, "%s: preloading %d changes with %d clients\n", state, cfg.Changes, cfg.Clients)
	load := Run(cfg.Clients, time.Hour, func(ctx context.Context, w, i int) error {
		k := w + i*cfg.Clients
		if k >= cfg.Changes {
			return ErrStop
		}
		return kv.Put(ctx, w, fmt.Sprintf("rate/%08d", k), []byte("v"))
	})
	if load.Errors > 0 {
		return st, fmt.Errorf("bench: %d preload puts failed, first: %s", load.Errors, load.FirstError)
	}
	if gap > 0 {
		time.Sleep(gap) // the sandboxes are stopped again
	}
	fmt.Fprintf(cfg.Progress, "%s: trigger from the beginning over %d changes\n", state, cfg.Changes)
	t0 := time.Now()
	if _, err := cl.CreateTrigger(ctx, "rate", client.Trigger{Function: "bench-indexer", Prefix: "rate/", BatchSize: 1000, Start: "beginning"}); err != nil {
		return st, fmt.Errorf("bench: create trigger: %w", err)
	}
	var ts client.Trigger
	for {
		ts, err = cl.TriggerStatus(ctx, "rate")
		if err == nil && int(ts.Delivered) >= cfg.Changes {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			return st, fmt.Errorf("bench: delivered %d of %d in 10 minutes", ts.Delivered, cfg.Changes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := time.Since(t0)
	st.DeliverySeconds = d.Seconds()
	st.ChangesPerSec = float64(cfg.Changes) / d.Seconds()
	st.Invocations = ts.Invocations
	st.InvocationsPer1k = float64(ts.Invocations) * 1000 / float64(cfg.Changes)
	fmt.Fprintf(cfg.Progress, "  %.0f changes/s, %.1f invocations per 1,000 changes\n", st.ChangesPerSec, st.InvocationsPer1k)
	return st, nil
}

// putAndWait puts key and waits until the indexer's write idx/<key> is
// readable, returning the time it took.
func putAndWait(ctx context.Context, cl *client.Client, key string) (time.Duration, error) {
	t0 := time.Now()
	if _, err := cl.Put(ctx, key, []byte("v")); err != nil {
		return 0, fmt.Errorf("bench: put: %w", err)
	}
	if err := waitIndexed(ctx, cl, key, t0); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// waitIndexed polls linearizable reads until idx/<key> exists, for at most
// a minute after t0.
func waitIndexed(ctx context.Context, cl *client.Client, key string, t0 time.Time) error {
	for {
		if _, found, err := cl.Get(ctx, "idx/"+key, client.WithConsistency(client.Linearizable)); err == nil && found {
			return nil
		}
		if time.Since(t0) > time.Minute {
			return fmt.Errorf("bench: the handler did not write idx/%s within a minute", key)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// feedLatency puts n keys one at a time and times each until a long-poll
// subscriber (on another node) has received it.
func feedLatency(ctx context.Context, writer, sub *client.Client, n int) ([]time.Duration, error) {
	page, err := sub.Feed(ctx, "fl/", client.CursorNow, 0, 0)
	if err != nil {
		return nil, err
	}
	got := make(chan string, n)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		cur := page.Cursor
		for sctx.Err() == nil {
			p, err := sub.Feed(sctx, "fl/", cur, 10*time.Second, 0)
			if err != nil {
				continue
			}
			cur = p.Cursor
			for _, ch := range p.Changes {
				got <- ch.Key
			}
		}
	}()
	var out []time.Duration
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("fl/%d", i)
		t0 := time.Now()
		if _, err := writer.Put(ctx, k, []byte("v")); err != nil {
			return nil, err
		}
		for key := range got {
			if key == k {
				break
			}
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

func etcdWatchLatency(ctx context.Context, addrs []string, n int) ([]time.Duration, error) {
	var eps []string
	for _, a := range addrs {
		eps = append(eps, "http://"+a)
	}
	w, err := clientv3.New(clientv3.Config{Endpoints: eps[len(eps)-1:], DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	p, err := clientv3.New(clientv3.Config{Endpoints: eps[:1], DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := w.Watch(wctx, "fl/", clientv3.WithPrefix())
	time.Sleep(200 * time.Millisecond)
	var out []time.Duration
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("fl/%d", i)
		t0 := time.Now()
		if _, err := p.Put(ctx, k, "v"); err != nil {
			return nil, err
		}
	wait:
		for resp := range ch {
			for _, ev := range resp.Events {
				if string(ev.Kv.Key) == k {
					break wait
				}
			}
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

func quantileOf(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// durMS converts d to float milliseconds.
func durMS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
