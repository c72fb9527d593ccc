package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"lambdadb/kv"
)

// Change is one committed change of user data, as the change feed holds
// it.
type Change struct {
	Shard   int
	Index   uint64 // Raft index of the change; the put's version
	Seq     uint16 // position within the entry
	Key     string
	Value   []byte // nil for a delete
	Delete  bool
	Time    time.Time // when the shard's leader appended the entry
	Version uint64    // == Index
	// Depth is how many trigger deliveries led to this change: 0 for a
	// client's write, d+1 for a write by a trigger's handler delivering
	// changes of depth at most d (WithTriggerDepth).
	Depth uint8
}

type depthKey struct{}

// WithTriggerDepth returns ctx carrying a trigger depth: writes made with it
// are recorded in the change feed at that depth (capped at
// kv.MaxFeedDepth), so that a chain of triggers feeding each other can be
// stopped (changefeed.MaxTriggerDepth).
func WithTriggerDepth(ctx context.Context, depth uint8) context.Context {
	return context.WithValue(ctx, depthKey{}, min(depth, kv.MaxFeedDepth))
}

// triggerDepth returns ctx's trigger depth (0 when none).
func triggerDepth(ctx context.Context) uint8 {
	d, _ := ctx.Value(depthKey{}).(uint8)
	return d
}

// FeedPage is one read of a shard's feed.
type FeedPage struct {
	Changes []Change
	// Trimmed is the index through which the feed was trimmed: positions
	// below it can no longer be read.
	Trimmed uint64
	// Applied is the replica's applied index when it was read: with no
	// more changes, a reader has seen everything through Applied.
	Applied uint64
	// More reports that the page stopped at its limit.
	More bool
	// Skipped counts the changes the page passed over because their keys
	// are outside FeedQuery.Prefix.
	Skipped int
}

// ErrFeedTrimmed is returned for a feed position older than what is
// retained.
var ErrFeedTrimmed = errors.New("shard: feed position trimmed")

// ErrNotHosted is returned for a shard this node holds no replica of.
var ErrNotHosted = errors.New("shard: shard not hosted here")

// Feed limits.
const (
	DefaultFeedLimit = 1000
	MaxFeedBytes     = 4 << 20
)

// ReadFeed returns shard s's changes after position after (an index: every
// change at or below it was seen), from this node's replica — at most
// limit changes and about MaxFeedBytes. A position older than the feed's
// trim point fails with ErrFeedTrimmed, unless after is 0 and nothing was
// trimmed. ro's Session consistency makes the replica first catch up with
// the caller's token for the shard.
func (n *Node) ReadFeed(ctx context.Context, s int, after uint64, limit int, ro ReadOptions) (FeedPage, error) {
	return n.ReadFeedQuery(ctx, s, FeedQuery{After: after, Limit: limit}, ro)
}

// feedScanLimit bounds the records one feed page examines, so a read for
// a prefix little is written under returns (More, with Applied at the last
// entry examined) instead of scanning the whole backlog at once.
const feedScanLimit = 16384

// FeedQuery is one page to read of a shard's feed.
type FeedQuery struct {
	After uint64 // read the changes after this position
	// Limit bounds the changes returned. Default DefaultFeedLimit.
	Limit int
	// Prefix restricts the page to keys under it: Limit and MaxBytes
	// count those only, and the others are skipped without copying their
	// keys and values.
	Prefix string
	// MaxBytes bounds the keys and values returned (an entry is never
	// split). Default and maximum MaxFeedBytes.
	MaxBytes int
}

