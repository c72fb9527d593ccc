package kv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// snapshotBytes snapshots shard of e and returns the stream.
func snapshotBytes(t testing.TB, e *Engine, shard int) []byte {
	t.Helper()
	s, err := e.SnapshotShard(shard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var buf bytes.Buffer
	n, err := s.WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d; wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

// sourceSystem are the System records populateSource writes, in key order.
var sourceSystem = []kvPair{
	{"d", "shadows no user key", 1},
	{"fn/echo", string(bytes.Repeat([]byte("wasm"), 100000)), 40}, // larger than the buffers
	{"shared", "system", 41},
}

// populateSource fills shard of e with every replicated kind, plus a Raft
// log and hard state that a snapshot must not carry.
func populateSource(t testing.TB, e *Engine, shard int) []kvPair {
	t.Helper()
	rs := raftStorage(t, e, shard) // before the shard has an applied index
	// Checkpoint and feed kinds can only be written through a restore today.
	if err := e.RestoreShard(shard, bytesReader(buildSnapshot(
		snapEntry{kindCheckpoint, "trigger-1", "cp"},
		snapEntry{kindFeed, string(beBytes(7)), "feed-7"},
	))); err != nil {
		t.Fatal(err)
	}
	pairs := []kvPair{
		{"", "empty key", 1},
		{"a", "1", 2},
		{"b", "", 3},
		{"shared", "from source", 4},
		{"\xff\xff", "ff", 5},
		{"big", string(bytes.Repeat([]byte("0123456789"), 50000)), 6}, // larger than the 256 KiB buffer
	}
	put(t, e, shard, 42, pairs...)
	apply(t, e, shard, 42, func(a *Apply) {
		for _, p := range sourceSystem {
			if err := a.PutIn(System, []byte(p.Key), []byte(p.Value), p.Version); err != nil {
				t.Fatal(err)
			}
		}
	})
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, rs, mkEnts(1, 50, 7))
		if err := b.SetHardState(rs, &pb.HardState{Term: new(uint64(7)), Vote: new(uint64(1)), Commit: new(uint64(42))}); err != nil {
			t.Fatal(err)
		}
	})
	slices.SortFunc(pairs, func(a, b kvPair) int { return bytes.Compare([]byte(a.Key), []byte(b.Key)) })
	return pairs
}

// targetHardState is the hard state populateTarget stores.
func targetHardState() *pb.HardState {
	return &pb.HardState{Term: new(uint64(2)), Vote: new(uint64(3)), Commit: new(uint64(5))}
}

// populateTarget fills shard of e with state a restore must replace (data,
// applied, checkpoints, feed) or keep (raft log and hard state), and
// neighbours.
func populateTarget(t testing.TB, e *Engine, shard int) {
	t.Helper()
	// Before the shards have an applied index.
	rs, next := raftStorage(t, e, shard), raftStorage(t, e, shard+1)
	if err := e.RestoreShard(shard, bytesReader(buildSnapshot(
		snapEntry{kindCheckpoint, "old-trigger", "old"},
		snapEntry{kindFeed, string(beBytes(3)), "old-feed"},
	))); err != nil {
		t.Fatal(err)
	}
	put(t, e, shard, 5, kvPair{"shared", "from target", 1}, kvPair{"target-only", "t", 1})
	apply(t, e, shard, 5, func(a *Apply) {
		if err := a.PutIn(System, []byte("target-system"), []byte("old"), 2); err != nil {
			t.Fatal(err)
		}
	})
	apply(t, e, shard+1, 9, func(a *Apply) {
		if err := a.PutIn(System, []byte("shared"), []byte("next"), 1); err != nil {
			t.Fatal(err)
		}
	})
	put(t, e, shard-1, 8, kvPair{"shared", "prev", 1})
	put(t, e, shard+1, 9, kvPair{"shared", "next", 1})
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, rs, mkEnts(1, 5, 2))
		if err := b.SetHardState(rs, targetHardState()); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, b, next, mkEnts(1, 3, 1))
	})
}

