package lambda_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

// benchEnv is newEnv for benchmarks (testing.B).
func benchEnv(b *testing.B, cfg lambda.Config) (*lambda.Engine, *shard.Node) {
	b.Helper()
	n := testnode.New(b)
	cfg.Store, cfg.NodeID = n, n.ID()
	e, err := lambda.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	return e, n
}

func benchDeploy(b *testing.B, e *lambda.Engine, name string, wasm []byte, o lambda.DeployOptions) {
	b.Helper()
	if _, err := e.Deploy(context.Background(), name, wasm, o, nil); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStart measures one invocation by how its sandbox starts:
// warm (a paused instance), restart (instantiate a compiled module), cold
// (compile from the on-disk cache, then instantiate) and first-compile
// (compile from scratch: a fresh cache directory each time). echo does no
// KV call; counter does a Get and a CompareAndPut.
func BenchmarkStart(b *testing.B) {
	for _, fn := range []string{"echo", "counter"} {
		wasm := wasmtest.Example(b, fn)
		for _, kind := range []string{"warm", "restart", "cold", "first-compile"} {
			b.Run(fn+"/"+kind, func(b *testing.B) {
				cache := b.TempDir()
				e, _ := benchEnv(b, lambda.Config{CacheDir: cache})
				benchDeploy(b, e, fn, wasm, lambda.DeployOptions{})
				inv := lambda.Invocation{Name: fn, Body: []byte("x"), Key: "k", Consistency: shard.Session}
				if _, err := e.Invoke(context.Background(), inv); err != nil {
					b.Fatal(err)
				}
				var starts []time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					switch kind {
					case "restart":
						lambda.StopPaused(e)
					case "cold":
						lambda.StopPaused(e)
						lambda.DropCompiled(e)
					case "first-compile":
						lambda.StopPaused(e)
						lambda.DropCompiled(e)
						clearCache(b, cache)
					}
					b.StartTimer()
					res, err := e.Invoke(context.Background(), inv)
					if err != nil {
						b.Fatal(err)
					}
					want := kind
					if kind == "first-compile" {
						want = "cold"
					}
					if res.Start != want {
						b.Fatalf("start %q, want %q", res.Start, want)
					}
					starts = append(starts, res.StartTime)
				}
				b.ReportMetric(float64(median(starts).Microseconds()), "start-µs")
			})
		}
	}
}

// BenchmarkAllocator compares restarts (instantiations) with wazero's
// default linear memory and with the mmap allocator, alternating in one
// run.
func BenchmarkAllocator(b *testing.B) {
	for _, name := range []string{"go-slices", "mmap", "go-slices-again", "mmap-again"} {
		b.Run(name, func(b *testing.B) {
			lambda.UseDefaultAllocator(strings.HasPrefix(name, "go-slices"))
			defer lambda.UseDefaultAllocator(false)
			e, _ := benchEnv(b, lambda.Config{CacheDir: b.TempDir()})
			benchDeploy(b, e, "echo", wasmtest.Example(b, "echo"), lambda.DeployOptions{})
			var starts []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				lambda.StopPaused(e)
				b.StartTimer()
				res, err := e.Invoke(context.Background(), lambda.Invocation{Name: "echo", Body: []byte("x")})
				if err != nil || res.Start != lambda.StartRestart {
					b.Fatalf("%v %q", err, res.Start)
				}
				starts = append(starts, res.StartTime)
			}
			b.ReportMetric(float64(median(starts).Microseconds()), "start-µs")
		})
	}
}

// BenchmarkSnapshotRestart compares restarts (and warm calls) of echo
// with snapshots off (the Go runtime starts in every sandbox) and on
// (sandboxes start from the module's snapshot), alternating in one run.
func BenchmarkSnapshotRestart(b *testing.B) {
	for _, mode := range []string{"off", "on", "off-again", "on-again"} {
		for _, kind := range []string{"restart", "warm"} {
			b.Run("snapshots-"+mode+"/"+kind, func(b *testing.B) {
				e, _ := benchEnv(b, lambda.Config{CacheDir: b.TempDir(), DisableSnapshots: strings.HasPrefix(mode, "off")})
				benchDeploy(b, e, "echo", wasmtest.Example(b, "echo"), lambda.DeployOptions{})
				inv := lambda.Invocation{Name: "echo", Body: []byte("x")}
				if _, err := e.Invoke(context.Background(), inv); err != nil {
					b.Fatal(err)
				}
				var starts, calls []time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if kind == "restart" {
						b.StopTimer()
						lambda.StopPaused(e)
						b.StartTimer()
					}
					t0 := time.Now()
					res, err := e.Invoke(context.Background(), inv)
					calls = append(calls, time.Since(t0))
					if err != nil || res.Start != kind {
						b.Fatalf("%v %q", err, res.Start)
					}
					starts = append(starts, res.StartTime)
				}
				b.ReportMetric(float64(median(starts).Microseconds()), "start-µs")
				b.ReportMetric(float64(median(calls).Microseconds()), "call-µs")
			})
		}
	}
}