// ReadFeedQuery is ReadFeed for a FeedQuery. A page that stops early
// (More) sets Applied to the last entry it examined.
func (n *Node) ReadFeedQuery(ctx context.Context, s int, q FeedQuery, ro ReadOptions) (FeedPage, error) {
	after, limit, prefix := q.After, q.Limit, q.Prefix
	maxBytes := MaxFeedBytes
	if q.MaxBytes > 0 {
		maxBytes = min(q.MaxBytes, MaxFeedBytes)
	}
	if n.closed.Load() {
		return FeedPage{}, ErrClosed
	}
	if s < 0 || s >= n.cfg.Shards {
		return FeedPage{}, fmt.Errorf("%w: shard %d", ErrInvalidScan, s)
	}
	if limit <= 0 {
		limit = DefaultFeedLimit
	}
	g := n.hosted(s)
	if g == nil {
		return n.forwardFeed(ctx, s, FeedQuery{After: after, Limit: limit, Prefix: prefix, MaxBytes: maxBytes})
	}
	if ro.Consistency != Stale {
		ctx, cancel := n.ctx(ctx)
		err := n.prepareRead(ctx, g, ro)
		cancel()
		if errors.Is(err, errForward) {
			err = nil // a stale page is still a correct prefix of the feed
		}
		if err != nil {
			return FeedPage{}, err
		}
	}
	if !n.engRLock() {
		return FeedPage{}, ErrClosed
	}
	defer n.engMu.RUnlock()
	r := n.eng.NewReader()
	defer r.Close()
	var page FeedPage
	var err error
	if page.Trimmed, err = r.FeedTrimmed(s); err != nil {
		return page, err
	}
	if page.Applied, err = r.Applied(s); err != nil {
		return page, err
	}
	if after < page.Trimmed {
		return page, fmt.Errorf("%w: shard %d position %d, the feed starts after %d", ErrFeedTrimmed, s, after, page.Trimmed)
	}
	bytes, examined := 0, 0
	var last uint64 // the entry of the last record examined
	err = r.ScanFeedPrefix(s, after, []byte(prefix), func(fr kv.FeedRecord, match bool) bool {
		if fr.Index != last && last != 0 {
			// Entry last is complete: stop here if the page is full. (An
			// entry is never split: a reader resumes after an index.)
			full := len(page.Changes) >= limit || (bytes >= maxBytes && len(page.Changes) > 0)
			if full || examined >= feedScanLimit {
				page.More = true
				return false
			}
		}
		last = fr.Index
		examined++
		if !match {
			page.Skipped++
			return true
		}
		c := Change{Shard: s, Index: fr.Index, Seq: fr.Seq, Key: string(fr.Key), Value: fr.Value,
			Delete: fr.Op == kv.FeedDelete, Version: fr.Index, Depth: fr.Depth}
		if fr.Time != 0 {
			c.Time = time.Unix(0, fr.Time)
		}
		bytes += len(fr.Key) + len(fr.Value)
		page.Changes = append(page.Changes, c)
		return true
	})
	if err != nil {
		return page, fmt.Errorf("shard: read feed of shard %d: %w", s, err)
	}
	if page.More {
		// Everything through the last entry examined was seen.
		page.Applied = last
	}
	if g.removed.Load() {
		// The replica was removed (and its data deleted) meanwhile: the
		// shard's leader serves the page.
		return n.forwardFeed(ctx, s, FeedQuery{After: after, Limit: limit, Prefix: prefix, MaxBytes: maxBytes})
	}
	return page, nil
}