// wantTargetRaftState checks that shard holds populateTarget's raft log and
// hard state. It reads them raw, or through rs, a storage opened before any
// restore: a fresh RaftStorage would reset a log that does not hold the
// restored applied index.
func wantTargetRaftState(t testing.TB, e *Engine, shard int, rs *RaftStorage) {
	t.Helper()
	if got := rawEntryIndexes(t, e, shard); !slices.Equal(got, seq(1, 5)) {
		t.Fatalf("stored raft indexes %v; want 1..5", got)
	}
	wantRaftBounds(t, rs, 1, 5)
	wantEntries(t, rs, 1, 6, mkEnts(1, 5, 2))
	hs := new(pb.HardState)
	if found, err := getProto(e.db, shardKey(shard, kindRaftState, hardStateName), hs); err != nil || !found || !proto.Equal(hs, targetHardState()) {
		t.Fatalf("hard state = %v (found %v), %v; want %v", hs, found, err, targetHardState())
	}
}

func TestSnapshotRestoreIntoOtherShard(t *testing.T) {
	src := newEngine(t)
	const srcShard, dstShard = 3, 700
	pairs := populateSource(t, src, srcShard)
	stream := snapshotBytes(t, src, srcShard)

	s, err := src.SnapshotShard(srcShard)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.Applied(); err != nil || a != 42 {
		t.Fatalf("ShardSnapshot.Applied = %d, %v; want 42", a, err)
	}
	s.Close()

	dst := newEngine(t)
	populateTarget(t, dst, dstShard)
	prev, next := dumpShard(t, dst, dstShard-1), dumpShard(t, dst, dstShard+1)
	dstLog := raftStorage(t, dst, dstShard) // opened before the restore

	if err := dst.RestoreShard(dstShard, bytesReader(stream)); err != nil {
		t.Fatalf("RestoreShard: %v", err)
	}

	t.Run("data and applied", func(t *testing.T) {
		if got := scanAll(t, dst, dstShard, nil, nil); !slices.Equal(got, pairs) {
			t.Fatalf("restored records differ:\n got %v\nwant %v", got, pairs)
		}
		wantApplied(t, dst, dstShard, 42)
		wantAbsent(t, dst, dstShard, "target-only")
	})

	t.Run("system records", func(t *testing.T) {
		if got := scanAll(t, spaceScanner{dst, System}, dstShard, nil, nil); !slices.Equal(got, sourceSystem) {
			t.Fatalf("restored system records differ:\n got %v\nwant %v", got, sourceSystem)
		}
		wantAbsent(t, spaceGetter{dst, System}, dstShard, "target-system")
		wantRecord(t, spaceGetter{dst, System}, dstShard+1, "shared", "next", 1)
	})

	t.Run("replicated state identical", func(t *testing.T) {
		// Snapshots are shard-relative: the restored shard snapshots to the
		// same bytes, checkpoints and feed records included.
		if got := snapshotBytes(t, dst, dstShard); !bytes.Equal(got, stream) {
			t.Fatalf("snapshot of restored shard differs from the source snapshot")
		}
		want := []rawEntry{
			{string(kindCheckpoint) + "trigger-1", "cp"},
			{string(kindFeed) + string(beBytes(7)), "feed-7"},
		}
		var got []rawEntry
		for _, e := range dumpShard(t, dst, dstShard) {
			if e.K[0] == kindCheckpoint || e.K[0] == kindFeed {
				got = append(got, e)
			}
		}
		if d := diffEntries(got, want); d != "" {
			t.Fatalf("checkpoint/feed records:%s", d)
		}
	})

	t.Run("raft state of target kept", func(t *testing.T) {
		// No source entry (1..50, term 7) or hard state leaked in.
		wantTargetRaftState(t, dst, dstShard, dstLog)
	})

	t.Run("other shards untouched", func(t *testing.T) {
		if d := diffEntries(dumpShard(t, dst, dstShard-1), prev); d != "" {
			t.Fatalf("previous shard changed:%s", d)
		}
		if d := diffEntries(dumpShard(t, dst, dstShard+1), next); d != "" {
			t.Fatalf("next shard changed:%s", d)
		}
		if got := scanAll(t, dst, srcShard, nil, nil); len(got) != 0 {
			t.Fatalf("restore wrote to the source shard id on the target: %v", got)
		}
	})

	t.Run("source unchanged", func(t *testing.T) {
		if got := scanAll(t, src, srcShard, nil, nil); !slices.Equal(got, pairs) {
			t.Fatal("source records changed")
		}
	})

	t.Run("restore in the same engine", func(t *testing.T) {
		if err := src.RestoreShard(srcShard+1, bytesReader(stream)); err != nil {
			t.Fatal(err)
		}
		if got := scanAll(t, src, srcShard+1, nil, nil); !slices.Equal(got, pairs) {
			t.Fatal("restored records differ")
		}
		wantApplied(t, src, srcShard+1, 42)
	})

	t.Run("empty snapshot wipes the target", func(t *testing.T) {
		empty := snapshotBytes(t, newEngine(t), 1)
		if err := dst.RestoreShard(dstShard, bytesReader(empty)); err != nil {
			t.Fatal(err)
		}
		wantApplied(t, dst, dstShard, 0)
		for _, e := range dumpShard(t, dst, dstShard) {
			if isReplicatedKind(e.K[0]) {
				t.Fatalf("replicated entry %q survived an empty restore", e.K)
			}
		}
		wantTargetRaftState(t, dst, dstShard, dstLog)
		// With the applied index back at 0 the log is consistent: a fresh
		// storage keeps it.
		wantRaftBounds(t, raftStorage(t, dst, dstShard), 1, 5)
		wantTargetRaftState(t, dst, dstShard, dstLog)
	})
}

