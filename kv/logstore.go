package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// LogStore is a raft.LogStore over one shard's log key space. Appends are
// synced before they return.
type LogStore struct {
	e     *Engine
	shard int

	mu          sync.Mutex
	first, last uint64 // 0,0 when empty
}

var _ raft.LogStore = (*LogStore)(nil)
var _ raft.MonotonicLogStore = (*LogStore)(nil)

// LogStore returns the Raft log store of shard, loading its bounds.
func (e *Engine) LogStore(shard int) (*LogStore, error) {
	if err := checkShard(shard); err != nil {
		return nil, err
	}
	s := &LogStore{e: e, shard: shard}
	if err := s.loadBounds(); err != nil {
		return nil, err
	}
	return s, nil
}

// loadBounds sets first and last from the stored entries. The caller holds
// s.mu or has sole access to s.
func (s *LogStore) loadBounds() error {
	lo, hi := kindRange(s.shard, kindLog)
	it, err := s.e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("kv: log bounds: %w", err)
	}
	var first, last uint64
	if it.First() {
		first = beUint64(it.Key()[prefixLen:])
	}
	if it.Last() {
		last = beUint64(it.Key()[prefixLen:])
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("kv: log bounds: %w", err)
	}
	s.first, s.last = first, last
	return nil
}

// IsMonotonic tells Raft that indexes only grow (it then resets the log on
// snapshot install instead of expecting gaps).
func (s *LogStore) IsMonotonic() bool { return true }

// FirstIndex returns the first stored index, 0 when empty.
func (s *LogStore) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

// LastIndex returns the last stored index, 0 when empty.
func (s *LogStore) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

// GetLog reads the entry at index into log.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	v, closer, err := s.e.db.Get(logKey(s.shard, index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("kv: get log %d: %w", index, err)
	}
	defer closer.Close()
	if err := decodeLog(v, log); err != nil {
		return fmt.Errorf("kv: log %d: %w", index, err)
	}
	log.Index = index
	return nil
}

// StoreLog appends one entry.
func (s *LogStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs appends entries in one synced batch.
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	b := s.e.db.NewBatch()
	defer b.Close()
	var buf []byte
	for _, l := range logs {
		buf = encodeLog(buf[:0], l)
		if err := b.Set(logKey(s.shard, l.Index), buf, nil); err != nil {
			return fmt.Errorf("kv: store logs: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kv: store logs: %w", err)
	}
	s.mu.Lock()
	lo, hi := logs[0].Index, logs[len(logs)-1].Index
	if s.first == 0 || lo < s.first {
		s.first = lo
	}
	if hi > s.last {
		s.last = hi
	}
	s.mu.Unlock()
	return nil
}

// DeleteRange removes entries min..max inclusive.
func (s *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	hi := logKey(s.shard, max+1)
	if max == math.MaxUint64 {
		_, hi = kindRange(s.shard, kindLog) // max+1 would wrap to 0
	}
	if err := s.e.db.DeleteRange(logKey(s.shard, min), hi, pebble.Sync); err != nil {
		return fmt.Errorf("kv: delete logs %d-%d: %w", min, max, err)
	}
	// Reload the bounds rather than derive them from min and max: a range
	// that misses the stored entries, or covers only part of one end, must
	// leave exactly what a fresh LogStore would find.
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadBounds()
}

// Log entry value encoding: term, type, appended-at (unix ns, 0 if unset),
// data and extensions, each integer a uvarint and each byte string
// length-prefixed.
func encodeLog(buf []byte, l *raft.Log) []byte {
	buf = binary.AppendUvarint(buf, l.Term)
	buf = append(buf, byte(l.Type))
	var at uint64
	if !l.AppendedAt.IsZero() {
		at = uint64(l.AppendedAt.UnixNano())
	}
	buf = binary.AppendUvarint(buf, at)
	buf = binary.AppendUvarint(buf, uint64(len(l.Data)))
	buf = append(buf, l.Data...)
	buf = binary.AppendUvarint(buf, uint64(len(l.Extensions)))
	buf = append(buf, l.Extensions...)
	return buf
}

func decodeLog(b []byte, l *raft.Log) error {
	var ok bool
	take := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	bytesOf := func() []byte {
		n := take()
		if !ok || n > uint64(len(b)) {
			ok = false
			return nil
		}
		out := append([]byte(nil), b[:n]...)
		b = b[n:]
		return out
	}
	ok = true
	l.Term = take()
	if !ok || len(b) < 1 {
		return ErrCorrupt
	}
	l.Type = raft.LogType(b[0])
	b = b[1:]
	at := take()
	l.Data = bytesOf()
	l.Extensions = bytesOf()
	if !ok || len(b) != 0 {
		return ErrCorrupt
	}
	l.AppendedAt = time.Time{}
	if at != 0 {
		l.AppendedAt = time.Unix(0, int64(at))
	}
	if len(l.Data) == 0 {
		l.Data = nil
	}
	if len(l.Extensions) == 0 {
		l.Extensions = nil
	}
	return nil
}

// StableStore is a raft.StableStore over one shard's stable key space.
// Writes are synced.
type StableStore struct {
	e     *Engine
	shard int
}

var _ raft.StableStore = (*StableStore)(nil)

// errStableNotFound is the error hashicorp/raft expects, by its text, for a
// missing stable key.
var errStableNotFound = errors.New("not found")

// StableStore returns the Raft stable store of shard.
func (e *Engine) StableStore(shard int) (*StableStore, error) {
	if err := checkShard(shard); err != nil {
		return nil, err
	}
	return &StableStore{e: e, shard: shard}, nil
}

// Set stores val under key.
func (s *StableStore) Set(key, val []byte) error {
	if err := s.e.db.Set(shardKey(s.shard, kindStable, key), val, pebble.Sync); err != nil {
		return fmt.Errorf("kv: stable set: %w", err)
	}
	return nil
}

// Get returns the value under key, or an error reading "not found".
func (s *StableStore) Get(key []byte) ([]byte, error) {
	v, closer, err := s.e.db.Get(shardKey(s.shard, kindStable, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errStableNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("kv: stable get: %w", err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// SetUint64 stores val under key.
func (s *StableStore) SetUint64(key []byte, val uint64) error { return s.Set(key, beBytes(val)) }

// GetUint64 returns the value under key, or an error reading "not found".
func (s *StableStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: stable key %q has %d bytes", ErrCorrupt, key, len(v))
	}
	return beUint64(v), nil
}
