package shard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"lambdadb/kv"
)

// Membership errors.
var (
	// ErrUnknownNode: no member has that id.
	ErrUnknownNode = errors.New("shard: no such node")
	// ErrMembership: a membership change the cluster cannot make now
	// (the other nodes could not hold every shard's replicas, or the
	// node is in a state that does not allow it).
	ErrMembership = errors.New("shard: membership change refused")
)

// errNoChange tells metaUpdate that its function changed nothing.
var errNoChange = errors.New("shard: no change")

// Internal RPC routes of the membership.
const (
	rpcMap     = "/internal/v1/map"
	rpcJoin    = "/internal/v1/join"
	rpcReconf  = "/internal/v1/reconf"
	rpcMetaGet = "/internal/v1/meta-get"
)

// mapReq asks a node for its cluster map: as installed there, or
// (Linearizable) as the metadata group's leader has it now.
type mapReq struct {
	Linearizable bool `msgpack:"linearizable"`
}

type mapResp struct {
	rpcError
	Found   bool   `msgpack:"found"`
	Map     []byte `msgpack:"map"`
	Version uint64 `msgpack:"version"`
}

type joinReq struct {
	ID    string `msgpack:"id"`
	Addr  string `msgpack:"addr"`
	Nonce string `msgpack:"nonce"`
}

// readMapLocal reads the map from this node's metadata replica (nil
// when it was never written).
func (n *Node) readMapLocal() (*clusterMap, error) {
	if !n.engRLock() {
		return nil, ErrClosed
	}
	rec, found, err := n.eng.GetIn(MetaShard, kv.System, []byte(mapKey))
	n.engMu.RUnlock()
	if err != nil || !found {
		return nil, err
	}
	return decodeMap(rec.Value, rec.Version)
}

// metaGetLocal reads the map linearizably on this node, which must lead
// the metadata group.
func (n *Node) metaGetLocal(ctx context.Context) (*clusterMap, error) {
	g := n.hosted(MetaShard)
	if g == nil || !g.isLeader() {
		if g != nil {
			return nil, g.notLeader()
		}
		return nil, errorf(ErrNotLeader, "the metadata group has no replica here")
	}
	idx, err := g.readIndex(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.fsm.waitApplied(ctx, idx); err != nil {
		return nil, fmt.Errorf("%w: metadata group: %v", ErrUnavailable, err)
	}
	return n.readMapLocal()
}

// metaGet reads the cluster map linearizably from the metadata group's
// leader (nil when it was never written).
func (n *Node) metaGet(ctx context.Context) (*clusterMap, error) {
	var m *clusterMap
	err := n.retry(ctx, MetaShard, func(leader string) error {
		if leader == "" || leader == n.cfg.Addr {
			var err error
			m, err = n.metaGetLocal(ctx)
			return err
		}
		if n.rpc == nil {
			return errorf(ErrNotLeader, "no metadata leader")
		}
		var resp mapResp
		tctx, cancel := n.readTryCtx(ctx)
		defer cancel()
		if err := n.rpc.call(tctx, "POST", leader, rpcMetaGet, mapReq{Linearizable: true}, &resp); err != nil {
			return fmt.Errorf("%w: %v", errReadRPC, err)
		}
		if err := resp.rpcError.err(); err != nil {
			return err
		}
		m = nil
		if resp.Found {
			var err error
			m, err = decodeMap(resp.Map, resp.Version)
			return err
		}
		return nil
	})
	return m, err
}

// metaUpdate changes the cluster map with fn, atomically: it reads the
// map linearizably, applies fn to a copy and writes it only if nothing
// wrote in between (else it starts over). fn returning errNoChange
// leaves the map as it is; another error is returned. A map never
// written starts from this node's genesis map (initial nodes only).
func (n *Node) metaUpdate(ctx context.Context, fn func(m *clusterMap) error) (*clusterMap, error) {
	ctx, cancel := n.ctx(ctx)
	defer cancel()
	for attempt := 0; ; attempt++ {
		cur, err := n.metaGet(ctx)
		if err != nil {
			return nil, err
		}
		cond := Cond{}
		if cur == nil {
			if n.genesis == nil {
				return nil, fmt.Errorf("%w: the cluster map was never written", ErrUnavailable)
			}
			cur = n.genesis.clone()
			cur.Created = time.Now().UnixNano()
			for i := range cur.Nodes {
				cur.Nodes[i].Since = cur.Created
			}
			cond.IfNoneMatch = true
		} else {
			v := cur.Version
			cond.IfMatch = &v
		}
		next := cur.clone()
		if err := fn(next); errors.Is(err, errNoChange) {
			if !cond.IfNoneMatch {
				n.installMap(cur, true)
				return cur, nil
			}
		} else if err != nil {
			return nil, err
		}
		cmd := newCommand(opPut, mapKey, next.encode(), cond)
		cmd.Space = uint8(SystemSpace)
		b, err := encodeCommand(cmd)
		if err != nil {
			return nil, err
		}
		_, ar, err := n.write(ctx, "meta", MetaShard, b)
		if errors.Is(err, ErrPrecondition) && attempt < 50 {
			continue
		}
		if err != nil {
			return nil, err
		}
		next.Version = ar.version
		n.installMap(next, true)
		return next, nil
	}
}

// mapResponse answers a map request from m.
func mapResponse(m *clusterMap, err error) mapResp {
	if err != nil {
		return mapResp{rpcError: toRPCError(err)}
	}
	if m == nil {
		return mapResp{}
	}
	return mapResp{Found: true, Map: m.encode(), Version: m.Version}
}

// serveMap answers with the map as installed here (a committed one, or
// nothing).
func (n *Node) serveMap() mapResp {
	if !n.fresh.Load() {
		return mapResp{}
	}
	return mapResponse(n.curMap(), nil)
}

// newNonce returns a random join nonce.
func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// join registers this node with the cluster through member addr and
// returns the map that counts it. It retries while the member cannot be
// reached or has no metadata leader, up to Config.StartTimeout.
func (n *Node) join(addr string) (*clusterMap, error) {
	nonce, found, err := n.eng.NodeMeta(metaJoinNonce)
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	if !found {
		nonce = []byte(newNonce())
		if err := n.eng.SetNodeMeta(metaJoinNonce, nonce); err != nil {
			return nil, fmt.Errorf("shard: %w", err)
		}
	}
	deadline := time.Now().Add(n.cfg.StartTimeout)
	req := joinReq{ID: n.cfg.ID, Addr: n.cfg.Addr, Nonce: string(nonce)}
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var resp mapResp
		err := n.rpc.call(ctx, "POST", addr, rpcJoin, req, &resp)
		cancel()
		if err == nil {
			err = resp.rpcError.err()
		}
		switch {
		case err == nil && resp.Found:
			return decodeMap(resp.Map, resp.Version)
		case err == nil:
			last = errors.New("the member answered without a map")
		case errors.Is(err, ErrIdentity), errors.Is(err, ErrMembership), errors.Is(err, ErrBadCommand):
			return nil, fmt.Errorf("shard: joining through %s: %w", addr, err)
		default:
			last = err
		}
		n.cfg.Logger.Info("waiting to join", "through", addr, "err", last)
		time.Sleep(500 * time.Millisecond)
	}
	return nil, fmt.Errorf("%w: cannot join through %s within %v: %v", ErrUnavailable, addr, n.cfg.StartTimeout, last)
}

