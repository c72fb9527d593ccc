package shard

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Writes this node forwards to a shard leader on another node travel
// batched: one forwarder per leader address queues them and sends each
// queue as one RPC (rpcApplyBatch), with at most forwardInFlight RPCs out
// per leader. Under load a single RPC carries many writes of many shards,
// so forwarding costs one HTTP exchange per batch rather than per write;
// a lone write goes out at once.
const (
	forwardInFlight = 2
	forwardMaxOps   = 256
	forwardMaxBytes = 4 << 20
)

// applyBatchReq carries forwarded writes, each applied independently.
type applyBatchReq struct {
	Reqs []applyReq `msgpack:"reqs"`
}

// applyBatchResp answers each of applyBatchReq.Reqs, in order.
type applyBatchResp struct {
	rpcError
	Resps []applyResp `msgpack:"resps"`
}

type fwdItem struct {
	req      applyReq
	deadline time.Time
	done     chan fwdResult // buffered: the sender never blocks
}

type fwdResult struct {
	resp applyResp
	err  error
}

// forwarder batches the writes forwarded to one leader address.
type forwarder struct {
	n    *Node
	addr string

	mu      sync.Mutex
	queue   []*fwdItem
	sending int // RPCs in flight
}

// forwarderFor returns the forwarder for addr, creating it.
func (n *Node) forwarderFor(addr string) *forwarder {
	n.fwdMu.Lock()
	defer n.fwdMu.Unlock()
	f := n.fwd[addr]
	if f == nil {
		if n.fwd == nil {
			n.fwd = map[string]*forwarder{}
		}
		f = &forwarder{n: n, addr: addr}
		n.fwd[addr] = f
	}
	return f
}

// apply forwards one write and waits for its outcome. A result that never
// arrives before ctx ends is reported as unknown: the write may or may
// not have been applied.
func (f *forwarder) apply(ctx context.Context, req applyReq) (applyResp, error) {
	it := &fwdItem{req: req, done: make(chan fwdResult, 1)}
	if d, ok := ctx.Deadline(); ok {
		it.deadline = d
	} else {
		it.deadline = time.Now().Add(f.n.cfg.RequestTimeout)
	}
	f.mu.Lock()
	f.queue = append(f.queue, it)
	start := f.sending < forwardInFlight
	if start {
		f.sending++
	}
	f.mu.Unlock()
	if start {
		go f.send()
	}
	select {
	case r := <-it.done:
		return r.resp, r.err
	case <-ctx.Done():
		if f.unqueue(it) {
			// Never sent: certainly not applied, and never will be.
			return applyResp{}, fmt.Errorf("%w: %w: shard %d: %v before the write was sent to %s",
				ErrUnavailable, errNotSent, req.Shard, ctx.Err(), f.addr)
		}
		return applyResp{}, errorf(ErrUnavailable, "shard %d: %v waiting for the leader at %s (the write may or may not have been applied)",
			req.Shard, ctx.Err(), f.addr)
	}
}

// unqueue removes it from the queue if it was not sent yet.
func (f *forwarder) unqueue(it *fwdItem) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, q := range f.queue {
		if q == it {
			f.queue = append(f.queue[:i], f.queue[i+1:]...)
			return true
		}
	}
	return false
}

// send sends queued writes, batch after batch, until the queue is empty.
func (f *forwarder) send() {
	for {
		f.mu.Lock()
		if len(f.queue) == 0 {
			f.sending--
			f.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(f.queue) && n < forwardMaxOps && (n == 0 || size+len(f.queue[n].req.Cmd) <= forwardMaxBytes) {
			size += len(f.queue[n].req.Cmd)
			n++
		}
		// Writes whose deadline passed while queued are not sent: their
		// callers have given up (apply unqueues them too).
		now := time.Now()
		batch := make([]*fwdItem, 0, n)
		for _, it := range f.queue[:n] {
			if it.deadline.After(now) {
				batch = append(batch, it)
			} else {
				it.done <- fwdResult{err: fmt.Errorf("%w: %w: deadline passed before the write was sent to %s", ErrUnavailable, errNotSent, f.addr)}
			}
		}
		f.queue = append(f.queue[:0], f.queue[n:]...)
		f.mu.Unlock()
		if len(batch) > 0 {
			f.sendBatch(batch)
		}
	}
}

// sendBatch sends one batch as one RPC, bounded by its latest deadline,
// and hands each write its outcome.
func (f *forwarder) sendBatch(batch []*fwdItem) {
	deadline := batch[0].deadline
	req := applyBatchReq{Reqs: make([]applyReq, len(batch))}
	for i, it := range batch {
		req.Reqs[i] = it.req
		if it.deadline.After(deadline) {
			deadline = it.deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	f.n.m.forwardBatch.Observe(float64(len(batch)))
	var resp applyBatchResp
	err := f.n.rpc.call(ctx, "POST", f.addr, rpcApplyBatch, req, &resp)
	if err == nil {
		err = resp.rpcError.err()
	}
	if err == nil && len(resp.Resps) != len(batch) {
		err = errorf(ErrUnavailable, "shard: leader %s answered %d of %d forwarded writes (they may or may not have been applied)",
			f.addr, len(resp.Resps), len(batch))
	}
	for i, it := range batch {
		if err != nil {
			it.done <- fwdResult{err: err}
			continue
		}
		it.done <- fwdResult{resp: resp.Resps[i]}
	}
}

// serveApplyBatch applies forwarded writes concurrently (the engine batches
// their proposals) and answers each.
func (n *Node) serveApplyBatch(ctx context.Context, req applyBatchReq) applyBatchResp {
	out := applyBatchResp{Resps: make([]applyResp, len(req.Reqs))}
	var wg sync.WaitGroup
	for i, r := range req.Reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Resps[i] = n.serveApply(ctx, r)
		}()
	}
	wg.Wait()
	return out
}

// serveApply applies one forwarded write if this node leads its shard.
func (n *Node) serveApply(ctx context.Context, req applyReq) applyResp {
	g := n.hosted(req.Shard)
	if g == nil {
		return applyResp{rpcError: leaderError(nil, req.Shard, nil)}
	}
	idx, ar, err := n.applyLocal(ctx, g, req.Cmd)
	return applyResp{rpcError: leaderError(g, req.Shard, err), Index: idx, Version: ar.version, Deleted: ar.deleted,
		DeletedOps: ar.deletedOps}
}
