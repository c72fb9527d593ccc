package shard

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/kv"
)

// applyResult is what the FSM returns for one command entry.
type applyResult struct {
	version    uint64 // version written, or current version on precondition failure
	deleted    bool
	deletedOps []bool // opBatch: per op, whether a delete removed a key
	err        error
}

// fsm is one shard's on-disk state machine.
type fsm struct {
	shard int
	eng   *kv.Engine

	// pending is raised before a batch becomes visible in Pebble and applied
	// after, so pending >= state a reader may observe >= applied.
	pending atomic.Uint64
	applied atomic.Uint64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever applied advances

	onApply func(n int) // metrics hook: entries applied, replays excluded

	// conf is the shard's configuration as last applied here.
	conf atomic.Pointer[pb.ConfState]

	feedSeq   uint16 // next feed sequence number within the entry being applied
	feedDepth uint8  // trigger depth of the entry being applied

	// Stored bytes per namespace (usage.go): usageInit once the shard's
	// totals are known to cover its data; usage the totals the batch
	// being applied has touched.
	usageInit bool
	usage     map[string]*nsUsage
}

func newFSM(shard int, eng *kv.Engine) (*fsm, error) {
	a, err := eng.Applied(shard)
	if err != nil {
		return nil, err
	}
	f := &fsm{shard: shard, eng: eng, changed: make(chan struct{}), onApply: func(int) {}}
	f.pending.Store(a)
	f.applied.Store(a)
	return f, nil
}

