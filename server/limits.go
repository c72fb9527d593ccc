package server

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/lambda"
)

// Defaults of the request-body limits (see Config).
const (
	// DefaultBodyIdleTimeout is how long a request body may send nothing.
	DefaultBodyIdleTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds the arrival of a whole request body: a
	// 32 MiB module needs about 2.3 Mbit/s to make it.
	DefaultBodyTimeout = 2 * time.Minute
	// DefaultMaxInflightBodyBytes is the node's budget of request-body
	// bytes in flight (256 MiB).
	DefaultMaxInflightBodyBytes = 256 << 20
	// DefaultInflightBodyWait is how long a request waits for budget.
	DefaultInflightBodyWait = time.Second
)

// maxTriggerBody bounds a PUT /v1/triggers/{name} body (triggers.go
// reads at most this much).
const maxTriggerBody = 1 << 20

// MetricBodyBytesInFlight is the gauge of request-body bytes reserved.
const MetricBodyBytesInFlight = "lambdadb_http_body_bytes_in_flight"

// errBodyTimeout is wrapped by the error of a request body that stalled
// (nothing for BodyIdleTimeout) or was not complete within BodyTimeout;
// it answers 408 body_timeout.
var errBodyTimeout = errors.New("server: request body timed out")

// bodyLimits are a Server's request-body limits; zero durations and a nil
// budget disable theirs.
type bodyLimits struct {
	idle, total time.Duration
	budget      *budget
	wait        time.Duration
}

func newBodyLimits(cfg *Config, reg *prometheus.Registry) (bodyLimits, error) {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BodyIdleTimeout", cfg.BodyIdleTimeout}, {"BodyTimeout", cfg.BodyTimeout}, {"InflightBodyWait", cfg.InflightBodyWait}} {
		if d.v < 0 {
			return bodyLimits{}, fmt.Errorf("server: negative %s %v", d.name, d.v)
		}
	}
	if cfg.MaxInflightBodyBytes < 0 {
		return bodyLimits{}, fmt.Errorf("server: negative MaxInflightBodyBytes %d", cfg.MaxInflightBodyBytes)
	}
	l := bodyLimits{idle: cfg.BodyIdleTimeout, total: cfg.BodyTimeout, wait: cfg.InflightBodyWait}
	if l.idle == 0 {
		l.idle = DefaultBodyIdleTimeout
	}
	if l.total == 0 {
		l.total = DefaultBodyTimeout
	}
	if l.wait == 0 {
		l.wait = DefaultInflightBodyWait
	}
	size := cfg.MaxInflightBodyBytes
	if size == 0 {
		size = DefaultMaxInflightBodyBytes
	}
	g, err := register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: MetricBodyBytesInFlight,
		Help: "Request-body bytes reserved in the node's in-flight budget.",
	}))
	if err != nil {
		return bodyLimits{}, err
	}
	gauge, ok := g.(prometheus.Gauge)
	if !ok {
		return bodyLimits{}, errors.New("server: registry holds an incompatible " + MetricBodyBytesInFlight)
	}
	l.budget = &budget{size: size, gauge: gauge}
	return l, nil
}

// maxBody is the most of a request body the named route reads (0: none).
func (s *Server) maxBody(route string) int64 {
	switch route {
	case "kv_put":
		return int64(s.maxValue)
	case "query":
		return maxQueryBody
	case "trigger_put":
		return maxTriggerBody
	case "fn_deploy":
		return lambda.MaxModuleBytes
	case "fn_invoke":
		return lambda.MaxMessageBytes
	case "console_login":
		return maxLoginBody
	}
	return 0
}

