package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"lambdadb/multiraft"
)

// fakeHandler records what a transport delivers.
type fakeHandler struct {
	mu          sync.Mutex
	batches     [][]multiraft.Message
	unreachable map[uint64]int
	snap        func(m multiraft.Message, r io.Reader) error
}

func newFakeHandler() *fakeHandler { return &fakeHandler{unreachable: map[uint64]int{}} }

func (h *fakeHandler) Receive(msgs []multiraft.Message) {
	h.mu.Lock()
	h.batches = append(h.batches, msgs)
	h.mu.Unlock()
}

func (h *fakeHandler) ReceiveSnapshot(m multiraft.Message, r io.Reader) error {
	h.mu.Lock()
	f := h.snap
	h.mu.Unlock()
	if f == nil {
		return errors.New("fake: no snapshot handler")
	}
	return f(m, r)
}

func (h *fakeHandler) setSnap(f func(m multiraft.Message, r io.Reader) error) {
	h.mu.Lock()
	h.snap = f
	h.mu.Unlock()
}

func (h *fakeHandler) ReportUnreachable(to uint64) {
	h.mu.Lock()
	h.unreachable[to]++
	h.mu.Unlock()
}

func (h *fakeHandler) received() []multiraft.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []multiraft.Message
	for _, b := range h.batches {
		all = append(all, b...)
	}
	return all
}

func (h *fakeHandler) numBatches() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.batches)
}

func (h *fakeHandler) lastBatch() []multiraft.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.batches) == 0 {
		return nil
	}
	return h.batches[len(h.batches)-1]
}

func (h *fakeHandler) unreachableCount(to uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unreachable[to]
}

// cluster is a set of nodes on loopback TCP. A connection starts with a
// 9-byte preamble — stream kind, then the dialer's id — standing in for the
// node's connection mux.
type cluster struct {
	t     *testing.T
	mu    sync.Mutex
	addrs map[uint64]string
	wrap  func(net.Conn) net.Conn // optional, on dialled connections
	dials atomic.Int64
}

type node struct {
	id uint64
	tr *Transport
	h  *fakeHandler
	ln net.Listener
	wg sync.WaitGroup
}

func newCluster(t *testing.T) *cluster {
	return &cluster{t: t, addrs: map[uint64]string{}}
}

func (c *cluster) dialer(self uint64) func(context.Context, uint64, StreamKind) (net.Conn, error) {
	return func(ctx context.Context, to uint64, kind StreamKind) (net.Conn, error) {
		c.dials.Add(1)
		c.mu.Lock()
		addr, ok := c.addrs[to]
		wrap := c.wrap
		c.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("node %d is down", to)
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		var pre [9]byte
		pre[0] = byte(kind)
		binary.BigEndian.PutUint64(pre[1:], self)
		if _, err := conn.Write(pre[:]); err != nil {
			conn.Close()
			return nil, err
		}
		if wrap != nil {
			conn = wrap(conn)
		}
		return conn, nil
	}
}

// start runs node id; cfg's Self, Dial and Handler are filled in.
func (c *cluster) start(id uint64, cfg Config) *node {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	n := &node{id: id, h: newFakeHandler(), ln: ln}
	cfg.Self, cfg.Dial, cfg.Handler = id, c.dialer(id), n.h
	n.tr, err = New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				var pre [9]byte
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(conn, pre[:]); err != nil {
					conn.Close()
					return
				}
				_ = conn.SetReadDeadline(time.Time{})
				from := binary.BigEndian.Uint64(pre[1:])
				switch StreamKind(pre[0]) {
				case KindRaft:
					n.tr.ServeRaft(conn, from)
				case KindSnapshot:
					n.tr.ServeSnapshot(conn, from)
				default:
					conn.Close()
				}
			}()
		}
	}()
	c.mu.Lock()
	c.addrs[id] = ln.Addr().String()
	c.mu.Unlock()
	c.t.Cleanup(n.stop)
	return n
}

// stop takes the node down: unreachable, listener and transport closed.
func (n *node) stop() {
	n.ln.Close()
	n.tr.Close()
	n.wg.Wait()
}

