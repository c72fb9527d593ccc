// Package server implements lambdadb's HTTP API (v1) on top of a shard.Node.
//
// New returns a Server, an http.Handler serving:
//
//	PUT    /v1/kv/{key}   store a value (If-Match: "N", If-None-Match: *)
//	GET    /v1/kv/{key}   read a value (?consistency=linearizable|session|stale)
//	DELETE /v1/kv/{key}   delete a key (If-Match: "N")
//	GET    /v1/kv         scan (?prefix=P&start=K&end=K&limit=N&consistency=C)
//	GET    /v1/cluster    shard.ClusterStatus as JSON
//	GET    /healthz       liveness: {"status":"ok","node":ID}
//	GET    /metrics       Prometheus text exposition
//
// # Keys in paths
//
// The key is everything after "/v1/kv/", taken from the request's escaped
// path and percent-decoded once, so a key may contain "/" either literally
// ("/v1/kv/a/b" is key "a/b") or escaped ("/v1/kv/a%2Fb" is also key "a/b").
// Path segments that HTTP path cleaning would rewrite — empty segments ("//",
// a leading "/" in the key), "." and ".." — must be escaped ("%2F", "%2E");
// the server rejects them with 400 invalid_key instead of redirecting to a
// different key. The client package escapes keys this way.
//
// # Sessions
//
// Every response on a /v1/kv route carries the X-Session header: the
// request's token merged with what the operation wrote or observed (on
// errors, at least the request's token; empty when there is none). A GET
// or scan without a consistency parameter is a session read when the request
// carries a non-empty X-Session, else linearizable.
//
// # Errors
//
// Errors are JSON {"error": message, "code": code}; the mapping from errors
// to status and code lives in one function, errorStatus. See docs/api.md.
// net/http answers requests it cannot parse itself, in plain text, before
// any handler runs; Server.WrapListener makes those answers JSON too.
//
// # Concurrency
//
// A Server is safe for concurrent use by multiple goroutines once New
// returns. It does not own the Node: closing the Node is the caller's job,
// after the HTTP server using the handler has shut down.
package server
