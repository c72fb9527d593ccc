package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"lambdadb/changefeed"
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

// feedParams are the parameters of GET /v1/feed.
var feedParams = []string{"prefix", "cursor", "wait", "limit"}

// feedRequest parses prefix, cursor (C, now, beginning; default now),
// wait (at most changefeed.MaxWait) and limit.
func (s *Server) feedRequest(r *http.Request) (changefeed.Request, error) {
	q, err := queryParams(r, feedParams...)
	if err != nil {
		return changefeed.Request{}, err
	}
	req := changefeed.Request{Prefix: q.Get("prefix")}
	switch c := q.Get("cursor"); c {
	case "", "now":
		req.Cursor = s.feed.Now()
	case "beginning":
		cur, err := s.feed.Beginning(r.Context())
		if err != nil {
			return req, err
		}
		req.Cursor = cur
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
		if err := s.feed.CheckCursor(r.Context(), req.Cursor); err != nil {
			s.writeError(w, r, err)
			return
		}
		req.Checked = true
		s.streamFeed(w, r, req)
		return
	}
	res, err := s.feed.Read(r.Context(), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toFeedBody(res))
}

// newUpgrader returns the feed's WebSocket upgrader: a handshake it
// refuses is answered with the API's JSON error.
func (s *Server) newUpgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  1 << 10,
		WriteBufferSize: 64 << 10,
		// Feeds carry no cookies or credentials; any origin may read them.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
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
// socket with an error message and close code 4410.
func (s *Server) streamFeed(w http.ResponseWriter, r *http.Request, req changefeed.Request) {
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client
	}
	defer conn.Close()
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
	for ctx.Err() == nil {
		res, err := s.feed.Read(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			status, code := errorStatus(err)
			msg, _ := json.Marshal(apiError{Error: err.Error(), Code: code})
			_ = conn.WriteMessage(websocket.TextMessage, msg)
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000+status, code), time.Now().Add(time.Second))
			return
		}
		req.Cursor = res.Cursor
		if len(res.Changes) == 0 {
			continue
		}
		msg, err := json.Marshal(toFeedBody(res))
		if err != nil {
			return
		}
		_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := conn.WriteMessage(websocket.TextMessage, msg); err != nil {
			return
		}
	}
}
