package kv

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// SnapshotStore is a raft.SnapshotStore on a vfs.FS: each snapshot is a
// directory holding meta.json and state.bin, written under a ".tmp" name,
// synced, then renamed into place. The newest Retain snapshots are kept.
type SnapshotStore struct {
	fs     vfs.FS
	dir    string
	retain int
	mu     sync.Mutex // serialises reaping

	idMu   sync.Mutex
	lastMS int64 // millisecond part of the last id Create issued
}

var _ raft.SnapshotStore = (*SnapshotStore)(nil)

// ErrSnapshotNotFound is returned by Open for an unknown id.
var ErrSnapshotNotFound = errors.New("kv: snapshot not found")

type snapMeta struct {
	raft.SnapshotMeta
	CRC uint32
}

// NewSnapshotStore opens (creating) dir on fs; retain <= 0 means 2.
func NewSnapshotStore(fs vfs.FS, dir string, retain int) (*SnapshotStore, error) {
	if retain <= 0 {
		retain = 2
	}
	if err := mkdirAllSynced(fs, dir); err != nil {
		return nil, fmt.Errorf("kv: snapshot dir: %w", err)
	}
	s := &SnapshotStore{fs: fs, dir: dir, retain: retain}
	// Remove leftovers of snapshots that never completed.
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("kv: snapshot dir: %w", err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			_ = fs.RemoveAll(fs.PathJoin(dir, n))
		}
	}
	return s, nil
}

// Create starts a new snapshot.
func (s *SnapshotStore) Create(version raft.SnapshotVersion, index, term uint64,
	configuration raft.Configuration, configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	// The millisecond part is made unique within the store, so that two
	// snapshots of one index and term never share a directory.
	s.idMu.Lock()
	ms := max(time.Now().UnixMilli(), s.lastMS+1)
	s.lastMS = ms
	s.idMu.Unlock()
	id := fmt.Sprintf("%020d-%020d-%d", term, index, ms)
	tmp := s.fs.PathJoin(s.dir, id+".tmp")
	if err := s.fs.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("kv: create snapshot: %w", err)
	}
	f, err := s.fs.Create(s.fs.PathJoin(tmp, "state.bin"), vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("kv: create snapshot: %w", err)
	}
	return &snapSink{
		s: s, id: id, tmp: tmp, f: f, h: crc32.New(castagnoli),
		meta: snapMeta{SnapshotMeta: raft.SnapshotMeta{
			Version: version, ID: id, Index: index, Term: term,
			Configuration: configuration, ConfigurationIndex: configurationIndex,
		}},
	}, nil
}

// List returns completed snapshots, newest first.
func (s *SnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	metas, err := s.list()
	if err != nil {
		return nil, err
	}
	out := make([]*raft.SnapshotMeta, 0, len(metas))
	for _, m := range metas {
		mm := m.SnapshotMeta
		out = append(out, &mm)
		if len(out) == s.retain {
			break
		}
	}
	return out, nil
}

func (s *SnapshotStore) list() ([]*snapMeta, error) {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return nil, fmt.Errorf("kv: list snapshots: %w", err)
	}
	var metas []*snapMeta
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			continue
		}
		m, err := s.readMeta(n)
		if err != nil || m.ID != n {
			continue // not a complete snapshot (or not where Open and reap look)
		}
		metas = append(metas, m)
	}
	sort.Slice(metas, func(i, j int) bool {
		a, b := metas[i], metas[j]
		if a.Term != b.Term {
			return a.Term > b.Term
		}
		if a.Index != b.Index {
			return a.Index > b.Index
		}
		return a.ID > b.ID
	})
	return metas, nil
}

func (s *SnapshotStore) readMeta(id string) (*snapMeta, error) {
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, id, "meta.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var m snapMeta
	if err := json.NewDecoder(f).Decode(&m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Open returns a snapshot's metadata and contents; reading to EOF verifies
// the checksum.
func (s *SnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	// An id names one entry of s.dir: "", "." and ".." would resolve to the
	// store directory or its parent.
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\\") || strings.HasSuffix(id, ".tmp") {
		return nil, nil, fmt.Errorf("%w: %q", ErrSnapshotNotFound, id)
	}
	m, err := s.readMeta(id)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %q: %v", ErrSnapshotNotFound, id, err)
	}
	if m.ID != id {
		return nil, nil, fmt.Errorf("%w: %q holds snapshot %q", ErrSnapshotNotFound, id, m.ID)
	}
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, id, "state.bin"))
	if err != nil {
		return nil, nil, fmt.Errorf("kv: open snapshot: %w", err)
	}
	mm := m.SnapshotMeta
	return &mm, &verifyingReader{f: f, h: crc32.New(castagnoli), want: m.CRC, size: m.Size}, nil
}