func (c *cluster) down(n *node) {
	c.mu.Lock()
	delete(c.addrs, n.id)
	c.mu.Unlock()
	n.stop()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func heartbeat(from, to, term uint64) *pb.Message {
	return &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(from), To: new(to), Term: new(term), Commit: new(term * 10)}
}

func app(from, to, index uint64, payload []byte) *pb.Message {
	return &pb.Message{
		Type: pb.MsgApp.Enum(), From: new(from), To: new(to), Term: new(uint64(3)), Index: new(index), LogTerm: new(uint64(3)),
		Entries: []*pb.Entry{{Term: new(uint64(3)), Index: new(index + 1), Data: payload}},
	}
}

func sameMessages(t *testing.T, got, want []multiraft.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Group != want[i].Group || !proto.Equal(got[i].Msg, want[i].Msg) {
			t.Fatalf("message %d: got group %d %v, want group %d %v", i, got[i].Group, got[i].Msg, want[i].Group, want[i].Msg)
		}
	}
}

// countConn counts Writes.
type countConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func TestExchangeInOrder(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{})
	b := c.start(2, Config{})

	var wantAB, wantBA []multiraft.Message
	for i := range 200 {
		msgs := []multiraft.Message{
			{Group: uint64(i%7 + 1), Msg: app(1, 2, uint64(i), bytes.Repeat([]byte{byte(i)}, i))},
			{Group: uint64(i%5 + 100), Msg: heartbeat(1, 2, uint64(i))},
		}
		wantAB = append(wantAB, msgs...)
		a.tr.Send(2, msgs)
		back := []multiraft.Message{{Group: uint64(i), Msg: heartbeat(2, 1, uint64(i))}}
		wantBA = append(wantBA, back...)
		b.tr.Send(1, back)
	}
	waitFor(t, "a→b", func() bool { return len(b.h.received()) == len(wantAB) })
	waitFor(t, "b→a", func() bool { return len(a.h.received()) == len(wantBA) })
	sameMessages(t, b.h.received(), wantAB)
	sameMessages(t, a.h.received(), wantBA)
	if n := b.h.unreachableCount(1) + a.h.unreachableCount(2); n != 0 {
		t.Fatalf("%d unreachable reports on a healthy link", n)
	}
}

// TestBatching: what one Send queues goes out as one frame, in one Write.
func TestBatching(t *testing.T) {
	c := newCluster(t)
	var writes atomic.Int64
	c.wrap = func(conn net.Conn) net.Conn { return countConn{conn, &writes} }
	a := c.start(1, Config{})
	b := c.start(2, Config{})

	a.tr.Send(2, []multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 1)}})
	waitFor(t, "first message", func() bool { return b.h.numBatches() == 1 })
	before := writes.Load()

	var hbs []multiraft.Message
	for g := range 64 {
		hbs = append(hbs, multiraft.Message{Group: uint64(g + 1), Msg: heartbeat(1, 2, 2)})
	}
	a.tr.Send(2, hbs)
	waitFor(t, "heartbeats", func() bool { return b.h.numBatches() == 2 })
	sameMessages(t, b.h.lastBatch(), hbs)
	if w := writes.Load() - before; w != 1 {
		t.Fatalf("64 heartbeats took %d writes, want 1", w)
	}
}

// TestConcurrentSenders: per-sender order holds when many goroutines
// send to one peer.
func TestConcurrentSenders(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{})
	b := c.start(2, Config{})
	const senders, each = 8, 500
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				a.tr.Send(2, []multiraft.Message{{Group: uint64(s), Msg: heartbeat(1, 2, uint64(i))}})
			}
		}()
	}
	wg.Wait()
	waitFor(t, "all messages", func() bool { return len(b.h.received()) == senders*each })
	next := make([]uint64, senders)
	for _, m := range b.h.received() {
		if m.Msg.GetTerm() != next[m.Group] {
			t.Fatalf("group %d: term %d arrived, want %d", m.Group, m.Msg.GetTerm(), next[m.Group])
		}
		next[m.Group]++
	}
	if b.h.numBatches() >= senders*each {
		t.Logf("no batching happened (%d frames)", b.h.numBatches())
	}
}

