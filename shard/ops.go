package shard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"lambdadb/internal/session"
)

// Put stores value under key if cond holds.
func (n *Node) Put(ctx context.Context, key string, value []byte, cond Cond, tok session.Token) (WriteResult, error) {
	if len(value) > n.cfg.MaxValueBytes {
		return WriteResult{Session: tok}, errorf(ErrValueTooLarge, "value is %d bytes, the limit is %d", len(value), n.cfg.MaxValueBytes)
	}
	return n.writeOne(ctx, newCommand(opPut, key, value, cond), tok)
}

// Delete removes key if cond holds.
func (n *Node) Delete(ctx context.Context, key string, cond Cond, tok session.Token) (WriteResult, error) {
	return n.writeOne(ctx, newCommand(opDelete, key, nil, cond), tok)
}

func (n *Node) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, n.cfg.RequestTimeout)
}

var opNames = map[uint8]string{opPut: "put", opDelete: "delete", opBatch: "batch"}

// writeOne validates and proposes a single put or delete.
func (n *Node) writeOne(ctx context.Context, cmd command, tok session.Token) (WriteResult, error) {
	res := WriteResult{Session: tok}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := n.evictedErr(); err != nil {
		return res, err
	}
	release, err := n.admit(ctx, n.writeSlots, "write")
	if err != nil {
		return res, err
	}
	defer release()
	if err := validateStoredKey(cmd.Key); err != nil {
		return res, err
	}
	if cmd.Cond == condIfMatch && cmd.Version == 0 {
		return res, errorf(ErrPrecondition, "no key has version 0")
	}
	cmd.Depth = triggerDepth(ctx)
	b, err := encodeCommand(cmd)
	if err != nil {
		return res, err
	}
	s := For(cmd.Key, n.cfg.Shards)
	idx, ar, err := n.write(ctx, opNames[cmd.Op], s, b)
	if idx > 0 {
		res.Session = tok.Merge(session.Token{s: idx})
	}
	if err != nil {
		return res, err
	}
	res.Version, res.Deleted = ar.version, ar.deleted
	return res, nil
}

// Batch applies ops atomically in one Raft entry: every op's key must map to
// the same shard (use {hash tags}), no (space, key) may repeat, and there
// must be 1 to MaxBatchOps ops whose keys and values total at most
// MaxBatchBytes; otherwise the error wraps ErrInvalidBatch (or
// ErrInvalidKey for a bad key). UserSpace values are bounded by
// Config.MaxValueBytes (ErrValueTooLarge), SystemSpace values by
// MaxSystemValueBytes. Every op's Cond is checked against the state before
// the batch; if any fails nothing is applied and the error wraps
// ErrPrecondition and names the op's key. The batch is forwarded to the
// shard's leader and retried exactly as Put is.
func (n *Node) Batch(ctx context.Context, ops []Op, tok session.Token) (BatchResult, error) {
	res := BatchResult{Session: tok}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := n.evictedErr(); err != nil {
		return res, err
	}
	release, err := n.admit(ctx, n.writeSlots, "write")
	if err != nil {
		return res, err
	}
	defer release()
	cmd, s, err := n.batchCommand(ops)
	if err != nil {
		return res, err
	}
	res.Shard = s
	cmd.Depth = triggerDepth(ctx)
	b, err := encodeCommand(cmd)
	if err != nil {
		return res, err
	}
	idx, ar, err := n.write(ctx, opNames[opBatch], s, b)
	if idx > 0 {
		res.Session = tok.Merge(session.Token{s: idx})
	}
	if err != nil {
		return res, err
	}
	if len(ar.deletedOps) != len(ops) {
		return res, fmt.Errorf("shard: %d: batch of %d ops answered for %d", s, len(ops), len(ar.deletedOps))
	}
	res.Index, res.Deleted = idx, ar.deletedOps
	return res, nil
}

