package changefeed_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/testnode"
	"lambdadb/shard"
)

// countingSource counts the feed reads a Feed makes of a real node.
type countingSource struct {
	*shard.Node
	reads atomic.Int64
}

func (c *countingSource) ReadFeedQuery(ctx context.Context, s int, q shard.FeedQuery, ro shard.ReadOptions) (shard.FeedPage, error) {
	c.reads.Add(1)
	return c.Node.ReadFeedQuery(ctx, s, q, ro)
}

func newFeed(t *testing.T, cfg changefeed.FeedConfig) (*shard.Node, *countingSource, *changefeed.Feed) {
	t.Helper()
	n := testnode.New(t)
	src := &countingSource{Node: n}
	cfg.Source = src
	f := changefeed.NewFeed(cfg)
	t.Cleanup(f.Close)
	return n, src, f
}

func put(t testing.TB, n *shard.Node, k, v string) {
	t.Helper()
	if _, err := n.Put(context.Background(), k, []byte(v), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
}

// waitSubscribers waits until f has n subscribers open.
func waitSubscribers(t *testing.T, f *changefeed.Feed, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for f.Stats().Subscribers != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers, want %d", f.Stats().Subscribers, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdleSubscribersShareTheTails: 200 long polls on prefixes nothing is
// written to, while 100 changes are written, make the node read its feed
// about as often as one poll would — not once per poll per change — and
// every poll ends at its deadline with nothing but a cursor past the
// writes.
//
// The tails are given 64 KiB per shard, less than the writes, so they keep
// the older changes thin (no value): the polls, whose prefixes match
// none of them, still never read storage.
func TestIdleSubscribersShareTheTails(t *testing.T) {
	n, src, f := newFeed(t, changefeed.FeedConfig{TailBytes: 1})
	ctx := context.Background()
	now, err := f.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const polls, writes = 200, 100
	var wg sync.WaitGroup
	results := make([]changefeed.Result, polls)
	errs := make([]error, polls)
	for i := range polls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = f.Read(ctx, changefeed.Request{Prefix: fmt.Sprintf("idle/%d/", i), Cursor: now, Checked: true, Wait: 3 * time.Second})
		}()
	}
	// Count once every poll has subscribed (and so the tails run).
	waitSubscribers(t, f, polls)
	before := src.reads.Load()
	value := string(make([]byte, 8<<10))
	for i := range writes {
		put(t, n, fmt.Sprintf("busy/%d", i), value)
	}
	wg.Wait()
	reads := src.reads.Load() - before
	t.Logf("%d feed reads for %d writes and %d idle polls", reads, writes, polls)
	// One tail per shard reads each applied batch once; a read per poll per
	// change would be polls*writes = 20,000.
	if reads > 4*writes {
		t.Fatalf("%d feed reads for %d writes and %d idle polls: the polls are not sharing the tails", reads, writes, polls)
	}
	for i := range polls {
		if errs[i] != nil {
			t.Fatalf("poll %d: %v", i, errs[i])
		}
		if len(results[i].Changes) != 0 {
			t.Fatalf("poll %d got %d changes under a prefix nothing was written to", i, len(results[i].Changes))
		}
	}
	// The cursors moved past the writes: resuming from one reads nothing
	// older.
	total := uint64(0)
	for s, p := range results[0].Cursor {
		total += p - now[s]
	}
	if total < writes {
		t.Fatalf("cursor moved %d positions for %d writes", total, writes)
	}
	st := f.Stats()
	if st.Subscribers != 0 {
		t.Fatalf("%d subscribers left open", st.Subscribers)
	}
	// Only a poll that started before its shard's tail reads storage.
	if st.CatchUpReads > uint64(2*n.Shards()) {
		t.Fatalf("%d reads from storage for %d idle polls over %d shards: the thin tail did not cover them", st.CatchUpReads, polls, n.Shards())
	}
}

