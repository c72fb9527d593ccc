// Package auth holds lambdadb's access tokens: their format, their
// scopes, the replicated store that keeps their hashes, and the per-node
// cache that authenticates a request without a round trip.
//
// A token is opaque to its holder:
//
//	ldb_<accessor>_<secret><check>
//
// accessor is 16 hex digits, public and stable (it names the token in
// lists, logs and revocations); secret is 32 random bytes in unpadded
// base64url; check is the CRC-32 of everything before it in 8 hex digits,
// so a mistyped token is refused without a lookup and secret scanners can
// recognise a leaked one. The node stores only SHA-256(token) in a
// replicated record under its accessor (System space, all under one hash
// tag so a bootstrap writes its marker and its token atomically); the
// comparison is constant-time. A Token's LogValue redacts the secret, so
// a log line can name a token only by its accessor.
//
// A Store authenticates through a cache: a record read once is kept for
// Config.CacheTTL; a revocation deletes the record and then tells every
// reachable node to drop its cached copy before it returns, so a revoked
// token is refused everywhere at once (a node that could not be told
// reads the record again after CacheTTL). Past CacheTTL a known record
// keeps answering, for up to StaleTTL more, while it is read again in the
// background: a node cut off from the records serves the tokens it knew.
//
// Scopes (Scope, Principal.Allows) are relative to the token's namespace:
// kv:read:<prefix>, kv:write:<prefix>, feed:read:<prefix> (prefix "*" is
// the whole namespace), query, fn:deploy, fn:invoke, fn:logs,
// trigger:admin, metrics and admin (every namespace, nodes, tokens).
//
// Store and Denials are safe for concurrent use.
package auth