// batchCommand validates ops and returns their batch command and shard.
func (n *Node) batchCommand(ops []Op) (command, int, error) {
	if len(ops) == 0 || len(ops) > MaxBatchOps {
		return command{}, 0, errorf(ErrInvalidBatch, "%d ops, want 1 to %d", len(ops), MaxBatchOps)
	}
	cmd := command{Op: opBatch, Ops: make([]command, len(ops))}
	seen := make(map[spaceKey]struct{}, len(ops))
	s, total := -1, 0
	for i, op := range ops {
		if _, ok := op.Space.kvSpace(); !ok {
			return command{}, 0, errorf(ErrInvalidBatch, "op %d: unknown space %d", i, op.Space)
		}
		if err := validateStoredKey(op.Key); err != nil {
			return command{}, 0, fmt.Errorf("%w (op %d)", err, i)
		}
		limit := n.cfg.MaxValueBytes
		if op.Space == SystemSpace {
			limit = MaxSystemValueBytes
		}
		switch {
		case op.Delete && len(op.Value) != 0:
			return command{}, 0, errorf(ErrInvalidBatch, "op %d deletes %s key %q but carries a value", i, op.Space, op.Key)
		case len(op.Value) > limit:
			return command{}, 0, errorf(ErrValueTooLarge, "op %d: %s value of %q is %d bytes, the limit is %d",
				i, op.Space, op.Key, len(op.Value), limit)
		case op.Cond.IfMatch != nil && *op.Cond.IfMatch == 0:
			return command{}, 0, errorf(ErrPrecondition, "op %d: %s key %q: no key has version 0", i, op.Space, op.Key)
		}
		if ks := For(op.Key, n.cfg.Shards); s < 0 {
			s = ks
		} else if ks != s {
			return command{}, 0, errorf(ErrInvalidBatch, "op %d: key %q is on shard %d, key %q of op 0 on shard %d",
				i, op.Key, ks, ops[0].Key, s)
		}
		k := spaceKey{op.Space, op.Key}
		if _, dup := seen[k]; dup {
			return command{}, 0, errorf(ErrInvalidBatch, "op %d: %s key %q appears twice", i, op.Space, op.Key)
		}
		seen[k] = struct{}{}
		if total += len(op.Key) + len(op.Value); total > MaxBatchBytes {
			return command{}, 0, errorf(ErrInvalidBatch, "keys and values exceed %d bytes", MaxBatchBytes)
		}
		c := opPut
		if op.Delete {
			c = opDelete
		}
		cmd.Ops[i] = newCommand(c, op.Key, op.Value, op.Cond)
		cmd.Ops[i].Space = uint8(op.Space)
	}
	return cmd, s, nil
}

// write proposes the encoded command b on shard s's leader: locally when
// this node leads, else forwarded. Only failures that certainly did not
// apply the write (no leader, not the leader, connection never made) are
// retried. It returns the entry's index (also when the command failed in
// the FSM, as on ErrPrecondition) and counts the write under op.
func (n *Node) write(ctx context.Context, op string, s int, b []byte) (uint64, applyResult, error) {
	if err := n.evictedErr(); err != nil {
		return 0, applyResult{}, err
	}
	ctx, cancel := n.ctx(ctx)
	defer cancel()

	var (
		idx uint64
		ar  applyResult
	)
	err := n.retry(ctx, s, func(leader string) error {
		var err error
		if g := n.hosted(s); g != nil && (leader == "" || leader == n.cfg.Addr) && g.isLeader() {
			idx, ar, err = n.applyLocal(ctx, g, b)
			return err
		}
		if leader == "" || leader == n.cfg.Addr {
			return errorf(ErrNotLeader, "shard %d has no known leader", s)
		}
		resp, err := n.forwarderFor(leader).apply(ctx, applyReq{Shard: s, Cmd: b})
		if err != nil {
			return err
		}
		idx, ar = resp.Index, applyResult{version: resp.Version, deleted: resp.Deleted, deletedOps: resp.DeletedOps}
		return resp.rpcError.err()
	})
	switch {
	case err == nil:
		n.m.writes.WithLabelValues(op, "ok").Inc()
	case errors.Is(err, ErrPrecondition):
		n.m.writes.WithLabelValues(op, "precondition_failed").Inc()
	default:
		n.m.writes.WithLabelValues(op, "error").Inc()
	}
	return idx, ar, err
}

