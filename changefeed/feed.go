package changefeed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"lambdadb/shard"
)

// Errors returned by a Feed.
var (
	// ErrExpired is a cursor position the feed no longer retains (HTTP 410).
	ErrExpired = errors.New("changefeed: cursor expired")
	// ErrUnavailable is a shard this node cannot read the feed of.
	ErrUnavailable = errors.New("changefeed: shard feed unavailable here")
)

// Source is what a Feed reads; *shard.Node satisfies it.
type Source interface {
	Shards() int
	ReadFeed(ctx context.Context, s int, after uint64, limit int, ro shard.ReadOptions) (shard.FeedPage, error)
	WaitFeed(ctx context.Context, s int, after uint64) error
	AppliedIndex(s int) uint64
}

// Feed serves change streams from one node's replicas.
type Feed struct {
	src Source
}

// New returns a Feed over src.
func New(src Source) *Feed { return &Feed{src: src} }

// Limits of a read.
const (
	DefaultLimit = 1000
	MaxLimit     = 10000
	MaxWait      = 60 * time.Second
)

// Request is one read of the feed.
type Request struct {
	Prefix string
	Cursor Cursor
	// Limit bounds the changes returned (per shard, a whole entry is never
	// split). Default DefaultLimit.
	Limit int
	// Wait is how long to wait for a first change when there is none.
	Wait time.Duration
}

// Result is what Read returns: Changes in commit order per key (grouped by
// shard, each shard's in index order), and the cursor to continue from.
type Result struct {
	Changes []shard.Change
	Cursor  Cursor
}

// Now returns a cursor at the current end of every shard's feed on this
// node.
func (f *Feed) Now() Cursor {
	c := Cursor{}
	for s := 0; s < f.src.Shards(); s++ {
		c[s] = f.src.AppliedIndex(s)
	}
	return c
}

// Beginning returns a cursor before the oldest change every shard retains.
func (f *Feed) Beginning(ctx context.Context) (Cursor, error) {
	c := Cursor{}
	for s := 0; s < f.src.Shards(); s++ {
		p, err := f.src.ReadFeed(ctx, s, ^uint64(0)-1, 1, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil && !errors.Is(err, shard.ErrFeedTrimmed) {
			return nil, mapErr(err)
		}
		c[s] = p.Trimmed
	}
	return c, nil
}

// Read returns the changes after req.Cursor whose keys start with
// req.Prefix, waiting up to req.Wait for the first.
func (f *Feed) Read(ctx context.Context, req Request) (Result, error) {
	if req.Limit <= 0 {
		req.Limit = DefaultLimit
	}
	req.Limit = min(req.Limit, MaxLimit)
	req.Wait = min(req.Wait, MaxWait)
	deadline := time.Now().Add(req.Wait)
	cur := Cursor{}
	for s, p := range req.Cursor {
		cur[s] = p
	}
	for {
		res, progressed, err := f.readOnce(ctx, req.Prefix, cur, req.Limit)
		if err != nil || len(res.Changes) > 0 || !time.Now().Before(deadline) {
			return res, err
		}
		cur = res.Cursor
		if progressed {
			continue // only changes outside the prefix: read on
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		f.waitAny(wctx, cur)
		cancel()
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
}

// readOnce reads every shard once; progressed reports that some shard's
// position moved.
func (f *Feed) readOnce(ctx context.Context, prefix string, cur Cursor, limit int) (res Result, progressed bool, err error) {
	n := f.src.Shards()
	pages := make([]shard.FeedPage, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for s := 0; s < n; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pages[s], errs[s] = f.src.ReadFeed(ctx, s, cur[s], limit, shard.ReadOptions{Consistency: shard.Stale})
		}()
	}
	wg.Wait()
	res = Result{Cursor: Cursor{}}
	per := make([][]shard.Change, n)
	for s := 0; s < n; s++ {
		if errs[s] != nil {
			return Result{}, false, mapErr(errs[s])
		}
		p := pages[s]
		next := max(cur[s], p.Applied)
		progressed = progressed || next > cur[s]
		for _, c := range p.Changes {
			if strings.HasPrefix(c.Key, prefix) {
				per[s] = append(per[s], c)
			}
		}
		res.Cursor[s] = next
	}
	res.Changes = mergeByTime(per)
	return res, progressed, nil
}

// mergeByTime interleaves the shards' changes by commit time, keeping each
// shard's own order (its index order) whatever the leaders' clocks did.
func mergeByTime(per [][]shard.Change) []shard.Change {
	total := 0
	for _, l := range per {
		total += len(l)
	}
	out := make([]shard.Change, 0, total)
	heads := make([]int, len(per))
	for len(out) < total {
		best := -1
		for s, l := range per {
			if heads[s] < len(l) && (best < 0 || l[heads[s]].Time.Before(per[best][heads[best]].Time)) {
				best = s
			}
		}
		out = append(out, per[best][heads[best]])
		heads[best]++
	}
	return out
}

// waitAny returns when some shard applies an entry after cur, or ctx ends.
func (f *Feed) waitAny(ctx context.Context, cur Cursor) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, f.src.Shards())
	for s := 0; s < f.src.Shards(); s++ {
		go func() {
			if f.src.WaitFeed(ctx, s, cur[s]) == nil {
				done <- struct{}{}
			}
		}()
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func mapErr(err error) error {
	switch {
	case errors.Is(err, shard.ErrFeedTrimmed):
		return fmt.Errorf("%w: %v", ErrExpired, err)
	case errors.Is(err, shard.ErrNotHosted):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}