// TestPeerDownBounded: while a peer cannot be dialled, its queue stays
// within MaxQueueBytes, Send does not block, and ReportUnreachable is
// called, at most once per attempt.
func TestPeerDownBounded(t *testing.T) {
	const limit = 8 << 10
	var attempts atomic.Int64
	h := newFakeHandler()
	tr, err := New(Config{
		Self:          1,
		Handler:       h,
		MaxQueueBytes: limit,
		Dial: func(ctx context.Context, to uint64, kind StreamKind) (net.Conn, error) {
			attempts.Add(1)
			<-ctx.Done() // a black hole: the attempt times out
			return nil, ctx.Err()
		},
		DialTimeout: 30 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	payload := make([]byte, 100)
	start := time.Now()
	deadline := start.Add(400 * time.Millisecond)
	sent := 0
	for time.Now().Before(deadline) {
		tr.Send(2, []multiraft.Message{{Group: 1, Msg: app(1, 2, uint64(sent), payload)}})
		sent++
		tr.mu.Lock()
		p := tr.peers[2]
		tr.mu.Unlock()
		p.mu.Lock()
		queued := p.bytes
		p.mu.Unlock()
		if queued > limit {
			t.Fatalf("%d bytes queued, limit %d", queued, limit)
		}
		if sent%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if perSend := time.Since(start) / time.Duration(sent); perSend > time.Millisecond {
		t.Fatalf("Send took %v on average while the peer was down", perSend)
	}
	waitFor(t, "unreachable report", func() bool { return h.unreachableCount(2) > 0 })
	reports, tries := h.unreachableCount(2), attempts.Load()
	if int64(reports) > tries+1 {
		t.Fatalf("%d unreachable reports for %d attempts", reports, tries)
	}
	if tries > 20 {
		t.Fatalf("%d dial attempts in 400ms: no backoff", tries)
	}
	t.Logf("sent %d, %d attempts, %d reports", sent, tries, reports)
}

func TestReconnect(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{})
	b := c.start(2, Config{})

	a.tr.Send(2, []multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 1)}})
	waitFor(t, "first message", func() bool { return len(b.h.received()) == 1 })

	c.down(b)
	// Keep sending: the broken connection and the failed redials are
	// reported.
	waitFor(t, "unreachable report", func() bool {
		a.tr.Send(2, []multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 2)}})
		time.Sleep(5 * time.Millisecond)
		return a.h.unreachableCount(2) > 0
	})

	b2 := c.start(2, Config{})
	waitFor(t, "message after restart", func() bool {
		a.tr.Send(2, []multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 3)}})
		time.Sleep(5 * time.Millisecond)
		return len(b2.h.received()) > 0
	})
	for _, m := range b2.h.received() {
		if term := m.Msg.GetTerm(); term != 2 && term != 3 {
			t.Fatalf("unexpected message with term %d after restart", term)
		}
	}
}

// TestInboundReplaced: a peer's new raft connection replaces its old one.
func TestInboundReplaced(t *testing.T) {
	h := newFakeHandler()
	tr, err := New(Config{Self: 2, Handler: h, Dial: func(context.Context, uint64, StreamKind) (net.Conn, error) {
		return nil, errors.New("no dialling")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	c1, s1 := net.Pipe()
	first := make(chan struct{})
	go func() { tr.ServeRaft(s1, 1); close(first) }()
	frame, _ := encodeFrame([]multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 1)}})
	if _, err := c1.Write(frame); err != nil {
		t.Fatal(err)
	}
	c2, s2 := net.Pipe()
	second := make(chan struct{})
	go func() { tr.ServeRaft(s2, 1); close(second) }()
	select {
	case <-first:
	case <-time.After(5 * time.Second):
		t.Fatal("old inbound connection not closed")
	}
	frame, _ = encodeFrame([]multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 2)}})
	if _, err := c2.Write(frame); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both frames", func() bool { return len(h.received()) == 2 })
	c2.Close()
	<-second
	c1.Close()
}

func snapMsg(from, to, index uint64) *pb.Message {
	return &pb.Message{
		Type: pb.MsgSnap.Enum(), From: new(from), To: new(to), Term: new(uint64(4)),
		Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
			Index: new(index), Term: new(uint64(4)),
			ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}},
		}},
	}
}

