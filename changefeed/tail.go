package changefeed

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"lambdadb/namespace"
	"lambdadb/shard"
)

// The shared tails.
//
// Every subscriber of a node (a long poll, a WebSocket stream) reads the
// same recent changes. Rather than have each read every shard's feed for
// itself — N subscribers reading, decoding and holding every change N
// times — the node keeps one tail per shard, started by the first
// subscriber: one goroutine that waits for the shard to apply, reads the
// new changes once and keeps the newest of them in memory (bounded in
// bytes and count). Subscribers read the tails under a lock, sharing the
// values, and are woken only by changes under their prefix: the tail looks
// each new key up in an index of the subscribers' prefixes (one map lookup
// per distinct prefix length), so a thousand idle pollers on prefixes
// nothing is written to cost nothing per change.
//
// A subscriber whose cursor is older than what a tail holds (a client
// resuming after a while) reads the shard's feed from storage instead,
// through a small node-wide number of catch-up slots, until it reaches
// the tail.

// tailEntries bounds the changes one tail holds, whatever their size.
const tailEntries = 4096

// heldChange is a change a tail holds. Past the tail's byte budget the
// oldest changes are kept thin — key and position, no value — so readers
// of other prefixes still find the tail covering them (an idle long poll
// never reads storage); a reader for whose prefix a thin change matters
// reads that shard from storage.
type heldChange struct {
	shard.Change
	thin bool
}

func (h *heldChange) size() int {
	if h.thin {
		return len(h.Key) + 96
	}
	return len(h.Key) + len(h.Value) + 96
}

// tail follows one shard's feed for the node's subscribers.
type tail struct {
	s int

	mu      sync.Mutex
	running bool
	ready   bool         // start and end are known
	start   uint64       // changes holds every change with index in (start, end]
	end     uint64       //
	changes []heldChange // in index order
	thinned int          // changes[:thinned] are thin
	bytes   int
}

// covers reports whether the tail holds every change after position cur.
// Call with t.mu held.
func (t *tail) covers(cur uint64) bool { return t.ready && cur >= t.start }

// collect returns the changes after cur under prefix, at most limit (never
// splitting an entry), and the position a reader has then seen through.
// ok is false when the tail does not hold everything after cur that the
// reader needs.
func (t *tail) collect(cur uint64, prefix string, limit int) (out []shard.Change, next uint64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.covers(cur) {
		return nil, cur, false
	}
	i := sort.Search(len(t.changes), func(i int) bool { return t.changes[i].Index > cur })
	next = max(cur, t.end)
	for ; i < len(t.changes); i++ {
		c := &t.changes[i]
		if len(out) >= limit && out[len(out)-1].Index != c.Index {
			next = out[len(out)-1].Index
			break
		}
		if namespace.HasPrefix(c.Key, prefix) {
			if c.thin {
				return nil, cur, false
			}
			out = append(out, c.Change)
		}
	}
	return out, next, true
}

// appendPage adds a page read after t.end, thins the oldest changes past
// the byte budget and drops the oldest entries past tailEntries. Call
// with t.mu held.
func (t *tail) appendPage(p shard.FeedPage, budget int) {
	for _, c := range p.Changes {
		if c.Index <= t.end {
			continue // a page from a replica that had applied less
		}
		h := heldChange{Change: c}
		t.bytes += h.size()
		t.changes = append(t.changes, h)
	}
	if n := len(p.Changes); n > 0 {
		t.end = max(t.end, p.Changes[n-1].Index)
	}
	t.end = max(t.end, p.Applied)
	// Hold nothing the shard's feed has trimmed: a position the feed no
	// longer retains is expired for every reader, this node's too.
	t.start = max(t.start, min(p.Trimmed, t.end))
	drop := 0
	for drop < len(t.changes) && t.changes[drop].Index <= t.start {
		t.bytes -= t.changes[drop].size()
		drop++
	}
	for t.thinned = max(t.thinned, drop); t.bytes > budget && t.thinned < len(t.changes); t.thinned++ {
		h := &t.changes[t.thinned]
		t.bytes -= h.size()
		h.Value, h.thin = nil, true
		t.bytes += h.size()
	}
	for drop < len(t.changes) && (len(t.changes)-drop > tailEntries || t.bytes > budget) {
		idx := t.changes[drop].Index // drop whole entries only
		for drop < len(t.changes) && t.changes[drop].Index == idx {
			t.bytes -= t.changes[drop].size()
			drop++
		}
		t.start = idx
	}
	if drop > 0 {
		// Copy rather than reslice, so the dropped keys can be freed.
		t.changes = append([]heldChange(nil), t.changes[drop:]...)
		t.thinned = max(t.thinned-drop, 0)
	}
}

