package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"lambdadb/multiraft"
)

// ErrClosed is passed to a SendSnapshot's done once the transport is
// closed.
var ErrClosed = errors.New("transport: closed")

// StreamKind names what a connection carries; Config.Dial passes it so the
// dialer can write the matching preamble for the node's connection mux.
type StreamKind uint8

const (
	// KindRaft is the long-lived stream of raft message frames to a peer.
	KindRaft StreamKind = 1
	// KindSnapshot is a connection carrying one snapshot.
	KindSnapshot StreamKind = 2
)

func (k StreamKind) String() string {
	switch k {
	case KindRaft:
		return "raft"
	case KindSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("StreamKind(%d)", uint8(k))
}

// Handler receives what peers send. A *multiraft.Engine satisfies it.
type Handler interface {
	// Receive is called once per inbound frame, in the order the frames
	// arrived on the peer's connection. It must not block for long: it
	// holds up that peer's stream.
	Receive(msgs []multiraft.Message)
	// ReceiveSnapshot consumes one snapshot: m is its MsgSnap and data
	// yields the stream, ending in io.EOF, or an error if it breaks.
	// What it returns is sent back to the sender.
	ReceiveSnapshot(m multiraft.Message, data io.Reader) error
	// ReportUnreachable is called from a peer's writer goroutine when
	// messages to node to were dropped or a connection attempt failed.
	ReportUnreachable(to uint64)
}

// Config configures a Transport.
type Config struct {
	// Self is this node's raft id. Required.
	Self uint64
	// Dial opens a connection to node to for the given stream kind,
	// having written whatever preamble the peer's connection mux needs.
	// The context carries DialTimeout and is cancelled by Close. Required.
	Dial func(ctx context.Context, to uint64, kind StreamKind) (net.Conn, error)
	// Handler receives inbound messages and snapshots and unreachable
	// reports. Optional here: it may be set once later with SetHandler
	// (an Engine usually needs its Transport before it exists). Until a
	// handler is set, inbound raft frames are dropped, inbound snapshots
	// are refused, and unreachable reports are skipped.
	Handler Handler
	// MaxQueueBytes bounds the encoded messages queued for one peer;
	// messages beyond it are dropped and ReportUnreachable is called.
	// Default 64 MiB.
	MaxQueueBytes int
	// DialTimeout bounds each connection attempt. Default 2s.
	DialTimeout time.Duration
	// WriteTimeout bounds writing one raft frame. Default 5s.
	WriteTimeout time.Duration
	// SnapshotChunk is the size of the chunks a snapshot is streamed in.
	// Default 1 MiB; capped to MaxChunkSize.
	SnapshotChunk int
	// SnapshotChunkTimeout bounds writing or reading each snapshot chunk
	// (and the header and the ack); the sender waits four times as long
	// for the ack after its last chunk, as the receiver syncs the data
	// before answering. There is no whole-transfer deadline. Default 30s.
	SnapshotChunkTimeout time.Duration
	// SnapshotBytesPerSec limits the rate at which this node sends
	// snapshot data, all snapshots together, so moving replicas leaves
	// bandwidth and disk for client traffic. 0: no limit.
	SnapshotBytesPerSec int64
	// Logger receives connection events; never message payloads. Default:
	// discard.
	Logger *slog.Logger
}

// Reconnect backoff after a failed attempt, doubling per failure.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// Transport carries raft messages and snapshots between nodes. It
// implements multiraft.Transport. Its methods are safe for concurrent use.
type Transport struct {
	cfg     Config
	log     *slog.Logger
	handler atomic.Pointer[handlerBox]

	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	closing chan struct{} // closed by Close

	mu      sync.Mutex
	closed  bool
	peers   map[uint64]*peer
	conns   map[net.Conn]struct{}   // every open connection, closed by Close
	inbound map[uint64]*inboundConn // the current ServeRaft of each peer
	wg      sync.WaitGroup

	scratch sync.Pool // *[]byte: Send's encoding buffer

	snapLimit *rate.Limiter // nil: no limit
	snapMu    sync.Mutex
	snapSent  map[[2]uint64]*atomic.Int64 // by (group, to): bytes of the latest snapshot
	snapTotal atomic.Int64                // bytes of snapshot data sent, all snapshots
}

type handlerBox struct{ h Handler }

type inboundConn struct {
	conn net.Conn
	done chan struct{} // closed when its ServeRaft stops reading
}

var (
	_ multiraft.Transport = (*Transport)(nil)
	_ Handler             = (*multiraft.Engine)(nil)
)

// New returns a transport; it dials peers lazily, on the first message to
// each.
func New(cfg Config) (*Transport, error) {
	if cfg.Self == 0 {
		return nil, errors.New("transport: Config.Self is required")
	}
	if cfg.Dial == nil {
		return nil, errors.New("transport: Config.Dial is required")
	}
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = 64 << 20
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.SnapshotChunk <= 0 {
		cfg.SnapshotChunk = 1 << 20
	}
	cfg.SnapshotChunk = min(cfg.SnapshotChunk, MaxChunkSize)
	if cfg.SnapshotChunkTimeout <= 0 {
		cfg.SnapshotChunkTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Transport{
		cfg:     cfg,
		log:     cfg.Logger,
		closing: make(chan struct{}),
		peers:   map[uint64]*peer{},
		conns:   map[net.Conn]struct{}{},
		inbound: map[uint64]*inboundConn{},
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if cfg.SnapshotBytesPerSec > 0 {
		t.snapLimit = rate.NewLimiter(rate.Limit(cfg.SnapshotBytesPerSec), max(cfg.SnapshotChunk+binary.MaxVarintLen64, int(min(cfg.SnapshotBytesPerSec, 1<<30))))
	}
	if cfg.Handler != nil {
		t.handler.Store(&handlerBox{cfg.Handler})
	}
	return t, nil
}

// SetHandler sets the handler when Config.Handler was nil. It is meant to
// be called once, before traffic flows; what arrives earlier is dropped.
func (t *Transport) SetHandler(h Handler) {
	if h == nil {
		t.handler.Store(nil)
		return
	}
	t.handler.Store(&handlerBox{h})
}

func (t *Transport) getHandler() Handler {
	if b := t.handler.Load(); b != nil {
		return b.h
	}
	return nil
}

func (t *Transport) reportUnreachable(to uint64) {
	if h := t.getHandler(); h != nil && !t.isClosed() {
		h.ReportUnreachable(to)
	}
}

func (t *Transport) isClosed() bool {
	select {
	case <-t.closing:
		return true
	default:
		return false
	}
}

// Send queues msgs for node to, in order, and returns without waiting on
// the network. Messages that do not fit the peer's queue are dropped (the
// peer's writer then calls ReportUnreachable); after Close every message
// is dropped. msgs and the messages must not be modified while Send runs;
// Send encodes them before it returns.
func (t *Transport) Send(to uint64, msgs []multiraft.Message) {
	if len(msgs) == 0 || to == 0 {
		return
	}
	p := t.peer(to)
	if p == nil {
		return
	}
	bp := t.getScratch()
	buf := (*bp)[:0]
	var ends [16]int
	recs := ends[:0]
	for _, m := range msgs {
		if m.Msg == nil {
			continue
		}
		start := len(buf)
		var err error
		buf, err = appendRecord(buf, m.Group, m.Msg)
		if err == nil && len(buf)-start > maxRecordSize {
			err = fmt.Errorf("transport: message of %d bytes exceeds the frame limit", len(buf)-start)
		}
		if err != nil {
			buf = buf[:start]
			t.log.Error("transport: message not sent", "to", to, "group", m.Group, "type", m.Msg.GetType().String(), "err", err)
			continue
		}
		recs = append(recs, len(buf))
	}
	p.enqueue(buf, recs)
	*bp = buf
	t.putScratch(bp)
}

func (t *Transport) getScratch() *[]byte {
	if bp, ok := t.scratch.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 4096)
	return &b
}

func (t *Transport) putScratch(bp *[]byte) {
	if cap(*bp) > 1<<20 {
		return // let big one-offs go
	}
	t.scratch.Put(bp)
}

// peer returns the peer of node to, starting its writer on first use; nil
// once closed.
func (t *Transport) peer(to uint64) *peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	p := t.peers[to]
	if p == nil {
		p = newPeer(t, to)
		t.peers[to] = p
		t.wg.Add(1)
		go p.run()
	}
	return p
}

// track registers c so Close closes it; false (and c closed) when the
// transport is already closed.
func (t *Transport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

// begin registers a goroutine Close waits for; false once closed.
func (t *Transport) begin() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *Transport) dial(to uint64, kind StreamKind) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.DialTimeout)
	defer cancel()
	c, err := t.cfg.Dial(ctx, to, kind)
	if err != nil {
		return nil, fmt.Errorf("transport: dial node %d (%s): %w", to, kind, err)
	}
	if c == nil {
		return nil, fmt.Errorf("transport: dial node %d (%s): no connection", to, kind)
	}
	if !t.track(c) {
		return nil, ErrClosed
	}
	return c, nil
}

