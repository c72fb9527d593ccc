package changefeed_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

// BenchmarkTriggerLatency measures put → handler latency on one node: from
// before the put to when the handler's write (log/<key>, committed with
// the checkpoint) is applied, with the function's sandbox kept paused and
// with it stopped after every call (max_wait_ms 200 then applies).
func BenchmarkTriggerLatency(b *testing.B) {
	for _, mode := range []string{"paused", "stopped"} {
		b.Run(mode, func(b *testing.B) {
			cfg := lambda.Config{}
			if mode == "stopped" {
				cfg.KeepAlive = time.Millisecond
			}
			v := newTEnv(b, cfg)
			ctx := context.Background()
			if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(b, "faulty"), lambda.DeployOptions{}, nil); err != nil {
				b.Fatal(err)
			}
			if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "lat", Function: "rec", Prefix: "{l}"}); err != nil {
				b.Fatal(err)
			}
			v.put(b, "{l}warm", "w")
			eventually(b, "warm-up", func() bool { return v.get(b, "log/{l}warm") != "" })
			s := shard.For("{l}", v.node.Shards())
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if mode == "stopped" {
					b.StopTimer()
					eventually(b, "stopped", func() bool { return !v.fns.HasPaused("rec") })
					b.StartTimer()
				}
				k := fmt.Sprintf("{l}%d", i)
				t0 := time.Now()
				v.put(b, k, "v")
				for {
					applied := v.node.AppliedIndex(s) // before the read: no wake-up is missed
					g, err := v.node.Get(ctx, "log/"+k, shard.ReadOptions{Consistency: shard.Stale})
					if err != nil {
						b.Fatal(err)
					}
					if g.Found {
						break
					}
					wctx, cancel := context.WithTimeout(ctx, time.Second)
					_ = v.node.WaitFeed(wctx, s, applied)
					cancel()
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkTriggerThroughput writes changes in batches of 100 across
// every shard and reports how fast the trigger delivers them, and how many
// handler invocations 1,000 changes took.
func BenchmarkTriggerThroughput(b *testing.B) {
	for _, mode := range []string{"paused", "stopped"} {
		b.Run(mode, func(b *testing.B) {
			cfg := lambda.Config{}
			if mode == "stopped" {
				cfg.KeepAlive = time.Millisecond
			}
			v := newTEnv(b, cfg)
			ctx := context.Background()
			if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(b, "faulty"), lambda.DeployOptions{}, nil); err != nil {
				b.Fatal(err)
			}
			if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "tp", Function: "rec", Prefix: "{t", BatchSize: 1000}); err != nil {
				b.Fatal(err)
			}
			n := v.node.Shards()
			const perShard = 1000
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				before := total(v, "tp")
				t0 := time.Now()
				for s := 0; s < n; s++ {
					for j := 0; j < perShard; j += 100 {
						var ops []shard.Op
						for k := j; k < j+100; k++ {
							ops = append(ops, shard.Op{Key: fmt.Sprintf("%s%d-%d", shardTag(s, n), i, k), Value: []byte("v")})
						}
						if _, err := v.node.Batch(ctx, ops, nil); err != nil {
							b.Fatal(err)
						}
					}
				}
				want := before.Delivered + uint64(n*perShard)
				eventually(b, "all delivered", func() bool { return total(v, "tp").Delivered >= want })
				d := time.Since(t0)
				after := total(v, "tp")
				b.ReportMetric(float64(n*perShard)/d.Seconds(), "changes/s")
				b.ReportMetric(float64(after.Invocations-before.Invocations)*1000/float64(n*perShard), "invocations/1000-changes")
			}
		})
	}
}

// shardTag returns a "{t...}" hash tag on shard s, so the benchmark's keys
// match the trigger's prefix and its handler's writes stay on the shard.
func shardTag(s, n int) string {
	for i := 0; ; i++ {
		tag := fmt.Sprintf("{t%d}", i)
		if shard.For(tag, n) == s {
			return tag
		}
	}
}
