package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	raft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// etcd raft storage. A replica's log lives under kind 'e' (one proto
// raftpb.Entry per index) and its replica state under kind 'h': the hard
// state and the truncated state (index and term of the last discarded entry,
// or of the bootstrap or snapshot point). Entries (truncated, last] are all
// present. The applied index, its term and the ConfState are replicated
// state under kind 'a', written by the state machine (Apply.CommitRaft) or a
// snapshot install, and travel in shard snapshots.
//
// Invariant: truncated index <= applied index <= last index. Truncation only
// discards applied entries, and installing a snapshot sets all three at once.

// ErrRaftBootstrapped is returned by Bootstrap for a replica that already
// has raft state or an applied index.
var ErrRaftBootstrapped = errors.New("kv: raft replica already initialised")

// ErrStaleRaftStorage is returned for a raft write through a RaftStorage
// opened before its shard was dropped (Engine.DropShard).
var ErrStaleRaftStorage = errors.New("kv: raft storage opened before its shard was dropped")

// errRaftBatchDone is returned by a RaftBatch used after Commit or Close.
var errRaftBatchDone = errors.New("kv: raft batch already committed or closed")

// RaftStorage is one shard replica's raft.Storage over the engine: its log
// entries, hard state and truncated state, plus the applied state kept by the
// state machine. Safe for concurrent use. Writes go through RaftBatch.
//
// Open at most one RaftStorage per shard: it caches the log bounds, and
// only RaftBatch.Commit and Bootstrap of that RaftStorage update them. At
// most one uncommitted RaftBatch may touch a storage at a time. Engine.DropShard
// makes the shard's RaftStorage invalid: open a new one after it.
type RaftStorage struct {
	e     *Engine
	shard int
	gen   uint64 // e.drops[shard] when opened

	mu         sync.Mutex
	truncIndex uint64 // index of the last discarded entry (or snapshot point)
	truncTerm  uint64 // its term
	last       uint64 // last index; truncIndex when the log is empty
	lastTerm   uint64 // term at last

	// cache holds the newest entries, [cacheFrom, last], appended through
	// this storage (empty after open): raft reads entries to apply and to
	// send to followers soon after appending them, and serving them from
	// memory spares a Pebble iterator per read. cacheSize is their encoded
	// size; both are bounded by raftCacheEntries and raftCacheBytes.
	cache     []cachedEntry
	cacheFrom uint64
	cacheSize uint64
}

// cachedEntry is an entry in RaftStorage's cache with its encoded size.
type cachedEntry struct {
	ent  *pb.Entry
	size uint64
}

// Bounds of each storage's entry cache. Entries beyond them are read from
// Pebble.
const (
	raftCacheEntries = 1024
	raftCacheBytes   = 256 << 10
)

var _ raft.Storage = (*RaftStorage)(nil)

