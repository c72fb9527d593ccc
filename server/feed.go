package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"lambdadb/auth"
	"lambdadb/changefeed"
	"lambdadb/namespace"
)

// feedChange is one change as the feed API shows it.
type feedChange struct {
	Key     string `json:"key"`
	Value   []byte `json:"value"` // base64; null for a delete
	Op      string `json:"op"`
	Version uint64 `json:"version"`
	Shard   int    `json:"shard"` // extension
	Time    string `json:"time,omitempty"`
}

type feedBody struct {
	Changes []feedChange `json:"changes"`
	Cursor  string       `json:"cursor"`
}

func toFeedBody(res changefeed.Result) feedBody {
	out := feedBody{Changes: make([]feedChange, len(res.Changes)), Cursor: res.Cursor.Encode()}
	for i, c := range res.Changes {
		fc := feedChange{Key: c.Key, Value: c.Value, Op: "put", Version: c.Version, Shard: c.Shard}
		if c.Delete {
			fc.Op, fc.Value = "delete", nil
		}
		if !c.Time.IsZero() {
			fc.Time = c.Time.UTC().Format(time.RFC3339Nano)
		}
		out.Changes[i] = fc
	}
	return out
}

// userKeys turns the stored keys of res's changes into namespace ns's
// user keys, dropping any change of another namespace (the feed's prefix
// already keeps them out).
func userKeys(ns string, res *changefeed.Result) {
	out := res.Changes[:0]
	for _, c := range res.Changes {
		k, ok := namespace.Strip(ns, c.Key)
		if !ok {
			continue
		}
		c.Key = k
		out = append(out, c)
	}
	res.Changes = out
}

// feedParams are the parameters of GET /v1/feed.
var feedParams = []string{"prefix", "cursor", "wait", "limit"}

// feedRequest parses prefix, cursor (C, now, beginning; default now),
// wait (at most changefeed.MaxWait) and limit.
func (s *Server) feedRequest(r *http.Request) (changefeed.Request, error) {
	q, err := queryParams(r, feedParams...)
	if err != nil {
		return changefeed.Request{}, err
	}
	prefix := q.Get("prefix")
	if err := namespace.ValidatePrefix(prefix); err != nil {
		return changefeed.Request{}, fmt.Errorf("%w: prefix: %v", errBadParameter, err)
	}
	// The feed reads stored keys: the namespace's prefix (for Default with
	// an empty prefix, "", which the feed keeps to Default's keys).
	req := changefeed.Request{Prefix: namespace.Prefix(namespace.From(r.Context()), prefix), Client: clientAddr(r)}
	switch c := q.Get("cursor"); c {
	case "", "now":
		cur, err := s.feed.Now(r.Context())
		if err != nil {
			return req, err
		}
		req.Cursor, req.Checked = cur, true
	case "beginning":
		cur, err := s.feed.Beginning(r.Context())
		if err != nil {
			return req, err
		}
		req.Cursor, req.Checked = cur, true
	default:
		cur, err := changefeed.DecodeCursor(c, s.node.Shards())
		if err != nil {
			return req, err
		}
		req.Cursor = cur
	}
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return req, fmt.Errorf("%w: wait=%q is not a duration like 10s", errBadParameter, v)
		}
		if d > changefeed.MaxWait {
			return req, fmt.Errorf("%w: wait=%q exceeds the maximum %s", errBadParameter, v, changefeed.MaxWait)
		}
		req.Wait = d
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > changefeed.MaxLimit {
			return req, fmt.Errorf("%w: limit=%q is not in 1..%d", errBadParameter, v, changefeed.MaxLimit)
		}
		req.Limit = n
	}
	return req, nil
}

