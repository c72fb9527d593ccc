package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"lambdadb/internal/session"
)

// Put stores value under key if cond holds.
func (n *Node) Put(ctx context.Context, key string, value []byte, cond Cond, tok session.Token) (WriteResult, error) {
	if len(value) > n.cfg.MaxValueBytes {
		return WriteResult{Session: tok}, errorf(ErrValueTooLarge, "value is %d bytes, the limit is %d", len(value), n.cfg.MaxValueBytes)
	}
	return n.write(ctx, newCommand(opPut, key, value, cond), tok)
}

// Delete removes key if cond holds.
func (n *Node) Delete(ctx context.Context, key string, cond Cond, tok session.Token) (WriteResult, error) {
	return n.write(ctx, newCommand(opDelete, key, nil, cond), tok)
}

func (n *Node) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, n.cfg.RequestTimeout)
}

var opNames = map[uint8]string{opPut: "put", opDelete: "delete"}

// write proposes cmd on its shard's leader: locally when this node leads,
// else forwarded. Only failures that certainly did not apply the write
// (no leader, not the leader, connection never made) are retried.
func (n *Node) write(ctx context.Context, cmd command, tok session.Token) (WriteResult, error) {
	res := WriteResult{Session: tok}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := ValidateKey(cmd.Key); err != nil {
		return res, err
	}
	if cmd.Cond == condIfMatch && cmd.Version == 0 {
		return res, errorf(ErrPrecondition, "no key has version 0")
	}
	b, err := encodeCommand(cmd)
	if err != nil {
		return res, err
	}
	s := For(cmd.Key, n.cfg.Shards)
	ctx, cancel := n.ctx(ctx)
	defer cancel()

	var (
		idx uint64
		ar  applyResult
	)
	err = n.retry(ctx, s, func(leader string) error {
		var err error
		if g := n.hosted(s); g != nil && (leader == "" || leader == n.cfg.Addr) && g.raft.State() == raft.Leader {
			idx, ar, err = n.applyLocal(ctx, g, b)
			return err
		}
		if leader == "" || leader == n.cfg.Addr {
			return errorf(ErrNotLeader, "shard %d has no known leader", s)
		}
		var resp applyResp
		if err := n.rpc.call(ctx, "POST", leader, rpcApply, applyReq{Shard: s, Cmd: b}, &resp); err != nil {
			return err
		}
		idx, ar = resp.Index, applyResult{version: resp.Version, deleted: resp.Deleted}
		return resp.rpcError.err()
	})
	name := opNames[cmd.Op]
	if idx > 0 {
		res.Session = tok.Merge(session.Token{s: idx})
	}
	switch {
	case err == nil:
		n.m.writes.WithLabelValues(name, "ok").Inc()
		res.Version, res.Deleted = ar.version, ar.deleted
		return res, nil
	case errors.Is(err, ErrPrecondition):
		n.m.writes.WithLabelValues(name, "precondition_failed").Inc()
	default:
		n.m.writes.WithLabelValues(name, "error").Inc()
	}
	return res, err
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
	if g.raft.State() != raft.Leader {
		return 0, applyResult{}, g.notLeader()
	}
	timeout := n.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := g.raft.Apply(cmd, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// Rejected before it entered the log: safe to retry elsewhere.
			return 0, applyResult{}, g.notLeader()
		case errors.Is(err, raft.ErrRaftShutdown):
			return 0, applyResult{}, ErrClosed
		case isRaftUnavailable(err):
			return 0, applyResult{}, errorf(ErrUnavailable, "shard %d: %v (the write may or may not have been applied)", g.id, err)
		}
		return 0, applyResult{}, fmt.Errorf("shard: %d: apply: %w", g.id, err)
	}
	ar, ok := f.Response().(applyResult)
	if !ok {
		return f.Index(), applyResult{}, fmt.Errorf("shard: %d: unexpected apply response %T", g.id, f.Response())
	}
	return f.Index(), ar, ar.err
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
		if g.raft.State() != raft.Leader && n.rpc != nil {
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
		if g.raft.State() == raft.Leader {
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
	if g.raft.State() != raft.Leader && n.rpc != nil {
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

// Get reads key at ro's consistency.
func (n *Node) Get(ctx context.Context, key string, ro ReadOptions) (GetResult, error) {
	res := GetResult{Session: ro.Session}
	if n.closed.Load() {
		return res, ErrClosed
	}
	if err := ValidateKey(key); err != nil {
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
		return n.forwardGet(ctx, s, key, ro)
	}
	if err := n.prepareRead(ctx, g, ro); errors.Is(err, errForward) {
		return n.forwardGet(ctx, s, key, ro)
	} else if err != nil {
		return res, err
	}
	rec, found, err := n.eng.Get(s, []byte(key))
	if err != nil {
		return res, fmt.Errorf("shard: %w", err)
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
func (n *Node) forwardGet(ctx context.Context, s int, key string, ro ReadOptions) (GetResult, error) {
	res := GetResult{Session: ro.Session}
	var resp readResp
	err := n.retry(ctx, s, func(leader string) error {
		if leader == "" {
			return errorf(ErrNotLeader, "shard %d has no known leader", s)
		}
		resp = readResp{}
		req := readReq{Shard: s, Consistency: uint8(ro.Consistency), Session: ro.Session.Encode(), Key: key}
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
}

func recordBytes(r Record) int { return len(r.Key) + len(r.Value) }

// scanLocal reads up to limit records of local group g in [lo, hi), and
// no more than MaxScanBytes of them.
func (n *Node) scanLocal(ctx context.Context, g *group, lo, hi []byte, limit int, ro ReadOptions) (scanPart, error) {
	if err := n.prepareRead(ctx, g, ro); err != nil {
		return scanPart{}, err
	}
	r := n.eng.NewReader()
	defer r.Close()
	var p scanPart
	var err error
	if p.applied, err = r.Applied(g.id); err != nil {
		return scanPart{}, fmt.Errorf("shard: %w", err)
	}
	size := 0
	err = r.Scan(g.id, lo, hi, func(k, v []byte, ver uint64) bool {
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
	return p, nil
}

// Scan returns one page of keys in key order across every shard.
func (n *Node) Scan(ctx context.Context, req ScanRequest, ro ReadOptions) (ScanResult, error) {
	res := ScanResult{Session: ro.Session}
	if n.closed.Load() {
		return res, ErrClosed
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
	parts := make([]scanPart, n.cfg.Shards)
	var wg sync.WaitGroup
	for s := 0; s < n.cfg.Shards; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[s]
			if g := n.hosted(s); g != nil {
				*p, p.err = n.scanLocal(ctx, g, lo, hi, req.Limit+1, ro)
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
					Lo: lo, Hi: hi, Limit: req.Limit + 1}
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
	// budget: past it, those shards may hold keys this page has not seen.
	var bound *string
	for s, p := range parts {
		if p.err != nil {
			errs = append(errs, p.err)
			continue
		}
		tok.Observe(s, p.applied)
		all = append(all, p.recs...)
		if p.truncated && len(p.recs) > 0 {
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
