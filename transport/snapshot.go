package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"lambdadb/multiraft"
)

// ErrSnapshotRejected wraps the error text a snapshot's receiver sent
// back: its Handler.ReceiveSnapshot failed (or it had no handler).
var ErrSnapshotRejected = errors.New("transport: snapshot rejected")

const (
	ackOK     = 0
	ackFailed = 1
	// maxAckText bounds the error text of an ack, on both sides.
	maxAckText = 4 << 10
	// ackWaitFactor: the sender waits this many SnapshotChunkTimeouts for
	// the ack after its last chunk (the receiver syncs the data first).
	ackWaitFactor = 4
)

// SendSnapshot streams a snapshot to node to over a connection of its own,
// so that it never delays raft messages: m is the MsgSnap and data writes
// the state it describes. It returns at once; done is called exactly once,
// from another goroutine, with nil when the receiver's handler accepted
// the snapshot, an error wrapping ErrSnapshotRejected when it refused it,
// or the transfer's error.
func (t *Transport) SendSnapshot(to uint64, m multiraft.Message, data func(io.Writer) error, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	hdr, err := snapshotHeader(to, m, data)
	if err != nil {
		go done(err)
		return
	}
	if !t.begin() {
		go done(ErrClosed)
		return
	}
	sent := t.snapshotCounter(m.Group, to)
	go func() {
		defer t.wg.Done()
		err := t.sendSnapshot(to, hdr, data, sent)
		if err != nil {
			t.log.Warn("transport: snapshot not delivered", "to", to, "group", m.Group, "err", err)
		}
		done(err)
	}()
}

// snapshotHeader encodes a snapshot stream's header.
func snapshotHeader(to uint64, m multiraft.Message, data func(io.Writer) error) ([]byte, error) {
	if m.Msg == nil || data == nil {
		return nil, fmt.Errorf("transport: snapshot to node %d: no message or no data", to)
	}
	hdr, err := appendRecord(nil, m.Group, m.Msg)
	if err != nil {
		return nil, fmt.Errorf("transport: snapshot to node %d: %w", to, err)
	}
	if len(hdr) > MaxFrameSize {
		return nil, fmt.Errorf("transport: snapshot to node %d: header of %d bytes: %w", to, len(hdr), ErrFrameTooLarge)
	}
	return hdr, nil
}

// snapshotCounter returns the byte counter of the snapshot of group being
// sent to node to, reset to zero.
func (t *Transport) snapshotCounter(group, to uint64) *atomic.Int64 {
	t.snapMu.Lock()
	defer t.snapMu.Unlock()
	if t.snapSent == nil {
		t.snapSent = map[[2]uint64]*atomic.Int64{}
	}
	c := &atomic.Int64{}
	t.snapSent[[2]uint64{group, to}] = c
	return c
}

// SnapshotBytesTotal returns the snapshot bytes this transport has sent.
func (t *Transport) SnapshotBytesTotal() int64 { return t.snapTotal.Load() }

// SnapshotBytesSent returns the bytes of group's data sent to node to by
// the latest snapshot started (0 when none was).
func (t *Transport) SnapshotBytesSent(group, to uint64) int64 {
	t.snapMu.Lock()
	defer t.snapMu.Unlock()
	if c := t.snapSent[[2]uint64{group, to}]; c != nil {
		return c.Load()
	}
	return 0
}