// ServeRaft reads raft frames from conn, a connection from node from past
// its mux preamble, and hands each frame to Handler.Receive in order. It
// returns when the stream ends or fails (a corrupt frame closes it), when
// node from opens a newer raft connection, or when the transport closes;
// it always closes conn.
func (t *Transport) ServeRaft(conn net.Conn, from uint64) {
	if !t.begin() {
		conn.Close()
		return
	}
	defer t.wg.Done()
	if !t.track(conn) {
		return
	}
	defer t.untrack(conn)

	// A peer keeps one outbound raft connection, so a new one means the
	// old one is dead: close it, and wait until it stops delivering so
	// that frames reach the handler in the order they were sent.
	me := &inboundConn{conn: conn, done: make(chan struct{})}
	defer close(me.done)
	t.mu.Lock()
	old := t.inbound[from]
	t.inbound[from] = me
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		if t.inbound[from] == me {
			delete(t.inbound, from)
		}
		t.mu.Unlock()
	}()
	if old != nil {
		old.conn.Close()
		select {
		case <-old.done:
		case <-t.closing:
			return
		}
	}

	br := bufio.NewReaderSize(conn, 64<<10)
	var buf []byte
	for {
		msgs, nb, err := readFrame(br, buf)
		if err != nil {
			if err != io.EOF && !t.isClosed() {
				t.log.Info("transport: raft stream closed", "from", from, "err", err)
			}
			return
		}
		buf = nb
		if cap(buf) > 4<<20 {
			buf = nil // don't pin a big frame's buffer
		}
		if len(msgs) == 0 {
			continue
		}
		if h := t.getHandler(); h != nil {
			h.Receive(msgs)
		}
	}
}

// Close stops every peer writer and snapshot transfer, closes every
// connection and waits for the transport's goroutines (ServeRaft and
// ServeSnapshot calls included) to return. Later Sends are dropped and
// later SendSnapshots fail with ErrClosed. A SendSnapshot's done must not
// wait for Close to return.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.closing)
	t.cancel()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}