// limitBody applies the request-body limits around h, whose route reads at
// most maxBody bytes of a body:
//
//   - budget: before h runs, the request reserves its Content-Length (a
//     chunked body: maxBody, cut back to its size once read to the end) in
//     the node's budget, and holds it until h returns. A body over maxBody
//     reserves nothing, since h refuses it by its length before reading.
//     When the budget stays short for the wait, the answer is 503
//     overloaded with Retry-After: 1 and h does not run.
//   - deadlines: each read of the body must see bytes within the idle
//     timeout, and the whole body arrive within the total timeout of the
//     request's headers; otherwise the read fails with errBodyTimeout,
//     the answer is 408 body_timeout and the connection is closed.
//
// Requests without a body pass untouched.
func (s *Server) limitBody(maxBody int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		ctl := http.NewResponseController(w)
		b := &limitedBody{rc: r.Body, ctl: ctl, idle: s.body.idle, total: s.body.total, budget: s.body.budget}
		if s.body.total > 0 {
			b.end = start.Add(s.body.total)
		}
		if need := s.bodyNeed(r, maxBody); need > 0 {
			need, ok := s.body.budget.acquire(r.Context(), need, s.body.wait)
			if !ok {
				// The body stays unread: bound the server's discarding of it.
				b.setDeadline()
				s.overloaded(w, r)
				return
			}
			b.held.Store(need)
			if r.ContentLength < 0 {
				b.shrinkAtEOF = true
			}
		}
		defer func() {
			if n := b.held.Swap(0); n > 0 {
				s.body.budget.release(n)
			}
		}()
		r.Body = b
		h.ServeHTTP(&bodyWriter{ResponseWriter: w, s: s, r: r, body: b}, r)
		if !b.eof.Load() && b.err == nil {
			// net/http discards what is left of the body (up to 256 KiB)
			// before reusing the connection: bound that too. (After a
			// timeout the deadline has passed: leave it so.)
			b.setDeadline()
		}
	})
}

// bodyNeed is what r reserves in the budget.
func (s *Server) bodyNeed(r *http.Request, maxBody int64) int64 {
	if s.body.budget == nil || maxBody <= 0 {
		return 0
	}
	n := r.ContentLength
	if n > maxBody {
		return 0 // refused by its length, unread
	}
	if n < 0 {
		n = maxBody
	}
	// A body larger than the whole budget may still pass, alone.
	return min(n, s.body.budget.size)
}

// overloaded answers 503 overloaded: the budget of body bytes is spent.
func (s *Server) overloaded(w http.ResponseWriter, r *http.Request) {
	msg := fmt.Sprintf("server: request bodies in flight fill this node's budget (%d MiB); retry later",
		s.body.budget.size>>20)
	if s.body.budget.size < 1<<20 {
		msg = fmt.Sprintf("server: request bodies in flight fill this node's budget (%d bytes); retry later",
			s.body.budget.size)
	}
	s.log.Debug("request failed", "method", r.Method, "path", r.URL.Path,
		"status", http.StatusServiceUnavailable, "code", "overloaded", "content_length", r.ContentLength)
	if strings.HasPrefix(r.URL.Path, "/v1/kv") {
		tok, _, _ := requestSession(r) // data path: echo a valid token
		setSession(w, tok)
	}
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, apiError{Error: msg, Code: "overloaded"})
}

// limitedBody is a request body under the idle and total timeouts that
// also tracks its reservation in the budget.
type limitedBody struct {
	rc          io.ReadCloser
	ctl         *http.ResponseController
	idle, total time.Duration
	end         time.Time // zero: no total bound
	budget      *budget
	shrinkAtEOF bool // chunked: give back what the body did not use

	noDeadline bool  // the connection does not support read deadlines
	read       int64 // bytes read
	err        error // sticky timeout error
	timedOut   atomic.Bool
	eof        atomic.Bool
	held       atomic.Int64 // budget reserved
}

// setDeadline sets the connection's read deadline to the idle timeout
// from now, or the total bound if sooner.
func (b *limitedBody) setDeadline() {
	if b.noDeadline {
		return
	}
	var d time.Time
	if b.idle > 0 {
		d = time.Now().Add(b.idle)
	}
	if !b.end.IsZero() && (d.IsZero() || b.end.Before(d)) {
		d = b.end
	}
	if d.IsZero() {
		return
	}
	if err := b.ctl.SetReadDeadline(d); err != nil {
		b.noDeadline = true // e.g. a ResponseRecorder
	}
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof.Load() {
		return b.rc.Read(p)
	}
	b.setDeadline()
	n, err := b.rc.Read(p)
	b.read += int64(n)
	switch {
	case err == io.EOF:
		// net/http has cleared the deadline to watch the connection for
		// the client going away: set none from now on.
		b.eof.Store(true)
		if b.shrinkAtEOF {
			b.shrink(b.read)
		}
	case err != nil && !b.noDeadline && errors.Is(err, os.ErrDeadlineExceeded):
		if !b.end.IsZero() && !time.Now().Before(b.end) {
			b.err = fmt.Errorf("%w: the body was not complete within %v (%d bytes arrived)", errBodyTimeout, b.total, b.read)
		} else {
			b.err = fmt.Errorf("%w: no bytes of the body for %v (%d bytes arrived)", errBodyTimeout, b.idle, b.read)
		}
		b.timedOut.Store(true)
		err = b.err
	}
	return n, err
}

