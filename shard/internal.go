package shard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"lambdadb/kv"
)

// ExtPrefix starts the internal RPC paths of packages layered on shard
// (HandleInternal).
const ExtPrefix = "/internal/v1/x/"

// HandleInternal serves path (which must begin with ExtPrefix) with h on
// the node's internal RPC listener, for packages layered on shard that
// talk node to node (scatter's sub-queries); registering a path again
// replaces its handler. Bodies are msgpack by convention; see
// CallInternal.
func (n *Node) HandleInternal(path string, h http.Handler) {
	if !strings.HasPrefix(path, ExtPrefix) {
		panic("shard: HandleInternal path " + path + " outside " + ExtPrefix)
	}
	n.extMu.Lock()
	defer n.extMu.Unlock()
	if n.ext == nil {
		n.ext = map[string]http.Handler{}
	}
	n.ext[path] = h
}

// serveExt dispatches ExtPrefix paths to HandleInternal's handlers.
func (n *Node) serveExt(w http.ResponseWriter, r *http.Request) {
	n.extMu.Lock()
	h := n.ext[r.URL.Path]
	n.extMu.Unlock()
	if h == nil {
		w.WriteHeader(http.StatusNotFound)
		writeRPC(w, rpcError{Code: codeInvalid, Msg: "shard: no internal route " + r.URL.Path})
		return
	}
	h.ServeHTTP(w, r)
}

// CallInternal POSTs req, msgpack-encoded, to path on the peer at addr over
// the internal RPC listener and decodes the msgpack response into resp. A
// transport failure wraps ErrUnavailable. Without a Mux (a node built for
// one process) it fails with ErrUnavailable.
func (n *Node) CallInternal(ctx context.Context, addr, path string, req, resp any) error {
	if n.rpc == nil {
		return fmt.Errorf("%w: no internal RPC on this node", ErrUnavailable)
	}
	err := n.rpc.call(ctx, http.MethodPost, addr, path, req, resp)
	if errors.Is(err, errNotSent) {
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// Replicas returns the members holding shard s, preferred leader first.
func (n *Node) Replicas(s int) []Peer { return n.replicasOf(s) }

// Leader returns the member this node believes leads shard s (zero Peer
// when it knows none).
func (n *Node) Leader(s int) Peer {
	addr := n.leaderOf(s)
	if addr == "" {
		return Peer{}
	}
	id := n.peerIDOf(addr)
	if id == "" {
		return Peer{}
	}
	return Peer{ID: id, Addr: addr}
}

// ShardSnapshot is one consistent, read-only view of a hosted shard's user
// records, from OpenShard. It holds the node open: Close it promptly.
type ShardSnapshot struct {
	n       *Node
	shard   int
	r       *kv.Reader
	applied uint64
	once    sync.Once
}

// OpenShard returns a snapshot of this node's replica of shard s once ro's
// consistency is satisfied (Linearizable and Session may wait for the
// replica to catch up; a replica too far behind a session fails with
// ErrUnavailable so the caller can read another). The shard must be hosted
// here (ErrNotHosted).
func (n *Node) OpenShard(ctx context.Context, s int, ro ReadOptions) (*ShardSnapshot, error) {
	if n.closed.Load() {
		return nil, ErrClosed
	}
	g := n.hosted(s)
	if g == nil {
		return nil, fmt.Errorf("%w: shard %d", ErrNotHosted, s)
	}
	if err := n.prepareRead(ctx, g, ro); err != nil {
		if errors.Is(err, errForward) {
			err = fmt.Errorf("%w: shard %d: this replica is behind", ErrUnavailable, s)
		}
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !n.engRLock() {
		return nil, ErrClosed
	}
	r := n.eng.NewReader()
	applied, err := r.Applied(s)
	if err == nil && g.removed.Load() {
		err = fmt.Errorf("%w: shard %d: the replica here was just removed", ErrNotHosted, s)
	}
	if err != nil {
		r.Close()
		n.engMu.RUnlock()
		return nil, fmt.Errorf("shard: %w", err)
	}
	return &ShardSnapshot{n: n, shard: s, r: r, applied: applied}, nil
}

// Closing is closed when the node starts to close: a holder should then
// finish, since Close waits for every snapshot.
func (s *ShardSnapshot) Closing() <-chan struct{} { return s.n.stop }

// Applied is the shard's applied Raft index the snapshot reflects.
func (s *ShardSnapshot) Applied() uint64 { return s.applied }

// Scan calls fn for each user record in [lo, hi) (a nil hi is unbounded),
// in key order; key and value are valid only during the call, and
// returning false stops the scan. ctx is checked as the scan goes.
func (s *ShardSnapshot) Scan(ctx context.Context, lo, hi []byte, fn func(key, value []byte) bool) error {
	i := 0
	var ctxErr error
	err := s.r.ScanIn(s.shard, kv.UserData, lo, hi, func(k, v []byte, _ uint64) bool {
		i++
		if i%1024 == 0 && ctx.Err() != nil {
			ctxErr = ctx.Err()
			return false
		}
		return fn(k, v)
	})
	if err != nil {
		return fmt.Errorf("shard: scan shard %d: %w", s.shard, err)
	}
	return ctxErr
}

// Close releases the snapshot.
func (s *ShardSnapshot) Close() {
	s.once.Do(func() {
		s.r.Close()
		s.n.engMu.RUnlock()
	})
}

// ScanShard calls fn for each user record of shard s in [lo, hi) (a nil
// hi is unbounded) from one consistent snapshot of this node's replica,
// after ro's consistency is satisfied (Linearizable and Session may wait
// for the replica to catch up). key and value are valid only during the
// call; returning false stops the scan. It returns the applied index the
// snapshot reflects. The shard must be hosted here (ErrNotHosted); ctx
// is checked as the scan goes.
func (n *Node) ScanShard(ctx context.Context, s int, lo, hi []byte, ro ReadOptions, fn func(key, value []byte) bool) (uint64, error) {
	snap, err := n.OpenShard(ctx, s, ro)
	if err != nil {
		return 0, err
	}
	defer snap.Close()
	return snap.applied, snap.Scan(ctx, lo, hi, fn)
}
