package testnode

import (
	"net/http/httptest"
	"testing"

	"lambdadb/server"
	"lambdadb/shard"
)

// Serve starts an httptest.Server (on 127.0.0.1) running the HTTP API
// over node with server.New's defaults, and closes it at the end of the
// test (before node, when node came from New).
func Serve(tb testing.TB, node *shard.Node) *httptest.Server {
	tb.Helper()
	h, err := server.New(server.Config{Node: node})
	if err != nil {
		tb.Fatalf("testnode: new server: %v", err)
	}
	ts := httptest.NewServer(h)
	tb.Cleanup(ts.Close)
	return ts
}
