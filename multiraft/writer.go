package multiraft

import (
	"fmt"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/kv"
)

// writeItem is one unit of log work: a group's MsgStorageAppend, or a
// truncation of its log.
type writeItem struct {
	r        *replica
	m        *pb.Message
	truncate uint64
	// done (TruncateLog's, buffered) receives nil once a truncation is
	// durable, or an error wrapping ErrRemoved when the item was discarded.
	done chan error
}

func (it writeItem) size() int {
	n := 64
	for _, ent := range it.m.GetEntries() {
		n += len(ent.GetData()) + 32
	}
	return n
}

// writer is the node's one log writer: it takes every queued item, writes
// them in one kv.RaftBatch, commits it with one sync, then delivers each
// item's responses in queue order.
type writer struct {
	e     *Engine
	mu    sync.Mutex
	cond  *sync.Cond // items queued, or closed
	idle  *sync.Cond // a batch was written and delivered, or the writer stopped
	queue []writeItem
	// inflight names the replicas of the batch being written and delivered
	// (repeats allowed): remove waits until it no longer names its replica.
	inflight []*replica
	closed   bool
	stopped  bool // run has returned: nothing is or will be in flight
}

func newWriter(e *Engine) *writer {
	w := &writer{e: e}
	w.cond = sync.NewCond(&w.mu)
	w.idle = sync.NewCond(&w.mu)
	return w
}

// enqueue queues it, or releases it at once when its replica is removed.
func (w *writer) enqueue(it writeItem) {
	w.mu.Lock()
	if it.r.removed.Load() {
		w.mu.Unlock()
		w.release(it)
		return
	}
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	w.cond.Signal()
}

// remove discards r's queued items and waits until no batch holding an
// item of r is being written or delivered; it returns the discarded items,
// for the caller to release. The caller has set r.removed, so enqueue
// refuses r's items from now on.
func (w *writer) remove(r *replica) []writeItem {
	w.mu.Lock()
	defer w.mu.Unlock()
	var dropped []writeItem
	w.queue = slices.DeleteFunc(w.queue, func(it writeItem) bool {
		if it.r == r {
			dropped = append(dropped, it)
			return true
		}
		return false
	})
	for !w.stopped && slices.Contains(w.inflight, r) {
		w.idle.Wait()
	}
	return dropped
}

// release lets go of an item that will not be written: a TruncateLog
// caller waiting on it is told, and a staged snapshot it would have
// installed is deleted.
func (w *writer) release(it writeItem) {
	if it.done != nil {
		it.done <- fmt.Errorf("%w: group %d: log truncation discarded", ErrRemoved, it.r.id)
	}
	if snap := it.m.GetSnapshot(); snap != nil && snap.GetMetadata().GetIndex() > 0 {
		kv.RemoveStagedSnapshot(w.e.cfg.FS, string(snap.GetData()))
	}
}

// settle marks the batch in flight done (stopped: and the writer gone) and
// wakes remove.
func (w *writer) settle(stopped bool) {
	w.mu.Lock()
	clear(w.inflight)
	w.inflight = w.inflight[:0]
	w.stopped = w.stopped || stopped
	w.mu.Unlock()
	w.idle.Broadcast()
}

func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Signal()
}

func (w *writer) run() {
	var items []writeItem
	for {
		w.mu.Lock()
		for !w.closed && len(w.queue) == 0 {
			w.cond.Wait()
		}
		if w.closed {
			w.stopped = true
			w.mu.Unlock()
			w.idle.Broadcast()
			return
		}
		// Take items up to MaxWriteBytes (at least one).
		size, n := 0, 0
		for n < len(w.queue) && (n == 0 || size+w.queue[n].size() <= w.e.cfg.MaxWriteBytes) {
			size += w.queue[n].size()
			n++
		}
		items = append(items[:0], w.queue[:n]...)
		rest := copy(w.queue, w.queue[n:])
		clear(w.queue[rest:])
		w.queue = w.queue[:rest]
		for _, it := range items {
			w.inflight = append(w.inflight, it.r)
		}
		w.mu.Unlock()

		if err := w.write(items); err != nil {
			w.settle(true)
			w.e.cfg.Logger.Error("raft log write failed; stopping", "err", err)
			w.e.cfg.Fatal(fmt.Errorf("multiraft: log write: %w", err))
			return
		}
		w.settle(false)
		clear(items)
	}
}