// TestMatchingSubscriberWokenAtOnce: a long poll is woken by a change under
// its prefix, not by its deadline.
func TestMatchingSubscriberWokenAtOnce(t *testing.T) {
	n, _, f := newFeed(t, changefeed.FeedConfig{})
	ctx := context.Background()
	now, err := f.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const wait = 20 * time.Second
	done := make(chan changefeed.Result, 1)
	go func() {
		res, err := f.Read(ctx, changefeed.Request{Prefix: "hot/", Cursor: now, Checked: true, Wait: wait})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	waitSubscribers(t, f, 1)
	put(t, n, "cold/1", "x")
	start := time.Now()
	put(t, n, "hot/1", "y")
	res := <-done
	if elapsed := time.Since(start); elapsed >= wait {
		t.Fatalf("the poll returned at its deadline (%v), not when its change arrived", elapsed)
	}
	if len(res.Changes) != 1 || res.Changes[0].Key != "hot/1" || string(res.Changes[0].Value) != "y" {
		t.Fatalf("changes = %+v, want hot/1=y alone", res.Changes)
	}
}

// TestSubscriberLimits: past MaxSubscribersPerClient a client gets
// ErrTooManySubscribers, past MaxSubscribers anyone gets ErrOverloaded;
// closing a subscription frees its place.
func TestSubscriberLimits(t *testing.T) {
	_, _, f := newFeed(t, changefeed.FeedConfig{MaxSubscribers: 3, MaxSubscribersPerClient: 2})
	a1, err := f.Open("", "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Open("x", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Open("", "a"); !errors.Is(err, changefeed.ErrTooManySubscribers) {
		t.Fatalf("third of client a: %v, want ErrTooManySubscribers", err)
	}
	if _, err := f.Open("", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Open("", "c"); !errors.Is(err, changefeed.ErrOverloaded) {
		t.Fatalf("fourth on the node: %v, want ErrOverloaded", err)
	}
	a1.Close()
	a1.Close() // twice is harmless
	if _, err := f.Open("", "c"); err != nil {
		t.Fatalf("after a close: %v", err)
	}
	if st := f.Stats(); st.Subscribers != 3 {
		t.Fatalf("Subscribers = %d, want 3", st.Subscribers)
	}
}

// TestReadsAcrossTailAndStorage: with tails too small to hold the history,
// a reader from the beginning catches up from storage and then follows the
// tail, seeing every change once, in order per shard, while writes go on.
func TestReadsAcrossTailAndStorage(t *testing.T) {
	n, _, f := newFeed(t, changefeed.FeedConfig{TailBytes: 1}) // 64 KiB per shard
	ctx := context.Background()
	begin, err := f.Beginning(ctx)
	if err != nil {
		t.Fatal(err)
	}
	value := string(make([]byte, 4<<10))
	const total = 400
	for i := range total / 2 {
		put(t, n, fmt.Sprintf("k/%03d", i), value)
	}
	// Keep a subscriber open so the tails run and fill while the rest is
	// written.
	keep, err := f.Open("none/", "keeper")
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	writeDone := make(chan struct{})
	go func() {
		defer close(writeDone)
		for i := total / 2; i < total; i++ {
			put(t, n, fmt.Sprintf("k/%03d", i), value)
		}
	}()
	seen := map[string]int{}
	last := map[int]uint64{}
	cur := begin
	for len(seen) < total {
		res, err := f.Read(ctx, changefeed.Request{Prefix: "k/", Cursor: cur, Checked: true, Limit: 37, MaxBytes: 64 << 10, Wait: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Changes) == 0 {
			t.Fatalf("a read returned nothing with %d of %d changes seen", len(seen), total)
		}
		for _, c := range res.Changes {
			seen[c.Key]++
			if c.Index <= last[c.Shard] {
				t.Fatalf("shard %d: index %d after %d", c.Shard, c.Index, last[c.Shard])
			}
			last[c.Shard] = c.Index
		}
		cur = res.Cursor
	}
	<-writeDone
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s seen %d times", k, c)
		}
	}
	if st := f.Stats(); st.CatchUpReads == 0 || st.TailReads == 0 {
		t.Fatalf("stats %+v: want reads from both storage and the tails", st)
	}
}

// TestReadWithoutWaitSeesAcknowledgedWrites: a read with no wait made
// after a write was acknowledged holds that write, though the shard's
// tail (kept running by another subscriber) may not have read it yet.
func TestReadWithoutWaitSeesAcknowledgedWrites(t *testing.T) {
	n, _, f := newFeed(t, changefeed.FeedConfig{})
	ctx := context.Background()
	idle, err := f.Open("idle/", "keeper")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	go func() {
		_, _ = idle.Read(ctx, changefeed.Request{Cursor: changefeed.Cursor{}, Checked: true, Wait: time.Minute})
	}()
	cur, err := f.Now(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		k := fmt.Sprintf("k/%d", i)
		put(t, n, k, "v")
		res, err := f.Read(ctx, changefeed.Request{Prefix: "k/", Cursor: cur})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Changes) != 1 || res.Changes[0].Key != k {
			t.Fatalf("write %d: read without wait returned %d changes, want %s", i, len(res.Changes), k)
		}
		cur = res.Cursor
	}
}
