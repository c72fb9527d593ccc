package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
)

// Internal RPC: HTTP with msgpack bodies, node to node, over the mux's
// internal listener (preamble "LDI1"). It is never exposed on the public
// listener.
const (
	rpcApply      = "/internal/v1/apply"
	rpcApplyBatch = "/internal/v1/apply-batch"
	rpcReadIndex  = "/internal/v1/readindex"
	rpcGet        = "/internal/v1/get"
	rpcScan       = "/internal/v1/scan"
	rpcStatus     = "/internal/v1/status"
	rpcFeed       = "/internal/v1/feed"

	// maxRPCBody bounds RPC bodies; scans keep pages under MaxScanBytes.
	maxRPCBody = 64 << 20
)

// Error codes carried in RPC responses; they map back to this package's
// sentinel errors.
const (
	codeOK           = ""
	codePrecondition = "precondition_failed"
	codeNotLeader    = "not_leader"
	codeUnavailable  = "unavailable"
	codeInvalid      = "invalid"
	codeInvalidKey   = "invalid_key"
	codeInvalidScan  = "invalid_scan"
	codeConsistency  = "bad_consistency"
	codeClosed       = "closed"
	codeFeedTrimmed  = "feed_trimmed"
	codeInternal     = "internal"
	codeIdentity     = "identity"
	codeMembership   = "membership"
	codeUnknownNode  = "unknown_node"
)

type rpcError struct {
	Code   string `msgpack:"code"`
	Msg    string `msgpack:"msg"`
	Leader string `msgpack:"leader"` // leader address hint for not_leader
}

func (e rpcError) err() error {
	var sentinel error
	switch e.Code {
	case codeOK:
		return nil
	case codePrecondition:
		sentinel = ErrPrecondition
	case codeNotLeader:
		sentinel = ErrNotLeader
	case codeUnavailable:
		sentinel = ErrUnavailable
	case codeInvalidKey:
		sentinel = ErrInvalidKey
	case codeFeedTrimmed:
		sentinel = ErrFeedTrimmed
	case codeInvalidScan:
		sentinel = ErrInvalidScan
	case codeConsistency:
		sentinel = ErrBadConsistency
	case codeInvalid:
		sentinel = ErrBadCommand
	case codeClosed:
		sentinel = ErrClosed
	case codeIdentity:
		sentinel = ErrIdentity
	case codeMembership:
		sentinel = ErrMembership
	case codeUnknownNode:
		sentinel = ErrUnknownNode
	default:
		return fmt.Errorf("shard: remote: %s", e.Msg)
	}
	return fmt.Errorf("%w (remote: %s)", sentinel, e.Msg)
}

func toRPCError(err error) rpcError {
	if err == nil {
		return rpcError{}
	}
	e := rpcError{Msg: err.Error(), Code: codeInternal}
	switch {
	case errors.Is(err, ErrPrecondition):
		e.Code = codePrecondition
	case errors.Is(err, ErrNotLeader), errors.Is(err, errForward):
		e.Code = codeNotLeader
	case errors.Is(err, ErrUnavailable):
		e.Code = codeUnavailable
	case errors.Is(err, ErrInvalidKey):
		e.Code = codeInvalidKey
	case errors.Is(err, ErrInvalidScan):
		e.Code = codeInvalidScan
	case errors.Is(err, ErrBadConsistency):
		e.Code = codeConsistency
	case errors.Is(err, ErrBadCommand):
		e.Code = codeInvalid
	case errors.Is(err, ErrClosed):
		e.Code = codeClosed
	case errors.Is(err, ErrFeedTrimmed):
		e.Code = codeFeedTrimmed
	case errors.Is(err, ErrIdentity):
		e.Code = codeIdentity
	case errors.Is(err, ErrMembership):
		e.Code = codeMembership
	case errors.Is(err, ErrUnknownNode):
		e.Code = codeUnknownNode
	}
	return e
}