// RaftStorage opens shard's raft storage, loading its bounds. It repairs what
// a crash could leave behind: if the log does not hold the entry at the
// persisted applied index (it is beyond the last entry, below the truncated
// index, or missing), the log is reset in one synced batch so that truncated
// = (applied, applied term) and no entries remain; a stored hard state
// commit beyond the applied index is lowered to it, since no entry beyond it
// remains.
func (e *Engine) RaftStorage(shard int) (*RaftStorage, error) {
	if err := checkShard(shard); err != nil {
		return nil, err
	}
	e.dropMu.RLock()
	defer e.dropMu.RUnlock()
	s := &RaftStorage{e: e, shard: shard, gen: e.drops[shard]}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// load reads the bounds, repairing the log if needed. The caller has sole
// access to s.
func (s *RaftStorage) load() error {
	db := s.e.db
	trunc, truncTerm, err := loadTrunc(db, s.shard)
	if err != nil {
		return err
	}
	last, lastTerm := trunc, truncTerm
	lo, hi := kindRange(s.shard, kindRaftEntry)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("kv: raft log bounds: %w", err)
	}
	if it.Last() {
		idx, err := raftEntryIndex(s.shard, it.Key())
		if err == nil && idx > trunc {
			var v []byte
			if v, err = it.ValueAndErr(); err == nil {
				var got uint64
				lastTerm, got, err = entryTermIndex(v)
				if err == nil && got != idx {
					err = fmt.Errorf("%w: shard %d raft entry %d holds index %d", ErrCorrupt, s.shard, idx, got)
				}
				last = idx
			}
		}
		if err != nil {
			it.Close()
			return fmt.Errorf("kv: raft log bounds: %w", err)
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("kv: raft log bounds: %w", err)
	}
	s.truncIndex, s.truncTerm, s.last, s.lastTerm = trunc, truncTerm, last, lastTerm

	applied, err := getUint64(db, shardKey(s.shard, kindMeta, appliedName))
	if err != nil {
		return err
	}
	held := applied == trunc
	if applied > trunc && applied <= last {
		_, closer, err := db.Get(raftEntryKey(s.shard, applied))
		switch {
		case err == nil:
			closer.Close()
			held = true
		case !errors.Is(err, pebble.ErrNotFound):
			return fmt.Errorf("kv: raft log: %w", err)
		}
	}
	if held {
		return nil
	}
	return s.resetToApplied(applied)
}

// resetToApplied discards the whole log and sets truncated = (applied,
// applied term), in one synced batch.
func (s *RaftStorage) resetToApplied(applied uint64) error {
	db := s.e.db
	term, err := getUint64(db, shardKey(s.shard, kindMeta, termName))
	if err != nil {
		return err
	}
	b := db.NewBatch()
	defer b.Close()
	lo, hi := kindRange(s.shard, kindRaftEntry)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("kv: raft log repair: %w", err)
	}
	if err := b.Set(shardKey(s.shard, kindRaftState, truncName), encodeTrunc(applied, term), nil); err != nil {
		return fmt.Errorf("kv: raft log repair: %w", err)
	}
	hs := new(pb.HardState)
	found, err := getProto(db, shardKey(s.shard, kindRaftState, hardStateName), hs)
	if err != nil {
		return err
	}
	if found && hs.GetCommit() > applied {
		hs.Commit = new(applied)
		if err := setProto(b, shardKey(s.shard, kindRaftState, hardStateName), hs); err != nil {
			return fmt.Errorf("kv: raft log repair: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kv: raft log repair: %w", err)
	}
	s.truncIndex, s.truncTerm, s.last, s.lastTerm = applied, term, applied, term
	s.cache, s.cacheFrom, s.cacheSize = nil, 0, 0
	return nil
}

// Shard returns the shard id.
func (s *RaftStorage) Shard() int { return s.shard }

// checkFresh fails with ErrStaleRaftStorage if s's shard was dropped since
// s was opened. The caller holds s.e.dropMu (shared or not).
func (s *RaftStorage) checkFresh() error {
	if s.e.drops[s.shard] != s.gen {
		return fmt.Errorf("%w: shard %d", ErrStaleRaftStorage, s.shard)
	}
	return nil
}

// bounds returns the published bounds.
func (s *RaftStorage) bounds() (trunc, truncTerm, last, lastTerm uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.truncIndex, s.truncTerm, s.last, s.lastTerm
}

// InitialState returns the hard state (nil if none is stored and nothing is
// applied) with Commit raised to at least the applied index (entries are
// durable before they are applied, so this is safe; etcd raft panics if
// applied > commit), and the ConfState of the applied state (an empty,
// non-nil ConfState if none). If no hard state is stored but an index is
// applied, the hard state is {Term: applied term, Commit: applied index}.
func (s *RaftStorage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	snap := s.e.db.NewSnapshot()
	defer snap.Close()
	hs := new(pb.HardState)
	found, err := getProto(snap, shardKey(s.shard, kindRaftState, hardStateName), hs)
	if err != nil {
		return nil, nil, err
	}
	applied, term, cs, err := loadAppliedState(snap, s.shard)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case !found && applied == 0:
		hs = nil
	case !found:
		hs = &pb.HardState{Term: new(term), Commit: new(applied)}
	default:
		if hs.GetCommit() < applied {
			hs.Commit = new(applied)
		}
		if hs.GetTerm() < term {
			// A snapshot installed (IngestSnapshot) just before a crash
			// that lost the batch with the hard state that came with it:
			// the node is at least at the snapshot's term, and has not
			// voted in it.
			hs.Term, hs.Vote = new(term), new(uint64(0))
		}
	}
	return hs, cs, nil
}

