package kv

import (
	"encoding/binary"
	"fmt"
)

// Key kinds within a shard's key space.
const (
	kindMeta       byte = 'a'
	kindCheckpoint byte = 'c'
	kindData       byte = 'd'
	kindRaftEntry  byte = 'e'
	kindFeed       byte = 'f'
	kindRaftState  byte = 'h'
	kindSystem     byte = 'y'
)

// replicatedKinds are the kinds a shard snapshot carries, in key order.
var replicatedKinds = []byte{kindMeta, kindCheckpoint, kindData, kindFeed, kindSystem}

const shardTag byte = 'S'

// prefixLen is the length of a shard key-space prefix.
const prefixLen = 4

// MaxShards is the number of shard ids the key layout can address.
const MaxShards = 1 << 16

// Names under kindMeta (replicated) and kindRaftState (per replica).
var (
	appliedName   = []byte("applied")   // kindMeta: applied index, 8 bytes BE
	termName      = []byte("term")      // kindMeta: term of the applied entry, 8 bytes BE
	confStateName = []byte("confstate") // kindMeta: raftpb.ConfState
	hardStateName = []byte("hard")      // kindRaftState: raftpb.HardState
	truncName     = []byte("trunc")     // kindRaftState: truncated index and term, 8 bytes BE each
)

func shardPrefix(shard int, kind byte) []byte {
	return []byte{shardTag, byte(shard >> 8), byte(shard), kind}
}

func shardKey(shard int, kind byte, suffix []byte) []byte {
	k := make([]byte, prefixLen+len(suffix))
	k[0], k[1], k[2], k[3] = shardTag, byte(shard>>8), byte(shard), kind
	copy(k[prefixLen:], suffix)
	return k
}

// Space selects one of a shard's two record spaces. Both hold versioned
// records and both are replicated state, carried by shard snapshots.
type Space uint8

const (
	// UserData holds the records of the KV API (kind 'd').
	UserData Space = 0
	// System holds lambdadb's own replicated records (kind 'y').
	System Space = 1
)

// kind returns the key kind of the space, or 0 for an unknown space.
func (sp Space) kind() byte {
	switch sp {
	case UserData:
		return kindData
	case System:
		return kindSystem
	}
	return 0
}

// checkSpace returns sp's key kind, or an error wrapping ErrInvalidSpace.
func checkSpace(sp Space) (byte, error) {
	k := sp.kind()
	if k == 0 {
		return 0, fmt.Errorf("%w: %d", ErrInvalidSpace, sp)
	}
	return k, nil
}

// shardRange returns [lo, hi) spanning every key of shard, of every kind.
func shardRange(shard int) (lo, hi []byte) {
	lo = []byte{shardTag, byte(shard >> 8), byte(shard)}
	return lo, prefixEnd(lo)
}

// raftEntryKey is the key of the etcd raft log entry at index.
func raftEntryKey(shard int, index uint64) []byte {
	k := make([]byte, prefixLen+8)
	k[0], k[1], k[2], k[3] = shardTag, byte(shard>>8), byte(shard), kindRaftEntry
	binary.BigEndian.PutUint64(k[prefixLen:], index)
	return k
}

// kindRange returns [lo, hi) spanning every key of one kind in one shard.
func kindRange(shard int, kind byte) (lo, hi []byte) {
	return shardPrefix(shard, kind), shardPrefix(shard, kind+1)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil when there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// encodeRecord returns version (8 bytes big-endian) followed by value.
func encodeRecord(version uint64, value []byte) []byte {
	b := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(b, version)
	copy(b[8:], value)
	return b
}

// decodeRecord splits a stored record. It returns ok=false for a record too
// short to hold a version.
func decodeRecord(b []byte) (version uint64, value []byte, ok bool) {
	if len(b) < 8 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(b), b[8:], true
}