// feedReq asks a replica for a page of a shard's feed.
type feedReq struct {
	Shard int    `msgpack:"shard"`
	After uint64 `msgpack:"after"`
	Limit int    `msgpack:"limit"`
	// Prefix restricts the page to keys under it (a node that predates it
	// ignores it; readers filter again).
	Prefix string `msgpack:"prefix,omitempty"`
	// MaxBytes bounds the page's keys and values (0: MaxFeedBytes).
	MaxBytes int `msgpack:"max_bytes,omitempty"`
}

type feedResp struct {
	rpcError
	Changes []Change `msgpack:"changes"`
	Trimmed uint64   `msgpack:"trimmed"`
	Applied uint64   `msgpack:"applied"`
	More    bool     `msgpack:"more"`
	Skipped int      `msgpack:"skipped,omitempty"`
}

type applyReq struct {
	Shard int    `msgpack:"shard"`
	Cmd   []byte `msgpack:"cmd"`
}

type applyResp struct {
	rpcError
	Index   uint64 `msgpack:"index"`
	Version uint64 `msgpack:"version"`
	Deleted bool   `msgpack:"deleted"`
	// DeletedOps is a batch's per-op deleted flags.
	DeletedOps []bool `msgpack:"deleted_ops,omitempty"`
}

type readIndexReq struct {
	Shard int `msgpack:"shard"`
}

type readIndexResp struct {
	rpcError
	Index uint64 `msgpack:"index"`
}

type readReq struct {
	Shard       int    `msgpack:"shard"`
	Consistency uint8  `msgpack:"consistency"`
	Session     string `msgpack:"session"`
	Key         string `msgpack:"key"`
	Lo          []byte `msgpack:"lo"`
	Hi          []byte `msgpack:"hi"`
	Limit       int    `msgpack:"limit"`
	Space       uint8  `msgpack:"space,omitempty"` // the Space read
}

type readResp struct {
	rpcError
	Records   []Record `msgpack:"records"`
	Found     bool     `msgpack:"found"`
	Applied   uint64   `msgpack:"applied"`
	Truncated bool     `msgpack:"truncated"` // scan stopped at the byte budget
}

// StatusReport is what a node reports of itself to its peers.
type StatusReport struct {
	Node   string        `msgpack:"node"`
	Shards []ShardReport `msgpack:"shards"`
	// MapVersion is the version of the committed cluster map the node
	// has (0 when it has none yet).
	MapVersion uint64 `msgpack:"map_version,omitempty"`
	// Info is the node's Config.StatusInfo bytes (nil when it has none or
	// they exceed MaxStatusInfoBytes).
	Info []byte `msgpack:"info,omitempty"`
}

// ShardReport is one hosted shard's state in a StatusReport.
type ShardReport struct {
	ID      int    `msgpack:"id"`
	Applied uint64 `msgpack:"applied"`
	State   string `msgpack:"state"`
	Leader  string `msgpack:"leader"`
	Term    uint64 `msgpack:"term,omitempty"`
	// The configuration the replica applied, reported by leaders.
	Voters   []uint64 `msgpack:"voters,omitempty"`
	Learners []uint64 `msgpack:"learners,omitempty"`
	Outgoing []uint64 `msgpack:"outgoing,omitempty"`
}

// leaderError is the RPC error for err from local group g, with the
// leader's address as a hint when this replica is not the leader; a nil g
// means shard s has no replica here.
func leaderError(g *group, s int, err error) rpcError {
	if g == nil {
		return toRPCError(errorf(ErrNotLeader, "shard %d is not hosted here", s))
	}
	e := toRPCError(err)
	if errors.Is(err, ErrNotLeader) {
		e.Leader = g.leaderAddr()
	}
	return e
}