// Entries returns the log entries [lo, hi), at least one, and beyond the
// first only as many as fit in maxSize bytes (their proto size). It returns
// raft.ErrCompacted if lo <= the truncated index and raft.ErrUnavailable if
// hi > last index + 1. The slice is freshly allocated.
func (s *RaftStorage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	trunc, _, last, _ := s.bounds()
	if lo <= trunc {
		return nil, raft.ErrCompacted
	}
	if hi > last+1 {
		return nil, raft.ErrUnavailable
	}
	if lo > hi {
		return nil, fmt.Errorf("kv: raft entries: bad range [%d, %d)", lo, hi)
	}
	if lo == hi {
		return []*pb.Entry{}, nil
	}
	if ents, ok := s.cached(lo, hi, maxSize); ok {
		return ents, nil
	}
	return s.storedEntries(lo, hi, maxSize)
}

// storedEntries reads entries [lo, hi) from Pebble (Entries' contract,
// bounds already checked).
func (s *RaftStorage) storedEntries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	it, err := s.e.db.NewIter(&pebble.IterOptions{
		LowerBound: raftEntryKey(s.shard, lo),
		UpperBound: raftEntryKey(s.shard, hi),
	})
	if err != nil {
		return nil, fmt.Errorf("kv: raft entries: %w", err)
	}
	ents := make([]*pb.Entry, 0, min(hi-lo, 256))
	var size uint64
	next := lo
	for valid := it.First(); valid; valid = it.Next() {
		idx, err := raftEntryIndex(s.shard, it.Key())
		if err != nil || idx != next {
			break // a gap: reported below
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("kv: raft entries: %w", err)
		}
		size += uint64(len(v))
		if len(ents) > 0 && size > maxSize {
			next = hi // stopped by size, not by a gap
			break
		}
		ent, err := decodeRaftEntry(idx, v)
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("kv: raft entries: shard %d: %w", s.shard, err)
		}
		ents = append(ents, ent)
		next++
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("kv: raft entries: %w", err)
	}
	if next < hi {
		return nil, s.missing(next)
	}
	return ents, nil
}

// cached returns entries [lo, hi) limited by maxSize from the cache, if it
// holds them all.
func (s *RaftStorage) cached(lo, hi, maxSize uint64) ([]*pb.Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) == 0 || lo < s.cacheFrom || hi > s.cacheFrom+uint64(len(s.cache)) {
		return nil, false
	}
	src := s.cache[lo-s.cacheFrom : hi-s.cacheFrom]
	ents := make([]*pb.Entry, 0, len(src))
	var size uint64
	for _, c := range src {
		size += c.size
		if len(ents) > 0 && size > maxSize {
			break
		}
		ents = append(ents, c.ent)
	}
	return ents, true
}

// cachedTerm returns entry i's term from the cache.
func (s *RaftStorage) cachedTerm(i uint64) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < s.cacheFrom || i >= s.cacheFrom+uint64(len(s.cache)) {
		return 0, false
	}
	return s.cache[i-s.cacheFrom].ent.GetTerm(), true
}

// publish installs a committed batch's outcome for s: its bounds, and its
// appended entries into the cache. Called with s.mu held.
func (s *RaftStorage) publish(p *raftPending) {
	s.truncIndex, s.truncTerm, s.last, s.lastTerm = p.truncIndex, p.truncTerm, p.last, p.lastTerm
	end := s.cacheFrom + uint64(len(s.cache))
	if len(s.cache) > 0 && s.cacheFrom <= p.termsFrom && p.termsFrom <= end {
		// The batch's entries continue (or overwrite the tail of) the cache.
		for _, c := range s.cache[p.termsFrom-s.cacheFrom:] {
			s.cacheSize -= c.size
		}
		clear(s.cache[p.termsFrom-s.cacheFrom:])
		s.cache = s.cache[:p.termsFrom-s.cacheFrom]
	} else {
		clear(s.cache)
		s.cache, s.cacheFrom, s.cacheSize = s.cache[:0], p.termsFrom, 0
	}
	s.cache = append(s.cache, p.ents...)
	for _, c := range p.ents {
		s.cacheSize += c.size
	}
	// Drop what the log no longer holds and what exceeds the bounds.
	drop := 0
	for drop < len(s.cache) && (s.cacheFrom+uint64(drop) <= s.truncIndex ||
		len(s.cache)-drop > raftCacheEntries || s.cacheSize > raftCacheBytes) {
		s.cacheSize -= s.cache[drop].size
		drop++
	}
	if drop > 0 {
		clear(s.cache[:drop])
		s.cache = append(s.cache[:0], s.cache[drop:]...)
		s.cacheFrom += uint64(drop)
	}
}

