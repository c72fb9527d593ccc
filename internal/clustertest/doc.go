// Package clustertest runs lambdadb clusters inside one test process: each
// member is a real shard.Node on its own loopback listener and mux, with its
// own in-memory crashable filesystem, sharing one shard.Faults so tests can
// partition, drop and delay traffic between node ids. Kill simulates a
// crash (keeping only synced data) and Restart brings the member back with
// the same id, address and flags.
//
// A Cluster is used by one test goroutine; its members' Nodes are safe for
// concurrent use.
package clustertest
