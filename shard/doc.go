// Package shard runs lambdadb's shards: one Raft group per shard, all of a
// node's replicas driven by one multiraft.Engine (scheduler, log writer,
// ticker) over one transport.Transport, each with an on-disk state machine
// in the node's kv.Engine.
//
// The key space is hashed into a fixed number of shards (For); keys holding a
// non-empty {hash tag} hash only the tag, so related keys share a shard.
//
// Writes are msgpack-encoded Commands applied through Raft; the FSM applies a
// batch of entries as one Pebble batch together with the applied index and
// skips entries at or below the persisted applied index after a restart.
// The engine truncates a log only with a synced batch, which makes every
// applied batch before it durable too (one WAL), so nothing the log no
// longer holds can be lost.
//
// Reads come in three levels (Consistency): linearizable reads confirm
// leadership with one ReadIndex round per batch of concurrent reads and
// wait until the replica has applied the commit index recorded at arrival;
// session reads wait until the replica's applied index covers the caller's
// session token; stale reads are served at once.
//
// A Node is safe for concurrent use. Close stops every group; calls made after
// Close return ErrClosed.
package shard
