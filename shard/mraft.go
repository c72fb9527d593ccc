package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"net"

	"lambdadb/kv"
	"lambdadb/multiraft"
	"lambdadb/transport"
)

// mraft replicates one shard through the node's multiraft engine.
type mraft struct {
	n  *Node
	id int
}

func (g *mraft) status() multiraft.Status {
	st, _ := g.n.mr.Status(uint64(g.id))
	return st
}

func (g *mraft) isLeader() bool { return g.status().IsLeader() }

// leader returns the Raft number of the leader this replica knows, 0 for
// none. A replica whose applied configuration no longer counts this node
// (removed by a move that is not yet recorded complete) knows none: the
// group stops writing to it, so the leader it last heard from would stay
// its answer for good, however the leadership moves afterwards.
func (g *mraft) leader() uint64 {
	lead := g.status().Leader
	if lead == 0 {
		return 0
	}
	if cs := g.n.confOf(g.id); cs != nil && len(cs.GetVoters()) > 0 {
		self := g.n.mr.NodeID()
		if !slices.Contains(cs.GetVoters(), self) && !slices.Contains(cs.GetLearners(), self) &&
			!slices.Contains(cs.GetVotersOutgoing(), self) && !slices.Contains(cs.GetLearnersNext(), self) {
			return 0
		}
	}
	return lead
}

func (g *mraft) leaderAddr() string {
	if p, ok := g.n.peerByNum(g.leader()); ok {
		return p.Addr
	}
	return ""
}

func (g *mraft) notLeader() error {
	p, ok := g.n.peerByNum(g.leader())
	if !ok {
		return errorf(ErrNotLeader, "shard %d has no leader", g.id)
	}
	return errorf(ErrNotLeader, "shard %d is led by %s", g.id, p.ID)
}

func (g *mraft) stateName() string {
	return strings.ToLower(strings.TrimPrefix(g.status().State.String(), "State"))
}

// mapErr turns an engine error into the shard's.
func (g *mraft) mapErr(err error, what string) error {
	switch {
	case errors.Is(err, multiraft.ErrNotLeader):
		return g.notLeader()
	case errors.Is(err, multiraft.ErrDropped):
		// Certainly not applied: as safe to retry as a refusal.
		return errorf(ErrNotLeader, "shard %d: %v", g.id, err)
	case errors.Is(err, multiraft.ErrNoGroup):
		// The replica is gone from this node (moved away): nothing was
		// proposed here.
		return errorf(ErrNotLeader, "shard %d: %v", g.id, err)
	case errors.Is(err, multiraft.ErrRemoved):
		// Removed while the entry was in raft's hands: it may still
		// commit on the other replicas.
		return errorf(ErrUnavailable, "shard %d: %v %s", g.id, err, what)
	case errors.Is(err, multiraft.ErrClosed):
		return ErrClosed
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return errorf(ErrUnavailable, "shard %d: %v %s", g.id, err, what)
	}
	return fmt.Errorf("shard: %d: %w", g.id, err)
}

// propose stamps cmd with this leader's clock (the change feed's record
// time) and replicates it.
func (g *mraft) propose(ctx context.Context, cmd []byte) (uint64, applyResult, error) {
	data := make([]byte, 8+len(cmd))
	binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
	copy(data[8:], cmd)
	idx, res, err := g.n.mr.Propose(ctx, uint64(g.id), data)
	if err != nil {
		return 0, applyResult{}, g.mapErr(err, "waiting for the entry to commit (the write may or may not have been applied)")
	}
	ar, ok := res.(*applyResult)
	if !ok || ar == nil {
		return idx, applyResult{}, fmt.Errorf("shard: %d: unexpected apply response %T", g.id, res)
	}
	return idx, *ar, ar.err
}

func (g *mraft) readIndex(ctx context.Context) (uint64, error) {
	idx, err := g.n.mr.ReadIndex(ctx, uint64(g.id))
	if err != nil {
		return 0, g.mapErr(err, "confirming leadership")
	}
	g.n.m.readIndexReads.Inc()
	return idx, nil
}

func (g *mraft) transfer(p Peer) error {
	num, ok := g.n.numOf(p.ID)
	if !ok {
		return fmt.Errorf("shard: unknown node %s", p.ID)
	}
	return g.n.mr.TransferLeader(uint64(g.id), num)
}