// writeInPieces writes data to w in irregular pieces.
func writeInPieces(w io.Writer, data []byte) error {
	r := rand.New(rand.NewPCG(1, 2))
	for len(data) > 0 {
		n := min(len(data), 1+r.IntN(300<<10))
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func sendSnapshotWait(t *testing.T, tr *Transport, to uint64, m multiraft.Message, data func(io.Writer) error) error {
	t.Helper()
	var calls atomic.Int32
	res := make(chan error, 2)
	tr.SendSnapshot(to, m, data, func(err error) {
		calls.Add(1)
		res <- err
	})
	select {
	case err := <-res:
		time.Sleep(10 * time.Millisecond)
		if n := calls.Load(); n != 1 {
			t.Fatalf("done called %d times", n)
		}
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("done not called")
		return nil
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{SnapshotChunk: 256 << 10})
	b := c.start(2, Config{})

	data := make([]byte, 5<<20+123)
	_, _ = rand.NewChaCha8([32]byte{3, 4}).Read(data)
	var got []byte
	var gotMsg multiraft.Message
	b.h.setSnap(func(m multiraft.Message, r io.Reader) error {
		gotMsg = m
		var err error
		got, err = io.ReadAll(r)
		return err
	})
	want := multiraft.Message{Group: 77, Msg: snapMsg(1, 2, 1000)}
	// Heartbeats flow while the snapshot streams.
	stop := make(chan struct{})
	go func() {
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a.tr.Send(2, []multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, i)}})
			time.Sleep(time.Millisecond)
		}
	}()
	err := sendSnapshotWait(t, a.tr, 2, want, func(w io.Writer) error { return writeInPieces(w, data) })
	close(stop)
	if err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("received %d bytes, not the %d sent", len(got), len(data))
	}
	sameMessages(t, []multiraft.Message{gotMsg}, []multiraft.Message{want})
	waitFor(t, "heartbeats", func() bool { return len(b.h.received()) > 0 })
}

func TestSnapshotEmpty(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{})
	b := c.start(2, Config{})
	var n int
	b.h.setSnap(func(m multiraft.Message, r io.Reader) error {
		got, err := io.ReadAll(r)
		n = len(got)
		return err
	})
	err := sendSnapshotWait(t, a.tr, 2, multiraft.Message{Group: 1, Msg: snapMsg(1, 2, 5)}, func(io.Writer) error { return nil })
	if err != nil || n != 0 {
		t.Fatalf("done(%v), %d bytes received; want nil, 0", err, n)
	}
}

func TestSnapshotReceiverError(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{SnapshotChunk: 64 << 10})
	b := c.start(2, Config{})
	data := make([]byte, 16<<20)

	for _, tc := range []struct {
		name string
		read int // bytes the handler reads before failing
	}{{"at once", 0}, {"midway", 3 << 20}, {"after all", len(data)}} {
		t.Run(tc.name, func(t *testing.T) {
			b.h.setSnap(func(m multiraft.Message, r io.Reader) error {
				if _, err := io.CopyN(io.Discard, r, int64(tc.read)); err != nil {
					return err
				}
				return errors.New("disk full")
			})
			err := sendSnapshotWait(t, a.tr, 2, multiraft.Message{Group: 9, Msg: snapMsg(1, 2, 10)},
				func(w io.Writer) error { return writeInPieces(w, data) })
			if !errors.Is(err, ErrSnapshotRejected) || !strings.Contains(err.Error(), "disk full") {
				t.Fatalf("done(%v), want a rejection saying disk full", err)
			}
		})
	}
}