// WaitFeed blocks until this node's replica of shard s has applied an
// entry after index after, or ctx ends (it then returns ctx's error). For
// a shard this node holds no replica of, it returns after a short poll
// interval: callers read again and find out.
func (n *Node) WaitFeed(ctx context.Context, s int, after uint64) error {
	g := n.hosted(s)
	if g == nil {
		t := time.NewTimer(feedPoll)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.fsm.waitApplied(ctx, after+1)
}

// feedPoll is how often a long poll re-reads a shard held elsewhere.
const feedPoll = 100 * time.Millisecond

// forwardFeed reads the feed of a shard this node holds no replica of
// from its leader (any replica would do; the leader has applied the
// most).
func (n *Node) forwardFeed(ctx context.Context, s int, q FeedQuery) (FeedPage, error) {
	if n.rpc == nil {
		return FeedPage{}, fmt.Errorf("%w: shard %d", ErrNotHosted, s)
	}
	ctx, cancel := n.ctx(ctx)
	defer cancel()
	var resp feedResp
	err := n.retry(ctx, s, func(leader string) error {
		if leader == "" {
			return errorf(ErrNotLeader, "shard %d has no known leader", s)
		}
		resp = feedResp{}
		tctx, cancel := n.readTryCtx(ctx)
		defer cancel()
		if err := n.rpc.call(tctx, "POST", leader, rpcFeed, feedReq{Shard: s, After: q.After, Limit: q.Limit, Prefix: q.Prefix, MaxBytes: q.MaxBytes}, &resp); err != nil {
			return fmt.Errorf("%w: %v", errReadRPC, err)
		}
		return resp.rpcError.err()
	})
	if err != nil {
		return FeedPage{}, err
	}
	return FeedPage{Changes: resp.Changes, Trimmed: resp.Trimmed, Applied: resp.Applied, More: resp.More, Skipped: resp.Skipped}, nil
}

// Hosts reports whether this node holds a replica of shard s.
func (n *Node) Hosts(s int) bool { return n.hosted(s) != nil }

// AppliedIndex returns this node's applied index of shard s (0 when not
// hosted).
func (n *Node) AppliedIndex(s int) uint64 {
	if g := n.hosted(s); g != nil {
		return g.fsm.applied.Load()
	}
	return 0
}

// feedTrimLoop trims the feeds of the shards this node leads, within the
// retention bounds and never past Config.FeedTrimLimit.
func (n *Node) feedTrimLoop() {
	defer n.bg.Done()
	tick := time.NewTicker(n.cfg.FeedTrimInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		for _, g := range n.localGroups(false) {
			if !g.isLeader() {
				continue
			}
			if err := n.trimFeed(g); err != nil && !n.closed.Load() {
				n.cfg.Logger.Debug("feed trim failed", "shard", g.id, "err", err)
			}
		}
	}
}

// trimScanLimit bounds the records one retention pass examines by age.
const trimScanLimit = 10000

func (n *Node) trimFeed(g *group) error {
	trimmed, err := n.eng.FeedTrimmed(g.id)
	if err != nil {
		return err
	}
	applied := g.fsm.applied.Load()
	var target uint64
	if applied > n.cfg.FeedRetainEntries {
		target = applied - n.cfg.FeedRetainEntries
	}
	cutoff := time.Now().Add(-n.cfg.FeedRetainAge).UnixNano()
	seen := 0
	err = n.eng.ScanFeed(g.id, max(trimmed, target), func(fr kv.FeedRecord) bool {
		seen++
		if fr.Time == 0 || fr.Time >= cutoff || seen > trimScanLimit {
			return false
		}
		target = max(target, fr.Index)
		return true
	})
	if err != nil {
		return err
	}
	if n.cfg.FeedTrimLimit != nil {
		target = min(target, n.cfg.FeedTrimLimit(g.id))
	}
	if target <= trimmed {
		return nil
	}
	// Trim through the last change at or before the target, not past it:
	// the trim point is then always the index of a change that is gone,
	// so a position after it lost nothing (a reader or a trigger whose
	// position is followed only by entries without changes, such as
	// checkpoints and trims, is not expired for nothing), and a trim,
	// itself an entry, does not move the next one's target.
	if target, err = n.eng.LastFeedIndex(g.id, target); err != nil {
		return err
	}
	if target <= trimmed {
		return nil
	}
	b, err := encodeCommand(command{Op: opTrimFeed, Version: target})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RequestTimeout)
	defer cancel()
	_, _, err = n.applyLocal(ctx, g, b)
	if err == nil {
		n.cfg.Logger.Debug("feed trimmed", "shard", g.id, "through", target)
	}
	return err
}
