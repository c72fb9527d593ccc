package changefeed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/tolerant"
	"lambdadb/lambda"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Per-shard records of a trigger live in that shard's system space, under
// a hash tag that maps to the shard (shard.TagFor), so the checkpoint can
// be committed in one Raft entry with the handler's writes to that shard:
//
//	<tag>trg/<name>                      checkpoint: msgpack [position, trigger version, delivered,
//	                                     invocations, retries, dead letters, atomic batches,
//	                                     dead streak]
//	<tag>dead/<name>/<index>.<seq>       dead letter: msgpack DeadLetter
func checkpointKey(name string, s, n int) string { return shard.TagFor(s, n) + "trg/" + name }

func deadPrefix(name string, s, n int) string { return shard.TagFor(s, n) + "dead/" + name + "/" }

type checkpointRec struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Position uint64
	Trigger  uint64 // the definition's version it belongs to
	// The shard's counters through this checkpoint (0 in records written
	// before they were kept).
	Delivered, Invocations, Retries, DeadLetters, Atomic uint64
	// DeadStreak is how many changes were dead-lettered since the last
	// successful delivery (ShardStats.DeadStreak).
	DeadStreak uint64
}

// DecodeMsgpack reads checkpoints of any length: those written before the
// counters were appended hold only Position and Trigger.
func (r *checkpointRec) DecodeMsgpack(d *msgpack.Decoder) error {
	return tolerant.DecodeArray(d, &r.Position, &r.Trigger, &r.Delivered, &r.Invocations, &r.Retries, &r.DeadLetters, &r.Atomic,
		&r.DeadStreak)
}

// counters are a trigger's counters on one shard, kept in its checkpoint
// so that they survive restarts and leader changes.
type counters struct {
	Delivered, Invocations, Retries, DeadLetters, Atomic uint64
}

func (c counters) plus(o counters) counters {
	return counters{c.Delivered + o.Delivered, c.Invocations + o.Invocations, c.Retries + o.Retries,
		c.DeadLetters + o.DeadLetters, c.Atomic + o.Atomic}
}

func countersOf(st *ShardStats) counters {
	return counters{st.Delivered, st.Invocations, st.Retries, st.DeadLetters, st.Atomic}
}

func (c counters) setIn(st *ShardStats) {
	st.Delivered, st.Invocations, st.Retries, st.DeadLetters, st.Atomic = c.Delivered, c.Invocations, c.Retries, c.DeadLetters, c.Atomic
}

// checkpointState is a trigger's checkpoint on one shard as read: its
// position, the record's version (0 when there is none yet: the trigger's
// start position), the counters and the dead streak it holds.
type checkpointState struct {
	pos, version uint64
	cnt          counters
	streak       uint64
}

// checkpoint returns the trigger's checkpoint on shard s.
func (t *Triggers) checkpoint(ctx context.Context, d *Trigger, s int, c shard.Consistency) (checkpointState, error) {
	res, err := t.cfg.Node.GetIn(ctx, shard.SystemSpace, checkpointKey(d.Name, s, t.cfg.Node.Shards()), shard.ReadOptions{Consistency: c})
	if err != nil {
		return checkpointState{}, err
	}
	if res.Found {
		var r checkpointRec
		if err := msgpack.Unmarshal(res.Record.Value, &r); err == nil && r.Trigger == d.Version {
			return checkpointState{pos: r.Position, version: res.Record.Version,
				cnt: counters{r.Delivered, r.Invocations, r.Retries, r.DeadLetters, r.Atomic}, streak: r.DeadStreak}, nil
		}
		// A checkpoint of an earlier definition of the same name: start over.
		return checkpointState{pos: d.startCursor[s], version: res.Record.Version}, nil
	}
	return checkpointState{pos: d.startCursor[s]}, nil
}

// checkpointOp writes position pos, the counters cnt and the dead streak
// if the checkpoint record is still at version (0: absent).
func (t *Triggers) checkpointOp(d *Trigger, s int, pos, version uint64, cnt counters, streak uint64) shard.Op {
	b, _ := msgpack.Marshal(&checkpointRec{Position: pos, Trigger: d.Version, Delivered: cnt.Delivered,
		Invocations: cnt.Invocations, Retries: cnt.Retries, DeadLetters: cnt.DeadLetters, Atomic: cnt.Atomic, DeadStreak: streak})
	op := shard.Op{Space: shard.SystemSpace, Key: checkpointKey(d.Name, s, t.cfg.Node.Shards()), Value: b}
	if version == 0 {
		op.Cond.IfNoneMatch = true
	} else {
		v := version
		op.Cond.IfMatch = &v
	}
	return op
}