func TestSnapshotSenderDataError(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{SnapshotChunk: 1 << 10})
	b := c.start(2, Config{})
	readErr := make(chan error, 1)
	b.h.setSnap(func(m multiraft.Message, r io.Reader) error {
		_, err := io.ReadAll(r)
		readErr <- err
		return err
	})
	boom := errors.New("boom")
	err := sendSnapshotWait(t, a.tr, 2, multiraft.Message{Group: 9, Msg: snapMsg(1, 2, 10)}, func(w io.Writer) error {
		if _, err := w.Write(make([]byte, 10<<10)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("done(%v), want boom", err)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("receiver read a broken stream to a clean end")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("receiver did not see the broken stream")
	}
}

func TestSnapshotPeerDown(t *testing.T) {
	c := newCluster(t)
	a := c.start(1, Config{})
	err := sendSnapshotWait(t, a.tr, 3, multiraft.Message{Group: 1, Msg: snapMsg(1, 3, 1)}, func(io.Writer) error { return nil })
	if err == nil {
		t.Fatal("snapshot to a missing node succeeded")
	}
}

// TestServeRaftCorrupt: a corrupt frame closes the connection and nothing
// of it is delivered.
func TestServeRaftCorrupt(t *testing.T) {
	good, _ := encodeFrame([]multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 1)}})
	for name, bad := range corruptFrames(t) {
		t.Run(name, func(t *testing.T) {
			h := newFakeHandler()
			tr, err := New(Config{Self: 2, Handler: h, Dial: func(context.Context, uint64, StreamKind) (net.Conn, error) {
				return nil, errors.New("no dialling")
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			client, server := net.Pipe()
			defer client.Close()
			done := make(chan struct{})
			go func() { tr.ServeRaft(server, 1); close(done) }()
			go func() {
				_, _ = client.Write(good)
				_, _ = client.Write(bad)
				_, _ = client.Write(good)
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("ServeRaft still serving after a corrupt frame")
			}
			if got := h.received(); len(got) != 1 {
				t.Fatalf("%d messages delivered, want only the first frame's", len(got))
			}
		})
	}
}

// corruptFrames returns frames a decoder must reject.
func corruptFrames(t *testing.T) map[string][]byte {
	frame := func(body []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(body))), body...) }
	rec := func(group uint64, msg []byte) []byte {
		b := binary.AppendUvarint(nil, group)
		b = binary.AppendUvarint(b, uint64(len(msg)))
		return append(b, msg...)
	}
	hb, err := proto.Marshal(heartbeat(1, 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	one := append(binary.AppendUvarint(nil, 1), rec(5, hb)...)
	return map[string][]byte{
		"huge length":         binary.AppendUvarint(nil, MaxFrameSize+1),
		"overflowing length":  bytes.Repeat([]byte{0xff}, 11),
		"empty body":          frame(nil),
		"count beyond body":   frame(binary.AppendUvarint(nil, 1<<40)),
		"count too high":      frame(append(binary.AppendUvarint(nil, 2), rec(5, hb)...)),
		"message beyond body": frame(append(binary.AppendUvarint(nil, 1), append(binary.AppendUvarint([]byte{5}, 1<<30), hb...)...)),
		"trailing bytes":      frame(append(one, 0, 0)),
		"bad proto":           frame(append(binary.AppendUvarint(nil, 1), rec(5, []byte{0xff, 0xff, 0xff})...)),
		"truncated group":     frame([]byte{1, 0x80}),
	}
}

func TestDecodeCorrupt(t *testing.T) {
	for name, bad := range corruptFrames(t) {
		t.Run(name, func(t *testing.T) {
			if msgs, _, err := readFrame(bufio.NewReader(bytes.NewReader(bad)), nil); err == nil {
				t.Fatalf("decoded %d messages from a corrupt frame", len(msgs))
			}
		})
	}
	// A truncated stream is an error too, not a clean end.
	good, _ := encodeFrame([]multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 1)}})
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(good[:len(good)-1])), nil); err == nil || err == io.EOF {
		t.Fatalf("truncated frame: %v", err)
	}
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(nil)), nil); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
}