// shrink cuts the reservation down to keep bytes.
func (b *limitedBody) shrink(keep int64) {
	for {
		old := b.held.Load()
		if old <= keep {
			return
		}
		if b.held.CompareAndSwap(old, keep) {
			b.budget.release(old - keep)
			return
		}
	}
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// bodyWriter answers 408 body_timeout in place of the handler's error
// response when the request body timed out. (Handlers report a failed
// body read as 400 bad_body unless errorStatus maps errBodyTimeout.)
type bodyWriter struct {
	http.ResponseWriter
	s       *Server
	r       *http.Request
	body    *limitedBody
	wrote   bool
	replace bool // the handler's response is dropped
}

func (w *bodyWriter) WriteHeader(code int) {
	if w.wrote || code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wrote = true
	if code >= 400 && code != http.StatusRequestTimeout && w.body.timedOut.Load() {
		w.replace = true
		h := w.ResponseWriter.Header()
		h.Del("Retry-After")
		h.Del("Content-Length")
		h.Set("Connection", "close")
		w.s.log.Debug("request failed", "method", w.r.Method, "path", w.r.URL.Path,
			"status", http.StatusRequestTimeout, "code", "body_timeout", "err", w.body.err)
		writeJSON(w.ResponseWriter, http.StatusRequestTimeout, apiError{Error: w.body.err.Error(), Code: "body_timeout"})
		return
	}
	if code == http.StatusRequestTimeout {
		w.ResponseWriter.Header().Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *bodyWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replace {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Flush implements http.Flusher.
func (w *bodyWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if !w.replace {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *bodyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// budget is a FIFO weighted semaphore of request-body bytes.
type budget struct {
	size  int64
	gauge prometheus.Gauge

	mu      sync.Mutex
	used    int64
	waiters list.List // of *budgetWaiter, oldest first
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed once granted
}

// smallBody is the largest reservation that counts as small: small ones
// may use the whole budget (a KV value is at most 1 MiB), larger ones
// leave it a reserve.
const smallBody = 1 << 20

// limit is how much of the budget a reservation of n may fill: all of it
// for a small one, all but the reserve (an eighth) for a large one, so
// that large uploads — stalled ones too — never shut out small writes.
func (b *budget) limit(n int64) int64 {
	if n <= smallBody {
		return b.size
	}
	return b.size - b.size/8
}

// acquire reserves n bytes — at most what its limit allows: it returns
// what it reserved, to be released — waiting up to wait behind earlier
// requests; ok reports whether it did. A small reservation that fits goes
// ahead of waiting ones.
func (b *budget) acquire(ctx context.Context, n int64, wait time.Duration) (reserved int64, ok bool) {
	n = min(n, b.limit(n))
	b.mu.Lock()
	if (b.waiters.Len() == 0 || n <= smallBody) && b.used+n <= b.limit(n) {
		b.used += n
		b.mu.Unlock()
		b.gauge.Add(float64(n))
		return n, true
	}
	if wait <= 0 {
		b.mu.Unlock()
		return 0, false
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
	b.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.ready:
		return n, true
	case <-t.C:
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		return n, true // granted meanwhile
	default:
	}
	front := b.waiters.Front() == e
	b.waiters.Remove(e)
	if front {
		b.grantLocked() // it may have held back smaller requests
	}
	return 0, false
}

// release gives back n bytes.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.gauge.Sub(float64(n))
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked grants waiters in order while their reservations fit.
func (b *budget) grantLocked() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*budgetWaiter)
		if b.used+w.n > b.limit(w.n) {
			return
		}
		b.used += w.n
		b.gauge.Add(float64(w.n))
		b.waiters.Remove(e)
		close(w.ready)
	}
}
