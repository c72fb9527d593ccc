package shard

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"lambdadb/pki"
)

// A connection to a node's single address is either HTTP (anything else) or
// starts with a preamble:
//
//	magic   4 bytes: "LDM1" (Raft message stream), "LDS1" (one Raft
//	        snapshot) or "LDI1" (internal RPC)
//	shard   2 bytes, big-endian (reserved, 0)
//	idLen   1 byte, then the dialing node's id
//
// The mux hands Raft streams to the engine's transport, internal RPC to the
// internal HTTP listener and everything else to the public HTTP listener.
//
// In secure mode (MuxConfig.TLS) every connection is TLS 1.3 and the
// preamble is read inside it. A Raft or internal RPC stream is accepted
// only from a peer whose verified certificate names the node id its
// preamble claims (pki.PeerID); anything else that opens one is closed at
// once. Public HTTP needs no client certificate.
const (
	magicInternal = "LDI1"
	magicMulti    = "LDM1"
	magicSnap     = "LDS1"
	maxIDLen      = 255
)

// ErrMuxClosed is returned by a closed mux's listeners.
var ErrMuxClosed = errors.New("shard: mux closed")

// MuxConfig configures a Mux.
type MuxConfig struct {
	// NodeID is this node's id, sent in every preamble. Required.
	NodeID string
	// Faults, when non-nil, injects faults into every connection.
	Faults *Faults
	// HandshakeTimeout bounds the TLS handshake and reading a preamble.
	// Default 5s.
	HandshakeTimeout time.Duration
	// TLS, when non-nil, turns on secure mode: the mux serves TLS 1.3 with
	// TLS.ServerConfig, and dials peers with TLS.PeerConfig. TLS.NodeID
	// must be NodeID.
	TLS *pki.Set
	// Logger receives warnings about refused peer streams. Default:
	// slog.Default().
	Logger *slog.Logger
}

// Mux shares one listener among public HTTP, internal RPC and every shard's
// Raft transport.
type Mux struct {
	ln       net.Listener
	cfg      MuxConfig
	public   *chanListener
	internal *chanListener

	serverTLS *tls.Config // nil: plain text
	refused   atomic.Int64

	mu     sync.Mutex
	multi  func(c net.Conn, peer string, snapshot bool) // multiraft streams
	closed chan struct{}
	once   sync.Once
}

// NewMux wraps ln; call Serve to start accepting.
func NewMux(ln net.Listener, cfg MuxConfig) (*Mux, error) {
	if cfg.NodeID == "" || len(cfg.NodeID) > maxIDLen {
		return nil, fmt.Errorf("shard: MuxConfig.NodeID must be 1..%d bytes", maxIDLen)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mux{ln: ln, cfg: cfg, closed: make(chan struct{})}
	if cfg.TLS != nil {
		if cfg.TLS.NodeID != cfg.NodeID {
			return nil, fmt.Errorf("shard: MuxConfig.TLS is node %q's, not %q's", cfg.TLS.NodeID, cfg.NodeID)
		}
		m.serverTLS = cfg.TLS.ServerConfig()
	}
	m.public = newChanListener(ln.Addr(), m.closed)
	m.internal = newChanListener(ln.Addr(), m.closed)
	return m, nil
}

// Addr is the shared address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// PublicListener yields the connections that carry client HTTP.
func (m *Mux) PublicListener() net.Listener { return m.public }

// InternalListener yields internal RPC connections (HTTP, node to node).
func (m *Mux) InternalListener() net.Listener { return m.internal }

// Secure reports whether the mux speaks TLS.
func (m *Mux) Secure() bool { return m.serverTLS != nil }

// Refused returns how many connections the mux has closed in secure mode
// because their TLS handshake failed or they opened a Raft or internal
// RPC stream without the matching node certificate.
func (m *Mux) Refused() int64 { return m.refused.Load() }

// Faults returns the mux's fault injector (nil when disabled).
func (m *Mux) Faults() *Faults { return m.cfg.Faults }

// Serve accepts connections until the listener fails or Close is called.
func (m *Mux) Serve() error {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("shard: mux accept: %w", err)
		}
		go m.route(c)
	}
}

// Close stops the mux and its listeners. Connections already handed out
// stay open.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.closed)
		err = m.ln.Close()
	})
	return err
}

