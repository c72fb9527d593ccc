package multiraft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"lambdadb/kv"
)

// Bootstrap point: a new group starts as if it had installed a snapshot at
// this index and term holding its initial configuration. Every replica of
// the group bootstraps identically, so none needs a snapshot to start.
const (
	bootstrapIndex = 5
	bootstrapTerm  = 5
)

// GroupConfig describes one group replica to add to an Engine.
type GroupConfig struct {
	// ID is the group's id. Required, unique on the node.
	ID uint64
	// Storage is the replica's raft storage. Required.
	Storage *kv.RaftStorage
	// SM is the replica's state machine. Required.
	SM StateMachine
	// Voters is the group's initial configuration (node ids), used only
	// when the replica has no state yet. It must name this node and be the
	// same on every initial replica.
	Voters []uint64
	// Join starts a replica without state and without Voters: one being
	// added to an existing group (ChangeMembership on its leader), which
	// receives the group's state as a snapshot from the leader.
	Join bool
}

// Status is a group replica's view of its group.
type Status struct {
	Leader uint64 // 0 when unknown
	Term   uint64
	State  raft.StateType
}

// IsLeader reports whether the replica leads its group.
func (s Status) IsLeader() bool { return s.State == raft.StateLeader }

// Engine drives this node's replicas of many raft groups.
type Engine struct {
	cfg   Config
	m     *metrics
	sched *scheduler
	w     *writer

	mu     sync.RWMutex
	groups map[uint64]*replica
	// list is for the ticker, which reads it outside mu: it is replaced,
	// never changed in place, except by appends beyond its length.
	list []*replica

	removeMu sync.Mutex // serialises RemoveGroup

	seq     atomic.Uint64 // proposal and read-request sequence numbers
	closed  atomic.Bool
	stop    chan struct{}
	bg      sync.WaitGroup
	closeMu sync.Mutex
}

// Open starts an engine with no groups; add them with AddGroup. Snapshots
// staged by an earlier run and never installed are removed.
func Open(cfg Config) (*Engine, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.SnapshotDir != "" {
		if err := cfg.FS.MkdirAll(cfg.SnapshotDir, 0o755); err != nil {
			return nil, fmt.Errorf("multiraft: snapshot dir: %w", err)
		}
		names, err := cfg.FS.List(cfg.SnapshotDir)
		if err != nil {
			return nil, fmt.Errorf("multiraft: snapshot dir: %w", err)
		}
		for _, n := range names {
			_ = cfg.FS.Remove(cfg.FS.PathJoin(cfg.SnapshotDir, n))
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("multiraft: metrics: %w", err)
	}
	e := &Engine{cfg: cfg, m: m, sched: newScheduler(), groups: map[uint64]*replica{}, stop: make(chan struct{})}
	// Sequence numbers start at a random point so that a restarted node
	// never matches an entry proposed by its previous run.
	e.seq.Store(rand.Uint64() >> 2)
	e.w = newWriter(e)
	e.sched.start(cfg.Workers, e.process)
	e.bg.Add(2)
	go func() { defer e.bg.Done(); e.w.run() }()
	go func() { defer e.bg.Done(); e.tickLoop() }()
	return e, nil
}

// NodeID returns this node's id.
func (e *Engine) NodeID() uint64 { return e.cfg.NodeID }

// AddGroup starts a replica. A replica without state is bootstrapped with
// gc.Voters; one with state resumes from it. A group removed with
// RemoveGroup may be added again once RemoveGroup has returned, with a
// RaftStorage opened after the old replica's storage was deleted
// (kv.Engine.DropShard) — usually with gc.Join, to be added back to the
// group as a new replica.
func (e *Engine) AddGroup(gc GroupConfig) error {
	if e.closed.Load() {
		return ErrClosed
	}
	if gc.Storage == nil || gc.SM == nil {
		return errors.New("multiraft: GroupConfig needs Storage and SM")
	}
	last, err := gc.Storage.LastIndex()
	if err != nil {
		return fmt.Errorf("multiraft: group %d: %w", gc.ID, err)
	}
	if last == 0 && gc.SM.Applied() == 0 && !gc.Join {
		if len(gc.Voters) == 0 {
			return fmt.Errorf("multiraft: group %d has no state and no voters", gc.ID)
		}
		cs := &pb.ConfState{Voters: append([]uint64(nil), gc.Voters...)}
		if err := gc.Storage.Bootstrap(bootstrapIndex, bootstrapTerm, cs); err != nil {
			return fmt.Errorf("multiraft: group %d: %w", gc.ID, err)
		}
		gc.SM.Restored(bootstrapIndex)
	}
	r := &replica{id: gc.ID, e: e, storage: gc.Storage, sm: gc.SM,
		waiting: map[uint64]*proposal{}, byIndex: map[uint64]*proposal{}, reads: map[uint64][]*readWaiter{}}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        e.cfg.NodeID,
		ElectionTick:              e.cfg.ElectionTicks,
		HeartbeatTick:             e.cfg.HeartbeatTicks,
		Storage:                   gc.Storage,
		Applied:                   gc.SM.Applied(),
		AsyncStorageWrites:        true,
		MaxSizePerMsg:             e.cfg.MaxSizePerMsg,
		MaxCommittedSizePerReady:  e.cfg.MaxCommittedBytes,
		MaxUncommittedEntriesSize: e.cfg.MaxUncommittedBytes,
		MaxInflightMsgs:           e.cfg.MaxInflightMsgs,
		MaxInflightBytes:          e.cfg.MaxInflightBytes,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{l: e.cfg.Logger, group: gc.ID},
	})
	if err != nil {
		return fmt.Errorf("multiraft: group %d: %w", gc.ID, err)
	}
	r.rn = rn
	_, cs, err := gc.Storage.InitialState()
	if err != nil {
		return fmt.Errorf("multiraft: group %d: %w", gc.ID, err)
	}
	e.mu.Lock()
	if _, dup := e.groups[gc.ID]; dup {
		e.mu.Unlock()
		return fmt.Errorf("multiraft: group %d added twice", gc.ID)
	}
	e.groups[gc.ID] = r
	e.list = append(e.list, r)
	e.mu.Unlock()
	// A group whose only voter is this node elects itself at once.
	if v := cs.GetVoters(); len(v) == 1 && v[0] == e.cfg.NodeID && len(cs.GetVotersOutgoing()) == 0 {
		r.mu.Lock()
		r.campaign = true
		r.mu.Unlock()
	}
	e.sched.enqueue(r)
	return nil
}

