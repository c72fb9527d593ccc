package changefeed

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"lambdadb/namespace"
	"lambdadb/shard"
)

// Errors returned by a Feed.
var (
	// ErrExpired is a cursor position the feed no longer retains (HTTP
	// 410): a reader's, or a paused trigger's checkpoint (Triggers.Resume).
	ErrExpired = errors.New("changefeed: cursor expired")
	// ErrUnavailable is a shard this node cannot read the feed of.
	ErrUnavailable = errors.New("changefeed: shard feed unavailable here")
	// ErrOverloaded is a subscriber beyond the node's
	// FeedConfig.MaxSubscribers (HTTP 503, retry later).
	ErrOverloaded = errors.New("changefeed: too many feed subscribers on this node")
	// ErrTooManySubscribers is a subscriber beyond its client's
	// FeedConfig.MaxSubscribersPerClient (HTTP 429).
	ErrTooManySubscribers = errors.New("changefeed: too many feed subscribers from this client")
	// ErrClosed is a read of a closed Feed.
	ErrClosed = errors.New("changefeed: feed closed")
)

// Source is what a Feed reads; *shard.Node satisfies it.
type Source interface {
	Shards() int
	ReadFeed(ctx context.Context, s int, after uint64, limit int, ro shard.ReadOptions) (shard.FeedPage, error)
	// ReadFeedQuery reads a page of a shard's feed, the changes under a
	// prefix only (shard.Node.ReadFeedQuery).
	ReadFeedQuery(ctx context.Context, s int, q shard.FeedQuery, ro shard.ReadOptions) (shard.FeedPage, error)
	WaitFeed(ctx context.Context, s int, after uint64) error
	AppliedIndex(s int) uint64
	// GetIn serves the linearizable probe that bounds a shard's log (see
	// Feed.logEnd).
	GetIn(ctx context.Context, sp shard.Space, key string, ro shard.ReadOptions) (shard.GetResult, error)
}

// FeedConfig configures a Feed. Zero fields take their defaults.
type FeedConfig struct {
	// Source is the node whose feeds are read. Required.
	Source Source
	// MaxSubscribers bounds the reads (long polls and streams) open on
	// the node at once; beyond it a read fails with ErrOverloaded.
	// Default DefaultMaxSubscribers.
	MaxSubscribers int
	// MaxSubscribersPerClient bounds them per Request.Client; beyond it a
	// read fails with ErrTooManySubscribers. Default
	// DefaultMaxSubscribersPerClient.
	MaxSubscribersPerClient int
	// TailBytes bounds the recent changes the node's shared tails hold,
	// all shards together (each shard gets an equal part, at least 64
	// KiB). Default DefaultTailBytes.
	TailBytes int
	// CatchUpReads bounds the reads from storage running at once for
	// subscribers older than the tails. Default DefaultCatchUpReads.
	CatchUpReads int
	// TailIdle is how long the tails keep following their shards after
	// the last subscriber left. Default DefaultTailIdle.
	TailIdle time.Duration
}

// FeedConfig defaults.
const (
	DefaultMaxSubscribers          = 4096
	DefaultMaxSubscribersPerClient = 1024
	DefaultTailBytes               = 16 << 20
	DefaultCatchUpReads            = 8
	DefaultTailIdle                = 10 * time.Second
)

// Feed serves change streams from one node's replicas: every subscriber
// reads the node's shared tails (see tail.go), older positions from
// storage.
type Feed struct {
	cfg FeedConfig
	hub *hub
}

// New returns a Feed over src with the default FeedConfig.
func New(src Source) *Feed { return NewFeed(FeedConfig{Source: src}) }