func (m *Mux) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	var tc *tls.Conn
	if m.serverTLS != nil {
		tc = tls.Server(c, m.serverTLS)
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			m.refused.Add(1)
			m.cfg.Logger.Info("tls handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		c = tc
	}
	br := bufio.NewReader(c)
	head, err := br.Peek(4)
	if err != nil {
		// Too short for a preamble: let HTTP answer (or see EOF).
		if len(head) == 0 {
			c.Close()
			return
		}
	}
	switch string(head) {
	case magicInternal, magicMulti, magicSnap:
		_, peer, err := readPreamble(br)
		if err != nil {
			c.Close()
			return
		}
		if tc != nil {
			if id, ok := pki.PeerID(tc.ConnectionState()); !ok || id != peer {
				m.refused.Add(1)
				m.cfg.Logger.Warn("refused a peer stream: no node certificate for the node it claims to be",
					"remote", c.RemoteAddr().String(), "claimed", peer, "certified", id)
				c.Close()
				return
			}
		}
		_ = c.SetReadDeadline(time.Time{})
		fc := &faultConn{Conn: &bufConn{Conn: c, r: br}, faults: m.cfg.Faults, self: m.cfg.NodeID, peer: peer,
			raft: string(head) != magicInternal}
		if string(head) == magicInternal {
			m.internal.deliver(fc)
			return
		}
		m.mu.Lock()
		h := m.multi
		m.mu.Unlock()
		if h == nil {
			c.Close()
			return
		}
		h(fc, peer, string(head) == magicSnap)
	default:
		_ = c.SetReadDeadline(time.Time{})
		if tc != nil {
			m.public.deliver(&tlsBufConn{bufConn{Conn: c, r: br}, tc})
			return
		}
		m.public.deliver(&bufConn{Conn: c, r: br})
	}
}

func readPreamble(r io.Reader) (shard int, peer string, err error) {
	var hdr [7]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, "", err
	}
	shard = int(binary.BigEndian.Uint16(hdr[4:6]))
	n := int(hdr[6])
	if n == 0 {
		return 0, "", errors.New("shard: empty node id in preamble")
	}
	id := make([]byte, n)
	if _, err := io.ReadFull(r, id); err != nil {
		return 0, "", err
	}
	return shard, string(id), nil
}

func writePreamble(w io.Writer, magic string, shard int, self string) error {
	b := make([]byte, 0, 7+len(self))
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, uint16(shard))
	b = append(b, byte(len(self)))
	b = append(b, self...)
	_, err := w.Write(b)
	return err
}

// dial opens a connection to addr (node peer) with the given preamble.
func (m *Mux) dial(addr, peer, magic string, shard int, timeout time.Duration) (net.Conn, error) {
	isRaft := magic != magicInternal
	if dropped, _ := m.cfg.Faults.check(m.cfg.NodeID, peer, isRaft); dropped {
		return nil, fmt.Errorf("%w: dial %s", errDialFault, peer)
	}
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if m.cfg.TLS != nil {
		tc := tls.Client(c, m.cfg.TLS.PeerConfig(peer))
		_ = c.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			c.Close()
			// Nothing was sent: to callers this is a failed dial.
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: c.RemoteAddr(), Err: fmt.Errorf("tls: %w", err)}
		}
		_ = c.SetDeadline(time.Time{})
		c = tc
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if err := writePreamble(c, magic, shard, m.cfg.NodeID); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return &faultConn{Conn: c, faults: m.cfg.Faults, self: m.cfg.NodeID, peer: peer, raft: isRaft}, nil
}

// handleMulti routes multiraft streams to h, which owns each connection
// (snapshot says whether it carries one snapshot or the message stream).
func (m *Mux) handleMulti(h func(c net.Conn, peer string, snapshot bool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.multi = h
}

// dialMulti opens a multiraft stream to node peer at addr.
func (m *Mux) dialMulti(ctx context.Context, addr, peer string, snapshot bool) (net.Conn, error) {
	magic := magicMulti
	if snapshot {
		magic = magicSnap
	}
	timeout := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	return m.dial(addr, peer, magic, 0, timeout)
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{} // the mux's
	closed chan struct{} // this listener's
	once   sync.Once
}

func newChanListener(addr net.Addr, done chan struct{}) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: done, closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, ErrMuxClosed
	case <-l.closed:
		return nil, ErrMuxClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// bufConn replays bytes the mux peeked.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn returns the connection c wraps (to set socket options on it).
func (c *bufConn) NetConn() net.Conn { return c.Conn }

// tlsBufConn is a bufConn over a TLS connection: handlers can see the
// connection's TLS state (ConnectionState), as on a *tls.Conn.
type tlsBufConn struct {
	bufConn
	tc *tls.Conn
}

// ConnectionState returns the TLS connection's state.
func (c *tlsBufConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// faultConn applies Faults between self and peer on every read and write.
type faultConn struct {
	net.Conn
	faults     *Faults
	self, peer string
	raft       bool // carries Raft traffic
}

// NetConn returns the connection c wraps.
func (c *faultConn) NetConn() net.Conn { return c.Conn }

func (c *faultConn) Write(p []byte) (int, error) {
	if c.faults != nil {
		dropped, delay := c.faults.check(c.self, c.peer, c.raft)
		if dropped {
			c.Conn.Close()
			return 0, fmt.Errorf("shard: %s→%s dropped by fault injection", c.self, c.peer)
		}
		if delay > 0 {
			time.Sleep(delay)
		}
	}
	return c.Conn.Write(p)
}

func (c *faultConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.faults != nil && n > 0 {
		if dropped, _ := c.faults.check(c.peer, c.self, c.raft); dropped {
			c.Conn.Close()
			return 0, fmt.Errorf("shard: %s→%s dropped by fault injection", c.peer, c.self)
		}
	}
	return n, err
}

// errDialFault is returned when fault injection refuses a dial.
var errDialFault = errors.New("shard: dropped by fault injection")
