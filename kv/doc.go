// Package kv is lambdadb's storage engine: one Pebble database per node,
// divided into per-shard key spaces.
//
// # Key layout
//
// Every shard-owned key starts with a four-byte prefix: 'S', the shard id as
// a big-endian uint16, and a kind byte:
//
//	S<shard>a<name>      shard metadata: "applied" (applied index), "term"
//	                     (8-byte big-endian term of the entry at the applied
//	                     index), "confstate" (proto raftpb.ConfState),
//	                     "feedtrim"
//	S<shard>c<trigger>   trigger checkpoints (reserved for change feeds)
//	S<shard>d<userkey>   user records: 8-byte big-endian version + value
//	S<shard>e<index>     etcd raft log entries, by 8-byte big-endian index:
//	                     proto raftpb.Entry
//	S<shard>f<index>     change-feed records, by Raft index (reserved)
//	S<shard>h<name>      etcd raft replica state: "hard" (proto
//	                     raftpb.HardState), "trunc" (8-byte big-endian
//	                     truncated index, then its term; the entry at the
//	                     truncated index is the last one discarded, or the
//	                     bootstrap or snapshot point)
//	S<shard>y<syskey>    system records (Space System): same encoding as d
//	N<name>              node metadata (node id, shard count)
//
// A shard snapshot covers the kinds a, c, d, f and y — the replicated
// state — and never the Raft log or replica state (kinds e and h), which
// belong to the replica. Because kind a is replicated, a snapshot
// carries its own applied index, term and ConfState. Records live in one of
// two spaces (Space): UserData (kind d), which the Get, Scan, Put and Delete
// methods address, and System (kind y), reached only through the ...In
// methods.
//
// Kinds e and h belong to the etcd raft storage (RaftStorage, RaftBatch).
//
// # Durability
//
// Raft log and replica-state writes are synced or not as the caller of
// RaftBatch.Commit asks; RaftStorage.Bootstrap and the log repair done by
// Engine.RaftStorage are synced. State-machine batches (Apply.Commit,
// Apply.CommitRaft) are not: the Raft log replays them after a crash,
// because the applied index is written in the same batch as the data it
// covers. All shards share one write-ahead log, so SyncWAL or any synced
// write makes every earlier unsynced batch durable; callers must sync before
// they discard Raft log entries the state machine may still need.
//
// # Dropping a shard
//
// Engine.DropShard deletes every key of one shard — every kind, the
// replica's raft log and state included — with one range deletion in one
// synced batch, for a node whose replica of the shard has moved away. The
// shard then reads as never written. A RaftStorage of the shard opened
// before is stale: raft writes through it fail with ErrStaleRaftStorage.
//
// # Concurrency
//
// An Engine is safe for concurrent use, and so is a RaftStorage. An Apply is
// owned by one goroutine from NewApply to Commit or Close, and a RaftBatch
// from NewRaftBatch to Commit or Close.
package kv
