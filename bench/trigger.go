package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
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
	// Changes is the length of the change stream of the delivery-rate
	// measurement; default 20000.
	Changes int
	// Rate is the stream's put rate in changes per second; default 500.
	Rate float64
	// Clients is the number of writers of the stream (each put's writer
	// does not wait for its delivery); default 16.
	Clients int
	Samples int // feed, watch and put → handler (paused) latency samples; default 300
	// StoppedSamples is the number of put → handler samples with a
	// stopped sandbox; default 50.
	StoppedSamples int
	// SampleTimeout bounds each feed and watch latency sample: a change
	// not received within it after the put's acknowledgement is counted
	// lost. Default 5 s.
	SampleTimeout time.Duration
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
	if c.Rate == 0 {
		c.Rate = 500
	}
	if c.Clients == 0 {
		c.Clients = 16
	}
	if c.Samples == 0 {
		c.Samples = 300
	}
	if c.StoppedSamples == 0 {
		c.StoppedSamples = 50
	}
	if c.SampleTimeout == 0 {
		c.SampleTimeout = 5 * time.Second
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
	Nodes            int     `json:"nodes"`
	FeedLatencyP50MS float64 `json:"feed_latency_p50_ms"` // put acknowledged → long-poll subscriber on another node has it
	FeedLatencyP99MS float64 `json:"feed_latency_p99_ms"` //
	FeedSamples      int     `json:"feed_samples"`        // received within the sample timeout
	FeedLost         int     `json:"feed_lost"`           // not received within it
	EtcdWatchP50MS   float64 `json:"etcd_watch_p50_ms"`   // put acknowledged → watcher on another member has it (0: not run)
	EtcdWatchP99MS   float64 `json:"etcd_watch_p99_ms"`   //
	EtcdWatchSamples int     `json:"etcd_watch_samples"`  //
	EtcdWatchLost    int     `json:"etcd_watch_lost"`     //
	SampleTimeoutMS  float64 `json:"sample_timeout_ms"`   // per feed / watch sample
	// For reference, the same samples timed from the put's send, and how
	// many arrived before the put's acknowledgement (counted 0 above).
	FeedFromSendP50MS  float64 `json:"feed_from_send_p50_ms"`
	FeedFromSendP99MS  float64 `json:"feed_from_send_p99_ms"`
	FeedBeforeAck      int     `json:"feed_before_ack"`
	EtcdFromSendP50MS  float64 `json:"etcd_watch_from_send_p50_ms"`
	EtcdFromSendP99MS  float64 `json:"etcd_watch_from_send_p99_ms"`
	EtcdWatchBeforeAck int     `json:"etcd_watch_before_ack"`

	States []TriggerState `json:"states"`

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
	// Delivery of a steady stream: a trigger (batch_size 100, max_wait_ms
	// 200) exists before Changes puts are sent at Rate per second.
	Changes int     `json:"changes"`
	Rate    float64 `json:"offered_changes_per_sec"`
	// PutSeconds is the first put's send → the last put's acknowledgement.
	PutSeconds float64 `json:"put_seconds"`
	// DeliverySeconds is the first put's send → the trigger's status
	// reporting every change delivered (polled every 50 ms).
	DeliverySeconds float64 `json:"delivery_seconds"`
	// DrainSeconds is the last put's acknowledgement → all delivered.
	DrainSeconds     float64 `json:"drain_seconds"`
	ChangesPerSec    float64 `json:"changes_per_sec"` // Changes / DeliverySeconds
	Delivered        uint64  `json:"delivered"`
	Invocations      uint64  `json:"invocations"`
	InvocationsPer1k float64 `json:"invocations_per_1000_changes"`
	// StreamStarts counts the handler's sandbox starts by kind during
	// the stream (first put → all delivered). StartsPer1k counts those
	// that instantiate a sandbox (restart, cold), ResumesPer1k those
	// that resume a paused one (warm).
	StreamStarts map[string]uint64 `json:"stream_starts"`
	StartsPer1k  float64           `json:"starts_per_1000_changes"`
	ResumesPer1k float64           `json:"resumes_per_1000_changes"`

	// Delivery of a backlog (paused state only): Changes puts under
	// backlog/ are written first, then a trigger starting from the
	// beginning of the feed delivers them.
	BacklogChanges        int     `json:"backlog_changes,omitempty"`
	BacklogSeconds        float64 `json:"backlog_seconds,omitempty"` // trigger created → all delivered
	BacklogPerSec         float64 `json:"backlog_changes_per_sec,omitempty"`
	BacklogInvocationsPer float64 `json:"backlog_invocations_per_1000_changes,omitempty"`

	LatencyMS []float64 `json:"-"`
}