// BenchmarkPausedPerGiB holds many paused sandboxes (of sleep) and reports
// how many fit in a GiB, counting their accounted memory (the budget's
// measure) and the process's resident memory growth (RSS, and PSS, which
// counts a page shared by many mappings once), with snapshots off and on.
func BenchmarkPausedPerGiB(b *testing.B) {
	for _, mode := range []string{"snapshots-off", "snapshots-on"} {
		b.Run(mode, func(b *testing.B) { benchPausedPerGiB(b, mode == "snapshots-off") })
	}
}

func benchPausedPerGiB(b *testing.B, off bool) {
	const n = 200
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e, _ := benchEnv(b, lambda.Config{CacheDir: b.TempDir(), MemoryBudget: 64 << 30, DisableSnapshots: off})
		benchDeploy(b, e, "sleep", wasmtest.Example(b, "sleep"), lambda.DeployOptions{MaxInstances: n, TimeoutMS: 60000})
		// One sandbox first, so the snapshot (taken at deploy) and the
		// runtime's own start are outside the measure.
		burst(b, e, "sleep", "0", 1)
		runtime.GC()
		rss0, pss0 := rssBytes(), pssBytes()
		live0 := e.LiveBytes()
		b.StartTimer()
		// n concurrent sleeping calls need n sandboxes, which then stay
		// paused.
		burst(b, e, "sleep", "2000", n)
		b.StopTimer()
		runtime.GC()
		rss, pss := rssBytes()-rss0, pssBytes()-pss0
		s := e.Sandboxes("sleep")
		if s.Paused != n {
			b.Fatalf("paused = %d, want %d", s.Paused, n)
		}
		// Accounted memory: every sandbox, plus the snapshot once.
		live := e.LiveBytes()
		b.ReportMetric(float64(1<<30)/(float64(live)/n), "paused/GiB-budget")
		if rss > 0 {
			b.ReportMetric(float64(1<<30)/(float64(rss)/n), "paused/GiB-rss")
		}
		if pss > 0 {
			b.ReportMetric(float64(1<<30)/(float64(pss)/n), "paused/GiB-pss")
		}
		b.ReportMetric(float64(live-live0)/n/(1<<10), "KiB/sandbox")
	}
}

// BenchmarkBurst is the paper's burst: concurrent calls of a handler that
// sleeps 200 ms, from no sandbox at all (compiled module cached) and with
// every sandbox paused; it reports when the last call finished.
func BenchmarkBurst(b *testing.B) {
	for _, n := range []int{60, 100} {
		for _, state := range []string{"restart", "warm"} {
			b.Run(fmt.Sprintf("%d/%s", n, state), func(b *testing.B) {
				e, _ := benchEnv(b, lambda.Config{CacheDir: b.TempDir()})
				benchDeploy(b, e, "sleep", wasmtest.Example(b, "sleep"), lambda.DeployOptions{MaxInstances: n})
				var walls []time.Duration
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					if state == "warm" {
						burst(b, e, "sleep", "0", n)
					} else {
						lambda.StopPaused(e)
					}
					b.StartTimer()
					walls = append(walls, burst(b, e, "sleep", "200", n))
				}
				b.ReportMetric(float64(median(walls).Milliseconds()), "last-done-ms")
			})
		}
	}
}

// clearCache deletes the compiled modules in a compilation cache
// directory, keeping its directories (wazero made them when it opened it).
func clearCache(b *testing.B, dir string) {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			err = os.Remove(p)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}

// burst runs n concurrent calls and returns when the last finished.
func burst(b *testing.B, e *lambda.Engine, name, body string, n int) time.Duration {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for j := 0; j < n; j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.Invoke(context.Background(), lambda.Invocation{Name: name, Body: []byte(body), Consistency: shard.Session})
			errs <- err
		}()
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return d
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// pssBytes returns the process's proportional set size: a page mapped
// k times counts 1/k each time, so the snapshot's pages shared by many
// sandboxes count once.
func pssBytes() int64 {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// rssBytes returns the process's resident set size.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
