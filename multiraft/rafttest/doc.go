// Package rafttest is a test harness for multiraft: an in-memory network
// of engines (ordered per link, with partitions and drops) and a small
// state machine over the real storage engine.
package rafttest
