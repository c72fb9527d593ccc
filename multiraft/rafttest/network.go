package rafttest

import (
	"errors"
	"io"
	"sync"

	"lambdadb/multiraft"
)

// ErrUnreachable is returned for snapshots sent across a cut link.
var ErrUnreachable = errors.New("rafttest: unreachable")

// Network connects engines in memory. Each directed link delivers in
// order on its own goroutine; a cut link drops everything.
type Network struct {
	mu      sync.Mutex
	engines map[uint64]*multiraft.Engine
	cut     map[[2]uint64]bool
	down    map[uint64]bool // crashed: nothing from or to them
	links   map[[2]uint64]*link
	closed  bool
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{engines: map[uint64]*multiraft.Engine{}, cut: map[[2]uint64]bool{}, down: map[uint64]bool{}, links: map[[2]uint64]*link{}}
}

// Attach connects node id's engine (nil detaches it: messages to it drop).
func (n *Network) Attach(id uint64, e *multiraft.Engine) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e == nil {
		delete(n.engines, id)
		return
	}
	delete(n.down, id)
	n.engines[id] = e
}

// Down cuts node id off at once, both ways, until it is attached again:
// what it sends from now on — and what is still queued from it — is
// dropped, as after a power cut. (Detaching alone stops only what is sent
// to it; a node crashed in a test keeps running until it is closed, and
// must not acknowledge what its crashed state will not have.)
func (n *Network) Down(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[id] = true
	delete(n.engines, id)
}

// Transport returns node from's view of the network.
func (n *Network) Transport(from uint64) multiraft.Transport { return &transport{n: n, from: from} }

// Cut drops every message from a to b and from b to a.
func (n *Network) Cut(a, b uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]uint64{a, b}] = true
	n.cut[[2]uint64{b, a}] = true
}

// Isolate cuts id from every node in others.
func (n *Network) Isolate(id uint64, others ...uint64) {
	for _, o := range others {
		if o != id {
			n.Cut(id, o)
		}
	}
}

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// Close stops every link's goroutine.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	links := n.links
	n.links = map[[2]uint64]*link{}
	n.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

func (n *Network) target(from, to uint64) (*multiraft.Engine, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.cut[[2]uint64{from, to}] || n.down[from] || n.down[to] {
		return nil, false
	}
	e := n.engines[to]
	return e, e != nil
}

func (n *Network) link(from, to uint64) *link {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	k := [2]uint64{from, to}
	l := n.links[k]
	if l == nil {
		l = &link{n: n, from: from, to: to, wake: make(chan struct{}, 1), done: make(chan struct{})}
		n.links[k] = l
		go l.run()
	}
	return l
}

type link struct {
	n        *Network
	from, to uint64
	mu       sync.Mutex
	q        []multiraft.Message
	wake     chan struct{}
	done     chan struct{}
	once     sync.Once
}

func (l *link) close() { l.once.Do(func() { close(l.done) }) }

func (l *link) run() {
	for {
		select {
		case <-l.done:
			return
		case <-l.wake:
		}
		l.mu.Lock()
		q := l.q
		l.q = nil
		l.mu.Unlock()
		if e, ok := l.n.target(l.from, l.to); ok && len(q) > 0 {
			e.Receive(q)
		}
	}
}

type transport struct {
	n    *Network
	from uint64
}

func (t *transport) Send(to uint64, msgs []multiraft.Message) {
	if _, ok := t.n.target(t.from, to); !ok {
		return
	}
	l := t.n.link(t.from, to)
	if l == nil {
		return
	}
	l.mu.Lock()
	l.q = append(l.q, msgs...)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (t *transport) SendSnapshot(to uint64, m multiraft.Message, data func(io.Writer) error, done func(error)) {
	go func() {
		e, ok := t.n.target(t.from, to)
		if !ok {
			done(ErrUnreachable)
			return
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(data(pw)) }()
		err := e.ReceiveSnapshot(m, pr)
		pr.CloseWithError(errors.New("rafttest: receiver done"))
		done(err)
	}()
}