// reset forgets what the tail holds. Call with t.mu held.
func (t *tail) reset() {
	t.ready, t.start, t.end, t.changes, t.thinned, t.bytes = false, 0, 0, nil, 0, 0
}

// hub holds a node's tails and its subscribers.
type hub struct {
	f *Feed

	mu        sync.Mutex
	subs      int
	perClient map[string]int
	byLen     map[int]map[string]map[*Subscription]struct{} // prefix length → prefix → subscribers
	lastLeft  time.Time                                     // when subs last dropped to 0
	tails     []*tail
	closed    bool
	stop      chan struct{}
	wg        sync.WaitGroup

	catchUp     chan struct{} // catch-up read slots
	catchUps    atomic.Uint64
	tailReads   atomic.Uint64
	tailHeldNow atomic.Int64
}

func newHub(f *Feed, shards int) *hub {
	h := &hub{
		f:         f,
		perClient: map[string]int{},
		byLen:     map[int]map[string]map[*Subscription]struct{}{},
		tails:     make([]*tail, shards),
		stop:      make(chan struct{}),
		catchUp:   make(chan struct{}, f.cfg.CatchUpReads),
	}
	for s := range h.tails {
		h.tails[s] = &tail{s: s}
	}
	return h
}

// Subscription is one subscriber of a node's feed: a long poll or a
// stream. It counts against the node's limits until Close.
type Subscription struct {
	f      *Feed
	prefix string
	client string
	wake   chan struct{}
	closed bool
}

// subscribe registers a subscriber and makes sure every tail runs.
func (h *hub) subscribe(prefix, client string) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if h.subs >= h.f.cfg.MaxSubscribers {
		return nil, fmt.Errorf("%w: %d open, the limit; retry later", ErrOverloaded, h.subs)
	}
	if n := h.perClient[client]; n >= h.f.cfg.MaxSubscribersPerClient {
		return nil, fmt.Errorf("%w: %d open from %s, the limit; close one or retry later", ErrTooManySubscribers, n, client)
	}
	sub := &Subscription{f: h.f, prefix: prefix, client: client, wake: make(chan struct{}, 1)}
	h.subs++
	h.perClient[client]++
	byPrefix := h.byLen[len(prefix)]
	if byPrefix == nil {
		byPrefix = map[string]map[*Subscription]struct{}{}
		h.byLen[len(prefix)] = byPrefix
	}
	set := byPrefix[prefix]
	if set == nil {
		set = map[*Subscription]struct{}{}
		byPrefix[prefix] = set
	}
	set[sub] = struct{}{}
	for _, t := range h.tails {
		t.mu.Lock()
		if !t.running {
			t.running = true
			if a := h.f.cfg.Source.AppliedIndex(t.s); a > 0 && !t.ready {
				// A replica here: start at its applied index now, so this
				// subscriber's first read finds the tail ready.
				t.ready, t.start, t.end = true, a, a
			}
			h.wg.Add(1)
			go h.follow(t)
		}
		t.mu.Unlock()
	}
	return sub, nil
}

func (h *hub) unsubscribe(sub *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub.closed {
		return
	}
	sub.closed = true
	h.subs--
	if h.perClient[sub.client]--; h.perClient[sub.client] <= 0 {
		delete(h.perClient, sub.client)
	}
	byPrefix := h.byLen[len(sub.prefix)]
	set := byPrefix[sub.prefix]
	delete(set, sub)
	if len(set) == 0 {
		delete(byPrefix, sub.prefix)
		if len(byPrefix) == 0 {
			delete(h.byLen, len(sub.prefix))
		}
	}
	if h.subs == 0 {
		h.lastLeft = time.Now()
	}
}