func TestSnapshotPointInTime(t *testing.T) {
	e := newEngine(t)
	put(t, e, 1, 1, kvPair{"k", "v1", 1}, kvPair{"del", "d", 1})
	s, err := e.SnapshotShard(1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	apply(t, e, 1, 2, func(a *Apply) {
		_ = a.Put([]byte("k"), []byte("v2"), 2)
		_ = a.Put([]byte("new"), []byte("n"), 1)
		_ = a.Delete([]byte("del"))
	})

	var first, second bytes.Buffer
	if _, err := s.WriteTo(&first); err != nil {
		t.Fatal(err)
	}
	put(t, e, 1, 3, kvPair{"later", "l", 1})
	if _, err := s.WriteTo(&second); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Fatal("two WriteTo calls on one snapshot differ")
	}
	if a, _ := s.Applied(); a != 1 {
		t.Fatalf("Applied = %d; want 1", a)
	}

	dst := newEngine(t)
	if err := dst.RestoreShard(1, &first); err != nil {
		t.Fatal(err)
	}
	want := []kvPair{{"del", "d", 1}, {"k", "v1", 1}}
	if got := scanAll(t, dst, 1, nil, nil); !slices.Equal(got, want) {
		t.Fatalf("restored = %v; want %v", got, want)
	}
	wantApplied(t, dst, 1, 1)
}

func TestSnapshotFormat(t *testing.T) {
	// The stream WriteTo produces is exactly the documented format.
	e := newEngine(t)
	put(t, e, 5, 11, kvPair{"b", "2", 2}, kvPair{"a", "1", 1})
	apply(t, e, 5, 11, func(a *Apply) { _ = a.PutIn(System, []byte("a"), []byte("s"), 3) })
	want := buildSnapshot(
		snapEntry{kindMeta, "applied", string(beBytes(11))},
		snapEntry{kindData, "a", record(1, "1")},
		snapEntry{kindData, "b", record(2, "2")},
		snapEntry{kindSystem, "a", record(3, "s")},
	)
	if got := snapshotBytes(t, e, 5); !bytes.Equal(got, want) {
		t.Fatalf("WriteTo =\n %q\nwant\n %q", got, want)
	}
}

type errWriter struct {
	n   int // bytes accepted before failing
	err error
}

func (w *errWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		w.n -= len(p)
		return len(p), nil
	}
	n := w.n
	w.n = 0
	return n, w.err
}

func TestSnapshotWriteToError(t *testing.T) {
	e := newEngine(t)
	populateSource(t, e, 1)
	size := len(snapshotBytes(t, e, 1))
	boom := errors.New("boom")
	for _, n := range []int{0, 5, 300 << 10, size - 4, size - 1} {
		s, _ := e.SnapshotShard(1)
		w := &errWriter{n: n, err: boom}
		if _, err := s.WriteTo(w); !errors.Is(err, boom) {
			t.Errorf("WriteTo failing after %d bytes = %v; want boom", n, err)
		}
		s.Close()
	}
}

// restoreMustFail checks that restoring b into shard fails with
// ErrBadSnapshot and changes nothing at all.
func restoreMustFail(t *testing.T, e *Engine, shard int, r io.Reader) {
	t.Helper()
	before := dumpAll(t, e)
	err := e.RestoreShard(shard, r)
	if !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("RestoreShard = %v; want ErrBadSnapshot", err)
	}
	if d := diffEntries(dumpAll(t, e), before); d != "" {
		t.Fatalf("failed restore changed the engine:%s", d)
	}
}