// Term returns the term of entry i: the truncated term for the truncated
// index, raft.ErrCompacted below it and raft.ErrUnavailable beyond the last
// index.
func (s *RaftStorage) Term(i uint64) (uint64, error) {
	trunc, truncTerm, last, lastTerm := s.bounds()
	switch {
	case i < trunc:
		return 0, raft.ErrCompacted
	case i == trunc:
		return truncTerm, nil
	case i > last:
		return 0, raft.ErrUnavailable
	case i == last:
		return lastTerm, nil
	}
	if term, ok := s.cachedTerm(i); ok {
		return term, nil
	}
	term, found, err := storedTerm(s.e.db, s.shard, i)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, s.missing(i)
	}
	return term, nil
}

// missing returns the error for entry i, within the bounds read earlier but
// not found: raft.ErrCompacted if a truncation or snapshot install that
// discarded it has committed since (its bounds may not be published yet),
// else a corruption error.
func (s *RaftStorage) missing(i uint64) error {
	trunc, _, err := loadTrunc(s.e.db, s.shard)
	if err != nil {
		return err
	}
	if i <= trunc {
		return raft.ErrCompacted
	}
	return fmt.Errorf("%w: shard %d raft entry %d missing", ErrCorrupt, s.shard, i)
}

// LastIndex returns the index of the last entry, or the truncated index when
// there are none.
func (s *RaftStorage) LastIndex() (uint64, error) {
	_, _, last, _ := s.bounds()
	return last, nil
}

// FirstIndex returns the truncated index + 1.
func (s *RaftStorage) FirstIndex() (uint64, error) {
	trunc, _, _, _ := s.bounds()
	return trunc + 1, nil
}

// Snapshot returns metadata only (Data nil): Index = persisted applied index,
// Term = applied term, ConfState = applied ConfState, read from one Pebble
// snapshot. The data itself is streamed separately from a ShardSnapshot,
// whose RaftMeta may be newer. If the applied index is 0 it returns
// raft.ErrSnapshotTemporarilyUnavailable.
func (s *RaftStorage) Snapshot() (*pb.Snapshot, error) {
	snap := s.e.db.NewSnapshot()
	defer snap.Close()
	index, term, cs, err := loadAppliedState(snap, s.shard)
	if err != nil {
		return nil, err
	}
	if index == 0 {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
		Index: new(index), Term: new(term), ConfState: cs,
	}}, nil
}

// Applied returns the persisted applied index and term.
func (s *RaftStorage) Applied() (index, term uint64, err error) {
	snap := s.e.db.NewSnapshot()
	defer snap.Close()
	if index, err = getUint64(snap, shardKey(s.shard, kindMeta, appliedName)); err != nil {
		return 0, 0, err
	}
	if term, err = getUint64(snap, shardKey(s.shard, kindMeta, termName)); err != nil {
		return 0, 0, err
	}
	return index, term, nil
}