func (w *writer) write(items []writeItem) error {
	e := w.e
	// Items go into one batch, committed with one sync; a snapshot to
	// install splits it: what comes before it is committed first, then
	// its staged table is ingested, then the rest follows in a new batch.
	b := e.cfg.Storage.NewRaftBatch()
	defer func() { b.Close() }()
	sync := false
	commit := func() error {
		if b.Empty() {
			return nil
		}
		if err := b.Commit(sync); err != nil {
			return err
		}
		if sync {
			e.m.syncs.Inc()
		}
		b, sync = e.cfg.Storage.NewRaftBatch(), false
		return nil
	}
	for _, it := range items {
		st := it.r.storage
		if it.m == nil {
			if err := b.Truncate(st, it.truncate); err != nil {
				// Truncation checks before it writes, so the batch is
				// intact: skip it (it only saves space).
				e.cfg.Logger.Warn("raft log truncation skipped", "group", it.r.id, "index", it.truncate, "err", err)
				continue
			}
			sync = true // the applies it relies on must be durable too
			continue
		}
		m := it.m
		if snap := m.GetSnapshot(); snap != nil && snap.GetMetadata().GetIndex() > 0 {
			if err := commit(); err != nil {
				return err
			}
			start := time.Now()
			ist, err := st.IngestSnapshot(string(snap.GetData()), snap.GetMetadata())
			if err != nil {
				return fmt.Errorf("group %d: install snapshot at %d: %w", it.r.id, snap.GetMetadata().GetIndex(), err)
			}
			e.m.snapIngest.Observe(time.Since(start).Seconds())
			e.m.snapIngestBytes.Add(float64(ist.Bytes))
			e.m.snapIngestL0Bytes.Add(float64(ist.L0Bytes))
		}
		if ents := m.GetEntries(); len(ents) > 0 {
			if err := b.Append(st, ents); err != nil {
				return fmt.Errorf("group %d: append: %w", it.r.id, err)
			}
		}
		if m.Term != nil {
			hs := &pb.HardState{Term: new(m.GetTerm()), Vote: new(m.GetVote()), Commit: new(m.GetCommit())}
			if err := b.SetHardState(st, hs); err != nil {
				return fmt.Errorf("group %d: hard state: %w", it.r.id, err)
			}
		}
		if len(m.GetResponses()) > 0 {
			sync = true
		}
	}
	if err := commit(); err != nil {
		return err
	}
	e.m.batchItems.Observe(float64(len(items)))
	// Deliver in queue order: local responses to the groups' inboxes,
	// the others to the transport, batched per node.
	out := map[uint64][]Message{}
	var local []*replica
	for _, it := range items {
		if it.m == nil {
			if it.done != nil {
				it.done <- nil
			} else {
				it.r.truncating.Store(false)
			}
			continue
		}
		if snap := it.m.GetSnapshot(); snap != nil && snap.GetMetadata().GetIndex() > 0 {
			it.r.sm.Restored(snap.GetMetadata().GetIndex())
			kv.RemoveStagedSnapshot(e.cfg.FS, string(snap.GetData()))
		}
		var mine []*pb.Message
		for _, resp := range it.m.GetResponses() {
			if resp.GetTo() == e.cfg.NodeID {
				mine = append(mine, resp)
				continue
			}
			out[resp.GetTo()] = append(out[resp.GetTo()], Message{Group: it.r.id, Msg: resp})
		}
		if len(mine) > 0 {
			it.r.mu.Lock()
			if it.r.removed.Load() {
				// RemoveGroup is waiting for this batch; the replica
				// will not take them.
				it.r.mu.Unlock()
				continue
			}
			if len(it.r.inbox) == 0 {
				local = append(local, it.r)
			}
			it.r.inbox = append(it.r.inbox, mine...)
			it.r.mu.Unlock()
		}
	}
	if e.cfg.Transport != nil {
		for to, msgs := range out {
			e.cfg.Transport.Send(to, msgs)
		}
	}
	e.sched.enqueueAll(local)
	return nil
}
