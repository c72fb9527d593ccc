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
//     reads and verifies the shard snapshot stream and writes one SSTable
//     that replaces the shard's replicated state, clears its raft log and
//     sets its truncated state to the snapshot's index and term;
//   - IngestSnapshot (in the log writer, between two batches) ingests that
//     table: Pebble links the file into the LSM with one manifest edit,
//     atomically and durably, whatever its size. Overlapping memtables are
//     queued for flushing, not waited for, while few are queued.
//
// The hard state stays out of the table (the writer sets it in its next
// batch): a crash between the two leaves an older hard state, which
// InitialState raises to the installed snapshot's commit and term.

// StageSnapshot reads the shard snapshot stream from data (the format of
// ShardSnapshot.WriteTo), verifies it — checksum, key kinds and order,
// and its applied index, term and ConfState equal to meta's, meta's
// index not 0, else an error wrapping ErrBadSnapshot — and writes to path,
// on the engine's file system, the table IngestSnapshot installs. Nothing
// of the engine changes. On an error the file may remain; the caller
// removes it.
func (s *RaftStorage) StageSnapshot(path string, meta *pb.SnapshotMetadata, data io.Reader) error {
	if meta.GetIndex() == 0 {
		return fmt.Errorf("%w: raft snapshot metadata has index 0", ErrBadSnapshot)
	}
	fs := s.e.cfg.FS
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("kv: stage snapshot: %w", err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{
		TableFormat: s.e.db.TableFormat(),
	})
	closed := false
	defer func() {
		if !closed {
			_ = w.Close()
		}
	}()
	// Range deletions first, sorted and disjoint: the replicated kinds
	// and the raft log. Keys written by this table share its ingestion
	// sequence number, which its own range deletions do not cover.
	for _, kind := range []byte{kindMeta, kindCheckpoint, kindData, kindRaftEntry, kindFeed, kindSystem} {
		lo, hi := kindRange(s.shard, kind)
		if err := w.DeleteRange(lo, hi); err != nil {
			return fmt.Errorf("kv: stage snapshot: %w", err)
		}
	}
	truncKey := shardKey(s.shard, kindRaftState, truncName)
	truncDone := false
	var prev []byte
	var applied, term, cs []byte
	err = readShardSnapshot(data, s.shard, func(key, val []byte) error {
		if prev != nil && bytes.Compare(key, prev) <= 0 {
			return fmt.Errorf("%w: key %q out of order", ErrBadSnapshot, key)
		}
		prev = key
		if !truncDone && bytes.Compare(key, truncKey) > 0 {
			truncDone = true
			if err := w.Set(truncKey, encodeTrunc(meta.GetIndex(), meta.GetTerm())); err != nil {
				return fmt.Errorf("kv: stage snapshot: %w", err)
			}
		}
		if key[prefixLen-1] == kindMeta {
			switch string(key[prefixLen:]) {
			case string(appliedName):
				applied = val
			case string(termName):
				term = val
			case string(confStateName):
				cs = val
			}
		}
		if err := w.Set(key, val); err != nil {
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
	if !truncDone {
		if err := w.Set(truncKey, encodeTrunc(meta.GetIndex(), meta.GetTerm())); err != nil {
			return fmt.Errorf("kv: stage snapshot: %w", err)
		}
	}
	closed = true
	if err := w.Close(); err != nil { // syncs and closes f
		return fmt.Errorf("kv: stage snapshot: %w", err)
	}
	return nil
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

// IngestSnapshot installs the table StageSnapshot wrote at path for meta:
// s's replicated state becomes the snapshot's, its log is empty and
// truncated = (meta.Index, meta.Term), atomically and durably. The hard
// state is left alone (set it in a batch after). Writes to s still in an
// uncommitted RaftBatch would be ordered after the install: commit them
// first. Pebble takes the file at path (it is gone once this returns nil;
// after an error the caller removes it). It fails with
// ErrStaleRaftStorage if s's shard was dropped since s was opened.
func (s *RaftStorage) IngestSnapshot(path string, meta *pb.SnapshotMetadata) error {
	s.e.dropMu.RLock()
	defer s.e.dropMu.RUnlock()
	if err := s.checkFresh(); err != nil {
		return fmt.Errorf("kv: ingest snapshot: %w", err)
	}
	if err := s.e.db.Ingest(context.Background(), []string{path}); err != nil {
		return fmt.Errorf("kv: ingest snapshot: shard %d: %w", s.shard, err)
	}
	index, term := meta.GetIndex(), meta.GetTerm()
	s.mu.Lock()
	s.truncIndex, s.truncTerm, s.last, s.lastTerm = index, term, index, term
	clear(s.cache)
	s.cache, s.cacheFrom, s.cacheSize = s.cache[:0], 0, 0
	s.mu.Unlock()
	return nil
}