// retry calls try with the shard's leader address ("" when unknown) until
// it succeeds, fails with an error that is not safely retryable, or ctx
// ends.
func (n *Node) retry(ctx context.Context, s int, try func(leader string) error) error {
	backoff := 10 * time.Millisecond
	for {
		err := try(n.leaderOf(s))
		if err == nil || !(errors.Is(err, ErrNotLeader) || errors.Is(err, errNotSent) || errors.Is(err, errReadRPC)) {
			return err
		}
		if n.closed.Load() {
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: shard %d: %v (last error: %v)", ErrUnavailable, s, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// readTryCtx bounds one attempt of a forwarded read, so a read sent to a
// leader that hangs (paused, partitioned) is retried at the new leader
// instead of waiting out the whole request deadline.
func (n *Node) readTryCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(2*time.Second, 4*n.cfg.ElectionTimeout))
}

// leaderOf returns the address of shard s's leader as this node knows it.
// A replica that has lost touch with its leader (cut off from Raft traffic,
// say) falls back to what its peers last reported.
func (n *Node) leaderOf(s int) string {
	if g := n.hosted(s); g != nil {
		if addr := g.leaderAddr(); addr != "" {
			return addr
		}
	}
	return n.peers.leader(s)
}

// applyLocal proposes cmd through the local group, which must lead.
func (n *Node) applyLocal(ctx context.Context, g *group, cmd []byte) (uint64, applyResult, error) {
	return g.propose(ctx, cmd)
}

// errForward tells a reader to have the shard's leader serve the read.
var errForward = errors.New("shard: forward read to leader")

// prepareRead blocks until local group g may serve a read at ro's
// consistency, or returns errForward when the leader should serve it.
func (n *Node) prepareRead(ctx context.Context, g *group, ro ReadOptions) error {
	switch ro.Consistency {
	case Stale:
		return nil
	case Session:
		need := ro.Session.Index(g.id)
		if g.fsm.applied.Load() >= need {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, n.cfg.SessionWait)
		err := g.fsm.waitApplied(wctx, need)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: shard %d: %v", ErrUnavailable, g.id, ctx.Err())
		}
		n.m.sessionFallbacks.Inc()
		if !g.isLeader() && n.rpc != nil {
			// This replica is behind the caller: the leader has applied
			// everything committed, so let it serve the read.
			return errForward
		}
		// The leader is behind a token (a token from the future): a
		// linearizable read covers every committed write.
		return n.linearizable(ctx, g)
	case Linearizable:
		return n.linearizable(ctx, g)
	}
	return errorf(ErrBadConsistency, "%d", ro.Consistency)
}