// DeadLetter is a change a trigger gave up on.
type DeadLetter struct {
	// ID names the letter for ReplayDeadLetter and DropDeadLetter:
	// "<shard>-<raft index>-<seq>" of the change, stable while it lives.
	ID      string    `json:"id"`
	Shard   int       `json:"shard"`
	Key     string    `json:"key"`
	Op      string    `json:"op"`
	Version uint64    `json:"version"`
	Value   []byte    `json:"value"`
	Error   string    `json:"error"`
	Time    time.Time `json:"time"`
	// Replays counts the replays that failed again (Error is the last
	// one's).
	Replays int `json:"replays"`
}

type deadRec struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Key      string
	Op       string
	Version  uint64
	Value    []byte
	Error    string
	TimeMS   int64
	// Depth is the change's trigger depth (0 in letters written before
	// it was kept); a replay's writes are one deeper.
	Depth uint8
	// Replays counts the replays that failed again.
	Replays int
}

// DecodeMsgpack reads dead letters of any length, so that fields can be
// appended later.
func (r *deadRec) DecodeMsgpack(d *msgpack.Decoder) error {
	return tolerant.DecodeArray(d, &r.Key, &r.Op, &r.Version, &r.Value, &r.Error, &r.TimeMS, &r.Depth, &r.Replays)
}

// DeadLetters lists the trigger's dead letters on every shard.
func (t *Triggers) DeadLetters(ctx context.Context, name string) ([]DeadLetter, error) {
	if _, err := t.Get(ctx, name); err != nil {
		return nil, err
	}
	out := []DeadLetter{}
	n := t.cfg.Node.Shards()
	for s := 0; s < n; s++ {
		req := shard.ScanRequest{Prefix: deadPrefix(name, s, n), Limit: shard.MaxScanLimit}
		for {
			res, err := t.cfg.Node.ScanIn(ctx, shard.SystemSpace, req, shard.ReadOptions{Consistency: shard.Linearizable})
			if err != nil {
				return nil, fmt.Errorf("changefeed: dead letters: %w", err)
			}
			for _, it := range res.Items {
				var r deadRec
				if err := msgpack.Unmarshal(it.Value, &r); err != nil {
					continue
				}
				id, ok := deadID(s, strings.TrimPrefix(it.Key, req.Prefix))
				if !ok {
					continue
				}
				out = append(out, r.letter(id, s))
			}
			if !res.More {
				break
			}
			req.Start = res.Next
		}
	}
	return out, nil
}

func (t *Triggers) matches(d *Trigger, c shard.Change) bool {
	if !namespace.HasPrefix(c.Key, d.Prefix) {
		return false
	}
	ev := "put"
	if c.Delete {
		ev = "delete"
	}
	for _, e := range d.Events {
		if e == ev {
			return true
		}
	}
	return false
}

// errStale means another runner moved the checkpoint: this one stops and
// the reconciler decides again.
var errStale = errors.New("changefeed: checkpoint moved by another runner")

// errPaused means the runner paused its trigger: it delivers nothing more
// and waits for the reconciler to start it again as a paused one.
var errPaused = errors.New("changefeed: trigger paused")