// serveJoin registers a new node in the cluster map: a new Raft node
// number (never used before), state joining. A name the map counts
// already is refused unless it is the same node asking again (same
// nonce) or the old one was removed.
func (n *Node) serveJoin(ctx context.Context, req joinReq) mapResp {
	if err := ValidateNodeID(req.ID); err != nil || req.Addr == "" || req.Nonce == "" {
		return mapResp{rpcError: rpcError{Code: codeInvalid, Msg: fmt.Sprintf("shard: bad join request %+v", req)}}
	}
	m, err := n.metaUpdate(ctx, func(m *clusterMap) error {
		keep := m.Nodes[:0:0]
		for _, nd := range m.Nodes {
			switch {
			case nd.ID == req.ID && nd.State == StateRemoved:
				continue // its name is free again; its number stays retired
			case nd.ID == req.ID && nd.Nonce == req.Nonce:
				if nd.Addr == req.Addr {
					return errNoChange
				}
				return fmt.Errorf("%w: node %s joined with address %s, not %s", ErrIdentity, nd.ID, nd.Addr, req.Addr)
			case nd.ID == req.ID:
				return fmt.Errorf("%w: the cluster already counts a node named %s (number %d, %s, at %s): "+
					"a node that lost its data must not rejoin under its old name; remove it first "+
					"(lambdadb node remove %s) or join under a new --id", ErrIdentity, nd.ID, nd.Num, nd.State, nd.Addr, nd.ID)
			case nd.Addr == req.Addr && nd.State != StateRemoved:
				return fmt.Errorf("%w: address %s belongs to node %s (%s); remove it first (lambdadb node remove %s)",
					ErrIdentity, req.Addr, nd.ID, nd.State, nd.ID)
			}
			keep = append(keep, nd)
		}
		m.Nodes = append(keep, mapNode{ID: req.ID, Num: m.NextNum, Addr: req.Addr, State: StateJoining,
			Since: time.Now().UnixNano(), Nonce: req.Nonce})
		m.NextNum++
		return nil
	})
	if err == nil {
		n.cfg.Logger.Info("node joined", "node", req.ID, "addr", req.Addr, "map", m.Version)
	}
	return mapResponse(m, err)
}

// ValidateNodeID checks a node id: 1 to 64 letters, digits, '-', '_'
// or '.'.
func ValidateNodeID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("shard: node id must be 1 to 64 characters, got %q", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("shard: node id %q: only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

// syncMap installs the newest committed map this node can see: from its
// own metadata replica, else from a peer that reports a newer version.
func (n *Node) syncMap() {
	if g := n.hosted(MetaShard); g != nil {
		if m, err := n.readMapLocal(); err == nil && m != nil && checkRemoved(g) == nil {
			n.installMap(m, true)
		}
	}
	cur := n.curMap().Version
	addr, v := n.peers.newestMap()
	if addr == "" || (v <= cur && n.fresh.Load()) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var resp mapResp
	if err := n.rpc.call(ctx, "POST", addr, rpcMap, mapReq{}, &resp); err != nil || !resp.Found || resp.rpcError.err() != nil {
		return
	}
	if m, err := decodeMap(resp.Map, resp.Version); err == nil {
		n.installMap(m, true)
	}
}