// Bootstrap initialises an empty replica as if it had installed a snapshot
// at (index, term) with ConfState cs (nil means empty): truncated = (index,
// term), hard state {Term: term, Commit: index}, and in the shard's applied
// state applied=index, term=term, confstate=cs. One synced batch. It fails,
// wrapping ErrRaftBootstrapped, if the replica already has a hard state, a
// truncated state, a log entry or a non-zero applied index. All replicas of a
// group bootstrap identically, so no snapshot is needed to start.
func (s *RaftStorage) Bootstrap(index, term uint64, cs *pb.ConfState) error {
	s.e.dropMu.RLock()
	defer s.e.dropMu.RUnlock()
	if err := s.checkFresh(); err != nil {
		return err
	}
	db := s.e.db
	snap := db.NewSnapshot()
	defer snap.Close()
	for _, name := range [][]byte{hardStateName, truncName} {
		_, closer, err := snap.Get(shardKey(s.shard, kindRaftState, name))
		if err == nil {
			closer.Close()
			return fmt.Errorf("%w: shard %d has raft state %q", ErrRaftBootstrapped, s.shard, name)
		}
		if !errors.Is(err, pebble.ErrNotFound) {
			return fmt.Errorf("kv: raft bootstrap: %w", err)
		}
	}
	lo, hi := kindRange(s.shard, kindRaftEntry)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	hasEntries := it.First()
	if err := it.Close(); err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	if hasEntries {
		return fmt.Errorf("%w: shard %d has raft log entries", ErrRaftBootstrapped, s.shard)
	}
	applied, err := getUint64(snap, shardKey(s.shard, kindMeta, appliedName))
	if err != nil {
		return err
	}
	if applied != 0 {
		return fmt.Errorf("%w: shard %d has applied index %d", ErrRaftBootstrapped, s.shard, applied)
	}
	if cs == nil {
		cs = new(pb.ConfState)
	}

	b := db.NewBatch()
	defer b.Close()
	hs := &pb.HardState{Term: new(term), Commit: new(index)}
	if err := setProto(b, shardKey(s.shard, kindRaftState, hardStateName), hs); err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	if err := b.Set(shardKey(s.shard, kindRaftState, truncName), encodeTrunc(index, term), nil); err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	if err := setProto(b, shardKey(s.shard, kindMeta, confStateName), cs); err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	if err := b.Set(shardKey(s.shard, kindMeta, termName), beBytes(term), nil); err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	if err := b.Set(shardKey(s.shard, kindMeta, appliedName), beBytes(index), nil); err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kv: raft bootstrap: %w", err)
	}
	s.mu.Lock()
	s.truncIndex, s.truncTerm, s.last, s.lastTerm = index, term, index, term
	s.cache, s.cacheFrom, s.cacheSize = nil, 0, 0
	s.mu.Unlock()
	return nil
}

// RaftBatch collects raft log writes of many shards for one Pebble commit
// (the multi-raft log writer puts every group's pending appends in one batch
// with one sync). Owned by one goroutine. Validation errors (bad indexes,
// mismatched snapshots) leave the batch as it was; after any other error the
// batch must be closed.
type RaftBatch struct {
	e       *Engine
	b       *pebble.Batch
	pending map[*RaftStorage]*raftPending
	// touched holds every storage passed to a method (check), for
	// Commit's staleness check: SetHardState has no pending state.
	touched map[*RaftStorage]struct{}
	done    bool
}

// raftPending is a storage's state as the batch would leave it.
type raftPending struct {
	truncIndex, truncTerm uint64
	last, lastTerm        uint64
	// terms[i] is the term of entry termsFrom+i, written by this batch;
	// termsFrom+len(terms) == last+1. Entries in (truncIndex, termsFrom)
	// are the stored ones.
	termsFrom uint64
	terms     []uint64
	ents      []cachedEntry // the entries of terms, for the cache
}

// NewRaftBatch starts an empty batch.
func (e *Engine) NewRaftBatch() *RaftBatch {
	return &RaftBatch{e: e, b: e.db.NewBatch(), pending: map[*RaftStorage]*raftPending{}, touched: map[*RaftStorage]struct{}{}}
}

func (b *RaftBatch) check(s *RaftStorage) error {
	if b.done {
		return errRaftBatchDone
	}
	if s == nil || s.e != b.e {
		return errors.New("kv: raft batch: storage of another engine")
	}
	// Early notice; Commit checks again, atomically with the write.
	b.e.dropMu.RLock()
	defer b.e.dropMu.RUnlock()
	if err := s.checkFresh(); err != nil {
		return err
	}
	b.touched[s] = struct{}{}
	return nil
}