// internalHandler serves the internal RPC.
func (n *Node) internalHandler() http.Handler {
	mux := n.imux
	mux.HandleFunc("POST "+rpcApply, func(w http.ResponseWriter, r *http.Request) {
		var req applyReq
		if !decodeRPC(w, r, &req) {
			return
		}
		writeRPC(w, n.serveApply(r.Context(), req))
	})
	mux.HandleFunc("POST "+rpcApplyBatch, func(w http.ResponseWriter, r *http.Request) {
		var req applyBatchReq
		if !decodeRPC(w, r, &req) {
			return
		}
		writeRPC(w, n.serveApplyBatch(r.Context(), req))
	})
	mux.HandleFunc("POST "+rpcReadIndex, func(w http.ResponseWriter, r *http.Request) {
		var req readIndexReq
		if !decodeRPC(w, r, &req) {
			return
		}
		g := n.hosted(req.Shard)
		if g == nil {
			writeRPC(w, readIndexResp{rpcError: leaderError(nil, req.Shard, nil)})
			return
		}
		idx, err := g.readIndex(r.Context())
		writeRPC(w, readIndexResp{rpcError: leaderError(g, req.Shard, err), Index: idx})
	})
	mux.HandleFunc("POST "+rpcGet, func(w http.ResponseWriter, r *http.Request) {
		var req readReq
		if !decodeRPC(w, r, &req) {
			return
		}
		tok, err := session.Decode(req.Session)
		if err != nil {
			writeRPC(w, readResp{rpcError: rpcError{Code: codeInvalid, Msg: err.Error()}})
			return
		}
		res, err := n.GetIn(r.Context(), Space(req.Space), req.Key, ReadOptions{Consistency: Consistency(req.Consistency), Session: tok})
		writeRPC(w, readResp{rpcError: toRPCError(err), Found: res.Found,
			Records: []Record{res.Record}, Applied: res.Session.Index(req.Shard)})
	})
	mux.HandleFunc("POST "+rpcScan, func(w http.ResponseWriter, r *http.Request) {
		var req readReq
		if !decodeRPC(w, r, &req) {
			return
		}
		tok, err := session.Decode(req.Session)
		if err != nil {
			writeRPC(w, readResp{rpcError: rpcError{Code: codeInvalid, Msg: err.Error()}})
			return
		}
		g := n.hosted(req.Shard)
		if g == nil {
			writeRPC(w, readResp{rpcError: toRPCError(errorf(ErrUnavailable, "shard %d is not hosted here", req.Shard))})
			return
		}
		part, err := n.scanLocal(r.Context(), g, Space(req.Space), req.Lo, req.Hi, req.Limit,
			ReadOptions{Consistency: Consistency(req.Consistency), Session: tok})
		writeRPC(w, readResp{rpcError: toRPCError(err), Records: part.recs, Applied: part.applied, Truncated: part.truncated})
	})
	mux.HandleFunc("POST "+rpcFeed, func(w http.ResponseWriter, r *http.Request) {
		var req feedReq
		if !decodeRPC(w, r, &req) {
			return
		}
		if n.hosted(req.Shard) == nil {
			writeRPC(w, feedResp{rpcError: toRPCError(errorf(ErrUnavailable, "shard %d is not hosted here", req.Shard))})
			return
		}
		p, err := n.ReadFeedQuery(r.Context(), req.Shard, FeedQuery{After: req.After, Limit: min(max(req.Limit, 1), 10*DefaultFeedLimit),
			Prefix: req.Prefix, MaxBytes: req.MaxBytes}, ReadOptions{Consistency: Stale})
		writeRPC(w, feedResp{rpcError: toRPCError(err), Changes: p.Changes, Trimmed: p.Trimmed, Applied: p.Applied, More: p.More, Skipped: p.Skipped})
	})
	mux.HandleFunc("POST "+rpcMap, func(w http.ResponseWriter, r *http.Request) {
		var req mapReq
		if !decodeRPC(w, r, &req) {
			return
		}
		writeRPC(w, n.serveMap())
	})
	mux.HandleFunc("POST "+rpcMetaGet, func(w http.ResponseWriter, r *http.Request) {
		var req mapReq
		if !decodeRPC(w, r, &req) {
			return
		}
		writeRPC(w, mapResponse(n.metaGetLocal(r.Context())))
	})
	mux.HandleFunc("POST "+rpcJoin, func(w http.ResponseWriter, r *http.Request) {
		var req joinReq
		if !decodeRPC(w, r, &req) {
			return
		}
		writeRPC(w, n.serveJoin(r.Context(), req))
	})
	mux.HandleFunc("POST "+rpcReconf, func(w http.ResponseWriter, r *http.Request) {
		var req reconfReq
		if !decodeRPC(w, r, &req) {
			return
		}
		writeRPC(w, n.serveReconf(r.Context(), req))
	})
	mux.HandleFunc("GET "+rpcMoves, func(w http.ResponseWriter, r *http.Request) {
		if g := n.hosted(MetaShard); g == nil || !g.isLeader() {
			writeRPC(w, movesResp{rpcError: rpcError{Code: codeNotLeader, Msg: "not the metadata leader"}})
			return
		}
		writeRPC(w, movesResp{Moves: n.localMoves()})
	})
	mux.HandleFunc("GET "+rpcStatus, func(w http.ResponseWriter, r *http.Request) {
		writeRPC(w, n.localStatus())
	})
	mux.HandleFunc(ExtPrefix, n.serveExt)
	return mux
}