func TestSnapshotStreamCorrupt(t *testing.T) {
	h := newFakeHandler()
	readErr := make(chan error, 1)
	h.snap = func(m multiraft.Message, r io.Reader) error {
		_, err := io.ReadAll(r)
		readErr <- err
		return err
	}
	tr, err := New(Config{Self: 2, Handler: h, Dial: func(context.Context, uint64, StreamKind) (net.Conn, error) {
		return nil, errors.New("no dialling")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	hdr, _ := snapshotHeader(2, multiraft.Message{Group: 1, Msg: snapMsg(1, 2, 1)}, func(io.Writer) error { return nil })
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { tr.ServeSnapshot(server, 1); close(done) }()
	go func() {
		_, _ = client.Write(hdr)
		_, _ = client.Write(binary.AppendUvarint(nil, MaxChunkSize+1))
	}()
	if err := <-readErr; !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("handler read %v, want ErrFrameTooLarge", err)
	}
	// The refusal comes back as an ack.
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := readAck(client, 2); !errors.Is(err, ErrSnapshotRejected) {
		t.Fatalf("ack: %v", err)
	}
	client.Close()
	<-done
}

// TestCloseStopsGoroutines: Close returns with every goroutine of the
// transports gone, mid-snapshot included.
func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	c := newCluster(t)
	a := c.start(1, Config{})
	b := c.start(2, Config{})
	gotData := make(chan struct{})
	b.h.setSnap(func(m multiraft.Message, r io.Reader) error {
		buf := make([]byte, 1)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		close(gotData)
		_, err := io.Copy(io.Discard, r)
		return err
	})
	for i := range 10 {
		a.tr.Send(2, []multiraft.Message{{Group: uint64(i), Msg: heartbeat(1, 2, 1)}})
		b.tr.Send(1, []multiraft.Message{{Group: uint64(i), Msg: heartbeat(2, 1, 1)}})
		a.tr.Send(3, []multiraft.Message{{Group: uint64(i), Msg: heartbeat(1, 3, 1)}}) // node 3 is down
	}
	waitFor(t, "traffic", func() bool { return len(b.h.received()) == 10 && len(a.h.received()) == 10 })

	// A snapshot whose data never ends.
	snapDone := make(chan error, 1)
	a.tr.SendSnapshot(2, multiraft.Message{Group: 1, Msg: snapMsg(1, 2, 1)}, func(w io.Writer) error {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
	}, func(err error) { snapDone <- err })
	<-gotData

	closed := make(chan struct{})
	go func() {
		a.tr.Close()
		b.tr.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := <-snapDone; err == nil {
		t.Fatal("interrupted snapshot reported success")
	}
	// Closed transports drop Sends and fail SendSnapshots.
	a.tr.Send(2, []multiraft.Message{{Group: 1, Msg: heartbeat(1, 2, 2)}})
	late := make(chan error, 1)
	a.tr.SendSnapshot(2, multiraft.Message{Group: 1, Msg: snapMsg(1, 2, 1)}, func(io.Writer) error { return nil }, func(err error) { late <- err })
	if err := <-late; !errors.Is(err, ErrClosed) {
		t.Fatalf("SendSnapshot after Close: %v", err)
	}
	a.stop()
	b.stop()
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestSetHandlerLater(t *testing.T) {
	tr, err := New(Config{Self: 2, Dial: func(context.Context, uint64, StreamKind) (net.Conn, error) {
		return nil, errors.New("no dialling")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	client, server := net.Pipe()
	defer client.Close()
	go tr.ServeRaft(server, 1)
	// Without a handler, frames are read and dropped. (A pipe's Write
	// returns once the reader has taken the bytes, so the second write
	// returns after the first frame was handled.)
	frame, _ := encodeFrame([]multiraft.Message{{Group: 3, Msg: heartbeat(1, 2, 1)}})
	for range 2 {
		if _, err := client.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	h := newFakeHandler()
	tr.SetHandler(h)
	frame, _ = encodeFrame([]multiraft.Message{{Group: 3, Msg: heartbeat(1, 2, 2)}})
	if _, err := client.Write(frame); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery", func() bool {
		got := h.received()
		return len(got) > 0 && got[len(got)-1].Msg.GetTerm() == 2
	})
	if n := len(h.received()); n > 2 {
		t.Fatalf("%d messages delivered, the first frame came before the handler", n)
	}
}

func TestNewValidates(t *testing.T) {
	dial := func(context.Context, uint64, StreamKind) (net.Conn, error) { return nil, errors.New("x") }
	if _, err := New(Config{Dial: dial}); err == nil {
		t.Fatal("New accepted Self 0")
	}
	if _, err := New(Config{Self: 1}); err == nil {
		t.Fatal("New accepted no Dial")
	}
	tr, err := New(Config{Self: 1, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.cfg.MaxQueueBytes != 64<<20 || tr.cfg.DialTimeout != 2*time.Second || tr.cfg.WriteTimeout != 5*time.Second ||
		tr.cfg.SnapshotChunk != 1<<20 || tr.cfg.SnapshotChunkTimeout != 30*time.Second {
		t.Fatalf("defaults: %+v", tr.cfg)
	}
}
