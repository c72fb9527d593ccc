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
	Samples   int    // put → delivery latency samples; default 300
	Progress  io.Writer
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
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// TriggerResult is what RunTrigger measured.
type TriggerResult struct {
	Nodes int `json:"nodes"`
	// A trigger created with start=beginning over Changes preloaded changes:
	// how fast they were delivered, and with how many handler calls.
	Changes           int     `json:"changes"`
	DeliverySeconds   float64 `json:"delivery_seconds"`
	ChangesPerSec     float64 `json:"changes_per_sec"`
	InvocationsPer1k  float64 `json:"invocations_per_1000_changes"`
	FeedLatencyP50MS  float64 `json:"feed_latency_p50_ms"`    // put ack → long-poll subscriber has it
	FeedLatencyP99MS  float64 `json:"feed_latency_p99_ms"`    //
	EtcdWatchP50MS    float64 `json:"etcd_watch_p50_ms"`      // put ack → watcher has it (0: not run)
	EtcdWatchP99MS    float64 `json:"etcd_watch_p99_ms"`      //
	TriggerLatencyP50 float64 `json:"trigger_latency_p50_ms"` // put → handler's write readable, paused sandbox
	TriggerLatencyP99 float64 `json:"trigger_latency_p99_ms"`
}

// RunTrigger measures change delivery on a lambdadb cluster (and etcd
// watch latency for reference).
func RunTrigger(cfg TriggerConfig) (TriggerResult, error) {
	cfg.defaults()
	res := TriggerResult{Nodes: cfg.Nodes, Changes: cfg.Changes}
	wasm, err := os.ReadFile(cfg.Wasm)
	if err != nil {
		return res, fmt.Errorf("bench: %w (make examples builds it)", err)
	}
	fmt.Fprintf(cfg.Progress, "starting %d-node lambdadb cluster\n", cfg.Nodes)
	c, err := StartLambdaDB(cfg.LambdaBin, cfg.Nodes, cfg.Shards)
	if err != nil {
		return res, err
	}
	defer c.Stop()
	ctx := context.Background()
	cl, err := client.New("http://" + c.Addrs()[0])
	if err != nil {
		return res, err
	}
	if _, err := cl.Deploy(ctx, "bench-indexer", wasm, client.DeployOptions{}); err != nil {
		return res, err
	}
	kv := NewLambdaKV(c.Addrs(), cfg.Clients)

	// Feed latency: a long-poll subscriber on one node, puts through another.
	fmt.Fprintf(cfg.Progress, "lambdadb: feed latency, %d puts\n", cfg.Samples)
	sub, _ := client.New("http://" + c.Addrs()[len(c.Addrs())-1])
	lat, err := feedLatency(ctx, cl, sub, cfg.Samples)
	if err != nil {
		return res, err
	}
	res.FeedLatencyP50MS, res.FeedLatencyP99MS = ms(quantileOf(lat, 0.5)), ms(quantileOf(lat, 0.99))

	// Put → handler latency with a warm trigger.
	if _, err := cl.CreateTrigger(ctx, "lat", client.Trigger{Function: "bench-indexer", Prefix: "lat/"}); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Progress, "lambdadb: put → handler latency, %d puts\n", cfg.Samples)
	var tl []time.Duration
	for i := 0; i < cfg.Samples; i++ {
		k := fmt.Sprintf("lat/%d", i)
		t0 := time.Now()
		if _, err := cl.Put(ctx, k, []byte("v")); err != nil {
			return res, err
		}
		for {
			if _, found, err := cl.Get(ctx, "idx/"+k, client.WithConsistency(client.Linearizable)); err == nil && found {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		tl = append(tl, time.Since(t0))
	}
	res.TriggerLatencyP50, res.TriggerLatencyP99 = ms(quantileOf(tl, 0.5)), ms(quantileOf(tl, 0.99))

	// Delivery rate: preload, then a trigger from the beginning.
	fmt.Fprintf(cfg.Progress, "lambdadb: preloading %d changes with %d clients\n", cfg.Changes, cfg.Clients)
	load := Run(cfg.Clients, time.Hour, func(ctx context.Context, w, i int) error {
		k := w + i*cfg.Clients
		if k >= cfg.Changes {
			return ErrStop
		}
		return kv.Put(ctx, w, fmt.Sprintf("rate/%08d", k), []byte("v"))
	})
	if load.Errors > 0 {
		return res, fmt.Errorf("bench: %d preload puts failed", load.Errors)
	}
	fmt.Fprintf(cfg.Progress, "lambdadb: trigger from the beginning over %d changes\n", cfg.Changes)
	t0 := time.Now()
	if _, err := cl.CreateTrigger(ctx, "rate", client.Trigger{Function: "bench-indexer", Prefix: "rate/", BatchSize: 1000, Start: "beginning"}); err != nil {
		return res, err
	}
	var st client.Trigger
	for {
		st, err = cl.TriggerStatus(ctx, "rate")
		if err == nil && int(st.Delivered) >= cfg.Changes {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			return res, fmt.Errorf("bench: delivered %d of %d in 10 minutes", st.Delivered, cfg.Changes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := time.Since(t0)
	res.DeliverySeconds = d.Seconds()
	res.ChangesPerSec = float64(cfg.Changes) / d.Seconds()
	res.InvocationsPer1k = float64(st.Invocations) * 1000 / float64(cfg.Changes)

	if cfg.EtcdBin != "" {
		c.Stop()
		fmt.Fprintf(cfg.Progress, "starting %d-member etcd cluster: watch latency, %d puts\n", cfg.Nodes, cfg.Samples)
		e, err := StartEtcd(cfg.EtcdBin, cfg.Nodes)
		if err != nil {
			return res, err
		}
		defer e.Stop()
		wl, err := etcdWatchLatency(ctx, e.Addrs(), cfg.Samples)
		if err != nil {
			return res, err
		}
		res.EtcdWatchP50MS, res.EtcdWatchP99MS = ms(quantileOf(wl, 0.5)), ms(quantileOf(wl, 0.99))
	}
	return res, nil
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