// run delivers shard s's changes to the trigger while ctx lives (while
// this node leads s); r is the runner, the owner of st. The runner of a
// paused trigger only shows its checkpoint.
func (t *Triggers) run(ctx context.Context, d *Trigger, s int, st *ShardStats, r *runner) {
	if d.Paused() {
		t.idle(ctx, d, s, st, r)
		return
	}
	for first := true; ctx.Err() == nil; first = false {
		err := t.runOnce(ctx, d, s, st, r, first)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errPaused) {
			// Replaced as the pause record says, even if the trigger was
			// resumed before the reconciler saw it paused.
			t.mu.Lock()
			r.halted = true
			t.mu.Unlock()
			t.reconcileSoon()
			<-ctx.Done()
			return
		}
		t.setErr(st, r, err)
		t.log.Debug("trigger runner restarting", "trigger", d.Name, "shard", s, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// count updates st under t.mu if runner r still owns it (a runner still
// stopping after another took over, for this definition or a newer one,
// does not).
func (t *Triggers) count(st *ShardStats, r *runner, f func()) {
	t.mu.Lock()
	if st.owner == r {
		f()
	}
	t.mu.Unlock()
}

func (t *Triggers) setErr(st *ShardStats, r *runner, err error) {
	if err != nil {
		t.count(st, r, func() { st.LastError = err.Error() })
	}
}

// idle shows the checkpoint of a paused trigger on shard s in st until
// ctx ends.
func (t *Triggers) idle(ctx context.Context, d *Trigger, s int, st *ShardStats, r *runner) {
	for ctx.Err() == nil {
		cp, err := t.checkpoint(ctx, d, s, shard.Linearizable)
		if err == nil {
			t.count(st, r, func() {
				st.Position, st.Checkpoint, st.DeadStreak = cp.pos, cp.pos, cp.streak
				cur := countersOf(st)
				counters{max(cp.cnt.Delivered, cur.Delivered), max(cp.cnt.Invocations, cur.Invocations), max(cp.cnt.Retries, cur.Retries),
					max(cp.cnt.DeadLetters, cur.DeadLetters), max(cp.cnt.Atomic, cur.Atomic)}.setIn(st)
			})
			// The age of what waits for the resume, looked at again now
			// and then.
			for {
				oldest := t.oldestAfter(ctx, d, s, cp.pos)
				t.count(st, r, func() { st.Oldest = oldest })
				select {
				case <-ctx.Done():
					return
				case <-time.After(2 * time.Second):
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// oldestAfter returns the commit time of the first change after pos on
// shard s that trigger d takes (zero: none, or unknown).
func (t *Triggers) oldestAfter(ctx context.Context, d *Trigger, s int, pos uint64) time.Time {
	after := pos
	for range 10 {
		page, err := t.cfg.Node.ReadFeedQuery(ctx, s, shard.FeedQuery{After: after, Limit: 100, Prefix: d.Prefix},
			shard.ReadOptions{Consistency: shard.Stale})
		if err != nil {
			return time.Time{}
		}
		for _, c := range page.Changes {
			if t.matches(d, c) {
				return c.Time
			}
		}
		if !page.More || page.Applied <= after {
			return time.Time{}
		}
		after = page.Applied
	}
	return time.Time{}
}

// runner state between deliveries.
type cursorState struct {
	owner   *runner
	pos     uint64 // committed checkpoint position
	version uint64 // checkpoint record version
	read    uint64 // fed through this index
	skipped int    // changes read but not matching since the checkpoint was written
	streak  uint64 // changes dead-lettered since the last delivery, as committed
	saved   time.Time
}

func (t *Triggers) runOnce(ctx context.Context, d *Trigger, s int, st *ShardStats, r *runner, first bool) error {
	cp, err := t.checkpoint(ctx, d, s, shard.Linearizable)
	if err != nil {
		return err
	}
	pos, ver, cnt := cp.pos, cp.version, cp.cnt
	// A runner starts from the checkpoint's counters (what an earlier
	// runner counted past its last checkpoint is not known); starting
	// again after an error it keeps what it counted since.
	t.count(st, r, func() {
		if !first {
			cur := countersOf(st)
			cnt = counters{max(cnt.Delivered, cur.Delivered), max(cnt.Invocations, cur.Invocations), max(cnt.Retries, cur.Retries),
				max(cnt.DeadLetters, cur.DeadLetters), max(cnt.Atomic, cur.Atomic)}
		}
		cnt.setIn(st)
		st.DeadStreak = cp.streak
	})
	cs := &cursorState{owner: r, pos: pos, version: ver, read: pos, streak: cp.streak, saved: time.Now()}
	if d.PauseAfter > 0 && cs.streak >= uint64(d.PauseAfter) {
		// An earlier runner reached the threshold but did not record the
		// pause.
		return t.pauseFor(ctx, d, fmt.Sprintf("paused after %d consecutive dead letters on shard %d", cs.streak, s))
	}
	var pending []shard.Change
	var firstAt time.Time
	maxWait := time.Duration(d.MaxWaitMS) * time.Millisecond
	for ctx.Err() == nil {
		// Only the trigger's prefix is read: other keys' values are not
		// copied, and a page holds up to BatchSize changes of its own.
		page, err := t.cfg.Node.ReadFeedQuery(ctx, s, shard.FeedQuery{After: cs.read, Limit: d.BatchSize, Prefix: d.Prefix},
			shard.ReadOptions{Consistency: shard.Stale})
		if errors.Is(err, shard.ErrFeedTrimmed) {
			// The checkpoint is gone (the trigger was resumed as the feed
			// was trimmed past it): never skip the gap in silence.
			trimmed, _, berr := t.feedBounds(ctx, s, shard.Stale)
			if berr != nil {
				return berr
			}
			return t.pauseFor(ctx, d, "checkpoint expired: "+Gap{Shard: s, Checkpoint: cs.pos, Trimmed: trimmed}.String())
		}
		if err != nil {
			return err
		}
		cs.skipped += page.Skipped
		for _, c := range page.Changes {
			if t.matches(d, c) {
				if len(pending) == 0 {
					firstAt = time.Now()
				}
				pending = append(pending, c)
			} else {
				cs.skipped++
			}
		}
		cs.read = max(cs.read, page.Applied)
		t.count(st, r, func() {
			st.Position, st.Checkpoint = cs.read, cs.pos
			st.Oldest = time.Time{}
			if len(pending) > 0 {
				st.Oldest = pending[0].Time
			}
		})

		// A paused sandbox is ready: deliver at once. Otherwise fill a batch
		// for up to max_wait_ms so one start serves many changes.
		ready := len(pending) > 0 && (len(pending) >= d.BatchSize || t.cfg.Functions.HasPaused(d.Function) ||
			time.Since(firstAt) >= maxWait)
		if ready {
			n := cut(pending, d.BatchSize)
			// The checkpoint covers what was read when the batch ends the
			// pending changes; else only through the batch's last entry.
			through := pending[n-1].Index
			if n == len(pending) {
				through = cs.read
			}
			if err := t.deliver(ctx, d, s, st, pending[:n], through, cs); err != nil {
				return err
			}
			pending = pending[n:]
			if len(pending) > 0 {
				firstAt = time.Now()
			}
			continue
		}
		if len(pending) == 0 && cs.skipped > 0 && cs.read > cs.pos && (cs.skipped >= 1000 || time.Since(cs.saved) > 5*time.Second) {
			// Only changes the trigger ignores: record the progress so the
			// feed can be trimmed.
			if err := t.commit(ctx, d, s, st, nil, cs.read, cs, counters{}, cs.streak); err != nil {
				return err
			}
		}
		if page.More {
			continue
		}
		wait := 2 * time.Second
		if len(pending) > 0 {
			wait = max(0, maxWait-time.Since(firstAt))
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		_ = t.cfg.Node.WaitFeed(wctx, s, cs.read)
		cancel()
	}
	return nil
}

// cut returns how many pending changes form the next batch: up to size,
// extended so that no Raft entry is split between batches.
func cut(pending []shard.Change, size int) int {
	n := min(size, len(pending))
	for n < len(pending) && pending[n].Index == pending[n-1].Index {
		n++
	}
	return n
}

// commit writes the checkpoint (with writes, atomically) and advances cs;
// the checkpoint holds st's counters plus add, which st gains once the
// checkpoint commits, and the dead streak streak.
func (t *Triggers) commit(ctx context.Context, d *Trigger, s int, st *ShardStats, writes []shard.Op, through uint64, cs *cursorState, add counters, streak uint64) error {
	t.mu.Lock()
	cnt := countersOf(st).plus(add)
	t.mu.Unlock()
	ops := append(writes, t.checkpointOp(d, s, through, cs.version, cnt, streak))
	res, err := t.cfg.Node.Batch(ctx, ops, nil)
	if errors.Is(err, shard.ErrPrecondition) {
		return errStale
	}
	if err != nil {
		return err
	}
	cs.pos, cs.version, cs.skipped, cs.streak, cs.saved = through, res.Index, 0, streak, time.Now()
	t.count(st, cs.owner, func() {
		countersOf(st).plus(add).setIn(st)
		st.DeadStreak = streak
	})
	return nil
}

// MaxTriggerDepth bounds chains of triggers. A change written by a
// trigger's handler is recorded one level deeper than the deepest change
// the handler was given (a client's write is depth 0); a change at this
// depth — 16 deliveries in a row, the bound of AWS Lambda's recursive loop
// detection — is not delivered to any trigger but becomes a dead letter
// that names the loop, so a trigger that feeds itself (or a ring of
// triggers) stops by itself.
const MaxTriggerDepth = 16

// ErrTriggerLoop is the cause recorded in the dead letter of a change that
// reached MaxTriggerDepth.
var ErrTriggerLoop = errors.New("changefeed: recursive trigger loop")

// deliver delivers batch in order: runs of changes below MaxTriggerDepth
// through deliverBatch, runs at it as dead letters.
func (t *Triggers) deliver(ctx context.Context, d *Trigger, s int, st *ShardStats, batch []shard.Change, through uint64, cs *cursorState) error {
	start := 0
	for start < len(batch) {
		loop := batch[start].Depth >= MaxTriggerDepth
		end := start + 1
		for end < len(batch) && (batch[end].Depth >= MaxTriggerDepth) == loop {
			end++
		}
		if start == 0 && end == len(batch) && !loop {
			return t.deliverBatch(ctx, d, s, st, batch, through, cs)
		}
		th := batch[end-1].Index
		if end == len(batch) {
			th = through
		}
		var err error
		if loop {
			err = t.deadLetter(ctx, d, s, st, batch[start:end], th, cs, fmt.Errorf(
				"%w: written at trigger depth %d by trigger handlers (the limit is %d), not delivered: trigger %q feeds itself, or a chain of triggers feeds it",
				ErrTriggerLoop, batch[start].Depth, MaxTriggerDepth, d.Name), false)
		} else {
			err = t.deliverBatch(ctx, d, s, st, batch[start:end], th, cs)
		}
		if err != nil {
			return err
		}
		start = end
	}
	return nil
}

// deliverBatch calls the handler on batch until it succeeds, then commits
// its writes and the checkpoint. A batch that keeps failing is split in
// two to isolate the change that fails; that one becomes a dead letter.
// The handler's writes carry the batch's depth plus one.
func (t *Triggers) deliverBatch(ctx context.Context, d *Trigger, s int, st *ShardStats, batch []shard.Change, through uint64, cs *cursorState) error {
	var depth uint8
	for _, c := range batch {
		depth = max(depth, c.Depth)
	}
	ctx = shard.WithTriggerDepth(ctx, depth+1)
	backoff := 100 * time.Millisecond
	var lastErr error
	for attempt := 0; attempt <= d.MaxRetries; attempt++ {
		if attempt > 0 {
			t.count(st, cs.owner, func() { st.Retries++ })
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		select {
		case t.calls <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		res, err := t.cfg.Functions.CallChanges(ctx, lambdaCall(d, batch))
		<-t.calls
		t.count(st, cs.owner, func() { st.Invocations++ })
		if err == nil {
			err = t.commitDelivery(ctx, d, s, st, res.Writes, res.Direct, through, cs, uint64(len(batch)))
			if err == nil {
				return nil
			}
			// The handler succeeded but its writes or the checkpoint did
			// not commit: nothing wrong with the changes. The runner starts
			// over from the checkpoint (at least once), never dead-letters.
			return err
		}
		if !handlerFault(err) {
			// The function is missing, the node is overloaded or closing,
			// a shard is unavailable: not the changes' fault. Retry from
			// the checkpoint, without counting toward dead letters.
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
		t.setErr(st, cs.owner, err)
		if errors.Is(err, lambda.ErrTimeout) && cut(batch, (len(batch)+1)/2) < len(batch) {
			break // too much for one call: split it now
		}
	}
	// Bisect by whole entries.
	if first := cut(batch, (len(batch)+1)/2); first < len(batch) {
		if err := t.deliverBatch(ctx, d, s, st, batch[:first], batch[first-1].Index, cs); err != nil {
			return err
		}
		return t.deliverBatch(ctx, d, s, st, batch[first:], through, cs)
	}
	return t.deadLetter(ctx, d, s, st, batch, through, cs, lastErr, true)
}

// handlerFault reports errors that a batch's changes may cause — the
// handler failed on them — as opposed to the cluster's own trouble.
func handlerFault(err error) bool {
	if errors.Is(err, lambda.ErrHandler) || errors.Is(err, lambda.ErrMemoryLimit) ||
		errors.Is(err, lambda.ErrTimeout) || errors.Is(err, lambda.ErrRequestTooLarge) {
		// A KV call of the handler failing for lack of a shard leader is
		// still the cluster's trouble.
		return !errors.Is(err, shard.ErrUnavailable) && !errors.Is(err, shard.ErrNotLeader)
	}
	return false
}

// commitDelivery commits a successful call's writes with the checkpoint:
// in one Raft entry when every write is to shard s (exactly-once), else
// the writes first and the checkpoint after (at-least-once).
func (t *Triggers) commitDelivery(ctx context.Context, d *Trigger, s int, st *ShardStats, writes []shard.Op, direct bool, through uint64, cs *cursorState, delivered uint64) error {
	n := t.cfg.Node.Shards()
	local := !direct
	for _, op := range writes {
		if shard.For(op.Key, n) != s {
			local = false
		}
	}
	// A delivery ends the dead streak.
	if local && len(writes) > 0 {
		return t.commit(ctx, d, s, st, writes, through, cs, counters{Delivered: delivered, Atomic: 1}, 0)
	}
	if err := t.applyWrites(ctx, writes); err != nil {
		return err
	}
	return t.commit(ctx, d, s, st, nil, through, cs, counters{Delivered: delivered}, 0)
}

// deadLetter records the (single-entry) batch as dead and moves past it.
// A batch the handler failed on (failed) adds to the dead streak, and
// pauses the trigger when the streak reaches pause_after (errPaused); a
// change of a trigger loop neither adds to it nor ends it.
func (t *Triggers) deadLetter(ctx context.Context, d *Trigger, s int, st *ShardStats, batch []shard.Change, through uint64, cs *cursorState, cause error, failed bool) error {
	n := t.cfg.Node.Shards()
	var ops []shard.Op
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	for _, c := range batch {
		op := "put"
		if c.Delete {
			op = "delete"
		}
		b, _ := msgpack.Marshal(&deadRec{Key: c.Key, Op: op, Version: c.Version, Value: c.Value, Error: msg, TimeMS: time.Now().UnixMilli(),
			Depth: c.Depth})
		ops = append(ops, shard.Op{Space: shard.SystemSpace, Key: deadKey(d.Name, s, n, c.Index, c.Seq), Value: b})
	}
	streak := cs.streak
	if failed {
		streak += uint64(len(batch))
	}
	if err := t.commit(ctx, d, s, st, ops, through, cs, counters{DeadLetters: uint64(len(batch))}, streak); err != nil {
		return err
	}
	t.log.Warn("trigger dead-lettered a change", "trigger", d.Name, "shard", s, "key", batch[0].Key, "version", batch[0].Version, "err", msg)
	if failed && d.PauseAfter > 0 && streak >= uint64(d.PauseAfter) {
		return t.pauseFor(ctx, d, fmt.Sprintf("paused after %d consecutive dead letters on shard %d: %s", streak, s, msg))
	}
	return nil
}

// applyWrites applies a handler's writes that are not on the batch's
// shard: one batch per shard they touch (in chunks), the shards in
// parallel. Not atomic with the checkpoint — at least once.
func (t *Triggers) applyWrites(ctx context.Context, writes []shard.Op) error {
	n := t.cfg.Node.Shards()
	groups := map[int][]shard.Op{}
	for _, op := range writes {
		s := shard.For(op.Key, n)
		groups[s] = append(groups[s], op)
	}
	errs := make(chan error, len(groups))
	for _, ops := range groups {
		go func() {
			for len(ops) > 0 {
				k, size := 0, 0
				for k < len(ops) && k < shard.MaxBatchOps && (k == 0 || size+len(ops[k].Key)+len(ops[k].Value) <= 16<<20) {
					size += len(ops[k].Key) + len(ops[k].Value)
					k++
				}
				if _, err := t.cfg.Node.Batch(ctx, ops[:k], nil); err != nil {
					errs <- fmt.Errorf("changefeed: apply handler writes: %w", err)
					return
				}
				ops = ops[k:]
			}
			errs <- nil
		}()
	}
	var first error
	for range groups {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