func (t *Transport) sendSnapshot(to uint64, hdr []byte, data func(io.Writer) error, sent *atomic.Int64) error {
	conn, err := t.dial(to, KindSnapshot)
	if err != nil {
		return err
	}
	defer t.untrack(conn)

	// The ack is read concurrently with the data: a receiver that fails
	// early answers at once, and this stops sending.
	acks := make(chan error, 1)
	if !t.begin() {
		return ErrClosed
	}
	go func() {
		defer t.wg.Done()
		err := readAck(conn, to)
		if err != nil {
			conn.Close() // unblocks the data writer
		}
		acks <- err
	}()
	// After a failed write, an ack may explain it.
	ackAfterFailure := func(werr error) error {
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if aerr := <-acks; errors.Is(aerr, ErrSnapshotRejected) {
			return aerr
		}
		if t.isClosed() {
			return ErrClosed
		}
		return werr
	}

	timeout := t.cfg.SnapshotChunkTimeout
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(hdr); err != nil {
		return ackAfterFailure(fmt.Errorf("transport: snapshot to node %d: write header: %w", to, err))
	}
	cw := &chunkWriter{conn: conn, timeout: timeout, buf: make([]byte, binary.MaxVarintLen64, binary.MaxVarintLen64+t.cfg.SnapshotChunk),
		limit: t.snapLimit, sent: sent, total: &t.snapTotal, stop: t.ctx}
	err = data(cw)
	if err == nil {
		err = cw.finish()
	}
	if cw.err != nil {
		return ackAfterFailure(fmt.Errorf("transport: snapshot to node %d: %w", to, cw.err))
	}
	if err != nil {
		// Ending without the terminator tells the receiver the stream broke.
		return fmt.Errorf("transport: snapshot to node %d: produce data: %w", to, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(ackWaitFactor * timeout))
	if err := <-acks; err != nil {
		if t.isClosed() && !errors.Is(err, ErrSnapshotRejected) {
			return ErrClosed
		}
		return err
	}
	return nil
}

// chunkWriter cuts what it is given into chunks of cap(buf)-headroom
// bytes, each written with one Write under its own deadline.
type chunkWriter struct {
	conn    net.Conn
	timeout time.Duration
	buf     []byte // MaxVarintLen64 bytes of headroom, then the payload
	err     error  // sticky write error
	limit   *rate.Limiter
	sent    *atomic.Int64
	total   *atomic.Int64
	stop    context.Context
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if w.err != nil {
			return n, w.err
		}
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		n += k
		if len(w.buf) == cap(w.buf) {
			w.flush()
		}
	}
	return n, w.err
}

func (w *chunkWriter) flush() {
	size := len(w.buf) - binary.MaxVarintLen64
	if size == 0 || w.err != nil {
		return
	}
	var lb [binary.MaxVarintLen64]byte
	nl := binary.PutUvarint(lb[:], uint64(size))
	start := binary.MaxVarintLen64 - nl
	copy(w.buf[start:], lb[:nl])
	w.write(w.buf[start:])
	w.buf = w.buf[:binary.MaxVarintLen64]
}

func (w *chunkWriter) write(b []byte) {
	if w.limit != nil {
		if err := w.limit.WaitN(w.stop, min(len(b), w.limit.Burst())); err != nil {
			w.err = fmt.Errorf("rate limit: %w", err)
			return
		}
	}
	if w.sent != nil {
		w.sent.Add(int64(len(b)))
	}
	if w.total != nil {
		w.total.Add(int64(len(b)))
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	if _, err := w.conn.Write(b); err != nil {
		w.err = fmt.Errorf("write chunk: %w", err)
	}
}

// finish flushes the last chunk and writes the zero-length terminator.
func (w *chunkWriter) finish() error {
	w.flush()
	if w.err == nil {
		w.write([]byte{0})
	}
	return w.err
}

// readAck reads the receiver's answer: one status byte, then for a
// failure uvarint(len) and the error text.
func readAck(conn net.Conn, from uint64) error {
	br := bufio.NewReaderSize(conn, 64)
	status, err := br.ReadByte()
	if err != nil {
		return fmt.Errorf("transport: snapshot to node %d: read ack: %w", from, err)
	}
	switch status {
	case ackOK:
		return nil
	case ackFailed:
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("transport: snapshot to node %d: read ack: %w", from, err)
		}
		if n > maxAckText {
			return fmt.Errorf("transport: snapshot to node %d: ack text of %d bytes: %w", from, n, ErrFrameTooLarge)
		}
		text := make([]byte, n)
		if _, err := io.ReadFull(br, text); err != nil {
			return fmt.Errorf("transport: snapshot to node %d: read ack: %w", from, err)
		}
		return fmt.Errorf("%w by node %d: %s", ErrSnapshotRejected, from, text)
	default:
		return fmt.Errorf("transport: snapshot to node %d: ack status %d: %w", from, status, ErrCorruptFrame)
	}
}

