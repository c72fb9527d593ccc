//go:build soak

package soak

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"lambdadb/bench"
)

// The bound the soak asserts. One node under every flood at once —
// idle long polls, never-reading WebSockets on the written prefix, stalled
// module uploads and writers of 10 KB values — must stay within
// maxGrowth of its resident size before the floods. Measured: +440 to
// +670 MiB over 40 s (Pebble's memtables, the admitted halves of the
// stalled modules, the feed's tails, encodings and messages in flight,
// and the garbage collector's headroom). Before the feed tails, body
// budgets and stream deadlines, the floods one at a time grew a node by
// 1.7 to 15 GiB.
const maxGrowth = 1 << 30

func binPath(t *testing.T) string {
	if p := os.Getenv("LAMBDADB_BIN"); p != "" {
		return p
	}
	p, err := filepath.Abs("../bin/lambdadb")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func duration(t *testing.T) time.Duration {
	d := 3 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SOAK_DURATION=%q: %v", v, err)
		}
	}
	return d
}

// TestSoakOneNode runs every flood at once against one node.
func TestSoakOneNode(t *testing.T) {
	ctx := context.Background()
	d := duration(t)
	c, err := bench.StartLambdaDBWith(bench.LambdaOptions{Bin: binPath(t), Nodes: 1, Shards: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	addr, pid := c.Addrs()[0], c.Procs[0].Pid()
	before, err := bench.RSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	rss := bench.SampleRSS(pid)

	polls := &bench.IdlePolls{Addr: addr, N: 1000, Wait: 10 * time.Second, Prefix: "idle/"}
	polls.Start(ctx)
	// From another loopback address: a client of its own, not counted
	// with the polls against --max-feed-subscribers-per-client.
	sockets, refused, err := bench.OpenDeadSockets(ctx, addr, "127.0.0.2", 300, "w/")
	if err != nil {
		t.Fatal(err)
	}
	defer sockets.Close()
	uploads := &bench.StalledUploads{Addr: addr, N: 100, Size: 32 << 20}
	uploads.Start(ctx)
	w := bench.Writers{Addrs: []string{addr}, N: 16, ValueBytes: 10 << 10, Prefix: "w/", HonorRetryAfter: true}
	t.Logf("flooding %s for %v: 16 writers, 1000 idle polls, %d never-reading streams (%d refused), 100 stalled uploads", addr, d, 300-refused, refused)
	res := w.Run(ctx, d)
	up := uploads.Wait(ctx, time.Minute)
	ps := polls.Stop()
	peak, err := rss.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("writes: %d acknowledged (%.0f/s), %d refused, %d failed (%s)", res.OK, res.Rate(), res.Shed, res.Failed, res.FirstError)
	t.Logf("polls: %d answers, %d late (max %d ms past their wait), %d refused, %d failed", ps.Answers, ps.Late, ps.MaxLateMS, ps.Refused, ps.Failed)
	t.Logf("uploads: %d cut after stalling, %d refused, %d still open; answers %v", up.Cut, up.Refused, up.Open, up.Statuses)
	t.Logf("resident memory: %d MiB before, %d MiB at most (+%d MiB; bound +%d MiB)", before>>20, peak>>20, (peak-before)>>20, maxGrowth>>20)
	if peak-before > maxGrowth {
		t.Errorf("the node grew by %d MiB under the floods, more than %d MiB", (peak-before)>>20, maxGrowth>>20)
	}
	if up.Open > 0 {
		t.Errorf("%d stalled uploads still open a minute after the floods", up.Open)
	}
	if res.OK == 0 {
		t.Fatalf("no write acknowledged: %s", res.FirstError)
	}
	missing, wrong, err := bench.VerifyAcked(ctx, addr, res.Acked, w.ValueBytes)
	if err != nil {
		t.Fatal(err)
	}
	if missing > 0 || wrong > 0 {
		t.Fatalf("of %d acknowledged writes, %d missing and %d with another value", len(res.Acked), missing, wrong)
	}
	t.Logf("all %d acknowledged writes read back", len(res.Acked))
}

// TestSoakWriteFlood runs 1,000 writers that ignore Retry-After against 3
// nodes, then reads back every write they acknowledged.
func TestSoakWriteFlood(t *testing.T) {
	ctx := context.Background()
	d := duration(t) / 2
	c, err := bench.StartLambdaDBWith(bench.LambdaOptions{Bin: binPath(t), Nodes: 3, Shards: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	w := bench.Writers{Addrs: c.Addrs(), N: 1000, ValueBytes: 256, Prefix: "f/"}
	res := w.Run(ctx, d)
	lat := bench.Summarize(res.LatenciesMS)
	t.Logf("writes: %d acknowledged (%.0f/s; p50 %.0f ms, p99 %.0f ms), %d refused, %d failed (%s)",
		res.OK, res.Rate(), lat.P50, lat.P99, res.Shed, res.Failed, res.FirstError)
	if res.OK == 0 {
		t.Fatalf("no write acknowledged: %s", res.FirstError)
	}
	missing, wrong, err := bench.VerifyAcked(ctx, c.Addrs()[1], res.Acked, w.ValueBytes)
	if err != nil {
		t.Fatal(err)
	}
	if missing > 0 || wrong > 0 {
		t.Fatalf("of %d acknowledged writes, %d missing and %d with another value", len(res.Acked), missing, wrong)
	}
	t.Logf("all %d acknowledged writes read back", len(res.Acked))
}
