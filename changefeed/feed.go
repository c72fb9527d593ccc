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
	// ErrExpired is a cursor position the feed no longer retains (HTTP
	// 410): a reader's, or a paused trigger's checkpoint (Triggers.Resume).
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
	// GetIn serves the linearizable probe that bounds a shard's log (see
	// Feed.logEnd).
	GetIn(ctx context.Context, sp shard.Space, key string, ro shard.ReadOptions) (shard.GetResult, error)
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
	// Checked skips the check that Cursor is not ahead of the cluster's
	// log: set it when Cursor came from a Result (or passed CheckCursor).
	Checked bool
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
// req.Prefix, waiting up to req.Wait for the first. Unless req.Checked, a
// cursor position beyond what its shard has committed fails with
// ErrBadCursor (see CheckCursor).
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
		res, progressed, behind, err := f.readOnce(ctx, req.Prefix, cur, req.Limit)
		if err == nil && !req.Checked {
			// Only the client's cursor needs the check: the positions Read
			// moves on to are indexes some replica applied.
			err = f.checkAhead(ctx, cur, behind)
			req.Checked = true
		}
		if err != nil {
			return Result{}, err
		}
		if len(res.Changes) > 0 || !time.Now().Before(deadline) {
			return res, nil
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
// position moved, behind lists the shards whose page was read at an
// applied index below cur's position.
func (f *Feed) readOnce(ctx context.Context, prefix string, cur Cursor, limit int) (res Result, progressed bool, behind []int, err error) {
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
			return Result{}, false, nil, mapErr(errs[s])
		}
		p := pages[s]
		if p.Applied < cur[s] {
			behind = append(behind, s)
		}
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
	return res, progressed, behind, nil
}

// CheckCursor fails with ErrBadCursor when some position of c is beyond
// what its shard has committed: a cursor from another cluster, or from
// this one before it was rebuilt. Reading it would skip, without a word,
// every change up to that position once the shard got there. It costs
// nothing for positions this node's replicas have applied.
func (f *Feed) CheckCursor(ctx context.Context, c Cursor) error {
	var behind []int
	for s := 0; s < f.src.Shards(); s++ {
		if c[s] > f.src.AppliedIndex(s) {
			behind = append(behind, s)
		}
	}
	return f.checkAhead(ctx, c, behind)
}

// checkAhead checks c's positions for the shards listed, those a read
// found beyond the replica it read.
//
// The page a feed read returns is a stale read: of this node's replica
// when it holds one, else of the shard's leader. A replica that lags — or
// a leader just elected, which may not have applied all its predecessor
// committed — can be behind a perfectly valid cursor obtained elsewhere,
// so its applied index cannot condemn a cursor. Only the shard's commit
// index can: every position a feed ever handed out is an index some
// replica applied, hence committed. So each suspect shard gets a
// linearizable read (logEnd): the leader confirms its read index, and the
// reading replica — this one once it has applied that index, else the
// leader — reports an applied index at or past every commit made before
// the check. A position beyond that is ahead of the log. When the probe
// fails (no leader, say), so does the read: the cursor can be neither
// trusted nor condemned, and the client retries.
func (f *Feed) checkAhead(ctx context.Context, c Cursor, shards []int) error {
	if len(shards) == 0 {
		return nil
	}
	ends := make([]uint64, len(shards))
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ends[i], errs[i] = f.logEnd(ctx, s)
		}()
	}
	wg.Wait()
	for i, s := range shards {
		if errs[i] != nil {
			return fmt.Errorf("changefeed: checking the cursor's position %d for shard %d: %w", c[s], s, mapErr(errs[i]))
		}
		if c[s] > ends[i] {
			return fmt.Errorf("%w: it is ahead of this cluster's log: shard %d position %d, but the shard has committed only through %d "+
				"(a cursor from another cluster, or from before this one was rebuilt?); start again from now or beginning",
				ErrBadCursor, s, c[s], ends[i])
		}
	}
	return nil
}

// probeSuffix names the (never written) system key whose linearizable
// read bounds a shard's log.
const probeSuffix = "changefeed/log-end"

// logEnd returns an index at or past shard s's commit index as of the
// call: the applied index a linearizable read of the shard observed (the
// session token a read returns records it).
func (f *Feed) logEnd(ctx context.Context, s int) (uint64, error) {
	key := shard.TagFor(s, f.src.Shards()) + probeSuffix
	res, err := f.src.GetIn(ctx, shard.SystemSpace, key, shard.ReadOptions{Consistency: shard.Linearizable})
	if err != nil {
		return 0, err
	}
	return res.Session.Index(s), nil
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