// RemoveGroup stops this node's replica of group id for good, so that its
// storage can be deleted (kv.Engine.DropShard) and a fresh replica of the
// group may later be added again (AddGroup). Call it once the group has
// committed the replica's removal (ChangeMembership on its leader) or is
// being retired: the rest of the group is not told.
//
// When RemoveGroup returns:
//   - no scheduler worker is processing the replica and none ever will
//     again (a pass in progress was waited for), so its RawNode, Storage
//     and StateMachine are no longer used by the engine;
//   - the log writer holds no write of it: a batch holding one was waited
//     for (written and delivered), writes still queued were discarded
//     (a TruncateLog waiting on one fails with ErrRemoved), and later ones
//     are refused;
//   - the ticker no longer ticks it, and messages for the group are
//     dropped (Receive) or refused (ReceiveSnapshot: ErrNoGroup);
//   - every call that was waiting on it has returned with an error
//     wrapping ErrRemoved: Propose and ChangeMembership (outcome unknown
//     if raft had taken the proposal; also wrapping ErrDropped if it had
//     not), ReadIndex, Progress, TruncateLog; calls arriving while
//     RemoveGroup runs fail at once the same way, and calls made
//     afterwards fail with ErrNoGroup;
//   - snapshot files staged for it and not installed are deleted.
//
// A snapshot the replica was streaming to a peer goes on until the
// Transport reports its outcome, which is then ignored; it reads a Pebble
// snapshot, which deleting the shard does not disturb. Adding the group
// back on this node reuses the node's raft id in the group: as for any
// new replica, add it as a learner and promote it only once it has caught
// up (ChangeMembership).
//
// It fails with an error wrapping ErrNoGroup when the node holds no
// replica of id, and with ErrClosed once the engine is closed. Removals
// run one at a time. It waits for the group's worker and the log writer,
// so it must not be called from a StateMachine or Transport method.
func (e *Engine) RemoveGroup(id uint64) error {
	e.removeMu.Lock()
	defer e.removeMu.Unlock()
	r, err := e.group(id)
	if err != nil {
		return err
	}
	// From here every intake refuses r (see replica.removed); the replica
	// stays registered until it is gone, so AddGroup of the same id fails
	// meanwhile.
	r.removed.Store(true)
	e.sched.remove(r)
	// No worker touches r any more: its worker-owned state is ours.
	discarded := e.w.remove(r)
	for _, it := range discarded {
		e.w.release(it)
	}

	r.mu.Lock()
	props, reads, progress, staged := r.props, r.newReads, r.progress, r.staged
	r.inbox, r.ticks, r.props, r.newReads = nil, 0, nil, nil
	r.snaps, r.transfers, r.progress, r.campaign, r.staged = nil, nil, nil, false, nil
	r.mu.Unlock()

	failedProps := len(props) + len(r.waiting)
	for _, p := range props {
		p.done <- propResult{err: fmt.Errorf("%w: group %d: not proposed: %w", ErrRemoved, id, ErrDropped)}
	}
	for seq, p := range r.waiting {
		// Raft has it: it may still commit on the other replicas.
		p.done <- propResult{err: fmt.Errorf("%w: group %d: outcome unknown", ErrRemoved, id)}
		delete(r.waiting, seq)
	}
	clear(r.byIndex)
	for _, ws := range r.reads {
		reads = append(reads, ws...)
	}
	clear(r.reads)
	for _, w := range reads {
		w.done <- readResult{err: fmt.Errorf("%w: group %d: read index", ErrRemoved, id)}
	}
	for _, ch := range progress {
		ch <- progressResult{err: fmt.Errorf("%w: group %d: progress", ErrRemoved, id)}
	}
	for _, path := range staged {
		kv.RemoveStagedSnapshot(e.cfg.FS, path)
	}

	e.mu.Lock()
	delete(e.groups, id)
	e.list = slices.DeleteFunc(slices.Clone(e.list), func(x *replica) bool { return x == r })
	e.mu.Unlock()
	e.cfg.Logger.Info("group replica removed", "group", id,
		"proposals", failedProps, "reads", len(reads), "discarded writes", len(discarded))
	return nil
}

