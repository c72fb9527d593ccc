package multiraft

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"lambdadb/kv"
)

// maxTicksPerPass bounds the ticks a replica takes in one pass, so a group
// that waited long for a worker does not time out its leader at once.
const maxTicksPerPass = 3

// maxReadyRounds bounds the Ready rounds of one pass; a group with more
// work is queued again behind the others.
const maxReadyRounds = 4

type proposal struct {
	seq     uint64
	data    []byte
	cc      *pb.ConfChangeV2 // a configuration change instead of data
	done    chan propResult
	expires time.Time
	index   uint64 // set once the entry is seen in an append
}

type propResult struct {
	index  uint64
	result any
	err    error
}

type readWaiter struct{ done chan readResult }

type readResult struct {
	index uint64
	err   error
}

type progressResult struct {
	match map[uint64]uint64
	last  uint64
	ok    bool
	err   error // the replica was removed before it answered
}

type snapReport struct {
	to     uint64
	failed bool
}

// replica is one group replica on this node.
type replica struct {
	id      uint64
	e       *Engine
	storage *kv.RaftStorage
	sm      StateMachine
	sched   schedState // guarded by scheduler.mu

	// removed is set once, first thing, by RemoveGroup. Every path that
	// hands the replica work checks it under the lock guarding that work
	// (mu for the inbox, scheduler.mu, writer.mu), and RemoveGroup takes
	// each of those locks after setting it: work handed over before is
	// seen and released by RemoveGroup, work offered after is refused.
	removed atomic.Bool

	// The inbox, guarded by mu: work handed to the replica by other
	// goroutines, taken by the worker at the start of a pass.
	mu        sync.Mutex
	inbox     []*pb.Message
	ticks     int
	props     []*proposal
	newReads  []*readWaiter
	snaps     []snapReport
	transfers []uint64
	progress  []chan progressResult
	campaign  bool
	staged    []string // staged snapshot files not yet handed to the writer

	// Owned by the worker processing the replica.
	rn         *raft.RawNode
	waiting    map[uint64]*proposal // by sequence number
	byIndex    map[uint64]*proposal // by log index, once appended
	reads      map[uint64][]*readWaiter
	snapsOut   int // snapshots being sent
	truncating atomic.Bool
	passes     uint64

	// Published for readers on other goroutines.
	leader atomic.Uint64
	term   atomic.Uint64
	state  atomic.Int32
}

func (r *replica) status() Status {
	return Status{Leader: r.leader.Load(), Term: r.term.Load(), State: raft.StateType(r.state.Load())}
}

func (r *replica) notLeader() error {
	return &NotLeaderError{Group: r.id, Leader: r.leader.Load()}
}

// process is one worker pass over r.
func (e *Engine) process(r *replica) {
	r.mu.Lock()
	inbox, ticks, props, newReads := r.inbox, r.ticks, r.props, r.newReads
	snaps, transfers, progress, campaign := r.snaps, r.transfers, r.progress, r.campaign
	r.inbox, r.ticks, r.props, r.newReads = nil, 0, nil, nil
	r.snaps, r.transfers, r.progress, r.campaign = nil, nil, nil, false
	r.mu.Unlock()
	r.passes++

	for _, m := range inbox {
		// Errors here are messages raft refuses (a response from a peer
		// no longer in the group, a local type over the network): drop.
		_ = r.rn.Step(m)
	}
	for _, s := range snaps {
		r.snapsOut--
		st := raft.SnapshotFinish
		if s.failed {
			st = raft.SnapshotFailure
		}
		r.rn.ReportSnapshot(s.to, st)
	}
	for range min(ticks, maxTicksPerPass) {
		r.rn.Tick()
	}
	if ticks > 0 && r.passes%64 == 0 {
		r.expireProposals()
	}
	if campaign {
		_ = r.rn.Campaign()
	}
	for _, to := range transfers {
		r.transfer(to)
	}
	for _, ch := range progress {
		ch <- r.progressNow()
	}
	r.propose(props)
	r.issueReads(newReads)
	e.handleReady(r)
	if r.rn.HasReady() {
		e.sched.enqueue(r)
	}
}

func (r *replica) expireProposals() {
	now := time.Now()
	for seq, p := range r.waiting {
		if now.After(p.expires) {
			delete(r.waiting, seq)
			if r.byIndex[p.index] == p {
				delete(r.byIndex, p.index)
			}
		}
	}
}

func (r *replica) propose(props []*proposal) {
	if len(props) == 0 {
		return
	}
	leader := raft.StateType(r.state.Load()) == raft.StateLeader
	for _, p := range props {
		if !leader {
			p.done <- propResult{err: r.notLeader()}
			continue
		}
		var err error
		if p.cc != nil {
			err = r.rn.ProposeConfChange(p.cc)
		} else {
			err = r.rn.Propose(p.data)
		}
		if err != nil {
			r.e.m.dropped.Inc()
			p.done <- propResult{err: fmt.Errorf("%w: group %d: %v", ErrDropped, r.id, err)}
			continue
		}
		r.waiting[p.seq] = p
	}
}

