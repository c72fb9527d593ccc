package multiraft

import (
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// writeItem is one unit of log work: a group's MsgStorageAppend, or a
// truncation of its log.
type writeItem struct {
	r        *replica
	m        *pb.Message
	truncate uint64
	done     chan struct{} // closed once a truncation is durable (TruncateLog)
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
	e      *Engine
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []writeItem
	closed bool
}

func newWriter(e *Engine) *writer {
	w := &writer{e: e}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func (w *writer) enqueue(it writeItem) {
	w.mu.Lock()
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	w.cond.Signal()
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
			w.mu.Unlock()
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
		w.mu.Unlock()

		if err := w.write(items); err != nil {
			w.e.cfg.Logger.Error("raft log write failed; stopping", "err", err)
			w.e.cfg.Fatal(fmt.Errorf("multiraft: log write: %w", err))
			return
		}
		clear(items)
	}
}

func (w *writer) write(items []writeItem) error {
	e := w.e
	b := e.cfg.Storage.NewRaftBatch()
	defer b.Close()
	sync := false
	var snapFiles []vfs.File
	defer func() {
		for _, f := range snapFiles {
			f.Close()
		}
	}()
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
			f, err := e.cfg.FS.Open(string(snap.GetData()))
			if err != nil {
				return fmt.Errorf("group %d: open staged snapshot: %w", it.r.id, err)
			}
			snapFiles = append(snapFiles, f)
			if err := b.ApplySnapshot(st, snap.GetMetadata(), f); err != nil {
				return fmt.Errorf("group %d: install snapshot at %d: %w", it.r.id, snap.GetMetadata().GetIndex(), err)
			}
			sync = true
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
	if !b.Empty() {
		if err := b.Commit(sync); err != nil {
			return err
		}
		if sync {
			e.m.syncs.Inc()
		}
		e.m.batchItems.Observe(float64(len(items)))
	}
	// Deliver in queue order: local responses to the groups' inboxes,
	// the others to the transport, batched per node.
	out := map[uint64][]Message{}
	var local []*replica
	for _, it := range items {
		if it.m == nil {
			if it.done != nil {
				close(it.done)
			} else {
				it.r.truncating.Store(false)
			}
			continue
		}
		if snap := it.m.GetSnapshot(); snap != nil && snap.GetMetadata().GetIndex() > 0 {
			it.r.sm.Restored(snap.GetMetadata().GetIndex())
			_ = e.cfg.FS.Remove(string(snap.GetData()))
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