func (e *Engine) group(id uint64) (*replica, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	e.mu.RLock()
	r := e.groups[id]
	e.mu.RUnlock()
	if r == nil {
		return nil, fmt.Errorf("%w: %d", ErrNoGroup, id)
	}
	return r, nil
}

// Propose replicates data through group's log and waits until this node
// has applied it, returning the entry's index and the state machine's
// result. It fails with ErrNotLeader on a follower and ErrDropped when the
// entry will never be applied. When ctx ends first the outcome is unknown:
// the entry may still be applied.
func (e *Engine) Propose(ctx context.Context, group uint64, data []byte) (uint64, any, error) {
	return e.submit(ctx, group, "proposal", func(seq uint64) *proposal {
		return &proposal{seq: seq, data: encodeEnvelope(e.cfg.NodeID, seq, data)}
	})
}

// ChangeMembership proposes a change of group's configuration on its
// leader and waits until this node has applied it, returning the entry's
// index and the configuration it made. Raft allows one change pending at a
// time: a second one proposed meanwhile is dropped (ErrDropped; retry).
// A change of several voters at once enters a joint configuration; with
// cc.Transition left at its default the leader leaves it by itself once
// it applies. change.Context is the engine's.
//
// Adding a replica: start it on its node with GroupConfig.Join, add it as
// a learner (ConfChangeAddLearnerNode), wait until it has caught up
// (Progress), then promote it (ConfChangeAddNode) — so the group never
// counts a voter with an empty log.
func (e *Engine) ChangeMembership(ctx context.Context, group uint64, change *pb.ConfChangeV2) (uint64, *pb.ConfState, error) {
	idx, res, err := e.submit(ctx, group, "configuration change", func(seq uint64) *proposal {
		cc := proto.Clone(change).(*pb.ConfChangeV2)
		cc.Context = encodeEnvelope(e.cfg.NodeID, seq, nil)
		return &proposal{seq: seq, cc: cc}
	})
	if err != nil {
		return 0, nil, err
	}
	cs, _ := res.(*pb.ConfState)
	return idx, cs, nil
}