func (r *replica) issueReads(ws []*readWaiter) {
	if len(ws) == 0 {
		return
	}
	if raft.StateType(r.state.Load()) != raft.StateLeader {
		for _, w := range ws {
			w.done <- readResult{err: r.notLeader()}
		}
		return
	}
	seq := r.e.seq.Add(1)
	r.reads[seq] = ws
	r.rn.ReadIndex(readCtx(seq))
	r.e.m.readRounds.Inc()
}

func (r *replica) failReads(err error) {
	for seq, ws := range r.reads {
		for _, w := range ws {
			w.done <- readResult{err: err}
		}
		delete(r.reads, seq)
	}
}

func (r *replica) transfer(to uint64) {
	if to == r.e.cfg.NodeID || raft.StateType(r.state.Load()) != raft.StateLeader {
		return
	}
	st := r.rn.Status()
	pr, ok := st.Progress[to]
	if !ok || pr.IsLearner || pr.Match < r.lastIndex() || st.LeadTransferee != 0 {
		return
	}
	r.rn.TransferLeader(to)
}

func (r *replica) lastIndex() uint64 {
	// The leader's last index is its log's, stable or not: BasicStatus
	// does not carry it, so read it from the status's own progress.
	st := r.rn.Status()
	if pr, ok := st.Progress[r.e.cfg.NodeID]; ok {
		return pr.Match
	}
	return 0
}

func (r *replica) progressNow() progressResult {
	if raft.StateType(r.state.Load()) != raft.StateLeader {
		return progressResult{}
	}
	st := r.rn.Status()
	res := progressResult{match: map[uint64]uint64{}, ok: true}
	for id, pr := range st.Progress {
		res.match[id] = pr.Match
	}
	res.last = res.match[r.e.cfg.NodeID]
	return res
}

// handleReady runs Ready rounds: peer messages to the transport first,
// appends to the log writer, then committed entries applied inline.
func (e *Engine) handleReady(r *replica) {
	for round := 0; round < maxReadyRounds && r.rn.HasReady(); round++ {
		rd := r.rn.Ready()
		e.m.readies.Inc()
		if rd.SoftState != nil {
			wasLeader := raft.StateType(r.state.Load()) == raft.StateLeader
			r.leader.Store(rd.SoftState.Lead)
			r.state.Store(int32(rd.SoftState.RaftState))
			if wasLeader && rd.SoftState.RaftState != raft.StateLeader {
				r.failReads(r.notLeader())
			}
		}
		if rd.HardState != nil {
			r.term.Store(rd.HardState.GetTerm())
		}
		for _, rs := range rd.ReadStates {
			if len(rs.RequestCtx) != 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(rs.RequestCtx)
			for _, w := range r.reads[seq] {
				w.done <- readResult{index: rs.Index}
			}
			delete(r.reads, seq)
		}
		var applies []*pb.Message
		out := map[uint64][]Message{}
		for _, m := range rd.Messages {
			switch m.GetTo() {
			case raft.LocalAppendThread:
				r.trackAppend(m.GetEntries())
				if m.GetSnapshot() != nil {
					r.mu.Lock()
					r.staged = r.staged[:0] // handed to the writer now
					r.mu.Unlock()
				}
				e.w.enqueue(writeItem{r: r, m: m})
			case raft.LocalApplyThread:
				applies = append(applies, m)
			default:
				if m.GetType() == pb.MsgSnap {
					e.sendSnapshot(r, m)
					continue
				}
				out[m.GetTo()] = append(out[m.GetTo()], Message{Group: r.id, Msg: m})
			}
		}
		if e.cfg.Transport != nil {
			for to, msgs := range out {
				e.cfg.Transport.Send(to, msgs)
			}
		}
		for _, m := range applies {
			r.apply(m.GetEntries())
			for _, resp := range m.GetResponses() {
				_ = r.rn.Step(resp)
			}
		}
	}
	r.maybeTruncate()
}

// trackAppend notes the log index of this node's proposals as their
// entries are appended; a proposal whose index another entry takes is
// dropped.
func (r *replica) trackAppend(ents []*pb.Entry) {
	for _, ent := range ents {
		idx := ent.GetIndex()
		node, seq, ok := entryOrigin(ent)
		mine := ok && node == r.e.cfg.NodeID
		if old := r.byIndex[idx]; old != nil && (!mine || old.seq != seq) {
			r.drop(old)
		}
		if !mine {
			continue
		}
		if p := r.waiting[seq]; p != nil {
			p.index = idx
			r.byIndex[idx] = p
		}
	}
}

func (r *replica) drop(p *proposal) {
	delete(r.byIndex, p.index)
	delete(r.waiting, p.seq)
	r.e.m.dropped.Inc()
	p.done <- propResult{err: fmt.Errorf("%w: group %d: entry %d was replaced", ErrDropped, r.id, p.index)}
}