// release stops t, reporting true, when the hub has had no subscriber for
// Config.TailIdle or is closed. subscribe starts a tail that is not
// running under the same lock, so a subscriber never finds a tail about
// to stop.
func (h *hub) release(t *tail) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed && (h.subs > 0 || time.Since(h.lastLeft) < h.f.cfg.TailIdle) {
		return false
	}
	t.mu.Lock()
	h.stopTail(t)
	t.mu.Unlock()
	return true
}

// stopTail marks t stopped and frees what it holds. Call with t.mu held.
func (h *hub) stopTail(t *tail) {
	if t.running {
		h.tailHeldNow.Add(-int64(t.bytes))
		t.reset()
		t.running = false
	}
}

// notify wakes the subscribers with a prefix of some change's key (all of
// them when all is set).
func (h *hub) notify(changes []shard.Change, all bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wake := func(set map[*Subscription]struct{}) {
		for sub := range set {
			select {
			case sub.wake <- struct{}{}:
			default:
			}
		}
	}
	if all {
		for _, byPrefix := range h.byLen {
			for _, set := range byPrefix {
				wake(set)
			}
		}
		return
	}
	for _, c := range changes {
		for l, byPrefix := range h.byLen {
			if l <= len(c.Key) && (l > 0 || namespace.HasPrefix(c.Key, "")) {
				wake(byPrefix[c.Key[:l]])
			}
		}
	}
}

// tailPoll is how long a tail waits for its shard before checking whether
// it is still wanted; tailRetry is its pause after a failed read.
const (
	tailPoll  = time.Second
	tailRetry = 100 * time.Millisecond
)

// follow runs t until the hub has been idle for Config.TailIdle or closes.
func (h *hub) follow(t *tail) {
	defer h.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() { // stopped by the node closing
		t.mu.Lock()
		h.stopTail(t)
		t.mu.Unlock()
	}()
	src := h.f.cfg.Source
	budget := max(h.f.cfg.TailBytes/max(len(h.tails), 1), 64<<10)
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(tailRetry):
			return true
		}
	}
	for !h.release(t) {
		t.mu.Lock()
		ready, end := t.ready, t.end
		t.mu.Unlock()
		if !ready {
			// Start at the shard's current end: older positions are read
			// from storage by the subscribers that need them.
			p, err := src.ReadFeedQuery(ctx, t.s, shard.FeedQuery{After: ^uint64(0) - 1, Limit: 1}, shard.ReadOptions{Consistency: shard.Stale})
			if err != nil && !errors.Is(err, shard.ErrFeedTrimmed) {
				if errors.Is(err, shard.ErrClosed) || !pause() {
					return
				}
				continue
			}
			t.mu.Lock()
			t.ready, t.start, t.end = true, p.Applied, p.Applied
			t.mu.Unlock()
			// A subscriber may be waiting for a change made before the
			// tail started: let it look again.
			h.notify(nil, true)
			continue
		}
		wctx, wcancel := context.WithTimeout(ctx, tailPoll)
		err := src.WaitFeed(wctx, t.s, end)
		wcancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			continue // nothing new within tailPoll: still wanted?
		}
		p, err := src.ReadFeedQuery(ctx, t.s, shard.FeedQuery{After: end, Limit: DefaultLimit}, shard.ReadOptions{Consistency: shard.Stale})
		h.tailReads.Add(1)
		switch {
		case errors.Is(err, shard.ErrFeedTrimmed):
			// The tail fell behind retention: start again at the end.
			t.mu.Lock()
			h.tailHeldNow.Add(-int64(t.bytes))
			t.reset()
			t.mu.Unlock()
			continue
		case errors.Is(err, shard.ErrClosed):
			return
		case err != nil:
			if !pause() {
				return
			}
			continue
		}
		t.mu.Lock()
		before := t.bytes
		t.appendPage(p, budget)
		h.tailHeldNow.Add(int64(t.bytes - before))
		t.mu.Unlock()
		if len(p.Changes) > 0 {
			h.notify(p.Changes, false)
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.stop)
	h.mu.Unlock()
	h.wg.Wait()
}
