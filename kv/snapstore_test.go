package kv

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

func newSnapStore(t testing.TB, fs vfs.FS, dir string, retain int) *SnapshotStore {
	t.Helper()
	s, err := NewSnapshotStore(fs, dir, retain)
	if err != nil {
		t.Fatalf("NewSnapshotStore: %v", err)
	}
	return s
}

var testConfig = raft.Configuration{Servers: []raft.Server{
	{Suffrage: raft.Voter, ID: "n1", Address: "10.0.0.1:7000"},
	{Suffrage: raft.Nonvoter, ID: "n2", Address: "10.0.0.2:7000"},
	{Suffrage: raft.Staging, ID: "n3", Address: "[::1]:7000"},
}}

// snapPayload returns deterministic pseudo-random bytes.
func snapPayload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// createSnap writes data as a complete snapshot and returns its id.
func createSnap(t testing.TB, s *SnapshotStore, index, term uint64, data []byte) string {
	t.Helper()
	sink, err := s.Create(raft.SnapshotVersionMax, index, term, testConfig, index-1, nil)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// Write in uneven chunks, each a copy: in race builds Pebble's MemFS
	// scribbles on the buffers it is given.
	for len(data) > 0 {
		n := min(len(data), 1+len(data)/3)
		if w, err := sink.Write(bytes.Clone(data[:n])); err != nil || w != n {
			t.Fatalf("Write = %d, %v", w, err)
		}
		data = data[n:]
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("sink Close: %v", err)
	}
	return sink.ID()
}