// apply applies committed entries through the state machine, one batch per
// run of entries ending at a configuration change (so the new ConfState is
// persisted with the entry that made it), and answers waiting proposals.
func (r *replica) apply(ents []*pb.Entry) {
	batch := make([]Entry, 0, len(ents))
	seqs := make([]uint64, 0, len(ents)) // this node's sequence per entry, or 0
	flush := func(cs *pb.ConfState) {
		if len(batch) == 0 {
			return
		}
		r.sm.Apply(batch, cs)
		r.e.m.applied.Add(float64(len(batch)))
		for i := range batch {
			r.resolve(batch[i], seqs[i])
		}
		batch, seqs = batch[:0], seqs[:0]
	}
	for _, ent := range ents {
		en := Entry{Index: ent.GetIndex(), Term: ent.GetTerm()}
		var seq uint64
		switch ent.GetType() {
		case pb.EntryNormal:
			if node, s, payload, ok := decodeEnvelope(ent.GetData()); ok {
				en.Data = payload
				if node == r.e.cfg.NodeID {
					seq = s
				}
			}
			batch, seqs = append(batch, en), append(seqs, seq)
		case pb.EntryConfChange, pb.EntryConfChangeV2:
			cc, err := decodeConfChange(ent)
			if node, s, ok := entryOrigin(ent); ok && node == r.e.cfg.NodeID {
				seq = s
			}
			if err != nil {
				// Every replica decodes the same bytes the same way.
				batch, seqs = append(batch, en), append(seqs, seq)
				r.e.cfg.Logger.Error("undecodable configuration change", "group", r.id, "index", en.Index, "err", err)
				continue
			}
			cs := r.rn.ApplyConfChange(cc)
			en.Result = cs // the proposer's answer: the configuration now
			batch, seqs = append(batch, en), append(seqs, seq)
			flush(cs)
		}
	}
	flush(nil)
}

// entryOrigin returns the node and sequence number of the proposal that
// made ent: from its envelope, or for a configuration change proposed by
// ChangeMembership from the envelope in its context.
func entryOrigin(ent *pb.Entry) (node, seq uint64, ok bool) {
	switch ent.GetType() {
	case pb.EntryNormal:
		node, seq, _, ok = decodeEnvelope(ent.GetData())
		return node, seq, ok
	case pb.EntryConfChangeV2:
		var cc pb.ConfChangeV2
		if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
			return 0, 0, false
		}
		node, seq, _, ok = decodeEnvelope(cc.GetContext())
		return node, seq, ok
	}
	return 0, 0, false
}

func decodeConfChange(ent *pb.Entry) (pb.ConfChangeI, error) {
	if ent.GetType() == pb.EntryConfChange {
		var cc pb.ConfChange
		if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
			return nil, err
		}
		return &cc, nil
	}
	var cc pb.ConfChangeV2
	if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
		return nil, err
	}
	return &cc, nil
}

func (r *replica) resolve(en Entry, seq uint64) {
	if p := r.byIndex[en.Index]; p != nil && p.seq != seq {
		r.drop(p)
	}
	if seq == 0 {
		return
	}
	p := r.waiting[seq]
	if p == nil {
		return
	}
	delete(r.waiting, seq)
	delete(r.byIndex, en.Index)
	p.done <- propResult{index: en.Index, result: en.Result}
}

// maybeTruncate queues a log truncation when the applied log has grown two
// retention windows past its first entry and no snapshot is being sent.
func (r *replica) maybeTruncate() {
	if r.snapsOut > 0 || r.truncating.Load() {
		return
	}
	applied := r.sm.Applied()
	keep := r.e.cfg.LogRetainEntries
	first, err := r.storage.FirstIndex()
	if err != nil || applied < first+2*keep {
		return
	}
	r.truncating.Store(true)
	r.e.w.enqueue(writeItem{r: r, truncate: applied - keep})
}

// sendSnapshot streams the group's state to m's recipient. The metadata is
// rewritten from the same Pebble snapshot as the data it describes.
func (e *Engine) sendSnapshot(r *replica, m *pb.Message) {
	to := m.GetTo()
	report := func(failed bool) {
		r.mu.Lock()
		if r.removed.Load() {
			r.mu.Unlock() // nobody is left to tell
			return
		}
		r.snaps = append(r.snaps, snapReport{to: to, failed: failed})
		r.mu.Unlock()
		e.sched.enqueue(r)
	}
	r.snapsOut++
	if e.cfg.Transport == nil {
		report(true)
		return
	}
	snap, err := e.cfg.Storage.SnapshotShard(r.storage.Shard())
	if err != nil {
		e.cfg.Logger.Warn("snapshot", "group", r.id, "err", err)
		report(true)
		return
	}
	idx, term, cs, err := snap.RaftMeta()
	if err != nil {
		snap.Close()
		e.cfg.Logger.Warn("snapshot metadata", "group", r.id, "err", err)
		report(true)
		return
	}
	m.Snapshot = &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(idx), Term: new(term), ConfState: cs}}
	e.m.snapshotsSent.Inc()
	e.cfg.Transport.SendSnapshot(to, Message{Group: r.id, Msg: m},
		func(w io.Writer) error { _, err := snap.WriteTo(w); return err },
		func(err error) {
			snap.Close()
			if err != nil {
				e.cfg.Logger.Warn("snapshot not delivered", "group", r.id, "to", to, "err", err)
			}
			report(err != nil)
		})
}
