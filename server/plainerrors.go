package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// WrapListener makes the answers net/http gives on its own, before any
// handler runs, JSON error objects like every other answer of the API.
// net/http writes them straight to the connection as text/plain: 400 for a
// request it cannot parse (a malformed request line or header line, a bad
// %-escape in the path, a missing Host, conflicting Content-Length
// headers), 431 for headers over hs.MaxHeaderBytes, 501 for a
// Transfer-Encoding it does not know and 505 for an HTTP version it does
// not speak; it answers an Expect other than 100-continue with an empty
// 417. It offers no hook for them.
//
// hs is the http.Server that will serve the returned listener, with its
// Handler set (not necessarily s): WrapListener wraps hs.Handler and
// chains hs.ConnContext and hs.ConnState, so call it after setting those.
//
// How: each connection notes when a handler starts on it (the wrapped
// Handler, which finds the connection through ConnContext) and when
// net/http has finished the response and waits for the next request
// (StateIdle). A write that comes between the two — none does but
// net/http's own answers to requests no handler saw — and is a complete
// 4xx or 5xx response is replaced by the JSON answer with the same status
// (and Connection: close, as net/http closes the connection after it);
// statuses it is not known to answer with pass unchanged, as does
// anything else: a response from a handler is never touched. Such answers count in the request metrics under the route
// "malformed".
func (s *Server) WrapListener(hs *http.Server, ln net.Listener) net.Listener {
	inner := hs.Handler
	if inner == nil {
		inner = http.DefaultServeMux
	}
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(plainConnKey{}).(*plainConn); ok {
			c.inRequest.Store(true)
		}
		inner.ServeHTTP(w, r)
	})
	connContext := hs.ConnContext
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if connContext != nil {
			ctx = connContext(ctx, c)
		}
		if pc, ok := c.(*plainConn); ok {
			ctx = context.WithValue(ctx, plainConnKey{}, pc)
		}
		return ctx
	}
	connState := hs.ConnState
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		if pc, ok := c.(*plainConn); ok && st == http.StateIdle {
			pc.inRequest.Store(false)
		}
		if connState != nil {
			connState(c, st)
		}
	}
	maxHeader := hs.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = http.DefaultMaxHeaderBytes
	}
	return &plainListener{Listener: ln, s: s, maxHeader: maxHeader}
}

type plainConnKey struct{}

type plainListener struct {
	net.Listener
	s         *Server
	maxHeader int
}

func (l *plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &plainConn{Conn: c, l: l}, nil
}

// plainConn is a connection whose net/http answers become JSON.
type plainConn struct {
	net.Conn
	l *plainListener
	// inRequest is set from the start of a handler on the connection
	// until net/http has finished its response (StateIdle).
	inRequest atomic.Bool
}

// NetConn returns the connection c wraps (to set socket options on it).
func (c *plainConn) NetConn() net.Conn { return c.Conn }

func (c *plainConn) Write(p []byte) (int, error) {
	if c.inRequest.Load() {
		return c.Conn.Write(p)
	}
	status, detail, ok := parsePlainAnswer(p)
	if !ok {
		return c.Conn.Write(p)
	}
	perr := plainError(status, detail, c.l.maxHeader)
	if perr == nil {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(c.l.s.plainAnswer(perr)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite half-closes the connection when the underlying one can:
// net/http does so after a 431, so that the client reads the answer
// before the connection is reset under headers it is still sending.
func (c *plainConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// parsePlainAnswer recognizes a complete HTTP/1.x response with a 4xx or
// 5xx status in p, and returns its status and the detail net/http gave
// ("" when its body only repeats the status).
func parsePlainAnswer(p []byte) (status int, detail string, ok bool) {
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	if !ok {
		if rest, ok = bytes.CutPrefix(p, []byte("HTTP/1.0 ")); !ok {
			return 0, "", false
		}
	}
	if len(rest) < 4 || rest[3] != ' ' {
		return 0, "", false
	}
	status, err := strconv.Atoi(string(rest[:3]))
	if err != nil || status < 400 || status > 599 {
		return 0, "", false
	}
	_, body, ok := bytes.Cut(rest, []byte("\r\n\r\n"))
	if !ok {
		return 0, "", false
	}
	// net/http's bodies: "400 Bad Request", "400 Bad Request: missing
	// required Host header", "Unsupported transfer encoding".
	detail = string(body)
	prefix := fmt.Sprintf("%d %s", status, http.StatusText(status))
	if d, ok := strings.CutPrefix(detail, prefix); ok {
		detail = strings.TrimPrefix(d, ": ")
	}
	return status, detail, true
}

// plainError is the error net/http answered with status (and detail),
// nil for a status it is not known to answer with by itself.
func plainError(status int, detail string, maxHeader int) error {
	switch status {
	case http.StatusBadRequest:
		if detail == "" {
			return fmt.Errorf("%w: malformed request", errBadRequest)
		}
		return fmt.Errorf("%w: %s", errBadRequest, detail)
	case http.StatusRequestHeaderFieldsTooLarge:
		return fmt.Errorf("%w: the limit is %d bytes", errHeadersTooLarge, maxHeader)
	case http.StatusNotImplemented:
		return fmt.Errorf("%w (only chunked is)", errTransferEncoding)
	case http.StatusHTTPVersionNotSupported:
		return fmt.Errorf("%w (HTTP/1.0 and HTTP/1.1 are)", errHTTPVersion)
	case http.StatusExpectationFailed:
		return fmt.Errorf("%w (the only one met is 100-continue)", errExpectation)
	}
	return nil
}

// plainAnswer is the JSON answer, a complete HTTP/1.1 response, to err.
func (s *Server) plainAnswer(err error) []byte {
	status, code := errorStatus(err)
	s.requests.WithLabelValues("malformed", strconv.Itoa(status)).Inc()
	s.log.Debug("request failed", "route", "malformed", "status", status, "code", code, "err", err)
	body, _ := json.Marshal(apiError{Error: err.Error(), Code: code}) // strings: never fails
	body = append(body, '\n')
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\nDate: %s\r\nContent-Length: %d\r\n\r\n",
		status, http.StatusText(status), time.Now().UTC().Format(http.TimeFormat), len(body))
	b.Write(body)
	return b.Bytes()
}