func writeAck(conn net.Conn, timeout time.Duration, herr error) error {
	b := []byte{ackOK}
	if herr != nil {
		text := herr.Error()
		if len(text) > maxAckText {
			text = text[:maxAckText]
		}
		b = append([]byte{ackFailed}, binary.AppendUvarint(nil, uint64(len(text)))...)
		b = append(b, text...)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := conn.Write(b)
	return err
}

// ServeSnapshot receives one snapshot on conn, a connection from node
// from past its mux preamble: it reads the header, hands
// Handler.ReceiveSnapshot a reader over the chunk payloads, then writes
// back the handler's outcome. It always closes conn.
func (t *Transport) ServeSnapshot(conn net.Conn, from uint64) {
	if !t.begin() {
		conn.Close()
		return
	}
	defer t.wg.Done()
	if !t.track(conn) {
		return
	}
	defer t.untrack(conn)

	timeout := t.cfg.SnapshotChunkTimeout
	br := bufio.NewReaderSize(conn, 64<<10)
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	m, err := readSnapshotHeader(br)
	if err != nil {
		t.log.Warn("transport: bad snapshot stream", "from", from, "err", err)
		t.refuse(conn, br, err)
		return
	}
	h := t.getHandler()
	if h == nil {
		t.refuse(conn, br, errors.New("transport: no handler"))
		return
	}
	cr := &chunkReader{conn: conn, r: br, timeout: timeout}
	herr := h.ReceiveSnapshot(m, cr)
	if herr != nil {
		t.log.Warn("transport: snapshot refused", "from", from, "group", m.Group, "err", herr)
		t.refuse(conn, br, herr)
		return
	}
	// Consume what the handler left, up to the terminator, so the sender
	// is not blocked writing when it looks for the ack.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		t.log.Warn("transport: snapshot stream broken", "from", from, "group", m.Group, "err", err)
		return
	}
	if err := writeAck(conn, timeout, nil); err != nil && !t.isClosed() {
		t.log.Info("transport: snapshot ack not sent", "from", from, "group", m.Group, "err", err)
	}
}

// refuse answers a failed ack, then reads until the sender, having read
// it, hangs up (closing with unread input would reset the connection and
// could destroy the ack before the sender reads it).
func (t *Transport) refuse(conn net.Conn, r io.Reader, err error) {
	timeout := t.cfg.SnapshotChunkTimeout
	if writeAck(conn, timeout, err) != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	_, _ = io.Copy(io.Discard, r)
}

// readSnapshotHeader reads uvarint(group), uvarint(len) and the MsgSnap.
func readSnapshotHeader(r *bufio.Reader) (multiraft.Message, error) {
	group, err := binary.ReadUvarint(r)
	if err != nil {
		return multiraft.Message{}, fmt.Errorf("transport: snapshot header: %w", err)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return multiraft.Message{}, fmt.Errorf("transport: snapshot header: %w", err)
	}
	if n > MaxFrameSize {
		return multiraft.Message{}, fmt.Errorf("%w: snapshot header of %d bytes", ErrFrameTooLarge, n)
	}
	b, err := readN(r, nil, int(n))
	if err != nil {
		return multiraft.Message{}, fmt.Errorf("transport: snapshot header: %w", err)
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(b, m); err != nil {
		return multiraft.Message{}, fmt.Errorf("%w: snapshot header: %w", ErrCorruptFrame, err)
	}
	return multiraft.Message{Group: group, Msg: m}, nil
}

// chunkReader yields the payloads of a chunk stream — uvarint(len)
// payload, ..., uvarint(0) — ending in io.EOF, or in an error if the
// stream breaks first. Every read from the connection has its own
// deadline.
type chunkReader struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	left    uint64 // unread bytes of the current chunk
	err     error  // sticky
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(c.timeout))
	for c.left == 0 {
		n, err := binary.ReadUvarint(c.r)
		if err != nil {
			c.err = fmt.Errorf("transport: snapshot stream: %w", noEOF(err))
			return 0, c.err
		}
		if n == 0 {
			c.err = io.EOF
			return 0, io.EOF
		}
		if n > MaxChunkSize {
			c.err = fmt.Errorf("%w: snapshot chunk of %d bytes (max %d)", ErrFrameTooLarge, n, MaxChunkSize)
			return 0, c.err
		}
		c.left = n
	}
	if uint64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= uint64(n)
	if err != nil {
		c.err = fmt.Errorf("transport: snapshot stream: %w", noEOF(err))
		return n, c.err
	}
	return n, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