// linearizable obtains a read index from the shard's leader (this replica
// or, forwarded, another) and waits until the local replica has applied it.
func (n *Node) linearizable(ctx context.Context, g *group) error {
	var idx uint64
	err := n.retry(ctx, g.id, func(leader string) error {
		if g.isLeader() {
			var err error
			idx, err = g.readIndex(ctx)
			return err
		}
		if leader == "" || leader == n.cfg.Addr || n.rpc == nil {
			return errorf(ErrNotLeader, "shard %d has no known leader", g.id)
		}
		var resp readIndexResp
		tctx, cancel := n.readTryCtx(ctx)
		defer cancel()
		if err := n.rpc.call(tctx, "POST", leader, rpcReadIndex, readIndexReq{Shard: g.id}, &resp); err != nil {
			return fmt.Errorf("%w: %v", errReadRPC, err)
		}
		idx = resp.Index
		return resp.rpcError.err()
	})
	if err != nil {
		return err
	}
	if !g.isLeader() && n.rpc != nil {
		// A follower cut off from its leader's log would wait out the
		// request: after the session bound, the leader serves the read.
		wctx, cancel := context.WithTimeout(ctx, n.cfg.SessionWait)
		err := g.fsm.waitApplied(wctx, idx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() == nil {
			n.m.sessionFallbacks.Inc()
			return errForward
		}
	}
	if err := g.fsm.waitApplied(ctx, idx); err != nil {
		return fmt.Errorf("%w: shard %d waiting for index %d: %v", ErrUnavailable, g.id, idx, err)
	}
	return nil
}

// Get reads key at ro's consistency. It is GetIn(UserSpace), admitted
// under Config.MaxInflightReads.
func (n *Node) Get(ctx context.Context, key string, ro ReadOptions) (GetResult, error) {
	release, err := n.admit(ctx, n.readSlots, "read")
	if err != nil {
		return GetResult{Session: ro.Session}, err
	}
	defer release()
	return n.GetIn(ctx, UserSpace, key, ro)
}

// GetIn reads key of space sp at ro's consistency, with Get's semantics:
// served locally when this node replicates the key's shard and is caught
// up, else by the shard's leader. An unknown space is an error wrapping
// ErrInvalidKey.
func (n *Node) GetIn(ctx context.Context, sp Space, key string, ro ReadOptions) (GetResult, error) {
	res := GetResult{Session: ro.Session}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := n.evictedErr(); err != nil {
		return res, err
	}
	ksp, ok := sp.kvSpace()
	if !ok {
		return res, errorf(ErrInvalidKey, "unknown space %d", sp)
	}
	if err := validateStoredKey(key); err != nil {
		return res, err
	}
	if ro.Consistency > Stale {
		return res, errorf(ErrBadConsistency, "%d", ro.Consistency)
	}
	ctx, cancel := n.ctx(ctx)
	defer cancel()
	s := For(key, n.cfg.Shards)
	g := n.hosted(s)
	if g == nil {
		return n.forwardGet(ctx, s, sp, key, ro)
	}
	if err := n.prepareRead(ctx, g, ro); errors.Is(err, errForward) {
		return n.forwardGet(ctx, s, sp, key, ro)
	} else if err != nil {
		return res, err
	}
	if !n.engRLock() {
		return res, ErrClosed
	}
	rec, found, err := n.eng.GetIn(s, ksp, []byte(key))
	n.engMu.RUnlock()
	if err != nil {
		return res, fmt.Errorf("shard: %w", err)
	}
	if g.removed.Load() {
		// The replica was removed (and its data deleted) meanwhile.
		return n.forwardGet(ctx, s, sp, key, ro)
	}
	// pending is at least the state the read observed.
	res.Session = ro.Session.Merge(session.Token{s: g.fsm.pending.Load()})
	n.m.reads.WithLabelValues(ro.Consistency.String()).Inc()
	res.Found = found
	res.Record = Record{Key: key, Value: rec.Value, Version: rec.Version}
	return res, nil
}

// forwardGet has the shard's leader serve a Get: for a shard this node
// holds no replica of, or when the local replica is behind the caller.
func (n *Node) forwardGet(ctx context.Context, s int, sp Space, key string, ro ReadOptions) (GetResult, error) {
	res := GetResult{Session: ro.Session}
	var resp readResp
	err := n.retry(ctx, s, func(leader string) error {
		if leader == "" {
			return errorf(ErrNotLeader, "shard %d has no known leader", s)
		}
		resp = readResp{}
		req := readReq{Shard: s, Consistency: uint8(ro.Consistency), Session: ro.Session.Encode(), Key: key, Space: uint8(sp)}
		tctx, cancel := n.readTryCtx(ctx)
		defer cancel()
		if err := n.rpc.call(tctx, "POST", leader, rpcGet, req, &resp); err != nil {
			return fmt.Errorf("%w: %v", errReadRPC, err)
		}
		return resp.rpcError.err()
	})
	if err != nil {
		return res, err
	}
	res.Found = resp.Found
	if len(resp.Records) == 1 {
		res.Record = resp.Records[0]
	}
	res.Session = ro.Session.Merge(session.Token{s: resp.Applied})
	return res, nil
}

// scanPart is one shard's share of a scan page.
type scanPart struct {
	recs      []Record
	applied   uint64
	truncated bool // stopped at MaxScanBytes: the shard may hold more
	err       error
	skipped   bool // holds no key of the scan's prefix: not read
}

func recordBytes(r Record) int { return len(r.Key) + len(r.Value) }

// scanLocal reads up to limit records of space sp of local group g in
// [lo, hi), and no more than MaxScanBytes of them.
func (n *Node) scanLocal(ctx context.Context, g *group, sp Space, lo, hi []byte, limit int, ro ReadOptions) (scanPart, error) {
	ksp, ok := sp.kvSpace()
	if !ok {
		return scanPart{}, errorf(ErrInvalidKey, "unknown space %d", sp)
	}
	if err := n.prepareRead(ctx, g, ro); err != nil {
		return scanPart{}, err
	}
	if !n.engRLock() {
		return scanPart{}, ErrClosed
	}
	defer n.engMu.RUnlock()
	r := n.eng.NewReader()
	defer r.Close()
	var p scanPart
	var err error
	if p.applied, err = r.Applied(g.id); err != nil {
		return scanPart{}, fmt.Errorf("shard: %w", err)
	}
	size := 0
	err = r.ScanIn(g.id, ksp, lo, hi, func(k, v []byte, ver uint64) bool {
		if size >= MaxScanBytes {
			p.truncated = true
			return false
		}
		rec := Record{Key: string(k), Value: append([]byte(nil), v...), Version: ver}
		p.recs = append(p.recs, rec)
		size += recordBytes(rec)
		return len(p.recs) < limit
	})
	if err != nil {
		return scanPart{}, fmt.Errorf("shard: %w", err)
	}
	if g.removed.Load() {
		// The replica was removed (and its data deleted) meanwhile.
		return scanPart{}, errForward
	}
	return p, nil
}

// Scan returns one page of keys in key order across every shard. It is
// ScanIn(UserSpace).
func (n *Node) Scan(ctx context.Context, req ScanRequest, ro ReadOptions) (ScanResult, error) {
	return n.ScanIn(ctx, UserSpace, req, ro)
}

// ScanIn returns one page of the keys of space sp in key order across every
// shard, with Scan's semantics. An unknown space is an error wrapping
// ErrInvalidKey.
func (n *Node) ScanIn(ctx context.Context, sp Space, req ScanRequest, ro ReadOptions) (ScanResult, error) {
	res := ScanResult{Session: ro.Session}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := n.evictedErr(); err != nil {
		return res, err
	}
	if _, ok := sp.kvSpace(); !ok {
		return res, errorf(ErrInvalidKey, "unknown space %d", sp)
	}
	if req.Limit <= 0 {
		req.Limit = DefaultScanLimit
	}
	if req.Limit > MaxScanLimit {
		return res, errorf(ErrInvalidScan, "limit %d exceeds %d", req.Limit, MaxScanLimit)
	}
	if ro.Consistency > Stale {
		return res, errorf(ErrBadConsistency, "%d", ro.Consistency)
	}
	lo, hi := scanBounds(req)
	if hi != nil && string(lo) >= string(hi) {
		return res, nil
	}
	ctx, cancel := n.ctx(ctx)
	defer cancel()
	// Each shard reads a share of the page, not the whole page: keys hash
	// over the shards, so asking every shard for Limit records read up to
	// Shards times more than a page returns. A shard that fills its quota
	// bounds the page like one cut short by bytes (below).
	// A prefix holding a whole {hash tag} names one shard: every key under
	// it hashes by that tag.
	only, single := prefixShard(req.Prefix, n.cfg.Shards)
	quota := req.Limit + 1
	if sh := n.cfg.Shards; sh > 1 && !single {
		quota = min(quota, max(2*((req.Limit+sh-1)/sh)+1, minShardQuota))
	}
	parts := make([]scanPart, n.cfg.Shards)
	var wg sync.WaitGroup
	for s := 0; s < n.cfg.Shards; s++ {
		if single && s != only {
			parts[s].skipped = true
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[s]
			if g := n.hosted(s); g != nil {
				*p, p.err = n.scanLocal(ctx, g, sp, lo, hi, quota, ro)
				if !errors.Is(p.err, errForward) {
					return
				}
			}
			p.err = n.retry(ctx, s, func(leader string) error {
				if leader == "" {
					return errorf(ErrNotLeader, "shard %d has no known leader", s)
				}
				var resp readResp
				rr := readReq{Shard: s, Consistency: uint8(ro.Consistency), Session: ro.Session.Encode(),
					Lo: lo, Hi: hi, Limit: quota, Space: uint8(sp)}
				tctx, cancel := n.readTryCtx(ctx)
				defer cancel()
				if err := n.rpc.call(tctx, "POST", leader, rpcScan, rr, &resp); err != nil {
					return fmt.Errorf("%w: %v", errReadRPC, err)
				}
				p.recs, p.applied, p.truncated = resp.Records, resp.Applied, resp.Truncated
				return resp.rpcError.err()
			})
		}()
	}
	wg.Wait()
	tok := session.Token{}
	var all []Record
	var errs []error
	// bound is the smallest last key among shards cut short by the byte
	// budget or their quota: past it, those shards may hold keys this page
	// has not seen.
	var bound *string
	for s, p := range parts {
		if p.skipped {
			continue
		}
		if p.err != nil {
			errs = append(errs, p.err)
			continue
		}
		tok.Observe(s, p.applied)
		all = append(all, p.recs...)
		if (p.truncated || len(p.recs) >= quota) && len(p.recs) > 0 {
			last := p.recs[len(p.recs)-1].Key
			if bound == nil || last < *bound {
				bound = &last
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	sortRecords(all)
	size, i := 0, 0
	for ; i < len(all); i++ {
		if i == req.Limit || (i > 0 && size >= MaxScanBytes) || (bound != nil && all[i].Key > *bound) {
			break
		}
		size += recordBytes(all[i])
	}
	switch {
	case i < len(all) && (bound == nil || all[i].Key <= *bound):
		res.More, res.Next = true, all[i].Key
	case bound != nil:
		// Resume just after the bound: the smallest key greater than it.
		res.More, res.Next = true, *bound+"\x00"
	}
	res.Items = all[:i]
	res.Session = ro.Session.Merge(tok)
	n.m.reads.WithLabelValues(ro.Consistency.String()).Inc()
	return res, nil
}

// prefixShard reports whether every key beginning with prefix maps to one
// shard — the prefix holds a whole non-empty {hash tag} — and which.
func prefixShard(prefix string, shards int) (int, bool) {
	i := strings.IndexByte(prefix, '{')
	if i < 0 {
		return 0, false
	}
	if j := strings.IndexByte(prefix[i+1:], '}'); j > 0 {
		return For(prefix, shards), true
	}
	return 0, false
}

// minShardQuota is the least a shard reads for one scan page.
const minShardQuota = 65

// scanBounds returns [lo, hi) for req; hi nil is unbounded.
func scanBounds(req ScanRequest) (lo, hi []byte) {
	lo = []byte(req.Prefix)
	if req.Start > req.Prefix {
		lo = []byte(req.Start)
	}
	if req.Prefix != "" {
		hi = prefixEnd([]byte(req.Prefix))
	}
	if req.End != "" && (hi == nil || req.End < string(hi)) {
		hi = []byte(req.End)
	}
	return lo, hi
}

func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