func decodeRPC(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody+1))
	if err == nil && len(body) > maxRPCBody {
		err = errors.New("body too large")
	}
	if err == nil {
		err = msgpack.Unmarshal(body, v)
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeRPC(w, rpcError{Code: codeInvalid, Msg: "shard: bad rpc body: " + err.Error()})
		return false
	}
	return true
}

func writeRPC(w http.ResponseWriter, v any) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/msgpack")
	_, _ = w.Write(b)
}

// rpcClient calls peers' internal RPC through the mux.
type rpcClient struct {
	hc *http.Client
}

func newRPCClient(m *Mux, peerOf func(addr string) string) *rpcClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			timeout := 2 * time.Second
			if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
				timeout = time.Until(d)
			}
			return m.dial(addr, peerOf(addr), magicInternal, 0, timeout)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     60 * time.Second,
	}
	return &rpcClient{hc: &http.Client{Transport: tr}}
}

// errNotSent marks RPC failures where the request certainly did not reach
// the peer (so a retry cannot apply a write twice).
var errNotSent = errors.New("shard: rpc not sent")

// errReadRPC marks a failed read RPC: reads change nothing, so the caller
// may retry it elsewhere.
var errReadRPC = errors.New("shard: read rpc failed")

func (c *rpcClient) call(ctx context.Context, method, addr, path string, req, resp any) error {
	var body io.Reader
	if req != nil {
		b, err := msgpack.Marshal(req)
		if err != nil {
			return fmt.Errorf("shard: rpc encode: %w", err)
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return fmt.Errorf("shard: rpc: %w", err)
	}
	res, err := c.hc.Do(hr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w: %v", errNotSent, err)
		}
		if errors.Is(err, errDialFault) {
			return fmt.Errorf("%w: %v", errNotSent, err)
		}
		// The request may have reached the peer: for a write the outcome
		// is unknown.
		return fmt.Errorf("%w: rpc %s %s: %v (the request may or may not have been applied)", ErrUnavailable, addr, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxRPCBody+1))
	if err != nil {
		return fmt.Errorf("%w: rpc %s %s: %v (the request may or may not have been applied)", ErrUnavailable, addr, path, err)
	}
	if len(b) > maxRPCBody {
		return fmt.Errorf("shard: rpc %s %s: response larger than %d bytes", addr, path, maxRPCBody)
	}
	if err := msgpack.Unmarshal(b, resp); err != nil {
		return fmt.Errorf("shard: rpc %s %s: bad response (%s): %w", addr, path, res.Status, err)
	}
	return nil
}
