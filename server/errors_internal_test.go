package server

import (
	"fmt"
	"net/http"
	"testing"

	"lambdadb/shard"
)

// TestErrorStatusOverload: the refusals of a node at its limits have codes
// of their own (overloaded before unavailable, which an overload also
// matches; body_timeout before bad_body, which a stalled body also is).
func TestErrorStatusOverload(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("%w: %w: 256 writes in flight", shard.ErrOverloaded, shard.ErrUnavailable), http.StatusServiceUnavailable, "overloaded"},
		{fmt.Errorf("%w: no leader", shard.ErrUnavailable), http.StatusServiceUnavailable, "unavailable"},
		{fmt.Errorf("%w: %w: stalled", errBadBody, errBodyTimeout), http.StatusRequestTimeout, "body_timeout"},
		{fmt.Errorf("%w: short", errBadBody), http.StatusBadRequest, "bad_body"},
	} {
		if status, code := errorStatus(tc.err); status != tc.status || code != tc.code {
			t.Errorf("errorStatus(%v) = %d %s; want %d %s", tc.err, status, code, tc.status, tc.code)
		}
	}
}