// NewFeed returns a Feed configured by cfg.
func NewFeed(cfg FeedConfig) *Feed {
	if cfg.MaxSubscribers <= 0 {
		cfg.MaxSubscribers = DefaultMaxSubscribers
	}
	if cfg.MaxSubscribersPerClient <= 0 {
		cfg.MaxSubscribersPerClient = DefaultMaxSubscribersPerClient
	}
	if cfg.TailBytes <= 0 {
		cfg.TailBytes = DefaultTailBytes
	}
	if cfg.CatchUpReads <= 0 {
		cfg.CatchUpReads = DefaultCatchUpReads
	}
	if cfg.TailIdle <= 0 {
		cfg.TailIdle = DefaultTailIdle
	}
	f := &Feed{cfg: cfg}
	f.hub = newHub(f, cfg.Source.Shards())
	return f
}

// Close stops the tails; reads then fail with ErrClosed.
func (f *Feed) Close() { f.hub.close() }

// FeedStats are a Feed's gauges and counters.
type FeedStats struct {
	Subscribers  int    // open now
	TailBytes    int64  // held by the tails now
	TailReads    uint64 // reads of the shards' feeds by the tails
	CatchUpReads uint64 // reads from storage for subscribers behind the tails
}

// Stats returns f's current figures.
func (f *Feed) Stats() FeedStats {
	f.hub.mu.Lock()
	subs := f.hub.subs
	f.hub.mu.Unlock()
	return FeedStats{Subscribers: subs, TailBytes: f.hub.tailHeldNow.Load(),
		TailReads: f.hub.tailReads.Load(), CatchUpReads: f.hub.catchUps.Load()}
}

// Limits of a read.
const (
	DefaultLimit = 1000
	MaxLimit     = 10000
	MaxWait      = 60 * time.Second
	// DefaultMaxBytes bounds the keys and values one read returns (a
	// whole entry is never split, so one entry may pass it).
	DefaultMaxBytes = 1 << 20
)

// Request is one read of the feed.
type Request struct {
	Prefix string
	Cursor Cursor
	// Limit bounds the changes returned per shard (a whole entry is never
	// split). Default DefaultLimit.
	Limit int
	// MaxBytes bounds the bytes of keys and values returned, all shards
	// together (a whole entry is never split). Default DefaultMaxBytes.
	MaxBytes int
	// Wait is how long to wait for a first change when there is none.
	Wait time.Duration
	// Checked skips the check that Cursor is not ahead of the cluster's
	// log: set it when Cursor came from a Result, Now or Beginning (or
	// passed CheckCursor).
	Checked bool
	// Client names the caller for FeedConfig.MaxSubscribersPerClient (a
	// remote address, say); "" is a client like any other.
	Client string
}

// Result is what Read returns: Changes in commit order per key (grouped by
// shard, each shard's in index order), and the cursor to continue from.
type Result struct {
	Changes []shard.Change
	Cursor  Cursor
}

