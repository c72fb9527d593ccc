package shard

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// group is one shard's Raft group on this node.
type group struct {
	id       int
	replicas []Peer // replicas[0] is the preferred leader
	raft     *raft.Raft
	fsm      *fsm
	m        *metrics

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

func (g *group) start() {
	g.readyCh = make(chan struct{})
	g.readKick = make(chan struct{}, 1)
	g.stop = make(chan struct{})
	g.wg.Add(2)
	go g.watchLeadership()
	go g.readIndexLoop()
}

func (g *group) shutdown() error {
	close(g.stop)
	err := g.raft.Shutdown().Error()
	g.wg.Wait()
	return err
}

// watchLeadership tracks leadership. On every gain it commits a no-op
// command: once the FSM has applied it, this replica has applied every
// earlier write, and every later committed entry reaches the FSM (Raft's own
// no-op and barrier entries do not), so a read index is always reachable.
func (g *group) watchLeadership() {
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

func (g *group) setReady(v bool) {
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

// waitReady blocks until this replica is a ready leader, or ctx ends, or it
// is not the leader.
func (g *group) waitReady(ctx context.Context) error {
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
func (g *group) leaderAddr() string {
	addr, _ := g.raft.LeaderWithID()
	return string(addr)
}

func (g *group) notLeader() error {
	_, id := g.raft.LeaderWithID()
	if id == "" {
		return errorf(ErrNotLeader, "shard %d has no leader", g.id)
	}
	return errorf(ErrNotLeader, "shard %d is led by %s", g.id, id)
}

// readIndex returns an index such that every write acknowledged before the
// call is at or below it, after confirming leadership. Concurrent callers
// share one VerifyLeader round.
func (g *group) readIndex(ctx context.Context) (uint64, error) {
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

func (g *group) readIndexLoop() {
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

func (g *group) failReaders(err error) {
	g.readMu.Lock()
	defer g.readMu.Unlock()
	for _, w := range g.readWaiters {
		w <- readIndexResult{err: err}
	}
	g.readWaiters = nil
}
