package shard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// hraft replicates one shard through hashicorp/raft (Config.Engine
// "hashicorp"): one raft.Raft per shard with its own transport and timers.
type hraft struct {
	id   int
	raft *raft.Raft
	m    *metrics

	// ready is true while this replica leads and has applied an entry of its
	// own term (a no-op command), so its commit index covers every earlier write.
	ready     atomic.Bool
	readyTerm atomic.Uint64 // the term in which ready was established
	readyCh   chan struct{} // closed when ready becomes true; replaced on loss
	readyMu   sync.Mutex
	leaderCh  chan bool

	// Coalesced leadership checks for linearizable reads.
	readMu      sync.Mutex
	readWaiters []chan readIndexResult
	readKick    chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

var noopCommand = func() []byte {
	b, err := encodeCommand(command{Op: opNoop})
	if err != nil {
		panic(err)
	}
	return b
}()

type readIndexResult struct {
	index uint64
	err   error
}

func (g *hraft) start() {
	g.readyCh = make(chan struct{})
	g.readKick = make(chan struct{}, 1)
	g.stop = make(chan struct{})
	g.wg.Add(2)
	go g.watchLeadership()
	go g.readIndexLoop()
}

func (g *hraft) shutdown() error {
	close(g.stop)
	err := g.raft.Shutdown().Error()
	g.wg.Wait()
	return err
}

// watchLeadership tracks leadership. On every gain it commits a no-op
// command: once the FSM has applied it, this replica has applied every
// earlier write, and every later committed entry reaches the FSM (Raft's own
// no-op and barrier entries do not), so a read index is always reachable.
func (g *hraft) watchLeadership() {
	defer g.wg.Done()
	var epoch atomic.Uint64
	for {
		select {
		case <-g.stop:
			return
		case isLeader := <-g.leaderCh:
			e := epoch.Add(1)
			if !isLeader {
				g.setReady(false)
				continue
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				for {
					term := g.raft.CurrentTerm()
					err := g.raft.Apply(noopCommand, 5*time.Second).Error()
					if epoch.Load() != e {
						return
					}
					if err == nil && g.raft.CurrentTerm() == term {
						g.readyTerm.Store(term)
						g.setReady(true)
						return
					}
					if g.raft.State() != raft.Leader {
						return
					}
					select {
					case <-g.stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}()
		}
	}
}

func (g *hraft) setReady(v bool) {
	g.readyMu.Lock()
	defer g.readyMu.Unlock()
	if g.ready.Load() == v {
		return
	}
	g.ready.Store(v)
	if v {
		close(g.readyCh)
	} else {
		g.readyCh = make(chan struct{})
	}
}

func (g *hraft) isLeader() bool { return g.raft.State() == raft.Leader }

func (g *hraft) stateName() string { return strings.ToLower(g.raft.State().String()) }

func (g *hraft) stats() map[string]string { return g.raft.Stats() }

func (g *hraft) transfer(p Peer) error {
	return g.raft.LeadershipTransferToServer(raft.ServerID(p.ID), raft.ServerAddress(p.Addr)).Error()
}

// waitLeader blocks until the group is a ready leader (one-node clusters).
func (g *hraft) waitLeader(ctx context.Context) error {
	for {
		if g.ready.Load() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: shard %d elected no leader: %v", ErrUnavailable, g.id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// propose applies cmd through hashicorp/raft on this leader.
func (g *hraft) propose(ctx context.Context, cmd []byte) (uint64, applyResult, error) {
	if g.raft.State() != raft.Leader {
		return 0, applyResult{}, g.notLeader()
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := g.raft.Apply(cmd, timeout)
	// Raft's timeout bounds only the enqueueing: an entry a leader cannot
	// get committed (and does not step down over) would block Error
	// forever. The request's deadline bounds the wait; the outcome is then
	// unknown.
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return 0, applyResult{}, errorf(ErrUnavailable, "shard %d: %v waiting for the entry to commit (the write may or may not have been applied)", g.id, ctx.Err())
	}
	if err != nil {
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

// waitReady blocks until this replica is a ready leader, or ctx ends, or it
// is not the leader.
func (g *hraft) waitReady(ctx context.Context) error {
	for !g.ready.Load() {
		if g.raft.State() != raft.Leader {
			return g.notLeader()
		}
		g.readyMu.Lock()
		ch := g.readyCh
		g.readyMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: shard %d leader not ready: %v", ErrUnavailable, g.id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// leaderAddr returns the current leader's address, or "".
func (g *hraft) leaderAddr() string {
	addr, _ := g.raft.LeaderWithID()
	return string(addr)
}

func (g *hraft) notLeader() error {
	_, id := g.raft.LeaderWithID()
	if id == "" {
		return errorf(ErrNotLeader, "shard %d has no leader", g.id)
	}
	return errorf(ErrNotLeader, "shard %d is led by %s", g.id, id)
}

// readIndex returns an index such that every write acknowledged before the
// call is at or below it, after confirming leadership. Concurrent callers
// share one VerifyLeader round.
func (g *hraft) readIndex(ctx context.Context) (uint64, error) {
	if err := g.waitReady(ctx); err != nil {
		return 0, err
	}
	ch := make(chan readIndexResult, 1)
	g.readMu.Lock()
	g.readWaiters = append(g.readWaiters, ch)
	g.readMu.Unlock()
	select {
	case g.readKick <- struct{}{}:
	default:
	}
	select {
	case r := <-ch:
		return r.index, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: shard %d read index: %v", ErrUnavailable, g.id, ctx.Err())
	}
}

func (g *hraft) readIndexLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			g.failReaders(ErrClosed)
			return
		case <-g.readKick:
		}
		g.readMu.Lock()
		waiters := g.readWaiters
		g.readWaiters = nil
		g.readMu.Unlock()
		if len(waiters) == 0 {
			continue
		}
		// The commit index is read after every waiter arrived and before
		// leadership is confirmed: if we are still leader after the check,
		// no other leader can have committed anything beyond it.
		// The term must not change across the check, and must be the term
		// whose no-op made the commit index trustworthy.
		term := g.raft.CurrentTerm()
		idx := g.raft.CommitIndex()
		var res readIndexResult
		if !g.ready.Load() || g.readyTerm.Load() != term {
			res.err = g.notLeader()
		} else if err := g.raft.VerifyLeader().Error(); err != nil {
			res.err = errorf(ErrNotLeader, "shard %d: %v", g.id, err)
		} else if g.raft.CurrentTerm() != term {
			res.err = errorf(ErrNotLeader, "shard %d: term changed during read", g.id)
		} else {
			res.index = idx
		}
		g.m.readIndexRounds.Inc()
		g.m.readIndexWaiters.Add(float64(len(waiters)))
		for _, w := range waiters {
			w <- res
		}
	}
}

func (g *hraft) failReaders(err error) {
	g.readMu.Lock()
	defer g.readMu.Unlock()
	for _, w := range g.readWaiters {
		w <- readIndexResult{err: err}
	}
	g.readWaiters = nil
}
