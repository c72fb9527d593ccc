// Package testnode is a test harness: New opens a one-node lambdadb cluster
// on an in-memory file system, and Serve runs the HTTP API over a node on a
// loopback httptest.Server; both are closed when the test ends.
//
// It is for tests only; production code must not import it. Its functions
// must be called from the test's own goroutine (they may call tb.Fatal).
// For multi-node clusters use internal/clustertest.
package testnode