// pendingFor returns s's state in the batch, starting from its published
// bounds.
func (b *RaftBatch) pendingFor(s *RaftStorage) *raftPending {
	if p, ok := b.pending[s]; ok {
		return p
	}
	trunc, truncTerm, last, lastTerm := s.bounds()
	p := &raftPending{truncIndex: trunc, truncTerm: truncTerm, last: last, lastTerm: lastTerm, termsFrom: last + 1}
	b.pending[s] = p
	return p
}

// termAt returns the term of entry i as the batch would leave s's log.
func (b *RaftBatch) termAt(s *RaftStorage, p *raftPending, i uint64) (uint64, error) {
	switch {
	case i == p.truncIndex:
		return p.truncTerm, nil
	case i < p.truncIndex || i > p.last:
		return 0, fmt.Errorf("kv: raft batch: shard %d has no entry %d", s.shard, i)
	case i >= p.termsFrom:
		return p.terms[i-p.termsFrom], nil
	case i == p.last:
		return p.lastTerm, nil
	}
	term, found, err := storedTerm(b.e.db, s.shard, i)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%w: shard %d raft entry %d missing", ErrCorrupt, s.shard, i)
	}
	return term, nil
}

// Append writes ents (consecutive indexes) to s's log, replacing any stored
// entries at or after ents[0].Index (those beyond the new last index are
// deleted). Appends to the same storage within one batch must be in order;
// later ones see earlier ones. ents[0].Index must be <= last+1 (as seen
// through this batch) and > the truncated index, else an error.
func (b *RaftBatch) Append(s *RaftStorage, ents []*pb.Entry) error {
	if err := b.check(s); err != nil {
		return err
	}
	if len(ents) == 0 {
		return nil
	}
	p := b.pendingFor(s)
	first := ents[0].GetIndex()
	if first <= p.truncIndex {
		return fmt.Errorf("kv: raft append: shard %d: index %d at or below truncated index %d", s.shard, first, p.truncIndex)
	}
	if first > p.last+1 {
		return fmt.Errorf("kv: raft append: shard %d: index %d leaves a gap after last index %d", s.shard, first, p.last)
	}
	vals := make([][]byte, len(ents))
	for i, ent := range ents {
		if ent.GetIndex() != first+uint64(i) {
			return fmt.Errorf("kv: raft append: shard %d: entry %d has index %d; want %d", s.shard, i, ent.GetIndex(), first+uint64(i))
		}
		v, err := proto.Marshal(ent)
		if err != nil {
			return fmt.Errorf("kv: raft append: shard %d entry %d: %w", s.shard, ent.GetIndex(), err)
		}
		vals[i] = v
	}
	newLast := first + uint64(len(ents)) - 1
	if newLast < first {
		return fmt.Errorf("kv: raft append: shard %d: index overflow", s.shard)
	}
	for i, v := range vals {
		if err := b.b.Set(raftEntryKey(s.shard, first+uint64(i)), v, nil); err != nil {
			return fmt.Errorf("kv: raft append: %w", err)
		}
	}
	if newLast < p.last {
		_, hi := kindRange(s.shard, kindRaftEntry)
		if err := b.b.DeleteRange(raftEntryKey(s.shard, newLast+1), hi, nil); err != nil {
			return fmt.Errorf("kv: raft append: %w", err)
		}
	}
	if first >= p.termsFrom {
		p.terms = p.terms[:first-p.termsFrom]
		p.ents = p.ents[:first-p.termsFrom]
	} else {
		p.terms, p.ents, p.termsFrom = p.terms[:0], p.ents[:0], first
	}
	for i, ent := range ents {
		p.terms = append(p.terms, ent.GetTerm())
		p.ents = append(p.ents, cachedEntry{ent: ent, size: uint64(len(vals[i]))})
	}
	p.last, p.lastTerm = newLast, ents[len(ents)-1].GetTerm()
	return nil
}

