// Package changefeed turns the shards' change feeds into streams for
// applications and into triggers that run functions on inserts.
//
// Every committed change of user data is recorded in its shard's feed, in
// the same Raft entry as the change (shard/feed.go). A Cursor holds a
// position per shard (the Raft index through which a reader has seen
// everything); Feed.Read returns the changes after a cursor, filtered by
// key prefix, waiting for new ones up to a bound (long poll), and the
// cursor to continue from. Positions the feed no longer retains fail with
// ErrExpired, and positions beyond what a shard has committed (a cursor
// from another cluster, or kept across a rebuilt one) with ErrBadCursor —
// never silent loss.
//
// Triggers (trigger.go) bind a function to a prefix: on each shard, the
// shard's leader reads the feed from the trigger's replicated checkpoint,
// batches changes, calls the function's OnChanges next to the data and
// advances the checkpoint through Raft.
//
// A Feed is safe for concurrent use.
package changefeed