// Now returns a cursor at the current end of every shard's feed: this
// node's applied index for the shards it holds a replica of, the leader's
// for the others.
func (f *Feed) Now(ctx context.Context) (Cursor, error) {
	n := f.cfg.Source.Shards()
	c := Cursor{}
	errs := make([]error, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for s := 0; s < n; s++ {
		if a := f.cfg.Source.AppliedIndex(s); a > 0 {
			c[s] = a
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := f.cfg.Source.ReadFeedQuery(ctx, s, shard.FeedQuery{After: ^uint64(0) - 1, Limit: 1}, shard.ReadOptions{Consistency: shard.Stale})
			if errors.Is(err, shard.ErrFeedTrimmed) {
				err = nil
			}
			mu.Lock()
			c[s], errs[s] = p.Applied, err
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, mapErr(err)
		}
	}
	return c, nil
}

// Beginning returns a cursor before the oldest change every shard retains.
func (f *Feed) Beginning(ctx context.Context) (Cursor, error) {
	c := Cursor{}
	for s := 0; s < f.cfg.Source.Shards(); s++ {
		p, err := f.cfg.Source.ReadFeedQuery(ctx, s, shard.FeedQuery{After: ^uint64(0) - 1, Limit: 1}, shard.ReadOptions{Consistency: shard.Stale})
		if err != nil && !errors.Is(err, shard.ErrFeedTrimmed) {
			return nil, mapErr(err)
		}
		c[s] = p.Trimmed
	}
	return c, nil
}

// Open registers a subscriber under prefix for client, counted against the
// node's limits until Close: ErrOverloaded past MaxSubscribers,
// ErrTooManySubscribers past MaxSubscribersPerClient. A stream holds one
// Subscription for its life and reads through it.
func (f *Feed) Open(prefix, client string) (*Subscription, error) {
	return f.hub.subscribe(prefix, client)
}

// Close releases the subscription.
func (sub *Subscription) Close() { sub.f.hub.unsubscribe(sub) }

// Read opens a subscription for req.Prefix and req.Client, reads once
// through it and closes it.
func (f *Feed) Read(ctx context.Context, req Request) (Result, error) {
	sub, err := f.Open(req.Prefix, req.Client)
	if err != nil {
		return Result{}, err
	}
	defer sub.Close()
	return sub.Read(ctx, req)
}

// Read returns the changes after req.Cursor whose keys start with the
// subscription's prefix (req.Prefix is ignored), waiting up to req.Wait
// for the first. Unless req.Checked, a cursor position beyond what its
// shard has committed fails with ErrBadCursor (see CheckCursor).
func (sub *Subscription) Read(ctx context.Context, req Request) (Result, error) {
	f := sub.f
	if req.Limit <= 0 {
		req.Limit = DefaultLimit
	}
	req.Limit = min(req.Limit, MaxLimit)
	if req.MaxBytes <= 0 {
		req.MaxBytes = DefaultMaxBytes
	}
	req.Wait = min(req.Wait, MaxWait)
	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	expired := req.Wait <= 0
	cur := Cursor{}
	for s, p := range req.Cursor {
		cur[s] = p
	}
	for {
		res, again, behind, err := f.collect(ctx, sub.prefix, cur, req.Limit, req.MaxBytes, expired)
		if err == nil && !req.Checked {
			// Only the client's cursor needs the check: the positions Read
			// moves on to are indexes some replica applied.
			err = f.checkAhead(ctx, cur, behind)
			req.Checked = true
		}
		if err != nil {
			return Result{}, err
		}
		if len(res.Changes) > 0 || expired {
			return res, nil
		}
		cur = res.Cursor
		if again {
			continue // read from storage, and there is more: read on
		}
		select {
		case <-sub.wake:
		case <-timer.C:
			expired = true
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

// collect reads every shard once after cur: from its tail when the tail
// holds what the reader needs, else from storage. again reports a shard
// read from storage that has more to read, or left for the next read
// because the answer was full; behind lists the shards whose position in
// cur is beyond what was read of them (see checkAhead). With fresh (the
// read that answers whatever there is, wait 0 or the wait over), a tail
// that has not yet caught up with what its shard applied is passed over
// for storage: a change acknowledged to a writer before the read began is
// in the answer, though the tail's goroutine may not have read it yet.
func (f *Feed) collect(ctx context.Context, prefix string, cur Cursor, limit, maxBytes int, fresh bool) (res Result, again bool, behind []int, err error) {
	n := f.cfg.Source.Shards()
	per := make([][]shard.Change, n)
	next := make([]uint64, n)
	var cold []int
	for s := 0; s < n; s++ {
		t := f.hub.tails[s]
		applied := f.cfg.Source.AppliedIndex(s) // before the tail is read
		var ok bool
		if per[s], next[s], ok = t.collect(cur[s], prefix, limit); !ok {
			cold = append(cold, s)
			continue
		}
		if fresh && next[s] < applied && len(per[s]) < limit {
			per[s], next[s] = nil, 0
			cold = append(cold, s)
			continue
		}
		t.mu.Lock()
		end := t.end
		t.mu.Unlock()
		if cur[s] > end && cur[s] > f.cfg.Source.AppliedIndex(s) {
			behind = append(behind, s)
		}
	}
	// Shards behind their tails are read from storage one after another,
	// each within what the answer still has room for, starting at a
	// random one so none is always last: a reader holds about maxBytes
	// at a time, however many shards it is behind on.
	room := maxBytes
	for s := 0; s < n; s++ {
		for _, c := range per[s] {
			room -= len(c.Key) + len(c.Value)
		}
	}
	first := 0
	if len(cold) > 1 {
		first = rand.IntN(len(cold))
	}
	for k := range cold {
		s := cold[(first+k)%len(cold)]
		if room <= 0 {
			next[s], again = cur[s], true // read it next time
			continue
		}
		p, err := f.readStorage(ctx, s, cur[s], limit, prefix, room)
		if err != nil {
			return Result{}, false, nil, mapErr(err)
		}
		if p.Applied < cur[s] {
			behind = append(behind, s)
		}
		next[s] = max(cur[s], p.Applied)
		again = again || p.More
		for _, c := range p.Changes {
			if namespace.HasPrefix(c.Key, prefix) {
				per[s] = append(per[s], c)
				room -= len(c.Key) + len(c.Value)
			}
		}
	}
	res.Changes, next = cutBytes(per, next, cur, maxBytes)
	res.Cursor = Cursor{}
	for s := 0; s < n; s++ {
		res.Cursor[s] = next[s]
	}
	return res, again, behind, nil
}

// readStorage reads shard s's feed after position after, the changes
// under prefix, through one of the node's catch-up slots.
func (f *Feed) readStorage(ctx context.Context, s int, after uint64, limit int, prefix string, maxBytes int) (shard.FeedPage, error) {
	select {
	case f.hub.catchUp <- struct{}{}:
	case <-ctx.Done():
		return shard.FeedPage{}, ctx.Err()
	}
	defer func() { <-f.hub.catchUp }()
	f.hub.catchUps.Add(1)
	return f.cfg.Source.ReadFeedQuery(ctx, s, shard.FeedQuery{After: after, Limit: limit, Prefix: prefix, MaxBytes: maxBytes},
		shard.ReadOptions{Consistency: shard.Stale})
}

// cutBytes merges the shards' changes by commit time and keeps about maxBytes
// of them (whole entries; at least one). A shard whose changes were cut
// resumes after the last one kept (or where it was, cur): next is adjusted
// to match.
func cutBytes(per [][]shard.Change, next []uint64, cur Cursor, maxBytes int) ([]shard.Change, []uint64) {
	merged := mergeByTime(per)
	bytes := 0
	kept := make([]shard.Change, 0, len(merged))
	lastKept := map[int]uint64{}
	cutShards := map[int]bool{}
	for _, c := range merged {
		if cutShards[c.Shard] {
			continue
		}
		last, ok := lastKept[c.Shard]
		if len(kept) > 0 && bytes >= maxBytes && !(ok && last == c.Index) {
			cutShards[c.Shard] = true
			continue
		}
		kept = append(kept, c)
		bytes += len(c.Key) + len(c.Value)
		lastKept[c.Shard] = c.Index
	}
	for s := range cutShards {
		if last, ok := lastKept[s]; ok {
			next[s] = last
		} else {
			next[s] = cur[s]
		}
	}
	return kept, next
}

// CheckCursor fails with ErrBadCursor when some position of c is beyond
// what its shard has committed: a cursor from another cluster, or from
// this one before it was rebuilt. Reading it would skip, without a word,
// every change up to that position once the shard got there. It costs
// nothing for positions this node's replicas have applied.
func (f *Feed) CheckCursor(ctx context.Context, c Cursor) error {
	var behind []int
	for s := 0; s < f.cfg.Source.Shards(); s++ {
		if c[s] > f.cfg.Source.AppliedIndex(s) {
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
	key := shard.TagFor(s, f.cfg.Source.Shards()) + probeSuffix
	res, err := f.cfg.Source.GetIn(ctx, shard.SystemSpace, key, shard.ReadOptions{Consistency: shard.Linearizable})
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

func mapErr(err error) error {
	switch {
	case errors.Is(err, shard.ErrFeedTrimmed):
		return fmt.Errorf("%w: %v", ErrExpired, err)
	case errors.Is(err, shard.ErrNotHosted):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}
