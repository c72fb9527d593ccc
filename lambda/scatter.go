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
	// Version, when not 0, pins the deploy the Leaf must run: a node that
	// knows a newer one fails the call with ErrConflict, so one query never
	// mixes two versions of a function.
	Version uint64
}

// CombineCall is one call of a function's Combine entry point.
type CombineCall struct {
	Name string
	// Version pins the deploy as in LeafCall.
	Version uint64
	// Parts are leaf outputs or other combines' outputs.
	Parts [][]byte
}

// CallLeaf runs the function's Leaf entry point on this node.
func (e *Engine) CallLeaf(ctx context.Context, c LeafCall) (Result, error) {
	res := Result{Node: e.cfg.NodeID, Session: c.Session}
	if c.Scan == nil {
		return res, fmt.Errorf("lambda: CallLeaf without a scan")
	}
	f, err := e.lookupPinned(ctx, c.Name, c.Session, c.Version)
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
	return e.callWith(ctx, f, kindLeaf, msg, c.Session, c.Consistency, res, callExt{leaf: c.Scan, version: c.Version})
}

// CallCombine runs the function's Combine entry point on this node over
// c.Parts (leaf outputs or other combines' outputs).
func (e *Engine) CallCombine(ctx context.Context, c CombineCall) (Result, error) {
	res := Result{Node: e.cfg.NodeID}
	f, err := e.lookupPinned(ctx, c.Name, nil, c.Version)
	if err != nil {
		return res, err
	}
	res.Function = f
	if !f.Has("combine") {
		return res, fmt.Errorf("%w: %q registers no Combine (it has %s)", ErrNoEntrypoint, f.Name, strings.Join(f.Entrypoints, ", "))
	}
	// The limit applies to the parts themselves, not to their framing.
	size := 0
	for _, p := range c.Parts {
		size += len(p)
	}
	if size > MaxMessageBytes {
		return res, fmt.Errorf("%w: %d parts hold %d bytes, the limit is %d", ErrRequestTooLarge, len(c.Parts), size, MaxMessageBytes)
	}
	msg, err := msgpack.Marshal(c.Parts)
	if err != nil {
		return res, fmt.Errorf("lambda: encode combine request: %w", err)
	}
	return e.callWith(ctx, f, kindCombine, msg, nil, shard.Linearizable, res, callExt{version: c.Version})
}

// lookupPinned is lookup for a call pinned to version (0: any). A node
// that has not yet applied the pinned deploy reads the registry again
// linearizably; a function redeployed since is ErrConflict.
func (e *Engine) lookupPinned(ctx context.Context, name string, tok session.Token, version uint64) (*Function, error) {
	f, err := e.lookup(ctx, name, tok)
	if err != nil || version == 0 || f.Version == version {
		return f, err
	}
	if f.Version < version {
		if f, err = e.Get(ctx, name); err != nil {
			return nil, err
		}
	}
	if f.Version != version {
		return nil, redeployed(name, version, f.Version)
	}
	return f, nil
}

func redeployed(name string, pinned, now uint64) error {
	return fmt.Errorf("%w: %q was redeployed while the query ran (version %d, now %d); run the query again", ErrConflict, name, pinned, now)
}