func (s *SnapshotStore) reap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	metas, err := s.list()
	if err != nil {
		return
	}
	for i := s.retain; i < len(metas); i++ {
		_ = s.fs.RemoveAll(s.fs.PathJoin(s.dir, metas[i].ID))
	}
}

type snapSink struct {
	s      *SnapshotStore
	id     string
	tmp    string
	f      vfs.File
	h      hash.Hash32
	meta   snapMeta
	err    error // first write error: the snapshot is incomplete
	closed bool
}

func (k *snapSink) ID() string { return k.id }

func (k *snapSink) Write(p []byte) (int, error) {
	if k.closed {
		return 0, errors.New("kv: write to a closed snapshot sink")
	}
	if k.err != nil {
		return 0, k.err
	}
	// Hash before writing: a writer may scribble on p once it has the data
	// (Pebble's MemFS does, in race and invariants builds, to catch callers
	// that reuse it).
	k.h.Write(p)
	n, err := k.f.Write(p)
	k.meta.Size += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		k.err = fmt.Errorf("kv: snapshot write: %w", err)
		return n, k.err
	}
	return n, nil
}

func (k *snapSink) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	if err := k.finish(); err != nil {
		_ = k.s.fs.RemoveAll(k.tmp)
		return err
	}
	k.s.reap()
	return nil
}

func (k *snapSink) finish() error {
	if k.err != nil {
		// Never publish a snapshot missing data a Write failed to store.
		k.f.Close()
		return k.err
	}
	if err := k.f.Sync(); err != nil {
		k.f.Close()
		return fmt.Errorf("kv: snapshot sync: %w", err)
	}
	if err := k.f.Close(); err != nil {
		return fmt.Errorf("kv: snapshot close: %w", err)
	}
	k.meta.CRC = k.h.Sum32()
	mf, err := k.s.fs.Create(k.s.fs.PathJoin(k.tmp, "meta.json"), vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("kv: snapshot meta: %w", err)
	}
	if err := json.NewEncoder(mf).Encode(&k.meta); err != nil {
		mf.Close()
		return fmt.Errorf("kv: snapshot meta: %w", err)
	}
	if err := mf.Sync(); err != nil {
		mf.Close()
		return fmt.Errorf("kv: snapshot meta: %w", err)
	}
	if err := mf.Close(); err != nil {
		return fmt.Errorf("kv: snapshot meta: %w", err)
	}
	if err := syncDir(k.s.fs, k.tmp); err != nil {
		return fmt.Errorf("kv: snapshot: %w", err)
	}
	final := k.s.fs.PathJoin(k.s.dir, k.id)
	if err := k.s.fs.Rename(k.tmp, final); err != nil {
		return fmt.Errorf("kv: snapshot rename: %w", err)
	}
	if err := syncDir(k.s.fs, k.s.dir); err != nil {
		return fmt.Errorf("kv: snapshot: %w", err)
	}
	return nil
}

func (k *snapSink) Cancel() error {
	if k.closed {
		return nil
	}
	k.closed = true
	k.f.Close()
	return k.s.fs.RemoveAll(k.tmp)
}

type verifyingReader struct {
	f      vfs.File
	closed bool
	h      hash.Hash32
	want   uint32
	size   int64
	read   int64
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.f.Read(p)
	v.h.Write(p[:n])
	v.read += int64(n)
	if errors.Is(err, io.EOF) && (v.read != v.size || v.h.Sum32() != v.want) {
		return n, fmt.Errorf("%w: snapshot file checksum mismatch", ErrBadSnapshot)
	}
	return n, err
}

// Close closes the file; closing twice is a no-op (Raft and the FSM may both
// close a snapshot being restored).
func (v *verifyingReader) Close() error {
	if v.closed {
		return nil
	}
	v.closed = true
	return v.f.Close()
}
