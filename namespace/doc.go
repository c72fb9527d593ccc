// Package namespace maps what a namespace's users name (keys, prefixes,
// key ranges, function and trigger names) to what the node stores, and
// back.
//
// A namespace is a tenant's share of the cluster: its keys, functions,
// triggers, feeds, queries and logs. Namespace Default ("default") is
// what insecure mode and existing data use; its keys and names are stored
// as they are, so a cluster that turns on secure mode keeps its data where
// it was. Every other namespace's keys are stored behind a marker that no
// user key can begin with:
//
//	0xFF  ns  0x00  key
//
// User keys are valid UTF-8 and UTF-8 never holds the byte 0xFF, so no
// key of one namespace, whatever its bytes, can name a key of another;
// Default's key space is everything below 0xFF, which Range clamps scans
// of Default to. Hash tags ("{tag}") keep their meaning: the tag inside
// the user key still picks the shard.
//
// Function and trigger names of a namespace other than Default are
// qualified as "ns:name" (':' is not allowed in a name).
//
// The package has no state; its functions are safe for concurrent use.
package namespace