func TestRestoreRejectsBadStreams(t *testing.T) {
	src := newEngine(t)
	put(t, src, 1, 42, kvPair{"a", "1", 1}, kvPair{"b", "22", 2}, kvPair{"\xff", "3", 3})
	good := snapshotBytes(t, src, 1)

	dst := newEngine(t)
	const shard = 2
	populateTarget(t, dst, shard)

	t.Run("truncated", func(t *testing.T) {
		for n := 0; n < len(good); n++ {
			restoreMustFail(t, dst, shard, bytesReader(good[:n]))
		}
	})

	t.Run("flipped byte", func(t *testing.T) {
		for i := 0; i < len(good); i++ {
			for _, mask := range []byte{0x01, 0x80, 0xff} {
				b := bytes.Clone(good)
				b[i] ^= mask
				restoreMustFail(t, dst, shard, bytesReader(b))
			}
		}
	})

	t.Run("trailing garbage", func(t *testing.T) {
		for _, tail := range []string{"\x00", "x", "\x00\x00\x00\x00", string(good)} {
			restoreMustFail(t, dst, shard, bytesReader(append(bytes.Clone(good), tail...)))
		}
	})

	// The cases below carry a valid checksum: the structure itself is bad.
	tests := map[string][]byte{
		"empty":      {},
		"bad magic":  withCRC(append([]byte("LDBSNAP2"), good[8:]...)),
		"magic only": []byte(snapMagic),
		"no terminator": func() []byte {
			b := buildSnapshot(snapEntry{kindData, "a", record(1, "1")})
			b = b[:len(b)-5] // drop the 0 key length and the CRC
			return withCRC(append(b, 0, 0, 0, 0))
		}(),
		"raft entry kind":  buildSnapshot(snapEntry{kindRaftEntry, string(beBytes(1)), "entry"}),
		"raft state kind":  buildSnapshot(snapEntry{kindRaftState, string(hardStateName), "hard"}),
		"unknown kind":     buildSnapshot(snapEntry{'b', "x", "y"}),
		"key too long":     buildSnapshot(snapEntry{kindData, string(make([]byte, maxSnapKey)), record(1, "")}),
		"value too long":   hugeValueHeader(),
		"checksum missing": good[:len(good)-4],
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) { restoreMustFail(t, dst, shard, bytesReader(b)) })
	}

	t.Run("reader error", func(t *testing.T) {
		r := io.MultiReader(bytesReader(good[:len(good)/2]), iotest.ErrReader(errors.New("network down")))
		before := dumpAll(t, dst)
		if err := dst.RestoreShard(shard, r); err == nil {
			t.Fatal("restore from a failing reader succeeded")
		}
		if d := diffEntries(dumpAll(t, dst), before); d != "" {
			t.Fatalf("failed restore changed the engine:%s", d)
		}
	})

	t.Run("good stream still restores", func(t *testing.T) {
		// Short reads are not errors.
		for _, r := range []io.Reader{bytesReader(good), iotest.OneByteReader(bytesReader(good)), iotest.HalfReader(bytesReader(good))} {
			if err := dst.RestoreShard(shard, r); err != nil {
				t.Fatal(err)
			}
			want := []kvPair{{"a", "1", 1}, {"b", "22", 2}, {"\xff", "3", 3}}
			if got := scanAll(t, dst, shard, nil, nil); !slices.Equal(got, want) {
				t.Fatalf("restored %v; want %v", got, want)
			}
			wantApplied(t, dst, shard, 42)
		}
	})
}

// hugeValueHeader is a checksummed stream whose single entry claims a value
// larger than maxSnapValue (and larger than memory).
func hugeValueHeader() []byte {
	b := []byte(snapMagic)
	b = append(b, 2, kindData, 'k')
	b = append(b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01) // 1<<42
	b = append(b, 0, 0, 0, 0, 0)
	return withCRC(b)
}

