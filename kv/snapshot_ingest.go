package kv

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A raft snapshot is installed in two steps, so that the costly one runs
// beside the node's log writer rather than inside it:
//
//   - StageSnapshot (as the stream arrives, on the receiving goroutine)
//     reads and verifies the shard snapshot stream and writes the
//     SSTables that replace the shard's replicated state, clear its raft
//     log and set its truncated state to the snapshot's index and term;
//   - IngestSnapshot (in the log writer, between two batches) ingests
//     them: Pebble links the files into the LSM with one manifest edit,
//     atomically and durably, whatever their size.
//
// The tables are two, split around the replica's hard state (kind 'h',
// name "hard"), which they leave alone: one for kinds 'a' to 'f' (the
// replicated kinds before it and the raft log), one from the truncated
// state to kind 'y'. A table whose span holds a key still in a memtable
// must go through L0 (a flushable ingest, flushed and compacted later);
// the hard state is the one key of a replica that has just joined that
// is certain to be there, so split around it the tables of such a
// replica usually go straight to the lowest level they fit, and the
// node spends nothing on compacting them. The hard state itself is
// written by the writer's next batch: a crash between the two leaves an
// older hard state, which InitialState raises to the installed snapshot's
// commit and term.

// stagedTables returns the files StageSnapshot writes for path.
func stagedTables(path string) [2]string { return [2]string{path, path + ".2"} }

// RemoveStagedSnapshot removes the files StageSnapshot wrote (or began)
// for path, ignoring those that do not exist.
func RemoveStagedSnapshot(fs vfs.FS, path string) {
	for _, p := range stagedTables(path) {
		_ = fs.Remove(p)
	}
}

// snapTable is one SSTable being written by StageSnapshot.
type snapTable struct {
	w      *sstable.Writer
	closed bool
}

func (s *RaftStorage) createTable(path string) (*snapTable, error) {
	f, err := s.e.cfg.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("kv: stage snapshot: %w", err)
	}
	return &snapTable{w: sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{
		TableFormat: s.e.db.TableFormat(),
	})}, nil
}

// close finishes the table (syncing its file); abort discards it.
func (t *snapTable) close() error {
	t.closed = true
	if err := t.w.Close(); err != nil {
		return fmt.Errorf("kv: stage snapshot: %w", err)
	}
	return nil
}

func (t *snapTable) abort() {
	if !t.closed {
		t.closed = true
		_ = t.w.Close()
	}
}