// submit hands group's replica the proposal build makes for a fresh
// sequence number and waits for its outcome (what is names it in errors).
func (e *Engine) submit(ctx context.Context, group uint64, what string, build func(seq uint64) *proposal) (uint64, any, error) {
	r, err := e.group(group)
	if err != nil {
		return 0, nil, err
	}
	p := build(e.seq.Add(1))
	p.done = make(chan propResult, 1)
	if dl, ok := ctx.Deadline(); ok {
		p.expires = dl
	} else {
		p.expires = time.Now().Add(time.Minute)
	}
	r.mu.Lock()
	if r.removed.Load() {
		r.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: group %d: %s not proposed: %w", ErrRemoved, group, what, ErrDropped)
	}
	r.props = append(r.props, p)
	r.mu.Unlock()
	e.sched.enqueue(r)
	select {
	case res := <-p.done:
		return res.index, res.result, res.err
	case <-ctx.Done():
		return 0, nil, fmt.Errorf("multiraft: group %d: %s: %w", group, what, ctx.Err())
	case <-e.stop:
		return 0, nil, ErrClosed
	}
}

// ReadIndex returns an index at or after every write acknowledged before
// the call, after the leader has confirmed its leadership with a quorum.
// Reads waiting at once share one confirmation. It fails with ErrNotLeader
// on a follower; callers retry with a fresh call, never reuse a request.
func (e *Engine) ReadIndex(ctx context.Context, group uint64) (uint64, error) {
	r, err := e.group(group)
	if err != nil {
		return 0, err
	}
	w := &readWaiter{done: make(chan readResult, 1)}
	r.mu.Lock()
	if r.removed.Load() {
		r.mu.Unlock()
		return 0, fmt.Errorf("%w: group %d: read index", ErrRemoved, group)
	}
	r.newReads = append(r.newReads, w)
	r.mu.Unlock()
	e.sched.enqueue(r)
	select {
	case res := <-w.done:
		return res.index, res.err
	case <-ctx.Done():
		return 0, fmt.Errorf("multiraft: group %d: read index: %w", group, ctx.Err())
	case <-e.stop:
		return 0, ErrClosed
	}
}

// Status returns this replica's view of group.
func (e *Engine) Status(group uint64) (Status, error) {
	r, err := e.group(group)
	if err != nil {
		return Status{}, err
	}
	return r.status(), nil
}

// Progress returns, on a leader, each replica's match index and whether
// it is recently active, and the leader's last index; ok is false on a
// follower. It is answered by the group's worker.
func (e *Engine) Progress(ctx context.Context, group uint64) (p map[uint64]uint64, last uint64, ok bool, err error) {
	r, err := e.group(group)
	if err != nil {
		return nil, 0, false, err
	}
	ch := make(chan progressResult, 1)
	r.mu.Lock()
	if r.removed.Load() {
		r.mu.Unlock()
		return nil, 0, false, fmt.Errorf("%w: group %d: progress", ErrRemoved, group)
	}
	r.progress = append(r.progress, ch)
	r.mu.Unlock()
	e.sched.enqueue(r)
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, 0, false, res.err
		}
		return res.match, res.last, res.ok, nil
	case <-ctx.Done():
		return nil, 0, false, ctx.Err()
	case <-e.stop:
		return nil, 0, false, ErrClosed
	}
}

// TransferLeader asks group's leader on this node to hand leadership to
// node to. It is ignored unless this replica leads and to's log is caught
// up with the leader's.
func (e *Engine) TransferLeader(group, to uint64) error {
	r, err := e.group(group)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.removed.Load() {
		r.mu.Unlock()
		return fmt.Errorf("%w: group %d: leader transfer", ErrRemoved, group)
	}
	r.transfers = append(r.transfers, to)
	r.mu.Unlock()
	e.sched.enqueue(r)
	return nil
}

// Receive hands messages from other nodes to their groups. Messages for
// groups this node does not hold (or is removing) are dropped.
func (e *Engine) Receive(msgs []Message) {
	if e.closed.Load() {
		return
	}
	var touched []*replica
	e.mu.RLock()
	for _, m := range msgs {
		r := e.groups[m.Group]
		if r == nil || m.Msg == nil {
			continue
		}
		r.mu.Lock()
		if r.removed.Load() {
			r.mu.Unlock()
			continue
		}
		if len(r.inbox) == 0 {
			touched = append(touched, r)
		}
		r.inbox = append(r.inbox, m.Msg)
		r.mu.Unlock()
	}
	e.mu.RUnlock()
	e.sched.enqueueAll(touched)
}