// clientAddr names a request's client for per-client limits: the host of
// its remote address.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) getFeed(w http.ResponseWriter, r *http.Request) {
	req, err := s.feedRequest(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if websocket.IsWebSocketUpgrade(r) {
		// Refuse a cursor ahead of this cluster's log with a 400 before
		// upgrading, as a long poll would; the stream then trusts the
		// cursors its own reads return.
		if !req.Checked {
			if err := s.feed.CheckCursor(r.Context(), req.Cursor); err != nil {
				s.writeError(w, r, err)
				return
			}
			req.Checked = true
		}
		sub, err := s.feed.Open(req.Prefix, req.Client)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		defer sub.Close()
		s.streamFeed(w, r, sub, req)
		return
	}
	res, err := s.feed.Read(r.Context(), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	userKeys(namespace.From(r.Context()), &res)
	msg := append(s.feedEnc.feedMessage(res, 1), '\n')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(msg)
}

// DefaultFeedWriteTimeout is Config.FeedWriteTimeout's default.
const DefaultFeedWriteTimeout = 10 * time.Second

// streamMaxBytes bounds the keys and values of one WebSocket message, so
// a consumer that stops reading holds at most one such message here.
const streamMaxBytes = 64 << 10

// DefaultStreamSendBytes is Config.MaxStreamSendBytes's default.
const DefaultStreamSendBytes = 16 << 20

// messageCost estimates the bytes of the JSON message res becomes (values
// are base64), to reserve them before encoding it.
func messageCost(res changefeed.Result) int64 {
	n := int64(256)
	for _, c := range res.Changes {
		n += int64(len(c.Key)) + int64(len(c.Value))*4/3 + 160
	}
	return n
}

// streamSendBuffer is the kernel send buffer of a stream's socket
// (SO_SNDBUF): what a consumer that stops reading holds in the kernel,
// and how soon its stream's sends block (then --feed-write-timeout drops
// it).
const streamSendBuffer = 256 << 10

// setSendBuffer sets c's socket send buffer, through the wrappers the
// node's listener adds (NetConn); a connection that is not TCP keeps its
// own.
func setSendBuffer(c net.Conn, n int) {
	for range 4 {
		switch v := c.(type) {
		case *net.TCPConn:
			_ = v.SetWriteBuffer(n)
			return
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return
		}
	}
}

// newUpgrader returns the feed's WebSocket upgrader: a handshake it
// refuses is answered with the API's JSON error.
// wsProtocol is the WebSocket subprotocol a feed stream speaks; a browser
// that sends its token as a subprotocol entry (wsTokenProtocol) offers
// this one too, and the node answers with it, never echoing the token.
const wsProtocol = "lambdadb.feed"

func (s *Server) newUpgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  1 << 10,
		WriteBufferSize: 16 << 10,
		// Write buffers are held only while a message is written.
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     s.checkOrigin,
		Subprotocols:    []string{wsProtocol},
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			if status == http.StatusForbidden {
				s.writeError(w, r, fmt.Errorf("%w: %w: WebSocket from origin %q (allow it with --allow-origin)", auth.ErrForbidden, errCrossOrigin, r.Header.Get("Origin")))
				return
			}
			if status == http.StatusBadRequest {
				s.writeError(w, r, fmt.Errorf("%w: %v", errBadHandshake, reason))
				return
			}
			s.writeError(w, r, fmt.Errorf("server: WebSocket upgrade (%d): %w", status, reason))
		},
	}
}

// streamFeed sends feed bodies as WebSocket text messages, one per batch
// of changes, until the client goes away. An expired cursor closes the
// socket with an error message and close code 4410. A message that cannot
// be sent within the write timeout (a consumer that stopped reading)
// drops the connection; the consumer resumes from the cursor of the last
// message it read.
func (s *Server) streamFeed(w http.ResponseWriter, r *http.Request, sub *changefeed.Subscription, req changefeed.Request) {
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	defer conn.Close()
	setSendBuffer(conn.NetConn(), streamSendBuffer)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // the client closing (or any read) ends the stream
		for {
			if _, _, err := conn.NextReader(); err != nil {
				cancel()
				return
			}
		}
	}()
	req.Wait = 30 * time.Second
	req.MaxBytes = streamMaxBytes
	ns := namespace.From(r.Context())
	for ctx.Err() == nil {
		res, err := sub.Read(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			status, code := errorStatus(err)
			msg, _ := json.Marshal(apiError{Error: err.Error(), Code: code})
			_ = conn.SetWriteDeadline(time.Now().Add(s.feedSend))
			_ = conn.WriteMessage(websocket.TextMessage, msg)
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000+status, code), time.Now().Add(time.Second))
			return
		}
		req.Cursor = res.Cursor
		userKeys(ns, &res)
		if len(res.Changes) == 0 {
			continue
		}
		// Reserve the message in the node's budget of stream bytes in
		// flight before encoding it: consumers that stop reading hold
		// their messages until the write timeout drops them, and together
		// they must not hold more than the budget.
		cost, ok := int64(0), false
		for !ok {
			if cost, ok = s.streamSend.acquire(ctx, messageCost(res), time.Second); !ok && ctx.Err() != nil {
				return
			}
		}
		msg := s.feedEnc.feedMessage(res, 0)
		_ = conn.SetWriteDeadline(time.Now().Add(s.feedSend))
		err = conn.WriteMessage(websocket.TextMessage, msg)
		s.streamSend.release(cost)
		if err != nil {
			s.slowConsumers.Inc()
			return
		}
	}
}
