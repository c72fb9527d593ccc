package lambda

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/namespace"
	"lambdadb/shard"
)

// ChangesCall is one call of a function's OnChanges entry point.
type ChangesCall struct {
	Name  string
	Batch []shard.Change
	// Buffer collects the handler's Put and Delete calls instead of
	// applying them, so the caller can commit them together with its own
	// bookkeeping (a trigger's checkpoint) in one atomic batch. A buffered
	// write reads back within the call (with version 0); a CompareAndPut,
	// or more writes than one batch holds, ends buffering for the rest of
	// the call (what was buffered is applied first) and ChangesResult.Direct
	// reports it.
	Buffer bool
}

// ChangesResult is the outcome of CallChanges.
type ChangesResult struct {
	Result
	// Writes are the buffered writes, to be committed by the caller.
	Writes []shard.Op
	// Direct reports that some writes were applied during the call.
	Direct bool
}

// Buffer limits: one batch must hold the writes and the caller's own op.
const (
	maxBufferedOps   = shard.MaxBatchOps - 1
	maxBufferedBytes = 16 << 20
)

// txBuffer holds an OnChanges call's writes.
type txBuffer struct {
	ops    []shard.Op
	index  map[string]int
	bytes  int
	direct bool
}

func (b *txBuffer) lookup(key string) (shard.Op, bool) {
	if b == nil || b.direct {
		return shard.Op{}, false
	}
	i, ok := b.index[key]
	if !ok {
		return shard.Op{}, false
	}
	return b.ops[i], true
}

// add buffers a write; false means the buffer is full.
func (b *txBuffer) add(op shard.Op) bool {
	if i, ok := b.index[op.Key]; ok {
		b.bytes += len(op.Value) - len(b.ops[i].Value)
		b.ops[i] = op
		return true
	}
	if len(b.ops) >= maxBufferedOps || b.bytes+len(op.Key)+len(op.Value) > maxBufferedBytes {
		return false
	}
	b.index[op.Key] = len(b.ops)
	b.ops = append(b.ops, op)
	b.bytes += len(op.Key) + len(op.Value)
	return true
}

// flush applies the buffered writes one by one and stops buffering.
func (e *Engine) flush(ctx context.Context, cs *callState) error {
	b := cs.tx
	b.direct = true
	for _, op := range b.ops {
		var err error
		var res shard.WriteResult
		if op.Delete {
			res, err = e.cfg.Store.Delete(ctx, op.Key, shard.Cond{}, cs.tok)
		} else {
			res, err = e.cfg.Store.Put(ctx, op.Key, op.Value, shard.Cond{}, cs.tok)
		}
		cs.tok = res.Session
		if err != nil {
			return err
		}
	}
	b.ops, b.index = nil, nil
	return nil
}

// CallChanges runs the function's OnChanges entry point on this node.
func (e *Engine) CallChanges(ctx context.Context, c ChangesCall) (ChangesResult, error) {
	res := ChangesResult{Result: Result{Node: e.cfg.NodeID}}
	f, err := e.lookup(ctx, c.Name, nil)
	if err != nil {
		return res, err
	}
	res.Function = f
	if !f.Has("changes") {
		return res, fmt.Errorf("%w: %q registers no OnChanges (it has %s)", ErrNoEntrypoint, f.Name, strings.Join(f.Entrypoints, ", "))
	}
	// The handler sees its namespace's user keys; a change of another
	// namespace (a trigger never delivers one) is not shown to it.
	ns := f.Namespace()
	batch := make([]any, 0, len(c.Batch))
	for _, ch := range c.Batch {
		key, ok := namespace.Strip(ns, ch.Key)
		if !ok {
			continue
		}
		op, val := "put", ch.Value
		if ch.Delete {
			op, val = "delete", nil
		}
		batch = append(batch, []any{key, val, op, ch.Version})
	}
	msg, err := msgpack.Marshal(batch)
	if err != nil {
		return res, fmt.Errorf("lambda: encode changes: %w", err)
	}
	if len(msg) > MaxMessageBytes {
		return res, fmt.Errorf("%w: a batch of %d changes encodes to %d bytes", ErrRequestTooLarge, len(c.Batch), len(msg))
	}
	var tx *txBuffer
	if c.Buffer {
		tx = &txBuffer{index: map[string]int{}}
	}
	r, err := e.callWith(ctx, f, kindChanges, msg, nil, shard.Linearizable, res.Result, callExt{tx: tx})
	res.Result = r
	if tx != nil {
		res.Direct = tx.direct
		if !tx.direct {
			res.Writes = tx.ops
		}
	}
	return res, err
}