// StageSnapshot reads the shard snapshot stream from data (the format of
// ShardSnapshot.WriteTo), verifies it — checksum, key kinds and order,
// and its applied index, term and ConfState equal to meta's, meta's
// index not 0, else an error wrapping ErrBadSnapshot — and writes, on the
// engine's file system, the tables IngestSnapshot installs: path and a
// second file beside it. Nothing of the engine changes. After an error
// remove what was written with RemoveStagedSnapshot.
func (s *RaftStorage) StageSnapshot(path string, meta *pb.SnapshotMetadata, data io.Reader) error {
	if meta.GetIndex() == 0 {
		return fmt.Errorf("%w: raft snapshot metadata has index 0", ErrBadSnapshot)
	}
	files := stagedTables(path)
	low, err := s.createTable(files[0])
	if err != nil {
		return err
	}
	defer low.abort()
	high, err := s.createTable(files[1])
	if err != nil {
		return err
	}
	defer high.abort()
	// Range deletions, sorted and disjoint in each table. Keys written by
	// a table share its ingestion sequence number, which its own range
	// deletions do not cover.
	for _, kind := range []byte{kindMeta, kindCheckpoint, kindData, kindRaftEntry, kindFeed} {
		lo, hi := kindRange(s.shard, kind)
		if err := low.w.DeleteRange(lo, hi); err != nil {
			return fmt.Errorf("kv: stage snapshot: %w", err)
		}
	}
	lo, hi := kindRange(s.shard, kindSystem)
	if err := high.w.DeleteRange(lo, hi); err != nil {
		return fmt.Errorf("kv: stage snapshot: %w", err)
	}
	if err := high.w.Set(shardKey(s.shard, kindRaftState, truncName), encodeTrunc(meta.GetIndex(), meta.GetTerm())); err != nil {
		return fmt.Errorf("kv: stage snapshot: %w", err)
	}
	var prev []byte
	var applied, term, cs []byte
	err = readShardSnapshot(data, s.shard, func(key, val []byte) error {
		if prev != nil && bytes.Compare(key, prev) <= 0 {
			return fmt.Errorf("%w: key %q out of order", ErrBadSnapshot, key)
		}
		prev = key
		kind := key[prefixLen-1]
		if kind == kindMeta {
			switch string(key[prefixLen:]) {
			case string(appliedName):
				applied = val
			case string(termName):
				term = val
			case string(confStateName):
				cs = val
			}
		}
		t := low
		if kind > kindRaftState {
			t = high
		}
		if err := t.w.Set(key, val); err != nil {
			return fmt.Errorf("kv: stage snapshot: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := checkSnapshotMeta(meta, applied, term, cs); err != nil {
		return err
	}
	if err := low.close(); err != nil {
		return err
	}
	return high.close()
}

// checkSnapshotMeta checks that a snapshot stream's applied index, term
// and ConfState (kind 'a' values; nil when absent) are meta's Index, Term
// and ConfState (compared as raftpb.ConfState.Equivalent does).
func checkSnapshotMeta(meta *pb.SnapshotMetadata, applied, term, cs []byte) error {
	if len(applied) != 8 || beUint64(applied) != meta.GetIndex() {
		return fmt.Errorf("%w: snapshot applied index %x, metadata index %d", ErrBadSnapshot, applied, meta.GetIndex())
	}
	if len(term) != 8 || beUint64(term) != meta.GetTerm() {
		return fmt.Errorf("%w: snapshot applied term %x, metadata term %d", ErrBadSnapshot, term, meta.GetTerm())
	}
	gotCS := new(pb.ConfState)
	if cs != nil {
		if err := proto.Unmarshal(cs, gotCS); err != nil {
			return fmt.Errorf("%w: snapshot confstate: %v", ErrBadSnapshot, err)
		}
	}
	wantCS := meta.GetConfState()
	if wantCS == nil {
		wantCS = new(pb.ConfState)
	}
	if err := gotCS.Equivalent(wantCS); err != nil {
		return fmt.Errorf("%w: snapshot confstate differs from metadata: %v", ErrBadSnapshot, err)
	}
	return nil
}

// IngestStats tells where an ingested snapshot went in the LSM.
type IngestStats struct {
	// Bytes is the size of the ingested tables.
	Bytes uint64
	// L0Bytes is about how many of them went into L0, to be compacted
	// further down later (a table overlapping a memtable goes there).
	L0Bytes uint64
	// MemtableOverlap counts the tables that overlapped a memtable: they
	// are flushed with it before reads reach them in the LSM.
	MemtableOverlap int
}

// IngestSnapshot installs the tables StageSnapshot wrote at path for
// meta: s's replicated state becomes the snapshot's, its log is empty and
// truncated = (meta.Index, meta.Term), atomically and durably. The hard
// state is left alone (set it in a batch after). Writes to s still in an
// uncommitted RaftBatch would be ordered after the install: commit them
// first. Pebble takes the files (they are gone once this returns nil;
// after an error remove them with RemoveStagedSnapshot). It fails with
// ErrStaleRaftStorage if s's shard was dropped since s was opened.
func (s *RaftStorage) IngestSnapshot(path string, meta *pb.SnapshotMetadata) (IngestStats, error) {
	s.e.dropMu.RLock()
	defer s.e.dropMu.RUnlock()
	if err := s.checkFresh(); err != nil {
		return IngestStats{}, fmt.Errorf("kv: ingest snapshot: %w", err)
	}
	files := stagedTables(path)
	st, err := s.e.db.IngestWithStats(context.Background(), files[:])
	if err != nil {
		return IngestStats{}, fmt.Errorf("kv: ingest snapshot: shard %d: %w", s.shard, err)
	}
	index, term := meta.GetIndex(), meta.GetTerm()
	s.mu.Lock()
	s.truncIndex, s.truncTerm, s.last, s.lastTerm = index, term, index, term
	clear(s.cache)
	s.cache, s.cacheFrom, s.cacheSize = s.cache[:0], 0, 0
	s.mu.Unlock()
	return IngestStats{Bytes: st.Bytes, L0Bytes: st.ApproxIngestedIntoL0Bytes, MemtableOverlap: st.MemtableOverlappingFiles}, nil
}
