package transport

import (
	"net"
	"sync"
	"time"
)

// peer is the outbound side towards one node: a bounded queue of encoded
// messages, already cut into frames, and one writer goroutine (run) that
// owns the connection.
type peer struct {
	t    *Transport
	id   uint64
	wake chan struct{} // capacity 1: work was queued

	mu      sync.Mutex
	frames  []*pendingFrame // the last one takes appends
	bytes   int             // record bytes queued, against MaxQueueBytes
	dropped int             // messages dropped since the writer last looked
	spare   []byte          // a written frame's buffer, for reuse
}

// pendingFrame is a frame under construction: frameHeadroom bytes
// reserved for its header, then count records.
type pendingFrame struct {
	buf   []byte
	count int
}

func newPeer(t *Transport, id uint64) *peer {
	return &peer{t: t, id: id, wake: make(chan struct{}, 1)}
}

// enqueue appends the records buf[:recs[0]], buf[recs[0]:recs[1]], ... to
// the queue, dropping those that exceed the bound, and wakes the writer.
func (p *peer) enqueue(buf []byte, recs []int) {
	if len(recs) == 0 {
		return
	}
	limit := p.t.cfg.MaxQueueBytes
	p.mu.Lock()
	start := 0
	for _, end := range recs {
		rec := buf[start:end]
		start = end
		if p.bytes+len(rec) > limit {
			p.dropped++
			continue
		}
		var f *pendingFrame
		if n := len(p.frames); n > 0 {
			f = p.frames[n-1]
		}
		// The body is the records plus the count prefix.
		if f == nil || len(f.buf)-frameHeadroom+len(rec)+10 > MaxFrameSize {
			f = &pendingFrame{buf: p.newBuf()}
			p.frames = append(p.frames, f)
		}
		f.buf = append(f.buf, rec...)
		f.count++
		p.bytes += len(rec)
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *peer) newBuf() []byte {
	if b := p.spare; b != nil {
		p.spare = nil
		return b[:frameHeadroom]
	}
	return make([]byte, frameHeadroom, 4096)
}

// take removes every queued frame and the count of drops since the last
// take.
func (p *peer) take() ([]*pendingFrame, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fs, d := p.frames, p.dropped
	p.frames, p.dropped, p.bytes = nil, 0, 0
	return fs, d
}

func (p *peer) recycle(fs []*pendingFrame) {
	if len(fs) != 1 || cap(fs[0].buf) > 4<<20 {
		return
	}
	p.mu.Lock()
	p.spare = fs[0].buf
	p.mu.Unlock()
}

// run is the peer's writer. Each pass takes everything queued and writes
// it, normally as one frame in one Write. It dials when it has something
// to send and no connection; after a failure it waits a backoff (50ms
// doubling to 1s) before the next attempt, and calls ReportUnreachable at
// most once per pass — when the attempt failed or messages were dropped.
func (p *peer) run() {
	t := p.t
	defer t.wg.Done()
	var (
		conn     net.Conn
		since    time.Time // when conn was established
		backoff  time.Duration
		down     bool // the last attempt failed (for logging transitions)
		attempts int
	)
	defer func() {
		if conn != nil {
			t.untrack(conn)
		}
	}()
	for {
		frames, dropped := p.take()
		if len(frames) == 0 && dropped == 0 {
			select {
			case <-p.wake:
				continue
			case <-t.closing:
				return
			}
		}
		if t.isClosed() {
			return
		}
		failed := false
		pause := false // back off before the next attempt
		lost := 0      // messages lost by this pass's failure
		if len(frames) > 0 && conn == nil {
			c, err := t.dial(p.id, KindRaft)
			if err != nil {
				if t.isClosed() {
					return
				}
				failed, pause = true, true
				attempts++
				if !down {
					t.log.Warn("transport: peer unreachable", "peer", p.id, "err", err)
				} else {
					t.log.Debug("transport: dial failed", "peer", p.id, "attempts", attempts, "err", err)
				}
				down = true
				for _, f := range frames {
					lost += f.count
				}
			} else {
				conn, since = c, time.Now()
				if down {
					t.log.Info("transport: peer reachable", "peer", p.id, "after_attempts", attempts)
				}
				down, attempts = false, 0
				p.watch(conn)
			}
		}
		if conn != nil {
			for i, f := range frames {
				start := putFrameHeader(f.buf, f.count)
				_ = conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
				if _, err := conn.Write(f.buf[start:]); err != nil {
					if t.isClosed() {
						return
					}
					failed = true
					for _, g := range frames[i:] {
						lost += g.count
					}
					t.log.Warn("transport: raft stream to peer failed", "peer", p.id, "err", err)
					t.untrack(conn)
					conn = nil
					// A connection that lived is redialled at once; one
					// that failed at once is backed off like a failed dial.
					if time.Since(since) > maxBackoff {
						backoff = 0
					} else {
						pause = true
					}
					break
				}
			}
			if !failed {
				p.recycle(frames)
			}
		}
		if lost > 0 {
			t.log.Debug("transport: messages dropped", "peer", p.id, "count", lost)
		}
		if failed || dropped > 0 {
			t.reportUnreachable(p.id)
		}
		if pause {
			backoff = nextBackoff(backoff)
			timer := time.NewTimer(backoff)
			select {
			case <-timer.C:
			case <-t.closing:
				timer.Stop()
				return
			}
		}
	}
}

func nextBackoff(b time.Duration) time.Duration {
	if b <= 0 {
		return minBackoff
	}
	return min(2*b, maxBackoff)
}

// watch reads from an outbound raft connection, on which the peer never
// writes, so that its closing is noticed at once: it closes conn, and the
// writer's next Write fails and redials.
func (p *peer) watch(conn net.Conn) {
	t := p.t
	if !t.begin() {
		return
	}
	go func() {
		defer t.wg.Done()
		var b [1]byte
		_, _ = conn.Read(b[:])
		conn.Close()
	}()
}