func (f *fsm) setApplied(idx uint64) {
	f.applied.Store(idx)
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// waitApplied blocks until the FSM has applied idx or ctx ends.
func (f *fsm) waitApplied(ctx context.Context, idx uint64) error {
	for {
		if f.applied.Load() >= idx {
			return nil
		}
		f.mu.Lock()
		ch := f.changed
		f.mu.Unlock()
		if f.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// entry is one committed log entry as the FSM sees it, whichever engine
// replicated it.
type entry struct {
	Index   uint64
	Data    []byte
	Time    int64 // the proposer's clock when proposed (unix ns), 0 when unknown
	Command bool  // Data is a command; other entries only advance the applied index
}

// applyEntries applies ents in one Pebble batch committed by commit with
// the applied index, and returns each command's result (nil for entries
// that are not commands or were applied before).
func (f *fsm) applyEntries(ents []entry, commit func(a *kv.Apply, last uint64) error) []*applyResult {
	out := make([]*applyResult, len(ents))
	last := ents[len(ents)-1].Index
	persisted := f.applied.Load()
	if last <= persisted {
		return out // replayed after restart: already in Pebble
	}
	a := f.eng.NewApply(f.shard)
	defer a.Close()
	fresh := 0
	for i := range ents {
		l := &ents[i]
		if l.Index <= persisted {
			continue
		}
		if fresh == 0 {
			f.initUsage(a, l.Index)
		}
		fresh++
		if l.Command {
			r := f.applyCommand(a, l)
			out[i] = &r
		}
	}
	f.flushUsage(a)
	f.pending.Store(last)
	if err := commit(a, last); err != nil {
		// The state machine can no longer follow its log; continuing would
		// diverge from the other replicas.
		panic(fmt.Sprintf("shard %d: commit apply batch at %d: %v", f.shard, last, err))
	}
	f.setApplied(last)
	f.onApply(fresh)
	return out
}

func (f *fsm) applyCommand(a *kv.Apply, l *entry) applyResult {
	cmd, err := decodeCommand(l.Data)
	if err != nil {
		// Every replica rejects the same bytes the same way.
		return applyResult{err: err}
	}
	f.feedSeq, f.feedDepth = 0, cmd.Depth
	switch cmd.Op {
	case opNoop:
		return applyResult{}
	case opTrimFeed:
		if err := a.TrimFeed(min(cmd.Version, l.Index)); err != nil {
			panic(fmt.Sprintf("shard %d: trim feed at %d: %v", f.shard, l.Index, err))
		}
		return applyResult{}
	case opBatch:
		return f.applyBatch(a, l, cmd.Ops)
	}
	sp, key := kvSpaceOf(cmd.Space), []byte(cmd.Key)
	if blind(cmd) {
		return f.write(a, l, sp, key, cmd, prior{})
	}
	cur, found := f.read(a, l, sp, key)
	if err := checkCond(cmd, found, cur.Version); err != nil {
		return applyResult{version: cur.Version, err: err}
	}
	return f.write(a, l, sp, key, cmd, priorOf(key, cur, found))
}

// prior is what an apply knows of a key's record before writing it.
type prior struct {
	read  bool // looked up (a blind put has not)
	found bool
	size  int64 // len(key) + len(value) when found
}

func priorOf(key []byte, cur kv.Record, found bool) prior {
	p := prior{read: true, found: found}
	if found {
		p.size = int64(len(key) + len(cur.Value))
	}
	return p
}

// blind reports a write whose condition needs nothing of the key's
// current state: an unconditional put. (Its user-data record is still
// read, in write, for the namespace's stored bytes.)
func blind(cmd command) bool { return cmd.Op == opPut && cmd.Cond == condNone }

// applyBatch applies a batch's ops if every op's condition holds against
// the state before the batch, else none.
func (f *fsm) applyBatch(a *kv.Apply, l *entry, ops []command) applyResult {
	// All reads come before the first write: the Apply reads through its
	// own writes (and decodeCommand has ruled out repeated keys).
	found := make([]prior, len(ops))
	for i, op := range ops {
		if blind(op) {
			continue
		}
		key := []byte(op.Key)
		cur, ok := f.read(a, l, kvSpaceOf(op.Space), key)
		if err := checkCond(op, ok, cur.Version); err != nil {
			return applyResult{err: fmt.Errorf("%w (op %d, %s key %q)", err, i, Space(op.Space), op.Key)}
		}
		found[i] = priorOf(key, cur, ok)
	}
	res := applyResult{version: l.Index, deletedOps: make([]bool, len(ops))}
	for i, op := range ops {
		// No key repeats: a blind op's read in write sees the state
		// before the batch.
		r := f.write(a, l, kvSpaceOf(op.Space), []byte(op.Key), op, found[i])
		res.deletedOps[i] = r.deleted
	}
	return res
}

// kvSpaceOf maps a validated command space to the engine's.
func kvSpaceOf(sp uint8) kv.Space {
	s, _ := Space(sp).kvSpace()
	return s
}

// read returns key's current record in sp as the apply batch leaves it.
func (f *fsm) read(a *kv.Apply, l *entry, sp kv.Space, key []byte) (kv.Record, bool) {
	cur, found, err := a.GetIn(sp, key)
	if err != nil {
		panic(fmt.Sprintf("shard %d: read at %d: %v", f.shard, l.Index, err))
	}
	return cur, found
}

// checkCond checks cmd's precondition against the key's state.
func checkCond(cmd command, found bool, have uint64) error {
	switch cmd.Cond {
	case condIfMatch:
		if !found || have != cmd.Version {
			return errPrecondition(found, have, cmd.Version)
		}
	case condIfNoneMatch:
		if found {
			return errorf(ErrPrecondition, "key exists at version %d", have)
		}
	}
	return nil
}

// write applies put or delete cmd to key, whose record before is p, and
// counts the change in the namespace's stored bytes.
func (f *fsm) write(a *kv.Apply, l *entry, sp kv.Space, key []byte, cmd command, p prior) applyResult {
	if sp == kv.UserData && !p.read {
		cur, ok := f.read(a, l, sp, key)
		p = priorOf(key, cur, ok)
	}
	found := p.found
	switch cmd.Op {
	case opPut:
		if err := a.PutIn(sp, key, cmd.Value, l.Index); err != nil {
			panic(fmt.Sprintf("shard %d: put at %d: %v", f.shard, l.Index, err))
		}
		if sp == kv.UserData {
			f.account(a, l, key, int64(len(key)+len(cmd.Value))-p.size)
		}
		f.feed(a, l, sp, kv.FeedPut, key, cmd.Value)
		return applyResult{version: l.Index}
	default: // opDelete
		if !found {
			return applyResult{}
		}
		if err := a.DeleteIn(sp, key); err != nil {
			panic(fmt.Sprintf("shard %d: delete at %d: %v", f.shard, l.Index, err))
		}
		if sp == kv.UserData {
			f.account(a, l, key, -p.size)
		}
		f.feed(a, l, sp, kv.FeedDelete, key, nil)
		return applyResult{deleted: true}
	}
}

// feed records a change of user data in the shard's change feed, in the
// same batch. System records have no feed.
func (f *fsm) feed(a *kv.Apply, l *entry, sp kv.Space, op byte, key, value []byte) {
	if sp != kv.UserData {
		return
	}
	r := kv.FeedRecord{Index: l.Index, Seq: f.feedSeq, Op: op, Time: l.Time, Key: key, Value: value, Depth: f.feedDepth}
	f.feedSeq++
	if err := a.AppendFeed(r); err != nil {
		panic(fmt.Sprintf("shard %d: feed at %d: %v", f.shard, l.Index, err))
	}
}

func errPrecondition(found bool, have, want uint64) error {
	if !found {
		return errorf(ErrPrecondition, "key is absent, If-Match wants version %d", want)
	}
	return errorf(ErrPrecondition, "key is at version %d, If-Match wants %d", have, want)
}
