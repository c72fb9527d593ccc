// Package multiraft drives many Raft groups on one node with etcd's raft
// library (go.etcd.io/raft/v3): one RawNode per group replica, a node-wide
// scheduler, one log writer and one ticker.
//
// # Shape
//
// An Engine owns every group replica of its node. Work for a group — an
// inbound message, a tick, a proposal, a read, a storage acknowledgement —
// is put in the group's inbox and the group is queued on the scheduler. A
// fixed set of workers takes groups off the queue; a group is never
// processed by two workers at once, and work arriving while it is being
// processed queues it again (scheduler.go).
//
// A worker pass steps the inbox into the RawNode, then handles its Ready
// with asynchronous storage writes (raft.Config.AsyncStorageWrites): peer
// messages go to the Transport at once, so a leader replicates while its own
// append is being synced (Raft thesis §10.2.1); the MsgStorageAppend goes to
// the log writer; committed entries are applied inline, in order, through
// the group's StateMachine, in one Pebble batch with the applied index.
//
// The log writer (writer.go) is one goroutine. It takes every queued append
// of every group, writes them into one kv.RaftBatch and commits it with one
// sync, then delivers each append's responses in order: local ones back to
// the group's inbox, the rest (a follower's MsgAppResp, a vote) to the
// Transport. Nothing is acknowledged before it is durable. While one sync
// runs, the queue refills: group commit without timers. A failed log write
// stops the node (Config.Fatal): raft has already sent the entries, and
// reusing their indexes would diverge from the followers.
//
// # Proposals and reads
//
// Propose wraps the payload in an envelope naming this node and a sequence
// number, so that the proposer learns the entry's result when its node
// applies it, and learns for certain that it was dropped when another entry
// takes its index. ReadIndex batches every waiting read of a group behind
// one raft ReadIndex (ReadOnlySafe: the leader confirms its leadership with
// a heartbeat round); a retry uses a fresh request context.
//
// # Snapshots
//
// A MsgSnap carries metadata only. The Transport streams the shard's state
// (kv.ShardSnapshot) beside it; the sender rewrites the message's metadata
// from the same Pebble snapshot as the data. The receiver turns the stream
// into an SSTable as it arrives (kv.RaftStorage.StageSnapshot, which
// verifies it) before it steps the message, and the log writer installs it
// by ingesting that table (kv.RaftStorage.IngestSnapshot) between two of
// its batches: an install costs the other groups' appends one manifest
// edit, not a write of the whole snapshot through their batch. The sender
// always reports the outcome to raft (ReportSnapshot).
//
// # Removing a replica
//
// RemoveGroup stops a replica for good — once the group has committed its
// removal — so that its shard can be deleted (kv.Engine.DropShard) and
// the group later added again, empty (GroupConfig.Join). It sets the
// replica's removed flag, then takes in turn each lock under which work
// reaches the replica: the scheduler's (it waits out a pass in progress;
// a removed replica is never queued or processed again), the log
// writer's (it discards the replica's queued writes and waits out a batch
// holding one) and the replica's own (it empties the inbox). Every intake
// checks the flag under the same lock, so work handed over before is seen
// and released, and work offered after is refused. Callers still waiting
// then fail with ErrRemoved, and staged snapshot files are deleted.
//
// # Identities
//
// A group's replica ids are node ids: the replica of group g on node n has
// raft id n, and messages are addressed to nodes.
//
// # Concurrency
//
// Every exported method of Engine is safe for concurrent use. A
// StateMachine's methods are called from one goroutine at a time per group.
// Transport methods are called from many goroutines and must not block on
// the network.
package multiraft
