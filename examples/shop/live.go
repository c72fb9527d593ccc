package shop

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"lambdadb/examples/shop/model"
)

// The live page: the shop follows orders/ through a node's change feed
// (a WebSocket to GET /v1/feed, resumed from its cursor on another node
// when that one goes away) and relays each new order to every open live
// page over the page's own WebSocket (/live/ws), so the browser talks to
// the shop's origin only.

// recentLive is how many recent orders a newly opened live page gets.
const recentLive = 30

type hub struct {
	mu     sync.Mutex
	subs   map[chan []byte]struct{}
	recent [][]byte // oldest first
	closed bool
}

func newHub() *hub { return &hub{subs: map[chan []byte]struct{}{}} }

func (h *hub) publish(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recent = append(h.recent, msg)
	if len(h.recent) > recentLive {
		h.recent = h.recent[len(h.recent)-recentLive:]
	}
	for ch := range h.subs {
		select {
		case ch <- msg:
		default: // a page that does not keep up misses orders, never blocks others
		}
	}
}

// subscribe returns the recent orders and a channel of the next ones
// (closed when the hub closes).
func (h *hub) subscribe() ([][]byte, chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan []byte, 256)
	if h.closed {
		close(ch)
		return nil, ch
	}
	h.subs[ch] = struct{}{}
	return append([][]byte(nil), h.recent...), ch
}

func (h *hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		close(ch)
	}
	h.subs = map[chan []byte]struct{}{}
}

// feedMessage is one message of a node's feed WebSocket.
type feedMessage struct {
	Changes []struct {
		Key     string `json:"key"`
		Value   []byte `json:"value"`
		Op      string `json:"op"`
		Version uint64 `json:"version"`
		Shard   int    `json:"shard"`
	} `json:"changes"`
	Cursor string `json:"cursor"`
	Error  string `json:"error"`
	Code   string `json:"code"`
}

// LiveOrder is what a live page receives per order.
type LiveOrder struct {
	model.Order
	Version uint64 `json:"version"`
	Shard   int    `json:"shard"`
}

// follow streams orders/ from the nodes' feeds until ctx ends, moving to
// the next node (with the last cursor) when one fails.
func (s *Shop) follow(ctx context.Context) {
	cursor := "now"
	for i := 0; ctx.Err() == nil; i++ {
		node := s.cfg.Nodes[i%len(s.cfg.Nodes)]
		next, err := s.followNode(ctx, node, cursor)
		if next != "" {
			cursor = next
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("live feed: moving on", "node", node, "err", err)
		if strings.Contains(errString(err), "cursor_expired") {
			cursor = "now"
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (s *Shop) followNode(ctx context.Context, node, cursor string) (string, error) {
	u, err := url.Parse(node)
	if err != nil {
		return "", err
	}
	scheme := "ws"
	if u.Scheme == "https" {
		scheme = "wss"
	}
	q := url.Values{"prefix": {model.OrdersPrefix}, "cursor": {cursor}}
	ws := scheme + "://" + u.Host + "/v1/feed?" + q.Encode()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.DialContext(ctx, ws, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	last := ""
	for {
		var m feedMessage
		if err := conn.ReadJSON(&m); err != nil {
			return last, err
		}
		if m.Error != "" {
			return last, &feedError{m.Code + ": " + m.Error}
		}
		for _, c := range m.Changes {
			if c.Op != "put" {
				continue
			}
			var o model.Order
			if json.Unmarshal(c.Value, &o) != nil {
				continue
			}
			b, _ := json.Marshal(LiveOrder{Order: o, Version: c.Version, Shard: c.Shard})
			s.live.publish(b)
		}
		if m.Cursor != "" {
			last = m.Cursor
		}
	}
}

type feedError struct{ s string }

func (e *feedError) Error() string { return e.s }

var upgrader = websocket.Upgrader{} // same-origin only (its default CheckOrigin)

// serveLive is /live/ws: the recent orders, then each new one, one JSON
// object per message.
func (s *Shop) serveLive(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer conn.Close()
	recent, ch := s.live.subscribe()
	defer s.live.unsubscribe(ch)
	// Reads only to notice the page going away.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	send := func(msg []byte) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteMessage(websocket.TextMessage, msg) == nil
	}
	for _, msg := range recent {
		if !send(msg) {
			return
		}
	}
	for {
		select {
		case <-gone:
			return
		case msg, ok := <-ch:
			if !ok || !send(msg) {
				return
			}
		}
	}
}
