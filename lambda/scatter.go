package lambda

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/shard"
)

// LeafScanFunc serves a Leaf's Ctx.Scan: up to limit records whose keys
// begin with prefix, at or after start, in key order, from the leaf's
// shard only; next is the key to continue from when more is true.
type LeafScanFunc func(ctx context.Context, prefix, start string, limit int) (items []shard.Record, next string, more bool, err error)

// LeafCall is one call of a function's Leaf entry point.
type LeafCall struct {
	Name string
	// Prefix is the query's prefix, passed to the Leaf.
	Prefix string
	// Scan serves the Leaf's scans (required).
	Scan LeafScanFunc
	// Session and Consistency govern the Leaf's other reads (Ctx.Get).
	Session     session.Token
	Consistency shard.Consistency
}

// CallLeaf runs the function's Leaf entry point on this node.
func (e *Engine) CallLeaf(ctx context.Context, c LeafCall) (Result, error) {
	res := Result{Node: e.cfg.NodeID, Session: c.Session}
	if c.Scan == nil {
		return res, fmt.Errorf("lambda: CallLeaf without a scan")
	}
	f, err := e.lookup(ctx, c.Name, c.Session)
	if err != nil {
		return res, err
	}
	res.Function = f
	if !f.Has("leaf") || !f.Has("combine") {
		return res, fmt.Errorf("%w: %q needs Leaf and Combine to run a query (it has %s)", ErrNoEntrypoint, f.Name, strings.Join(f.Entrypoints, ", "))
	}
	msg, err := msgpack.Marshal([]any{c.Prefix})
	if err != nil {
		return res, fmt.Errorf("lambda: encode leaf request: %w", err)
	}
	return e.callWith(ctx, f, kindLeaf, msg, c.Session, c.Consistency, res, callExt{leaf: c.Scan})
}

// CallCombine runs the function's Combine entry point on this node over
// parts (leaf outputs or other combines' outputs).
func (e *Engine) CallCombine(ctx context.Context, name string, parts [][]byte) (Result, error) {
	res := Result{Node: e.cfg.NodeID}
	f, err := e.lookup(ctx, name, nil)
	if err != nil {
		return res, err
	}
	res.Function = f
	if !f.Has("combine") {
		return res, fmt.Errorf("%w: %q registers no Combine (it has %s)", ErrNoEntrypoint, f.Name, strings.Join(f.Entrypoints, ", "))
	}
	msg, err := msgpack.Marshal(parts)
	if err != nil {
		return res, fmt.Errorf("lambda: encode combine request: %w", err)
	}
	if len(msg) > MaxMessageBytes {
		return res, fmt.Errorf("%w: %d parts encode to %d bytes, the limit is %d", ErrRequestTooLarge, len(parts), len(msg), MaxMessageBytes)
	}
	return e.callWith(ctx, f, kindCombine, msg, nil, shard.Linearizable, res, callExt{})
}