// SetHardState records hs as s's hard state.
func (b *RaftBatch) SetHardState(s *RaftStorage, hs *pb.HardState) error {
	if err := b.check(s); err != nil {
		return err
	}
	if hs == nil {
		return errors.New("kv: raft hard state: nil")
	}
	if err := setProto(b.b, shardKey(s.shard, kindRaftState, hardStateName), hs); err != nil {
		return fmt.Errorf("kv: raft hard state: shard %d: %w", s.shard, err)
	}
	return nil
}

// Truncate discards s's entries at or below index and records truncated =
// (index, term of index). index must be <= the applied index and <= the last
// index (both as seen through this batch); it is a no-op if index <= the
// truncated index.
func (b *RaftBatch) Truncate(s *RaftStorage, index uint64) error {
	if err := b.check(s); err != nil {
		return err
	}
	p := b.pendingFor(s)
	if index <= p.truncIndex {
		return nil
	}
	if index > p.last {
		return fmt.Errorf("kv: raft truncate: shard %d: index %d beyond last index %d", s.shard, index, p.last)
	}
	applied, err := getUint64(b.e.db, shardKey(s.shard, kindMeta, appliedName))
	if err != nil {
		return err
	}
	if index > applied {
		return fmt.Errorf("kv: raft truncate: shard %d: index %d beyond applied index %d", s.shard, index, applied)
	}
	term, err := b.termAt(s, p, index)
	if err != nil {
		return err
	}
	lo, hi := kindRange(s.shard, kindRaftEntry)
	if index < math.MaxUint64 {
		hi = raftEntryKey(s.shard, index+1)
	}
	if err := b.b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("kv: raft truncate: %w", err)
	}
	if err := b.b.Set(shardKey(s.shard, kindRaftState, truncName), encodeTrunc(index, term), nil); err != nil {
		return fmt.Errorf("kv: raft truncate: %w", err)
	}
	if index >= p.termsFrom {
		p.terms = p.terms[index-p.termsFrom+1:]
		p.ents = p.ents[index-p.termsFrom+1:]
		p.termsFrom = index + 1
	}
	p.truncIndex, p.truncTerm = index, term
	return nil
}

// Empty reports whether the batch holds no writes.
func (b *RaftBatch) Empty() bool { return b.done || b.b.Empty() }

// Len returns the size of the batch in bytes.
func (b *RaftBatch) Len() int {
	if b.done {
		return 0
	}
	return b.b.Len()
}

// Commit commits the batch (synced when sync is true) and then publishes the
// new bounds of every touched storage: readers see the new entries only
// after Commit returns. On error nothing is published and the caller must
// treat the node as failed; it fails, writing nothing, with
// ErrStaleRaftStorage if a touched storage's shard was dropped since the
// storage was opened. The batch is closed afterwards.
func (b *RaftBatch) Commit(sync bool) error {
	if b.done {
		return errRaftBatchDone
	}
	defer b.Close()
	b.e.dropMu.RLock()
	defer b.e.dropMu.RUnlock()
	for s := range b.touched {
		if err := s.checkFresh(); err != nil {
			return fmt.Errorf("kv: raft commit: %w", err)
		}
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	if err := b.b.Commit(opts); err != nil {
		return fmt.Errorf("kv: raft commit: %w", err)
	}
	for s, p := range b.pending {
		s.mu.Lock()
		s.publish(p)
		s.mu.Unlock()
	}
	return nil
}

// Close discards an uncommitted batch. Close after Commit is a no-op.
func (b *RaftBatch) Close() {
	if !b.done {
		b.done = true
		b.pending, b.touched = nil, nil
		_ = b.b.Close()
	}
}

// raftEntryIndex returns the index of the raft entry key k of shard.
func raftEntryIndex(shard int, k []byte) (uint64, error) {
	if len(k) != prefixLen+8 {
		return 0, fmt.Errorf("%w: shard %d raft entry key %q", ErrCorrupt, shard, k)
	}
	return beUint64(k[prefixLen:]), nil
}

// decodeRaftEntry decodes the stored entry at index.
func decodeRaftEntry(index uint64, v []byte) (*pb.Entry, error) {
	ent := new(pb.Entry)
	if err := proto.Unmarshal(v, ent); err != nil {
		return nil, fmt.Errorf("%w: raft entry %d: %v", ErrCorrupt, index, err)
	}
	if ent.GetIndex() != index {
		return nil, fmt.Errorf("%w: raft entry %d holds index %d", ErrCorrupt, index, ent.GetIndex())
	}
	return ent, nil
}

// Field numbers of raftpb.Entry.
const (
	entryTermField  protowire.Number = 2
	entryIndexField protowire.Number = 3
)

// entryTermIndex returns the Term and Index of a marshalled raftpb.Entry
// without decoding its data. As in proto.Unmarshal, the last occurrence of a
// field wins and a field of the wrong wire type is an unknown field.
func entryTermIndex(v []byte) (term, index uint64, err error) {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return 0, 0, fmt.Errorf("%w: raft entry: %v", ErrCorrupt, protowire.ParseError(n))
		}
		v = v[n:]
		if typ == protowire.VarintType && (num == entryTermField || num == entryIndexField) {
			x, m := protowire.ConsumeVarint(v)
			if m < 0 {
				return 0, 0, fmt.Errorf("%w: raft entry: %v", ErrCorrupt, protowire.ParseError(m))
			}
			if num == entryTermField {
				term = x
			} else {
				index = x
			}
			v = v[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, v)
		if m < 0 {
			return 0, 0, fmt.Errorf("%w: raft entry: %v", ErrCorrupt, protowire.ParseError(m))
		}
		v = v[m:]
	}
	return term, index, nil
}