func readSnap(t testing.TB, s *SnapshotStore, id string) (*raft.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := s.Open(id)
	if err != nil {
		t.Fatalf("Open(%q): %v", id, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading snapshot %q: %v", id, err)
	}
	return meta, data
}

func listIDs(t testing.TB, s *SnapshotStore) []string {
	t.Helper()
	metas, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range metas {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestSnapshotStoreCreateListOpen(t *testing.T) {
	fs := vfs.NewMem()
	s := newSnapStore(t, fs, "snaps", 5)
	if ids := listIDs(t, s); len(ids) != 0 {
		t.Fatalf("new store lists %q", ids)
	}

	data := snapPayload(1, 1<<20+17)
	id := createSnap(t, s, 100, 3, data)

	metas, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(metas) != 1 {
		t.Fatalf("List = %d snapshots; want 1", len(metas))
	}
	want := raft.SnapshotMeta{
		Version: raft.SnapshotVersionMax, ID: id, Index: 100, Term: 3,
		Configuration: testConfig, ConfigurationIndex: 99, Size: int64(len(data)),
	}
	if !reflect.DeepEqual(*metas[0], want) {
		t.Fatalf("List meta =\n %+v\nwant\n %+v", *metas[0], want)
	}
	meta, got := readSnap(t, s, id)
	if !reflect.DeepEqual(*meta, want) {
		t.Fatalf("Open meta =\n %+v\nwant\n %+v", *meta, want)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("Open read %d bytes, differing from the %d written", len(got), len(data))
	}

	t.Run("empty snapshot", func(t *testing.T) {
		id := createSnap(t, s, 101, 3, nil)
		meta, got := readSnap(t, s, id)
		if meta.Size != 0 || len(got) != 0 {
			t.Fatalf("empty snapshot: size %d, read %d bytes", meta.Size, len(got))
		}
	})

	t.Run("newest first", func(t *testing.T) {
		s := newSnapStore(t, vfs.NewMem(), "snaps", 10)
		// Creation order differs from (term, index) order.
		idA := createSnap(t, s, 50, 2, []byte("a"))
		idB := createSnap(t, s, 10, 3, []byte("b")) // higher term wins over higher index
		idC := createSnap(t, s, 60, 2, []byte("c"))
		idD := createSnap(t, s, 5, 1, []byte("d"))
		if got, want := listIDs(t, s), []string{idB, idC, idA, idD}; !slices.Equal(got, want) {
			t.Fatalf("List = %q; want %q", got, want)
		}
	})

	t.Run("survives reopen", func(t *testing.T) {
		s2 := newSnapStore(t, fs, "snaps", 5)
		if got := listIDs(t, s2); len(got) != 2 {
			t.Fatalf("reopened store lists %q", got)
		}
		if _, got := readSnap(t, s2, id); !bytes.Equal(got, data) {
			t.Fatal("reopened store returns different bytes")
		}
	})
}

func TestSnapshotStoreCancel(t *testing.T) {
	fs := vfs.NewMem()
	s := newSnapStore(t, fs, "snaps", 2)
	sink, err := s.Create(raft.SnapshotVersionMax, 10, 1, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	// Not listed while in progress.
	if ids := listIDs(t, s); len(ids) != 0 {
		t.Fatalf("in-progress snapshot listed: %q", ids)
	}
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	if ids := listIDs(t, s); len(ids) != 0 {
		t.Fatalf("cancelled snapshot listed: %q", ids)
	}
	if names, _ := fs.List("snaps"); len(names) != 0 {
		t.Fatalf("cancelled snapshot left %q on disk", names)
	}
	if _, _, err := s.Open(sink.ID()); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("Open of cancelled snapshot = %v; want ErrSnapshotNotFound", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("Close after Cancel: %v", err)
	}
	if ids := listIDs(t, s); len(ids) != 0 {
		t.Fatalf("Close after Cancel published the snapshot: %q", ids)
	}

	t.Run("Cancel after Close keeps the snapshot", func(t *testing.T) {
		sink, err := s.Create(raft.SnapshotVersionMax, 11, 1, testConfig, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = sink.Write([]byte("done"))
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sink.Cancel(); err != nil {
			t.Fatal(err)
		}
		if _, got := readSnap(t, s, sink.ID()); string(got) != "done" {
			t.Fatalf("read %q", got)
		}
	})
}

func TestSnapshotStoreRetain(t *testing.T) {
	for _, tc := range []struct{ retain, want int }{{2, 2}, {0, 2}, {-1, 2}, {1, 1}, {3, 3}} {
		fs := vfs.NewMem()
		s := newSnapStore(t, fs, "snaps", tc.retain)
		var ids []string
		for i := uint64(1); i <= 5; i++ {
			ids = append(ids, createSnap(t, s, i*10, 1, snapPayload(i, 100)))
		}
		slices.Reverse(ids)
		if got := listIDs(t, s); !slices.Equal(got, ids[:tc.want]) {
			t.Fatalf("retain %d: List = %q; want %q", tc.retain, got, ids[:tc.want])
		}
		// Older snapshots are gone from disk, not just from List.
		names, _ := fs.List("snaps")
		slices.Sort(names)
		wantNames := slices.Clone(ids[:tc.want])
		slices.Sort(wantNames)
		if !slices.Equal(names, wantNames) {
			t.Fatalf("retain %d: directory holds %q; want %q", tc.retain, names, wantNames)
		}
		for _, id := range ids[tc.want:] {
			if _, _, err := s.Open(id); !errors.Is(err, ErrSnapshotNotFound) {
				t.Fatalf("retain %d: Open(reaped %q) = %v; want ErrSnapshotNotFound", tc.retain, id, err)
			}
		}
		for i, id := range ids[:tc.want] {
			if _, got := readSnap(t, s, id); !bytes.Equal(got, snapPayload(uint64(5-i), 100)) {
				t.Fatalf("retain %d: snapshot %q has wrong contents", tc.retain, id)
			}
		}
	}
}

func TestSnapshotStoreRemovesTmp(t *testing.T) {
	fs := vfs.NewMem()
	s := newSnapStore(t, fs, "snaps", 2)
	keep := createSnap(t, s, 10, 1, []byte("keep"))
	// An abandoned snapshot, as a crash mid-write leaves it.
	sink, err := s.Create(raft.SnapshotVersionMax, 20, 1, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = sink.Write([]byte("half"))
	// And a hand-made leftover.
	if err := fs.MkdirAll("snaps/00000000000000000001-00000000000000000030-1.tmp", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create("snaps/00000000000000000001-00000000000000000030-1.tmp/state.bin", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()

	s2 := newSnapStore(t, fs, "snaps", 2)
	names, _ := fs.List("snaps")
	if !slices.Equal(names, []string{keep}) {
		t.Fatalf("after reopen the directory holds %q; want only %q", names, keep)
	}
	if got := listIDs(t, s2); !slices.Equal(got, []string{keep}) {
		t.Fatalf("List = %q", got)
	}
}

// rewriteFile replaces the contents of name.
func rewriteFile(t *testing.T, fs vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSnapshotStoreCorruptState(t *testing.T) {
	data := snapPayload(7, 10000)
	tests := map[string]func([]byte) []byte{
		"flipped first byte": func(b []byte) []byte { b[0] ^= 1; return b },
		"flipped middle":     func(b []byte) []byte { b[len(b)/2] ^= 0x80; return b },
		"flipped last byte":  func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b },
		"truncated":          func(b []byte) []byte { return b[:len(b)-1] },
		"empty":              func(b []byte) []byte { return nil },
		"extended":           func(b []byte) []byte { return append(b, 0) },
	}
	for name, corrupt := range tests {
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewMem()
			s := newSnapStore(t, fs, "snaps", 2)
			id := createSnap(t, s, 10, 1, data)
			path := fs.PathJoin("snaps", id, "state.bin")
			rewriteFile(t, fs, path, corrupt(readFile(t, fs, path)))

			_, rc, err := s.Open(id)
			if err != nil {
				t.Fatalf("Open: %v", err) // detection happens at EOF
			}
			defer rc.Close()
			if _, err := io.ReadAll(rc); !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("reading a corrupt snapshot to EOF = %v; want ErrBadSnapshot", err)
			}
		})
	}

	t.Run("corrupt meta is not listed", func(t *testing.T) {
		fs := vfs.NewMem()
		s := newSnapStore(t, fs, "snaps", 2)
		id := createSnap(t, s, 10, 1, data)
		rewriteFile(t, fs, fs.PathJoin("snaps", id, "meta.json"), []byte("{not json"))
		if ids := listIDs(t, s); len(ids) != 0 {
			t.Fatalf("List = %q", ids)
		}
		if _, _, err := s.Open(id); !errors.Is(err, ErrSnapshotNotFound) {
			t.Fatalf("Open = %v; want ErrSnapshotNotFound", err)
		}
	})
}

func TestSnapshotStoreOpenInvalidID(t *testing.T) {
	fs := vfs.NewMem()
	s := newSnapStore(t, fs, "root/snaps", 2)
	id := createSnap(t, s, 10, 1, []byte("real"))
	inProgress, err := s.Create(raft.SnapshotVersionMax, 20, 1, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inProgress.Cancel()

	// Plant complete-looking snapshots where a path-traversal id would find
	// them: in the store directory itself, its parent and a sibling.
	meta := readFile(t, fs, fs.PathJoin("root/snaps", id, "meta.json"))
	state := readFile(t, fs, fs.PathJoin("root/snaps", id, "state.bin"))
	for _, dir := range []string{"root/snaps", "root", "root/other"} {
		if err := fs.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		rewriteFile(t, fs, fs.PathJoin(dir, "meta.json"), meta)
		rewriteFile(t, fs, fs.PathJoin(dir, "state.bin"), state)
	}

	for _, bad := range []string{
		"", ".", "..", "nope", "../other", "../snaps/" + id, id + "/", "./" + id, "a/b", "a\\b",
		"..\\other", inProgress.ID(), inProgress.ID() + ".tmp", "/root/other",
	} {
		meta, rc, err := s.Open(bad)
		if err == nil {
			rc.Close()
			t.Errorf("Open(%q) succeeded with meta %+v", bad, meta)
			continue
		}
		if !errors.Is(err, ErrSnapshotNotFound) {
			t.Errorf("Open(%q) = %v; want ErrSnapshotNotFound", bad, err)
		}
	}
	if _, got := readSnap(t, s, id); string(got) != "real" {
		t.Fatalf("valid id reads %q", got)
	}
	// The planted meta.json files are not snapshots either.
	if got := listIDs(t, s); !slices.Equal(got, []string{id}) {
		t.Fatalf("List = %q", got)
	}
}

func TestSnapshotStoreCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	const dir = "node1/raft/snaps" // nested, not yet existing directories
	s := newSnapStore(t, fs, dir, 2)
	data := snapPayload(3, 50000)
	id := createSnap(t, s, 10, 1, data)
	// An unfinished snapshot at the time of the crash.
	sink, err := s.Create(raft.SnapshotVersionMax, 20, 1, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = sink.Write(snapPayload(4, 10000))

	clone := fs.CrashClone(vfs.CrashCloneCfg{})
	s2 := newSnapStore(t, clone, dir, 2)
	if got := listIDs(t, s2); !slices.Equal(got, []string{id}) {
		t.Fatalf("after crash List = %q; want [%s]", got, id)
	}
	meta, got := readSnap(t, s2, id)
	if !bytes.Equal(got, data) || meta.Size != int64(len(data)) || meta.Index != 10 {
		t.Fatalf("after crash snapshot differs: size %d, read %d bytes", meta.Size, len(got))
	}
	names, _ := clone.List(dir)
	if !slices.Equal(names, []string{id}) {
		t.Fatalf("after crash the directory holds %q", names)
	}
}

// TestSnapshotStoreWithShardSnapshot is the path Raft takes: an FSM snapshot
// persisted to the store, then restored from it on another node.
func TestSnapshotStoreWithShardSnapshot(t *testing.T) {
	src := newEngine(t)
	pairs := populateSource(t, src, 1)
	s := newSnapStore(t, vfs.NewMem(), "snaps", 2)

	snap, err := src.SnapshotShard(1)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := s.Create(raft.SnapshotVersionMax, 42, 7, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := snap.WriteTo(sink)
	if err != nil {
		t.Fatal(err)
	}
	snap.Close()
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}

	meta, rc, err := s.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if meta.Size != n {
		t.Fatalf("meta.Size = %d; WriteTo wrote %d", meta.Size, n)
	}
	dst := newEngine(t)
	if err := dst.RestoreShard(4, rc); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, dst, 4, nil, nil); !slices.Equal(got, pairs) {
		t.Fatal("restored records differ")
	}
	wantApplied(t, dst, 4, 42)
}

func TestSnapshotStoreSinkAfterClose(t *testing.T) {
	s := newSnapStore(t, vfs.NewMem(), "snaps", 2)
	for _, end := range []string{"Close", "Cancel"} {
		sink, err := s.Create(raft.SnapshotVersionMax, 10, 1, testConfig, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = sink.Write([]byte("data"))
		if end == "Close" {
			err = sink.Close()
		} else {
			err = sink.Cancel()
		}
		if err != nil {
			t.Fatal(err)
		}
		if n, err := sink.Write([]byte("late")); err == nil {
			t.Errorf("Write after %s = %d, nil; want an error", end, n)
		}
	}
	ids := listIDs(t, s)
	if len(ids) != 1 {
		t.Fatalf("List = %q", ids)
	}
	if _, got := readSnap(t, s, ids[0]); string(got) != "data" {
		t.Fatalf("snapshot holds %q; want data", got)
	}
}

// TestSnapshotStoreSameIndexTwice: Raft may take a snapshot and install a
// leader's at the same index and term; the two must not share files.
func TestSnapshotStoreSameIndexTwice(t *testing.T) {
	s := newSnapStore(t, vfs.NewMem(), "snaps", 5)
	a, err := s.Create(raft.SnapshotVersionMax, 10, 1, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(raft.SnapshotVersionMax, 10, 1, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() == b.ID() {
		t.Fatalf("two sinks share id %q", a.ID())
	}
	dataA, dataB := snapPayload(1, 3000), snapPayload(2, 2000)
	_, _ = a.Write(bytes.Clone(dataA))
	_, _ = b.Write(bytes.Clone(dataB))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, got := readSnap(t, s, a.ID()); !bytes.Equal(got, dataA) {
		t.Fatal("first snapshot corrupted")
	}
	if _, got := readSnap(t, s, b.ID()); !bytes.Equal(got, dataB) {
		t.Fatal("second snapshot corrupted")
	}
}

// failFS fails every file write once armed.
type failFS struct {
	vfs.FS
	armed bool
}

type failFile struct {
	vfs.File
	fs *failFS
}

func (f *failFile) Write(p []byte) (int, error) {
	if f.fs.armed {
		return 0, errors.New("disk full")
	}
	return f.File.Write(p)
}

func (fs *failFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return &failFile{File: f, fs: fs}, nil
}

func TestSnapshotStoreWriteError(t *testing.T) {
	fs := &failFS{FS: vfs.NewMem()}
	s := newSnapStore(t, fs, "snaps", 2)
	sink, err := s.Create(raft.SnapshotVersionMax, 10, 1, testConfig, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("first part")); err != nil {
		t.Fatal(err)
	}
	fs.armed = true
	if _, err := sink.Write([]byte("lost part")); err == nil {
		t.Fatal("Write on a failing disk succeeded")
	}
	fs.armed = false
	if _, err := sink.Write([]byte("third part")); err == nil {
		t.Fatal("Write after a failed Write succeeded")
	}
	// A caller that ignores the error and closes must not publish a
	// snapshot missing the lost part.
	if err := sink.Close(); err == nil {
		t.Fatal("Close after a failed Write succeeded")
	}
	if ids := listIDs(t, s); len(ids) != 0 {
		t.Fatalf("incomplete snapshot listed: %q", ids)
	}
	if names, _ := fs.List("snaps"); len(names) != 0 {
		t.Fatalf("incomplete snapshot left %q on disk", names)
	}
}

func TestSnapshotStoreReaderCloseTwice(t *testing.T) {
	s := newSnapStore(t, vfs.NewMem(), "snaps", 2)
	id := createSnap(t, s, 10, 1, []byte("data"))
	_, rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