// FuzzRestoreShard: arbitrary streams never panic; a stream either restores
// (and then only the shard's replicated state changed) or fails with
// ErrBadSnapshot and changes nothing. With fixCRC the last four bytes are
// replaced by a valid checksum, so the fuzzer also reaches the structural
// checks that a random checksum would otherwise hide.
func FuzzRestoreShard(f *testing.F) {
	src := openEngine(f, vfs.NewMem(), "src")
	put(f, src, 1, 42, kvPair{"a", "1", 1}, kvPair{"b", "", 2})
	good := snapshotBytes(f, src, 1)
	if err := src.Close(); err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{
		good,
		buildSnapshot(),
		buildSnapshot(snapEntry{kindCheckpoint, "c", "x"}, snapEntry{kindFeed, "f", "y"}),
		buildSnapshot(snapEntry{kindData, "k", record(1, "u")}, snapEntry{kindSystem, "k", record(2, "s")}),
		buildSnapshot(snapEntry{kindData, "short", "abc"}),
		buildSnapshot(snapEntry{kindRaftEntry, "e", "x"}),
		buildSnapshot(snapEntry{kindRaftState, "trunc", "x"}),
		hugeValueHeader(),
		[]byte(snapMagic),
		{},
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}

	const shard = 5
	var (
		e        *Engine
		baseline []byte
		dirty    bool // an earlier input restored into the shard
		restores int
	)
	fresh := func(t testing.TB) {
		if e != nil {
			e.Close()
		}
		e = openEngine(t, vfs.NewMem(), "db")
		populateTarget(t, e, shard)
		baseline = snapshotBytes(t, e, shard)
		dirty, restores = false, 0
	}
	fresh(f)
	f.Cleanup(func() { e.Close() })

	f.Fuzz(func(t *testing.T, data []byte, fixCRC bool) {
		if fixCRC && len(data) >= 4 {
			data = withCRC(data)
		}
		switch {
		case restores > 200:
			// Every restore leaves range tombstones in the memtable, which
			// slow each later iterator: start over now and then.
			fresh(t)
		case dirty:
			if err := e.RestoreShard(shard, bytesReader(baseline)); err != nil {
				t.Fatal(err)
			}
			dirty = false
			restores++
		}
		before := dumpAll(t, e)
		err := e.RestoreShard(shard, bytesReader(data))
		after := dumpAll(t, e)
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("RestoreShard error %v is not ErrBadSnapshot", err)
			}
			if d := diffEntries(after, before); d != "" {
				t.Fatalf("failed restore changed the engine:%s", d)
			}
			return
		}
		dirty = true
		restores += 2
		// Success: only shard's replicated kinds changed, and re-snapshotting
		// yields a stream that restores to the same state.
		keep := func(entries []rawEntry) []rawEntry {
			var out []rawEntry
			for _, r := range entries {
				k := []byte(r.K)
				if len(k) >= prefixLen && k[0] == shardTag && int(k[1])<<8|int(k[2]) == shard && isReplicatedKind(k[3]) {
					continue
				}
				out = append(out, r)
			}
			return out
		}
		if d := diffEntries(keep(after), keep(before)); d != "" {
			t.Fatalf("restore changed state outside the shard's replicated kinds:%s", d)
		}
		again := snapshotBytes(t, e, shard)
		restored := dumpShard(t, e, shard)
		if err := e.RestoreShard(shard, bytesReader(again)); err != nil {
			t.Fatalf("re-snapshot does not restore: %v", err)
		}
		if d := diffEntries(dumpShard(t, e, shard), restored); d != "" {
			t.Fatalf("re-snapshot restores differently:%s", d)
		}
	})
}

func TestSnapshotStreamSizes(t *testing.T) {
	// Entries straddle the reader's and writer's buffers at many offsets.
	for _, n := range []int{0, 1, 100, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			src := newEngine(t)
			var pairs []kvPair
			for i := 0; i < n; i++ {
				pairs = append(pairs, kvPair{fmt.Sprintf("key-%06d", i), string(bytes.Repeat([]byte{byte(i)}, i%300)), uint64(i)})
			}
			if n > 0 {
				put(t, src, 1, uint64(n), pairs...)
			}
			stream := snapshotBytes(t, src, 1)
			dst := newEngine(t)
			if err := dst.RestoreShard(9, iotest.HalfReader(bytesReader(stream))); err != nil {
				t.Fatal(err)
			}
			if got := scanAll(t, dst, 9, nil, nil); !slices.Equal(got, pairs) {
				t.Fatalf("restored %d records; want %d", len(got), len(pairs))
			}
			wantApplied(t, dst, 9, uint64(n))
		})
	}
}