func (g *mraft) waitLeader(ctx context.Context) error {
	for !g.isLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: shard %d elected no leader: %v", ErrUnavailable, g.id, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// stats reports the log's first index and, as last_snapshot_index, the
// index the log was last truncated at ("0" while nothing was truncated
// past the bootstrap point).
func (g *mraft) stats() map[string]string {
	first, _ := g.n.mr.FirstIndex(uint64(g.id))
	snap := "0"
	if first > mraftBootstrapIndex+1 {
		snap = strconv.FormatUint(first-1, 10)
	}
	return map[string]string{"first_index": strconv.FormatUint(first, 10), "last_snapshot_index": snap,
		"state": g.stateName()}
}

func (g *mraft) shutdown() error { return nil }

// mraftBootstrapIndex is where multiraft starts a new group's log.
const mraftBootstrapIndex = 5

// mraftSM adapts the shard FSM to multiraft.StateMachine. An entry's
// payload is the proposer's clock (8 bytes) and the command.
type mraftSM struct {
	f  *fsm
	rs *kv.RaftStorage
}

// loadConf reads the applied configuration from storage.
func (s *mraftSM) loadConf() {
	if _, cs, err := s.rs.InitialState(); err == nil && cs != nil {
		s.f.conf.Store(cs)
	}
}

func (s *mraftSM) Applied() uint64 { return s.f.applied.Load() }

func (s *mraftSM) Apply(ents []multiraft.Entry, cs *pb.ConfState) {
	in := make([]entry, len(ents))
	for i, e := range ents {
		in[i] = entry{Index: e.Index}
		if len(e.Data) >= 8 {
			in[i].Time = int64(binary.BigEndian.Uint64(e.Data))
			in[i].Data = e.Data[8:]
			in[i].Command = true
		}
	}
	lastTerm := ents[len(ents)-1].Term
	res := s.f.applyEntries(in, func(a *kv.Apply, last uint64) error { return a.CommitRaft(last, lastTerm, cs) })
	for i, r := range res {
		if r != nil {
			ents[i].Result = r
		}
	}
	if cs != nil {
		s.f.conf.Store(cs)
	}
}

func (s *mraftSM) Restored(index uint64) {
	s.f.pending.Store(index)
	s.loadConf()
	s.f.setApplied(index)
}

// openMultiRaft starts the node's multiraft engine and its transport.
func (n *Node) openMultiRaft() error {
	self, _ := n.numOf(n.cfg.ID)
	var tr *transport.Transport
	var mt multiraft.Transport
	if n.cfg.Mux != nil {
		var err error
		tr, err = transport.New(transport.Config{
			Self: self,
			Dial: func(ctx context.Context, to uint64, kind transport.StreamKind) (net.Conn, error) {
				p, ok := n.peerByNum(to)
				if !ok {
					return nil, fmt.Errorf("shard: no node number %d", to)
				}
				return n.cfg.Mux.dialMulti(ctx, p.Addr, p.ID, kind == transport.KindSnapshot)
			},
			SnapshotBytesPerSec: max(n.cfg.SnapshotBytesPerSec, 0),
			Logger:              n.cfg.Logger,
		})
		if err != nil {
			return fmt.Errorf("shard: %w", err)
		}
		mt = tr
	}
	ticks := max(2, int(n.cfg.ElectionTimeout/n.cfg.TickInterval))
	e, err := multiraft.Open(multiraft.Config{
		NodeID:           self,
		Storage:          n.eng,
		Transport:        mt,
		FS:               n.cfg.FS,
		SnapshotDir:      n.cfg.FS.PathJoin(n.cfg.Dir, "snapshots-in"),
		TickInterval:     n.cfg.TickInterval,
		ElectionTicks:    ticks,
		HeartbeatTicks:   1,
		LogRetainEntries: n.cfg.LogRetainEntries,
		Registerer:       n.cfg.Registerer,
		Logger:           n.cfg.Logger,
	})
	if err != nil {
		if tr != nil {
			tr.Close()
		}
		return fmt.Errorf("shard: %w", err)
	}
	n.mr, n.tr = e, tr
	if tr != nil {
		tr.SetHandler(e)
		n.cfg.Mux.handleMulti(func(c net.Conn, peer string, snapshot bool) {
			num, ok := n.numOf(peer)
			if !ok {
				c.Close()
				return
			}
			if snapshot {
				tr.ServeSnapshot(c, num)
			} else {
				tr.ServeRaft(c, num)
			}
		})
	}
	return nil
}

// HaltRaft stops this node's Raft traffic in both directions at once. Crash simulations call it
// before capturing the filesystem, so that nothing the node acknowledges
// afterwards is missing from the capture, as after a real crash.
func (n *Node) HaltRaft() {
	if n.tr != nil {
		_ = n.tr.Close()
	}
}
