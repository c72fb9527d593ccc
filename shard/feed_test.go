package shard_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/shard"
)

func allChanges(t *testing.T, n *shard.Node, s int, after uint64) []shard.Change {
	t.Helper()
	var out []shard.Change
	for {
		p, err := n.ReadFeed(context.Background(), s, after, 3, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Changes...)
		if !p.More {
			return out
		}
		after = p.Applied
	}
}

func TestFeedRecordsChanges(t *testing.T) {
	n := open(t, shard.Config{Shards: 1})
	ctx := context.Background()
	put := func(k, v string) uint64 {
		r, err := n.Put(ctx, k, []byte(v), shard.Cond{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r.Version
	}
	v1 := put("a", "1")
	v2 := put("b", "2")
	if _, err := n.Delete(ctx, "a", shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Delete(ctx, "absent", shard.Cond{}, nil); err != nil { // no change, no record
		t.Fatal(err)
	}
	if _, err := n.Put(ctx, "b", []byte("x"), shard.Cond{IfMatch: ver(1)}, nil); !errors.Is(err, shard.ErrPrecondition) {
		t.Fatal(err)
	}
	br, err := n.Batch(ctx, []shard.Op{
		{Key: "c", Value: []byte("3")},
		{Space: shard.SystemSpace, Key: "sys", Value: []byte("hidden")},
		{Key: "b", Delete: true},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := allChanges(t, n, 0, 0)
	want := []string{
		fmt.Sprintf("put a=1 @%d", v1), fmt.Sprintf("put b=2 @%d", v2), "delete a", fmt.Sprintf("put c=3 @%d", br.Index), "delete b",
	}
	if len(got) != len(want) {
		t.Fatalf("feed = %+v", got)
	}
	for i, c := range got {
		s := fmt.Sprintf("put %s=%s @%d", c.Key, c.Value, c.Version)
		if c.Delete {
			s = "delete " + c.Key
		}
		if s != want[i] {
			t.Fatalf("change %d = %s, want %s", i, s, want[i])
		}
		if c.Time.IsZero() || time.Since(c.Time) > time.Minute {
			t.Fatalf("change %d time %v", i, c.Time)
		}
	}
	if got[3].Index != got[4].Index || got[3].Seq != 0 || got[4].Seq != 1 {
		t.Fatalf("batch changes %+v", got[3:])
	}
	// Resuming after an index skips exactly what was seen.
	if rest := allChanges(t, n, 0, v2); len(rest) != 3 || rest[0].Key != "a" {
		t.Fatalf("after %d: %+v", v2, rest)
	}
	// WaitFeed wakes on the next change.
	applied := n.AppliedIndex(0)
	done := make(chan error, 1)
	go func() { done <- n.WaitFeed(ctx, 0, applied) }()
	time.Sleep(20 * time.Millisecond)
	put("d", "4")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitFeed did not wake")
	}
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := n.WaitFeed(wctx, 0, n.AppliedIndex(0)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFeed with nothing new: %v", err)
	}
}

func TestFeedRetention(t *testing.T) {
	var limit atomic.Uint64
	limit.Store(1 << 62)
	n := open(t, shard.Config{Shards: 1, FeedRetainEntries: 10, FeedTrimInterval: 20 * time.Millisecond,
		FeedTrimLimit: func(int) uint64 { return limit.Load() }})
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		if _, err := n.Put(ctx, fmt.Sprint("k", i), []byte("v"), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := n.ReadFeed(ctx, 0, n.AppliedIndex(0)-5, 0, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil {
			t.Fatal(err)
		}
		if p.Trimmed > 0 && p.Trimmed+12 >= n.AppliedIndex(0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not trimmed: trimmed %d applied %d", p.Trimmed, n.AppliedIndex(0))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := n.ReadFeed(ctx, 0, 0, 0, shard.ReadOptions{Consistency: shard.Stale}); !errors.Is(err, shard.ErrFeedTrimmed) {
		t.Fatalf("reading from 0 after trimming: %v", err)
	}
	// A trim limit (a trigger's checkpoint) holds the feed back. A trim the
	// loop computed just before the limit was set may still land, but it
	// reaches at most the index applied then (less the retained entries);
	// ignoring the limit would trim past the 30 entries written after.
	applied := n.AppliedIndex(0)
	p, _ := n.ReadFeed(ctx, 0, applied, 0, shard.ReadOptions{Consistency: shard.Stale})
	limit.Store(p.Trimmed)
	for i := 0; i < 30; i++ {
		if _, err := n.Put(ctx, fmt.Sprint("m", i), []byte("v"), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // ten trim intervals
	p2, err := n.ReadFeed(ctx, 0, applied, 0, shard.ReadOptions{Consistency: shard.Stale})
	if err != nil {
		t.Fatalf("reading from %d (applied when the limit %d was set): %v", applied, limit.Load(), err)
	}
	if p2.Trimmed < limit.Load() || p2.Trimmed > applied {
		t.Fatalf("trimmed to %d with the limit at %d (applied %d when it was set)", p2.Trimmed, limit.Load(), applied)
	}
}

// TestFeedTrimsThroughLastChange: the trim point is the index of the
// last change trimmed, never an index past it where only entries without
// changes (system writes, trims) follow: a position at the last change is
// still readable however many such entries come after it.
func TestFeedTrimsThroughLastChange(t *testing.T) {
	n := open(t, shard.Config{Shards: 1, FeedRetainEntries: 5, FeedTrimInterval: 10 * time.Millisecond})
	ctx := context.Background()
	var last uint64
	for i := 0; i < 10; i++ {
		r, err := n.Put(ctx, fmt.Sprint("k", i), []byte("v"), shard.Cond{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		last = r.Version
	}
	for i := 0; i < 20; i++ {
		if _, err := n.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: fmt.Sprint("sys", i), Value: []byte("x")}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := n.ReadFeed(ctx, 0, last, 0, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil {
			t.Fatalf("reading from the last change (%d), %d entries later: %v", last, n.AppliedIndex(0)-last, err)
		}
		if p.Trimmed == last {
			break
		}
		if p.Trimmed > last || time.Now().After(deadline) {
			t.Fatalf("trimmed through %d, the last change is at %d", p.Trimmed, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Nothing more to trim: no trim entries keep coming.
	applied := n.AppliedIndex(0)
	time.Sleep(100 * time.Millisecond)
	if got := n.AppliedIndex(0); got != applied {
		t.Fatalf("applied went from %d to %d with nothing written", applied, got)
	}
}

func TestScanShard(t *testing.T) {
	n := open(t, shard.Config{Shards: 4})
	ctx := context.Background()
	want := map[int]int{}
	for i := 0; i < 3000; i++ {
		k := fmt.Sprintf("o/%04d", i)
		if _, err := n.Put(ctx, k, []byte("v"), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
		want[shard.For(k, 4)]++
	}
	if _, err := n.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: "o/sys", Value: []byte("hidden")}}, nil); err != nil {
		t.Fatal(err)
	}
	total := 0
	for s := 0; s < 4; s++ {
		got := 0
		last := ""
		applied, err := n.ScanShard(ctx, s, []byte("o/"), []byte("o0"), shard.ReadOptions{Consistency: shard.Linearizable}, func(k, v []byte) bool {
			if string(k) <= last || shard.For(string(k), 4) != s {
				t.Fatalf("shard %d: key %q out of order or place", s, k)
			}
			last = string(k)
			got++
			return true
		})
		if err != nil || applied == 0 || got != want[s] {
			t.Fatalf("shard %d: %d records (want %d), applied %d, %v", s, got, want[s], applied, err)
		}
		total += got
	}
	if total != 3000 {
		t.Fatalf("total %d", total)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n.ScanShard(cctx, 0, nil, nil, shard.ReadOptions{Consistency: shard.Stale}, func(k, v []byte) bool { return true }); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled scan: %v", err)
	}
}

// TestReadFeedQuery: a prefix read returns only the keys under it, counts
// its limit in those, never splits a batch, and pages through a backlog of
// other keys (More, with Applied at the last entry examined) without
// skipping any of its own.
func TestReadFeedQuery(t *testing.T) {
	n := open(t, shard.Config{Shards: 1})
	ctx := context.Background()
	var want []string
	for i := range 20000 {
		k := fmt.Sprintf("other/%d", i)
		if i%1000 == 999 {
			k = fmt.Sprintf("mine/%d", i)
			want = append(want, k)
		}
		if i == 5000 { // a batch holding both
			if _, err := n.Batch(ctx, []shard.Op{{Key: "mine/batch-a", Value: []byte("a")}, {Key: "other/batch", Value: []byte("o")},
				{Key: "mine/batch-b", Value: []byte("b")}}, nil); err != nil {
				t.Fatal(err)
			}
			want = append(want, "mine/batch-a", "mine/batch-b")
		}
		if _, err := n.Put(ctx, k, []byte("v"), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after, pages, skipped := uint64(0), 0, 0
	for {
		p, err := n.ReadFeedQuery(ctx, 0, shard.FeedQuery{After: after, Limit: 1, Prefix: "mine/"}, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		skipped += p.Skipped
		for _, c := range p.Changes {
			if c.Index <= after {
				t.Fatalf("change at %d after position %d", c.Index, after)
			}
			got = append(got, c.Key)
		}
		if len(p.Changes) > 1 && p.Changes[0].Index != p.Changes[len(p.Changes)-1].Index {
			t.Fatalf("limit 1 returned %d entries", len(p.Changes))
		}
		if p.Applied < after {
			t.Fatalf("position went back from %d to %d", after, p.Applied)
		}
		after = p.Applied
		if !p.More {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if others := 20000 + 3 - len(want); skipped != others {
		t.Fatalf("pages report %d changes skipped, want %d", skipped, others)
	}
	if pages < 20000/16384+1 {
		t.Fatalf("%d pages: a page examined more than the scan limit", pages)
	}
}
