package shard

import (
	"context"
	"fmt"
	"time"
)

type clientKey struct{}

// AdmitAsClient marks ctx as a client's request: the node's Put, Delete,
// Batch and Get made with it are admitted under Config.MaxInflightWrites
// and MaxInflightReads. Requests without the mark — the node's own work,
// such as trigger deliveries and their checkpoints — are not limited, so a
// flood of clients cannot starve them.
func AdmitAsClient(ctx context.Context) context.Context {
	return context.WithValue(ctx, clientKey{}, true)
}

// admit takes one of slots' tokens for a client request, waiting up to
// Config.AdmissionWait (or until ctx ends) for one to free; beyond that the
// node is overloaded. release returns the token.
func (n *Node) admit(ctx context.Context, slots chan struct{}, what string) (release func(), err error) {
	if ctx.Value(clientKey{}) == nil {
		return func() {}, nil
	}
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, nil
	default:
	}
	t := time.NewTimer(n.cfg.AdmissionWait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, nil
	case <-t.C:
		n.m.shed.WithLabelValues(what).Inc()
		return nil, fmt.Errorf("%w: %w: %d %ss in flight on node %s", ErrOverloaded, ErrUnavailable, cap(slots), what, n.cfg.ID)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting to be admitted: %v", ErrUnavailable, ctx.Err())
	}
}
