// Package kv is lambdadb's storage engine: one Pebble database per node,
// divided into per-shard key spaces.
//
// # Key layout
//
// Every shard-owned key starts with a four-byte prefix: 'S', the shard id as
// a big-endian uint16, and a kind byte:
//
//	S<shard>a<name>      shard metadata (applied index)
//	S<shard>c<trigger>   trigger checkpoints (reserved for change feeds)
//	S<shard>d<userkey>   user records: 8-byte big-endian version + value
//	S<shard>f<index>     change-feed records, by Raft index (reserved)
//	S<shard>l<index>     Raft log entries, by 8-byte big-endian index
//	S<shard>s<name>      Raft stable state (term, vote)
//	S<shard>y<syskey>    system records (Space System): same encoding as d
//	N<name>              node metadata (node id, shard count)
//
// A shard snapshot covers the kinds a, c, d, f and y — the replicated
// state — and never the Raft log or stable state, which belong to the
// replica. Records live in one of two spaces (Space): UserData (kind d),
// which the Get, Scan, Put and Delete methods address, and System (kind y),
// reached only through the ...In methods.
//
// # Durability
//
// Raft log appends and stable-state writes are synced. State-machine batches
// (Apply.Commit) are not: the Raft log replays them after a crash, because
// the applied index is written in the same batch as the data it covers.
// SyncWAL makes every earlier unsynced batch durable; callers must call it
// before they discard Raft log entries the state machine may still need.
//
// # Concurrency
//
// An Engine is safe for concurrent use. A LogStore, StableStore or
// SnapshotStore is safe for concurrent use. An Apply is owned by one
// goroutine from NewApply to Commit or Close.
package kv