// storedTerm reads the term of the stored entry at index.
func storedTerm(g getter, shard int, index uint64) (term uint64, found bool, err error) {
	v, closer, err := g.Get(raftEntryKey(shard, index))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("kv: raft term %d: %w", index, err)
	}
	defer closer.Close()
	term, got, err := entryTermIndex(v)
	if err != nil {
		return 0, false, fmt.Errorf("kv: shard %d raft entry %d: %w", shard, index, err)
	}
	if got != index {
		return 0, false, fmt.Errorf("%w: shard %d raft entry %d holds index %d", ErrCorrupt, shard, index, got)
	}
	return term, true, nil
}

// encodeTrunc encodes the truncated state: index then term, 8 bytes BE each.
func encodeTrunc(index, term uint64) []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, index)
	return binary.BigEndian.AppendUint64(b, term)
}

// decodeTrunc decodes a truncated state.
func decodeTrunc(v []byte) (index, term uint64, err error) {
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: raft truncated state has %d bytes", ErrCorrupt, len(v))
	}
	return beUint64(v), beUint64(v[8:]), nil
}

// loadTrunc returns shard's truncated state, (0, 0) if none.
func loadTrunc(g getter, shard int) (index, term uint64, err error) {
	v, closer, err := g.Get(shardKey(shard, kindRaftState, truncName))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("kv: raft truncated state: %w", err)
	}
	defer closer.Close()
	index, term, err = decodeTrunc(v)
	if err != nil {
		return 0, 0, fmt.Errorf("kv: shard %d: %w", shard, err)
	}
	return index, term, nil
}

// getProto decodes the value under key into m; found is false if there is
// none.
func getProto(g getter, key []byte, m proto.Message) (found bool, err error) {
	v, closer, err := g.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kv: get: %w", err)
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, m); err != nil {
		return false, fmt.Errorf("%w: %q: %v", ErrCorrupt, key, err)
	}
	return true, nil
}

// setProto writes the marshalled m under key in b.
func setProto(b *pebble.Batch, key []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return b.Set(key, v, nil)
}

// loadAppliedState returns shard's applied index, its term and its
// ConfState (empty, not nil, if none).
func loadAppliedState(g getter, shard int) (index, term uint64, cs *pb.ConfState, err error) {
	if index, err = getUint64(g, shardKey(shard, kindMeta, appliedName)); err != nil {
		return 0, 0, nil, err
	}
	if term, err = getUint64(g, shardKey(shard, kindMeta, termName)); err != nil {
		return 0, 0, nil, err
	}
	cs = new(pb.ConfState)
	if _, err = getProto(g, shardKey(shard, kindMeta, confStateName), cs); err != nil {
		return 0, 0, nil, err
	}
	return index, term, cs, nil
}