// RunTrigger measures change delivery on lambdadb clusters, one per
// sandbox state (and etcd watch latency for reference).
func RunTrigger(cfg TriggerConfig) (TriggerResult, error) {
	cfg.defaults()
	res := TriggerResult{Nodes: cfg.Nodes, SampleTimeoutMS: durMS(cfg.SampleTimeout)}
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
		ls, err := etcdWatchLatency(context.Background(), e.Addrs(), cfg.Samples, cfg.SampleTimeout, cfg.Progress)
		if err != nil {
			return res, err
		}
		res.EtcdWatchMS = Millis(ls.FromAck)
		sum, send := Summarize(res.EtcdWatchMS), Summarize(Millis(ls.FromSend))
		res.EtcdWatchP50MS, res.EtcdWatchP99MS = sum.P50, sum.P99
		res.EtcdFromSendP50MS, res.EtcdFromSendP99MS = send.P50, send.P99
		res.EtcdWatchSamples, res.EtcdWatchLost, res.EtcdWatchBeforeAck = len(ls.FromAck), ls.Lost, ls.BeforeAck
		fmt.Fprintf(cfg.Progress, "  from the ack: p50 %.2f ms, p99 %.2f ms (%d before it); from the send: p50 %.2f ms, p99 %.2f ms; %d lost\n",
			sum.P50, sum.P99, ls.BeforeAck, send.P50, send.P99, ls.Lost)
	}
	return res, nil
}

