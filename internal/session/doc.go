// Package session implements lambdadb's session tokens.
//
// A Token records, per shard, the highest Raft index a client has written or
// observed. Servers return the merged token on every data response and
// clients send it back, so any replica can tell whether it has applied
// everything the client has seen (read-after-write per client).
//
// On the wire a token is opaque: "s1." followed by base64url (no padding) of
// a version byte, a uvarint count and sorted (shard, index) uvarint pairs,
// closed by a CRC-32C of the preceding bytes. Decode rejects anything else.
//
// Tokens are plain values; a Token must not be mutated concurrently.
package session
