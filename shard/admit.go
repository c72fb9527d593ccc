package shard

import (
	"context"
	"fmt"
	"time"
)

// admit takes one of slots' tokens for a client request, waiting up to
// Config.AdmissionWait (or until ctx ends) for one to free; beyond that the
// node is overloaded. release returns the token.
func (n *Node) admit(ctx context.Context, slots chan struct{}, what string) (release func(), err error) {
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