// triggerState measures one sandbox state on a cluster of its own; the
// first state also measures feed latency into res.
func triggerState(cfg TriggerConfig, wasm []byte, state string, feed bool, res *TriggerResult) (TriggerState, error) {
	st := TriggerState{State: state, Changes: cfg.Changes, Rate: cfg.Rate}
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

	if feed {
		// Feed latency: a long-poll subscriber on one node, puts through another.
		fmt.Fprintf(cfg.Progress, "lambdadb: feed latency, %d puts\n", cfg.Samples)
		sub, err := client.New("http://" + c.Addrs()[len(c.Addrs())-1])
		if err != nil {
			return st, fmt.Errorf("bench: %w", err)
		}
		ls, err := feedLatency(ctx, cl, sub, cfg.Samples, cfg.SampleTimeout, cfg.Progress)
		if err != nil {
			return st, err
		}
		res.FeedLatencyMS = Millis(ls.FromAck)
		sum, send := Summarize(res.FeedLatencyMS), Summarize(Millis(ls.FromSend))
		res.FeedLatencyP50MS, res.FeedLatencyP99MS = sum.P50, sum.P99
		res.FeedFromSendP50MS, res.FeedFromSendP99MS = send.P50, send.P99
		res.FeedSamples, res.FeedLost, res.FeedBeforeAck = len(ls.FromAck), ls.Lost, ls.BeforeAck
		fmt.Fprintf(cfg.Progress, "  from the ack: p50 %.2f ms, p99 %.2f ms (%d before it); from the send: p50 %.2f ms, p99 %.2f ms; %d lost\n",
			sum.P50, sum.P99, ls.BeforeAck, send.P50, send.P99, ls.Lost)
	}

	// Put → handler latency (the trigger's defaults: batch_size 100,
	// max_wait_ms 200).
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
	st.SampleStarts = startsBetween(before.Starts, after.Starts)
	st.Samples, st.LatencyMS = len(tl), Millis(tl)
	sum := Summarize(st.LatencyMS)
	st.LatencyP50MS, st.LatencyP90MS, st.LatencyP99MS = sum.P50, sum.P90, sum.P99
	fmt.Fprintf(cfg.Progress, "  p50 %.1f ms, p99 %.1f ms, sandbox starts: %s\n", sum.P50, sum.P99, fmtCounts(st.SampleStarts))
	if err := cl.DeleteTrigger(ctx, "lat"); err != nil {
		return st, fmt.Errorf("bench: delete trigger: %w", err)
	}

	// Delivery of a steady stream: the trigger first, then puts at a fixed
	// rate, not waiting for their delivery.
	if err := streamDelivery(ctx, cfg, c.Addrs(), cl, &st, gap); err != nil {
		return st, err
	}
	if state == "paused" {
		if err := backlogDelivery(ctx, cfg, c.Addrs(), cl, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

// backlogDelivery writes cfg.Changes puts under backlog/ with 64 writers
// spread over the nodes, then creates trigger "backlog" (batch_size 100,
// max_wait_ms 200) from the beginning of the feed and times until its
// status reports them all delivered.
func backlogDelivery(ctx context.Context, cfg TriggerConfig, addrs []string, cl *client.Client, st *TriggerState) error {
	const writers = 64
	fmt.Fprintf(cfg.Progress, "backlog: writing %d changes under backlog/ (%d writers), then a trigger from the beginning\n", cfg.Changes, writers)
	kv := NewLambdaKV(addrs, writers)
	var next atomic.Int64
	errc := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Changes {
					errc <- nil
					return
				}
				if err := kv.Put(ctx, w, fmt.Sprintf("backlog/%08d", i), []byte("v")); err != nil {
					errc <- fmt.Errorf("bench: backlog put: %w", err)
					return
				}
			}
		}()
	}
	for w := 0; w < writers; w++ {
		if err := <-errc; err != nil {
			return err
		}
	}
	t0 := time.Now()
	if _, err := cl.CreateTrigger(ctx, "backlog", client.Trigger{Function: "bench-indexer", Prefix: "backlog/",
		BatchSize: client.Int(100), MaxWaitMS: client.Int(200), Start: "beginning"}); err != nil {
		return fmt.Errorf("bench: create trigger: %w", err)
	}
	limit := 5 * time.Minute
	for {
		ts, err := cl.TriggerStatus(ctx, "backlog")
		if err == nil && int(ts.Delivered) >= cfg.Changes {
			st.BacklogChanges = cfg.Changes
			st.BacklogSeconds = time.Since(t0).Seconds()
			st.BacklogPerSec = float64(cfg.Changes) / st.BacklogSeconds
			st.BacklogInvocationsPer = float64(ts.Invocations) * 1000 / float64(cfg.Changes)
			fmt.Fprintf(cfg.Progress, "  backlog of %d delivered in %.2f s: %.0f changes/s, %.1f calls per 1,000 changes\n",
				cfg.Changes, st.BacklogSeconds, st.BacklogPerSec, st.BacklogInvocationsPer)
			return nil
		}
		if time.Since(t0) > limit {
			return fmt.Errorf("bench: backlog: %d of %d delivered after %v (last error: %v)", ts.Delivered, cfg.Changes, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamDelivery creates trigger "rate" (batch_size 100, max_wait_ms 200,
// as "lat") over rate/, sends cfg.Changes puts at cfg.Rate per second
// with cfg.Clients writers spread over the nodes, and times until the
// trigger's status reports them all delivered; it fills st's delivery
// fields.
func streamDelivery(ctx context.Context, cfg TriggerConfig, addrs []string, cl *client.Client, st *TriggerState, gap time.Duration) error {
	state := st.State
	if _, err := cl.CreateTrigger(ctx, "rate", client.Trigger{Function: "bench-indexer", Prefix: "rate/",
		BatchSize: client.Int(100), MaxWaitMS: client.Int(200)}); err != nil {
		return fmt.Errorf("bench: create trigger: %w", err)
	}
	// The trigger's runners start on the shards' leaders; wait until every
	// shard reports one running, so the stream does not measure their start.
	for t0 := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		ts, err := cl.TriggerStatus(ctx, "rate")
		running := 0
		for _, s := range ts.Shards {
			if s.Running {
				running++
			}
		}
		if err == nil && running >= cfg.Shards {
			break
		}
		if time.Since(t0) > 30*time.Second {
			return fmt.Errorf("bench: trigger rate runs on %d of %d shards after 30 s (last error: %v)", running, cfg.Shards, err)
		}
	}
	if gap > 0 {
		time.Sleep(gap) // the sandboxes are stopped again
	}
	before, err := cl.Function(ctx, "bench-indexer")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "%s: stream of %d puts at %.0f/s by %d writers; trigger batch_size 100, max_wait_ms 200\n",
		state, cfg.Changes, cfg.Rate, cfg.Clients)
	kv := NewLambdaKV(addrs, cfg.Clients)
	s := startStream(ctx, cfg.Changes, cfg.Rate, cfg.Clients, func(ctx context.Context, w, i int) error {
		return kv.Put(ctx, w, fmt.Sprintf("rate/%08d", i), []byte("v"))
	})
	limit := time.Duration(float64(cfg.Changes)/cfg.Rate*float64(time.Second)) + 2*time.Minute
	lastLine := time.Now()
	var ts client.Trigger
	var done time.Time
	for {
		var err error
		ts, err = cl.TriggerStatus(ctx, "rate")
		finished := s.finished()
		if finished && s.err != nil {
			return s.err
		}
		if err == nil && finished && int(ts.Delivered) >= cfg.Changes {
			done = time.Now()
			break
		}
		if time.Since(s.start) > limit {
			return fmt.Errorf("bench: %s: %d of %d puts acknowledged, %d delivered after %v", state, s.acked.Load(), cfg.Changes, ts.Delivered, limit)
		}
		if time.Since(lastLine) >= 3*time.Second {
			lastLine = time.Now()
			fmt.Fprintf(cfg.Progress, "  %.0f s: %d of %d puts acknowledged, %d delivered in %d invocations\n",
				time.Since(s.start).Seconds(), s.acked.Load(), cfg.Changes, ts.Delivered, ts.Invocations)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, err := cl.Function(ctx, "bench-indexer")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	d := done.Sub(s.start)
	st.PutSeconds = s.last.Sub(s.start).Seconds()
	st.DeliverySeconds = d.Seconds()
	st.DrainSeconds = done.Sub(s.last).Seconds()
	st.ChangesPerSec = float64(cfg.Changes) / d.Seconds()
	st.Delivered, st.Invocations = ts.Delivered, ts.Invocations
	st.InvocationsPer1k = float64(ts.Invocations) * 1000 / float64(cfg.Changes)
	st.StreamStarts = startsBetween(before.Starts, after.Starts)
	var starts uint64
	for k, n := range st.StreamStarts {
		if k != "warm" {
			starts += n
		}
	}
	st.StartsPer1k = float64(starts) * 1000 / float64(cfg.Changes)
	st.ResumesPer1k = float64(st.StreamStarts["warm"]) * 1000 / float64(cfg.Changes)
	fmt.Fprintf(cfg.Progress, "  puts in %.1f s, all delivered %.2f s after the last: %.0f changes/s; per 1,000 changes %.1f invocations, "+
		"%.1f sandbox starts, %.1f resumes (%s)\n",
		st.PutSeconds, st.DrainSeconds, st.ChangesPerSec, st.InvocationsPer1k, st.StartsPer1k, st.ResumesPer1k, fmtCounts(st.StreamStarts))
	return nil
}

// startsBetween returns the per-kind increase of a function's start meter.
func startsBetween(before, after map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, n := range after {
		if n > before[k] {
			out[k] = n - before[k]
		}
	}
	return out
}

// stream is a fixed-rate sequence of puts in flight (startStream).
type stream struct {
	start time.Time // the first put's send
	acked atomic.Int64
	done  chan struct{}
	// Valid once done is closed:
	last time.Time // the last put's acknowledgement
	err  error
}

func (s *stream) finished() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// startStream sends puts 0..n-1 in the background, put i due at
// start + i/rate, through writers goroutines that take the next due put
// as soon as their last one is acknowledged (none waits for anything
// else). A failed put is retried up to 5 times, 100 ms apart; one that
// keeps failing ends the stream with an error. If the writers fall
// behind, due puts queue and are sent as fast as they can.
func startStream(ctx context.Context, n int, rate float64, writers int, put func(ctx context.Context, w, i int) error) *stream {
	s := &stream{done: make(chan struct{})}
	sctx, cancel := context.WithCancel(ctx)
	jobs := make(chan int, n)
	s.start = time.Now()
	go func() { // the pacer
		defer close(jobs)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for sent := 0; sent < n; {
			due := min(n, int(time.Since(s.start).Seconds()*rate)+1)
			for ; sent < due; sent++ {
				jobs <- sent
			}
			if sent == n {
				return
			}
			select {
			case <-tick.C:
			case <-sctx.Done():
				return
			}
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var err error
				for try := 0; try < 6 && sctx.Err() == nil; try++ {
					if try > 0 {
						time.Sleep(100 * time.Millisecond)
					}
					pctx, c := context.WithTimeout(sctx, 10*time.Second)
					err = put(pctx, w, i)
					c()
					if err == nil {
						break
					}
				}
				mu.Lock()
				if err == nil && sctx.Err() != nil {
					err = sctx.Err()
				}
				if err != nil {
					if s.err == nil {
						s.err = fmt.Errorf("bench: stream put %d: %w", i, err)
					}
					cancel()
				} else if now := time.Now(); now.After(s.last) {
					s.last = now
				}
				mu.Unlock()
				if err != nil {
					return
				}
				s.acked.Add(1)
			}
		}()
	}
	go func() {
		wg.Wait()
		cancel()
		if s.err == nil && int(s.acked.Load()) < n {
			s.err = errors.New("bench: stream ended early")
		}
		close(s.done)
	}()
	return s
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

// arrival is a key a subscriber received, and when.
type arrival struct {
	key string
	at  time.Time
}

// awaitArrival waits up to timeout after ack for key on got, skipping
// other keys (late arrivals of lost samples), and returns when it
// arrived. ok is false if it did not arrive in time (or got was closed).
func awaitArrival(got <-chan arrival, key string, ack time.Time, timeout time.Duration) (at time.Time, ok bool) {
	timer := time.NewTimer(max(0, timeout-time.Since(ack)))
	defer timer.Stop()
	for {
		select {
		case a, open := <-got:
			if !open {
				return time.Time{}, false
			}
			if a.key == key {
				return a.at, true
			}
		case <-timer.C:
			return time.Time{}, false
		}
	}
}

// latencySamples are sampleLatency's measurements.
type latencySamples struct {
	FromAck   []time.Duration // put acknowledged → received (0 when received first)
	FromSend  []time.Duration // put sent → received
	BeforeAck int             // samples received before the put's acknowledgement
	Lost      int             // not received within the timeout
}

// sampleLatency puts keys fl/0..fl/n-1 one at a time with put and times
// each from the put's acknowledgement (and from its send) until got
// delivers it. A key not delivered within timeout of the acknowledgement
// is counted lost.
func sampleLatency(ctx context.Context, n int, timeout time.Duration, put func(ctx context.Context, key string) error,
	got <-chan arrival, progress io.Writer) (latencySamples, error) {
	var out latencySamples
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("fl/%d", i)
		pctx, c := context.WithTimeout(ctx, 10*time.Second)
		sent := time.Now()
		err := put(pctx, k)
		ack := time.Now()
		c()
		if err != nil {
			return out, fmt.Errorf("bench: put: %w", err)
		}
		at, ok := awaitArrival(got, k, ack, timeout)
		if !ok {
			out.Lost++
			fmt.Fprintf(progress, "  %s not received within %v of its acknowledgement: lost\n", k, timeout)
			continue
		}
		if at.Before(ack) {
			out.BeforeAck++
		}
		out.FromAck = append(out.FromAck, max(0, at.Sub(ack)))
		out.FromSend = append(out.FromSend, max(0, at.Sub(sent)))
	}
	if n > 0 && len(out.FromAck) == 0 {
		return out, fmt.Errorf("bench: none of %d changes reached the subscriber", n)
	}
	return out, nil
}

// feedLatency puts n keys one at a time and times each from the put's
// acknowledgement until a long-poll subscriber (on another node) has it.
func feedLatency(ctx context.Context, writer, sub *client.Client, n int, timeout time.Duration, progress io.Writer) (latencySamples, error) {
	page, err := sub.Feed(ctx, "fl/", client.CursorNow, 0, 0)
	if err != nil {
		return latencySamples{}, err
	}
	got := make(chan arrival, n+1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var errs atomic.Int64
	go func() {
		cur := page.Cursor
		backoff := 10 * time.Millisecond
		for sctx.Err() == nil {
			p, err := sub.Feed(sctx, "fl/", cur, 10*time.Second, 0)
			if err != nil {
				if sctx.Err() != nil {
					return
				}
				errs.Add(1)
				if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == 410 {
					// The cursor expired: go on from now (what it missed is lost).
					if np, err := sub.Feed(sctx, "fl/", client.CursorNow, 0, 0); err == nil {
						cur = np.Cursor
					}
				}
				select {
				case <-sctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			backoff = 10 * time.Millisecond
			now := time.Now()
			cur = p.Cursor
			for _, ch := range p.Changes {
				select {
				case got <- arrival{ch.Key, now}:
				case <-sctx.Done():
					return
				}
			}
		}
	}()
	ls, err := sampleLatency(ctx, n, timeout, func(ctx context.Context, k string) error {
		_, err := writer.Put(ctx, k, []byte("v"))
		return err
	}, got, progress)
	if e := errs.Load(); e > 0 {
		fmt.Fprintf(progress, "  the subscriber's long polls failed %d times\n", e)
	}
	return ls, err
}

// etcdWatchLatency puts n keys one at a time through member 1 and times
// each from the put's acknowledgement until a watcher on the last member
// has it.
func etcdWatchLatency(ctx context.Context, addrs []string, n int, timeout time.Duration, progress io.Writer) (latencySamples, error) {
	var eps []string
	for _, a := range addrs {
		eps = append(eps, "http://"+a)
	}
	w, err := clientv3.New(clientv3.Config{Endpoints: eps[len(eps)-1:], DialTimeout: 5 * time.Second})
	if err != nil {
		return latencySamples{}, err
	}
	defer w.Close()
	p, err := clientv3.New(clientv3.Config{Endpoints: eps[:1], DialTimeout: 5 * time.Second})
	if err != nil {
		return latencySamples{}, err
	}
	defer p.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := w.Watch(wctx, "fl/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	var next int64 // the revision to resume a broken watch from
	select {
	case resp, open := <-ch:
		if !open || resp.Err() != nil || !resp.Created {
			return latencySamples{}, fmt.Errorf("bench: etcd watch not created: %v", resp.Err())
		}
		next = resp.Header.Revision + 1
	case <-time.After(10 * time.Second):
		return latencySamples{}, errors.New("bench: etcd watch not created within 10 s")
	}
	got := make(chan arrival, n+1)
	var breaks atomic.Int64
	go func() {
		backoff := 10 * time.Millisecond
		for {
			for resp := range ch {
				if resp.Err() != nil {
					break
				}
				now := time.Now()
				for _, ev := range resp.Events {
					next = ev.Kv.ModRevision + 1
					select {
					case got <- arrival{string(ev.Kv.Key), now}:
					case <-wctx.Done():
						return
					}
				}
			}
			if wctx.Err() != nil {
				return
			}
			breaks.Add(1)
			select {
			case <-wctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			ch = w.Watch(wctx, "fl/", clientv3.WithPrefix(), clientv3.WithRev(next))
		}
	}()
	ls, err := sampleLatency(ctx, n, timeout, func(ctx context.Context, k string) error {
		_, err := p.Put(ctx, k, "v")
		return err
	}, got, progress)
	if b := breaks.Load(); b > 0 {
		fmt.Fprintf(progress, "  the etcd watch broke %d times (resumed from its revision)\n", b)
	}
	return ls, err
}

// durMS converts d to float milliseconds.
func durMS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