// ReceiveSnapshot stages a snapshot's data read from data, then steps its
// MsgSnap into the group. The data is installed, or discarded, by raft's
// decision. It fails with ErrNoGroup for a group this node does not hold
// or is removing (RemoveGroup).
func (e *Engine) ReceiveSnapshot(m Message, data io.Reader) error {
	r, err := e.group(m.Group)
	if err != nil {
		return err
	}
	if r.removed.Load() {
		return fmt.Errorf("%w: %d (being removed)", ErrNoGroup, m.Group)
	}
	if m.Msg.GetType() != pb.MsgSnap || m.Msg.GetSnapshot() == nil {
		return fmt.Errorf("multiraft: group %d: snapshot stream without a MsgSnap", m.Group)
	}
	if e.cfg.SnapshotDir == "" {
		return errors.New("multiraft: no Config.SnapshotDir to stage snapshots")
	}
	seq := e.seq.Add(1)
	path := e.cfg.FS.PathJoin(e.cfg.SnapshotDir, fmt.Sprintf("%d-%d-%d.sst", m.Group, m.Msg.GetSnapshot().GetMetadata().GetIndex(), seq))
	// The stream becomes the table the log writer ingests, verified as it
	// arrives: a bad snapshot is refused here, before raft sees it.
	if err := r.storage.StageSnapshot(path, m.Msg.GetSnapshot().GetMetadata(), data); err != nil {
		kv.RemoveStagedSnapshot(e.cfg.FS, path)
		return fmt.Errorf("multiraft: group %d: stage snapshot: %w", m.Group, err)
	}
	m.Msg.Snapshot.Data = []byte(path)
	r.mu.Lock()
	if r.removed.Load() {
		r.mu.Unlock()
		kv.RemoveStagedSnapshot(e.cfg.FS, path)
		return fmt.Errorf("%w: %d (being removed)", ErrNoGroup, m.Group)
	}
	// Older staged snapshots not yet handed to the writer are superseded.
	for _, old := range r.staged {
		kv.RemoveStagedSnapshot(e.cfg.FS, old)
	}
	r.staged = append(r.staged[:0], path)
	r.inbox = append(r.inbox, m.Msg)
	r.mu.Unlock()
	e.sched.enqueue(r)
	return nil
}

// ReportUnreachable tells every group that node to could not be reached,
// so leaders stop streaming appends to it optimistically.
func (e *Engine) ReportUnreachable(to uint64) {
	if e.closed.Load() {
		return
	}
	e.mu.RLock()
	rs := append([]*replica(nil), e.list...)
	e.mu.RUnlock()
	for _, r := range rs {
		r.mu.Lock()
		if !r.removed.Load() {
			r.inbox = append(r.inbox, &pb.Message{Type: pb.MsgUnreachable.Enum(), From: new(to)})
		}
		r.mu.Unlock()
	}
	e.sched.enqueueAll(rs)
}

func (e *Engine) tickLoop() {
	t := time.NewTicker(e.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		e.mu.RLock()
		rs := e.list
		e.mu.RUnlock()
		for _, r := range rs {
			r.mu.Lock()
			if !r.removed.Load() {
				r.ticks++
			}
			r.mu.Unlock()
		}
		e.sched.enqueueAll(rs)
	}
}

// Close stops every group: ticks and intake first, then the workers, then
// the log writer (an append it has not synced is lost, as in a crash, which
// raft tolerates). Waiting proposals and reads fail with ErrClosed. The
// caller closes the storage afterwards.
func (e *Engine) Close() error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.closed.Swap(true) {
		return nil
	}
	close(e.stop)
	e.sched.close()
	e.w.close()
	e.bg.Wait()
	e.m.unregister()
	return nil
}

func readCtx(seq uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, seq)
	return b
}

// FirstIndex returns the first index still in group's log on this node
// (entries before it were truncated or came with a snapshot).
func (e *Engine) FirstIndex(group uint64) (uint64, error) {
	r, err := e.group(group)
	if err != nil {
		return 0, err
	}
	return r.storage.FirstIndex()
}

// TruncateLog discards group's log entries up to index (at most the
// applied index) on this node now, as the engine does on its own once the
// log outgrows Config.LogRetainEntries. Followers that need the discarded
// entries get a snapshot. It fails with ErrRemoved when RemoveGroup
// discards the truncation before it is written.
func (e *Engine) TruncateLog(ctx context.Context, group, index uint64) error {
	r, err := e.group(group)
	if err != nil {
		return err
	}
	index = min(index, r.sm.Applied())
	done := make(chan error, 1)
	e.w.enqueue(writeItem{r: r, truncate: index, done: done})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-e.stop:
		return ErrClosed
	}
}
