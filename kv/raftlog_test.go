package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	raft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func raftStorage(t testing.TB, e *Engine, shard int) *RaftStorage {
	t.Helper()
	s, err := e.RaftStorage(shard)
	if err != nil {
		t.Fatalf("RaftStorage(%d): %v", shard, err)
	}
	return s
}

// mkEnts returns entries lo..hi of term with distinct payloads.
func mkEnts(lo, hi, term uint64) []*pb.Entry {
	var out []*pb.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, &pb.Entry{
			Index: new(i), Term: new(term), Type: new(pb.EntryType_EntryNormal),
			Data: fmt.Appendf(nil, "t%d-i%d", term, i),
		})
	}
	return out
}

// raftCommit runs fn in a RaftBatch and commits it synced.
func raftCommit(t testing.TB, e *Engine, fn func(b *RaftBatch)) {
	t.Helper()
	b := e.NewRaftBatch()
	defer b.Close()
	fn(b)
	if err := b.Commit(true); err != nil {
		t.Fatalf("RaftBatch.Commit: %v", err)
	}
}

func mustAppend(t testing.TB, b *RaftBatch, s *RaftStorage, ents []*pb.Entry) {
	t.Helper()
	if err := b.Append(s, ents); err != nil {
		t.Fatalf("Append(shard %d, %d..): %v", s.Shard(), ents[0].GetIndex(), err)
	}
}

func appendEnts(t testing.TB, e *Engine, s *RaftStorage, ents []*pb.Entry) {
	t.Helper()
	raftCommit(t, e, func(b *RaftBatch) { mustAppend(t, b, s, ents) })
}

// commitRaft commits an otherwise empty state-machine step of shard.
func commitRaft(t testing.TB, e *Engine, shard int, applied, term uint64, cs *pb.ConfState) {
	t.Helper()
	if err := e.NewApply(shard).CommitRaft(applied, term, cs); err != nil {
		t.Fatalf("CommitRaft(%d, %d): %v", applied, term, err)
	}
}

func wantRaftBounds(t testing.TB, s *RaftStorage, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("shard %d raft bounds = [%d, %d]; want [%d, %d]", s.Shard(), f, l, first, last)
	}
}

func wantTerm(t testing.TB, s *RaftStorage, i, want uint64) {
	t.Helper()
	got, err := s.Term(i)
	if err != nil || got != want {
		t.Fatalf("shard %d Term(%d) = %d, %v; want %d", s.Shard(), i, got, err, want)
	}
}

func fmtEnts(ents []*pb.Entry) string {
	var parts []string
	for _, e := range ents {
		parts = append(parts, fmt.Sprintf("{%d/%d %q}", e.GetIndex(), e.GetTerm(), e.GetData()))
	}
	return fmt.Sprint(parts)
}

func entsEqual(a, b []*pb.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.Entry) bool { return proto.Equal(x, y) })
}

// wantEntries checks that [lo, hi) without a size limit is want.
func wantEntries(t testing.TB, s *RaftStorage, lo, hi uint64, want []*pb.Entry) {
	t.Helper()
	got, err := s.Entries(lo, hi, math.MaxUint64)
	if err != nil {
		t.Fatalf("shard %d Entries(%d, %d): %v", s.Shard(), lo, hi, err)
	}
	if !entsEqual(got, want) {
		t.Fatalf("shard %d Entries(%d, %d) =\n %s\nwant\n %s", s.Shard(), lo, hi, fmtEnts(got), fmtEnts(want))
	}
}

// rawEntryIndexes lists the indexes of every stored raft entry of shard.
func rawEntryIndexes(t testing.TB, e *Engine, shard int) []uint64 {
	t.Helper()
	lo, hi := kindRange(shard, kindRaftEntry)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, beUint64(it.Key()[prefixLen:]))
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func seq(lo, hi uint64) []uint64 {
	var out []uint64
	for i := lo; i <= hi; i++ {
		out = append(out, i)
	}
	return out
}

func TestRaftLogKeyLayout(t *testing.T) {
	if got, want := raftEntryKey(0x0102, 0x0a0b), []byte("S\x01\x02e\x00\x00\x00\x00\x00\x00\x0a\x0b"); !bytes.Equal(got, want) {
		t.Errorf("raftEntryKey = %q; want %q", got, want)
	}
	for _, tc := range []struct {
		kind byte
		name []byte
		want string
	}{
		{kindRaftState, hardStateName, "S\x00\x07hhard"},
		{kindRaftState, truncName, "S\x00\x07htrunc"},
		{kindMeta, termName, "S\x00\x07aterm"},
		{kindMeta, confStateName, "S\x00\x07aconfstate"},
	} {
		if got := shardKey(7, tc.kind, tc.name); string(got) != tc.want {
			t.Errorf("key %q = %q; want %q", tc.name, got, tc.want)
		}
	}
	if isReplicatedKind(kindRaftEntry) || isReplicatedKind(kindRaftState) {
		t.Error("raft log or state kind is replicated")
	}
	if got := encodeTrunc(0x0102, 0x0304); string(got) != "\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x00\x00\x03\x04" {
		t.Errorf("encodeTrunc = %q", got)
	}
}

func TestRaftStorageEmpty(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 1)
	wantRaftBounds(t, s, 1, 0)
	wantTerm(t, s, 0, 0)
	if _, err := s.Term(1); err != raft.ErrUnavailable {
		t.Fatalf("Term(1) = %v; want ErrUnavailable", err)
	}
	if ents, err := s.Entries(1, 1, 0); err != nil || len(ents) != 0 {
		t.Fatalf("Entries(1, 1) = %v, %v; want empty", ents, err)
	}
	if _, err := s.Entries(1, 2, 0); err != raft.ErrUnavailable {
		t.Fatalf("Entries(1, 2) = %v; want ErrUnavailable", err)
	}
	hs, cs, err := s.InitialState()
	if err != nil || hs != nil || cs == nil || len(cs.GetVoters()) != 0 {
		t.Fatalf("InitialState = %v, %v, %v; want nil, empty, nil", hs, cs, err)
	}
	if _, err := s.Snapshot(); err != raft.ErrSnapshotTemporarilyUnavailable {
		t.Fatalf("Snapshot = %v; want ErrSnapshotTemporarilyUnavailable", err)
	}
	if _, err := e.RaftStorage(-1); !errors.Is(err, ErrInvalidShard) {
		t.Fatalf("RaftStorage(-1) = %v", err)
	}
}

func TestRaftAppendAndRead(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 1)
	appendEnts(t, e, s, mkEnts(1, 10, 1))
	wantRaftBounds(t, s, 1, 10)
	wantEntries(t, s, 1, 11, mkEnts(1, 10, 1))
	wantEntries(t, s, 4, 7, mkEnts(4, 6, 1))

	// Overwrite the tail: 9 and 10 go away.
	appendEnts(t, e, s, mkEnts(6, 8, 2))
	wantRaftBounds(t, s, 1, 8)
	want := append(mkEnts(1, 5, 1), mkEnts(6, 8, 2)...)
	wantEntries(t, s, 1, 9, want)
	if got := rawEntryIndexes(t, e, 1); !slices.Equal(got, seq(1, 8)) {
		t.Fatalf("stored indexes %v", got)
	}
	for i, term := range map[uint64]uint64{1: 1, 5: 1, 6: 2, 7: 2, 8: 2} {
		wantTerm(t, s, i, term)
	}
	// Extend at last+1.
	appendEnts(t, e, s, mkEnts(9, 12, 3))
	wantRaftBounds(t, s, 1, 12)
	want = append(want, mkEnts(9, 12, 3)...)
	wantEntries(t, s, 1, 13, want)
	// A fresh storage loads the same bounds and last term.
	s2 := raftStorage(t, e, 1)
	wantRaftBounds(t, s2, 1, 12)
	wantTerm(t, s2, 12, 3)
	wantTerm(t, s2, 7, 2)

	for _, tc := range []struct {
		name    string
		lo, hi  uint64
		wantErr error
	}{
		{"lo at truncated index 0", 0, 5, raft.ErrCompacted},
		{"hi one past last", 1, 13, nil},
		{"hi beyond last+1", 1, 14, raft.ErrUnavailable},
		{"range entirely beyond", 13, 14, raft.ErrUnavailable},
		{"empty at last+1", 13, 13, nil},
		{"single", 12, 13, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Entries(tc.lo, tc.hi, math.MaxUint64)
			if err != tc.wantErr {
				t.Fatalf("Entries(%d, %d) error %v; want %v", tc.lo, tc.hi, err, tc.wantErr)
			}
			if err == nil && !entsEqual(got, want[tc.lo-1:tc.hi-1]) {
				t.Fatalf("Entries(%d, %d) = %s", tc.lo, tc.hi, fmtEnts(got))
			}
		})
	}
	if _, err := s.Term(13); err != raft.ErrUnavailable {
		t.Fatalf("Term(13) = %v; want ErrUnavailable", err)
	}

	// The returned slice is the caller's.
	got, _ := s.Entries(1, 3, math.MaxUint64)
	_ = append(got, &pb.Entry{})
	got[0] = nil
	wantEntries(t, s, 1, 3, want[:2])

	// Invalid appends change nothing.
	for _, tc := range []struct {
		name string
		ents []*pb.Entry
	}{
		{"gap", mkEnts(14, 15, 3)},
		{"index 0", mkEnts(0, 1, 3)},
		{"not consecutive", append(mkEnts(13, 13, 3), mkEnts(15, 15, 3)...)},
	} {
		t.Run("append "+tc.name, func(t *testing.T) {
			before := dumpAll(t, e)
			b := e.NewRaftBatch()
			defer b.Close()
			if err := b.Append(s, tc.ents); err == nil {
				t.Fatal("Append succeeded")
			}
			if !b.Empty() {
				t.Fatal("failed Append wrote to the batch")
			}
			if err := b.Commit(true); err != nil {
				t.Fatal(err)
			}
			if d := diffEntries(dumpAll(t, e), before); d != "" {
				t.Fatal(d)
			}
			wantRaftBounds(t, s, 1, 12)
		})
	}
}

func TestRaftEntriesMaxSize(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 3)
	ents := mkEnts(1, 5, 1)
	ents[2].Data = bytes.Repeat([]byte("x"), 1000) // entry 3 is big
	appendEnts(t, e, s, ents)
	size := func(i uint64) uint64 { return uint64(proto.Size(ents[i-1])) }
	for _, tc := range []struct {
		name    string
		lo      uint64
		maxSize uint64
		want    int // entries returned from lo
	}{
		{"zero returns one", 1, 0, 1},
		{"exactly one", 1, size(1), 1},
		{"one byte short of two", 1, size(1) + size(2) - 1, 1},
		{"exactly two", 1, size(1) + size(2), 2},
		{"stops before the big one", 1, size(1) + size(2) + size(3) - 1, 2},
		{"big first entry alone", 3, 1, 1},
		{"big first plus next", 3, size(3) + size(4), 2},
		{"unlimited", 1, math.MaxUint64, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Entries(tc.lo, 6, tc.maxSize)
			if err != nil {
				t.Fatal(err)
			}
			if !entsEqual(got, ents[tc.lo-1:tc.lo-1+uint64(tc.want)]) {
				t.Fatalf("Entries(%d, 6, %d) = %s; want %d entries", tc.lo, tc.maxSize, fmtEnts(got), tc.want)
			}
		})
	}
}

func TestRaftBatchManyShards(t *testing.T) {
	e := newEngine(t)
	shards := []int{1, 2, 300}
	st := map[int]*RaftStorage{}
	for _, sh := range shards {
		st[sh] = raftStorage(t, e, sh)
	}
	b := e.NewRaftBatch()
	defer b.Close()
	if !b.Empty() {
		t.Fatal("new batch not empty")
	}
	for i, sh := range shards {
		mustAppend(t, b, st[sh], mkEnts(1, uint64(3+i), uint64(sh)))
		hs := &pb.HardState{Term: new(uint64(sh)), Vote: new(uint64(2)), Commit: new(uint64(1))}
		if err := b.SetHardState(st[sh], hs); err != nil {
			t.Fatal(err)
		}
	}
	// Later appends to the same storage see the earlier ones.
	mustAppend(t, b, st[1], mkEnts(3, 4, 7))
	mustAppend(t, b, st[1], mkEnts(5, 5, 8))
	if err := b.Append(st[1], mkEnts(7, 7, 8)); err == nil {
		t.Fatal("Append with a gap after in-batch appends succeeded")
	}
	if b.Empty() || b.Len() <= 12 {
		t.Fatalf("batch Empty %v Len %d", b.Empty(), b.Len())
	}
	for _, sh := range shards {
		wantRaftBounds(t, st[sh], 1, 0)
		if _, err := st[sh].Entries(1, 2, 0); err != raft.ErrUnavailable {
			t.Fatalf("shard %d entries visible before Commit: %v", sh, err)
		}
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err == nil {
		t.Fatal("second Commit succeeded")
	}
	if err := b.Append(st[1], mkEnts(6, 6, 8)); err == nil {
		t.Fatal("Append after Commit succeeded")
	}
	b.Close()

	wantEntries(t, st[1], 1, 6, append(mkEnts(1, 2, 1), append(mkEnts(3, 4, 7), mkEnts(5, 5, 8)...)...))
	wantTerm(t, st[1], 5, 8)
	wantEntries(t, st[2], 1, 5, mkEnts(1, 4, 2))
	wantEntries(t, st[300], 1, 6, mkEnts(1, 5, 300))
	for _, sh := range shards {
		hs, _, err := st[sh].InitialState()
		if err != nil || hs.GetTerm() != uint64(sh) || hs.GetVote() != 2 || hs.GetCommit() != 1 {
			t.Fatalf("shard %d hard state %v, %v", sh, hs, err)
		}
	}

	// Close discards.
	b2 := e.NewRaftBatch()
	mustAppend(t, b2, st[2], mkEnts(5, 9, 2))
	b2.Close()
	b2.Close()
	wantRaftBounds(t, st[2], 1, 4)
	if got := rawEntryIndexes(t, e, 2); !slices.Equal(got, seq(1, 4)) {
		t.Fatalf("closed batch wrote entries: %v", got)
	}

	// A storage of another engine is refused.
	other := raftStorage(t, newEngine(t), 1)
	b3 := e.NewRaftBatch()
	defer b3.Close()
	if err := b3.Append(other, mkEnts(1, 1, 1)); err == nil {
		t.Fatal("Append of another engine's storage succeeded")
	}
}

func TestRaftTruncate(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 1)
	appendEnts(t, e, s, append(mkEnts(1, 5, 1), mkEnts(6, 10, 2)...))
	commitRaft(t, e, 1, 7, 2, nil)

	for _, tc := range []struct {
		name  string
		index uint64
	}{
		{"beyond applied", 8},
		{"beyond last", 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := e.NewRaftBatch()
			defer b.Close()
			if err := b.Truncate(s, tc.index); err == nil {
				t.Fatalf("Truncate(%d) succeeded", tc.index)
			}
			if !b.Empty() {
				t.Fatal("failed Truncate wrote to the batch")
			}
		})
	}

	raftCommit(t, e, func(b *RaftBatch) {
		if err := b.Truncate(s, 3); err != nil {
			t.Fatal(err)
		}
		if err := b.Truncate(s, 6); err != nil { // composes with the first
			t.Fatal(err)
		}
		if err := b.Truncate(s, 4); err != nil { // no-op
			t.Fatal(err)
		}
		wantRaftBounds(t, s, 1, 10) // not yet published
	})
	wantRaftBounds(t, s, 7, 10)
	wantTerm(t, s, 6, 2)
	if _, err := s.Term(5); err != raft.ErrCompacted {
		t.Fatalf("Term(5) = %v; want ErrCompacted", err)
	}
	if _, err := s.Entries(6, 8, math.MaxUint64); err != raft.ErrCompacted {
		t.Fatalf("Entries(6, 8) = %v; want ErrCompacted", err)
	}
	wantEntries(t, s, 7, 11, mkEnts(7, 10, 2))
	if got := rawEntryIndexes(t, e, 1); !slices.Equal(got, seq(7, 10)) {
		t.Fatalf("stored indexes %v", got)
	}
	s2 := raftStorage(t, e, 1)
	wantRaftBounds(t, s2, 7, 10)
	wantTerm(t, s2, 6, 2)

	// Truncating everything up to the last entry leaves an empty log.
	commitRaft(t, e, 1, 10, 2, nil)
	raftCommit(t, e, func(b *RaftBatch) {
		if err := b.Truncate(s, 10); err != nil {
			t.Fatal(err)
		}
	})
	wantRaftBounds(t, s, 11, 10)
	wantTerm(t, s, 10, 2)
	if got := rawEntryIndexes(t, e, 1); len(got) != 0 {
		t.Fatalf("stored indexes %v", got)
	}
	appendEnts(t, e, s, mkEnts(11, 12, 3))
	wantRaftBounds(t, s, 11, 12)

	// The term of an index appended in the same batch comes from the batch;
	// an index overwritten in the batch has its new term. The applied index
	// is ahead of the log here only to reach those cases.
	commitRaft(t, e, 1, 15, 5, nil)
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, s, mkEnts(13, 16, 4))
		mustAppend(t, b, s, mkEnts(14, 17, 5))
		if err := b.Truncate(s, 12); err != nil { // stored entry
			t.Fatal(err)
		}
		if err := b.Truncate(s, 13); err != nil { // batch entry
			t.Fatal(err)
		}
		if err := b.Truncate(s, 15); err != nil { // overwritten in the batch
			t.Fatal(err)
		}
		mustAppend(t, b, s, mkEnts(17, 18, 6))
	})
	wantRaftBounds(t, s, 16, 18)
	wantTerm(t, s, 15, 5)
	wantEntries(t, s, 16, 19, append(mkEnts(16, 16, 5), mkEnts(17, 18, 6)...))
	if got := rawEntryIndexes(t, e, 1); !slices.Equal(got, seq(16, 18)) {
		t.Fatalf("stored indexes %v", got)
	}
	if err := e.NewRaftBatch().Append(s, mkEnts(15, 15, 6)); err == nil {
		t.Fatal("Append at the truncated index succeeded")
	}
}

func TestRaftBootstrap(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 4)
	cs := &pb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}
	if err := s.Bootstrap(10, 3, cs); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, s *RaftStorage) {
		t.Helper()
		wantRaftBounds(t, s, 11, 10)
		wantTerm(t, s, 10, 3)
		hs, gotCS, err := s.InitialState()
		if err != nil || hs.GetTerm() != 3 || hs.GetCommit() != 10 || hs.GetVote() != 0 {
			t.Fatalf("InitialState hard state %v, %v", hs, err)
		}
		if !proto.Equal(gotCS, cs) {
			t.Fatalf("InitialState ConfState %v; want %v", gotCS, cs)
		}
		if i, term, err := s.Applied(); i != 10 || term != 3 || err != nil {
			t.Fatalf("Applied = %d, %d, %v", i, term, err)
		}
		snap, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		m := snap.GetMetadata()
		if snap.Data != nil || m.GetIndex() != 10 || m.GetTerm() != 3 || !proto.Equal(m.GetConfState(), cs) {
			t.Fatalf("Snapshot = %v", snap)
		}
	}
	check(t, s)
	check(t, raftStorage(t, e, 4))
	if err := s.Bootstrap(10, 3, cs); !errors.Is(err, ErrRaftBootstrapped) {
		t.Fatalf("second Bootstrap = %v; want ErrRaftBootstrapped", err)
	}

	// Any earlier raft state or applied index refuses a bootstrap.
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s *RaftStorage)
	}{
		{"entries", func(t *testing.T, s *RaftStorage) { appendEnts(t, e, s, mkEnts(1, 1, 1)) }},
		{"hard state", func(t *testing.T, s *RaftStorage) {
			raftCommit(t, e, func(b *RaftBatch) {
				if err := b.SetHardState(s, &pb.HardState{Term: new(uint64(1))}); err != nil {
					t.Fatal(err)
				}
			})
		}},
		{"applied", func(t *testing.T, s *RaftStorage) { commitRaft(t, e, s.Shard(), 3, 1, nil) }},
		{"legacy applied", func(t *testing.T, s *RaftStorage) { apply(t, e, s.Shard(), 3, nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shard := 100 + len(tc.name)
			s := raftStorage(t, e, shard)
			tc.setup(t, s)
			before := dumpAll(t, e)
			if err := s.Bootstrap(10, 3, cs); !errors.Is(err, ErrRaftBootstrapped) {
				t.Fatalf("Bootstrap = %v; want ErrRaftBootstrapped", err)
			}
			if d := diffEntries(dumpAll(t, e), before); d != "" {
				t.Fatal(d)
			}
		})
	}

	// A nil ConfState bootstraps with an empty one.
	s5 := raftStorage(t, e, 5)
	if err := s5.Bootstrap(1, 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, gotCS, err := s5.InitialState(); err != nil || gotCS == nil || len(gotCS.GetVoters()) != 0 {
		t.Fatalf("InitialState ConfState %v, %v", gotCS, err)
	}
}

func TestRaftInitialState(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 1)
	appendEnts(t, e, s, mkEnts(1, 10, 2))
	setHS := func(hs *pb.HardState) {
		raftCommit(t, e, func(b *RaftBatch) {
			if err := b.SetHardState(s, hs); err != nil {
				t.Fatal(err)
			}
		})
	}
	// No hard state but an applied index: one is made up.
	commitRaft(t, e, 1, 4, 2, nil)
	hs, _, err := s.InitialState()
	if err != nil || hs.GetTerm() != 2 || hs.GetCommit() != 4 {
		t.Fatalf("InitialState = %v, %v; want term 2 commit 4", hs, err)
	}
	cs := &pb.ConfState{Voters: []uint64{1, 2}, VotersOutgoing: []uint64{1, 3}, AutoLeave: new(true)}
	setHS(&pb.HardState{Term: new(uint64(5)), Vote: new(uint64(2)), Commit: new(uint64(3))})
	commitRaft(t, e, 1, 7, 2, cs)
	for _, tc := range []struct {
		commit, applied, want uint64
	}{
		{3, 7, 7}, // raised to applied
		{7, 7, 7},
		{9, 7, 9}, // left alone
	} {
		setHS(&pb.HardState{Term: new(uint64(5)), Vote: new(uint64(2)), Commit: new(tc.commit)})
		hs, gotCS, err := s.InitialState()
		if err != nil {
			t.Fatal(err)
		}
		if hs.GetTerm() != 5 || hs.GetVote() != 2 || hs.GetCommit() != tc.want {
			t.Fatalf("commit %d applied %d: InitialState = %v; want commit %d", tc.commit, tc.applied, hs, tc.want)
		}
		if !proto.Equal(gotCS, cs) {
			t.Fatalf("InitialState ConfState %v; want %v", gotCS, cs)
		}
	}
	// CommitRaft without a ConfState keeps the last one.
	commitRaft(t, e, 1, 8, 2, nil)
	if _, gotCS, _ := s.InitialState(); !proto.Equal(gotCS, cs) {
		t.Fatalf("ConfState after CommitRaft(nil) = %v", gotCS)
	}
	b := e.NewRaftBatch()
	defer b.Close()
	if err := b.SetHardState(s, nil); err == nil {
		t.Fatal("SetHardState(nil) succeeded")
	}
}

func TestRaftSnapshotMeta(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 2)
	appendEnts(t, e, s, mkEnts(1, 9, 4))
	cs := &pb.ConfState{Voters: []uint64{7, 8, 9}}
	commitRaft(t, e, 2, 6, 4, cs)
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(6)), Term: new(uint64(4)), ConfState: cs}}
	if !proto.Equal(snap, want) {
		t.Fatalf("Snapshot = %v; want %v", snap, want)
	}
	ss, err := e.SnapshotShard(2)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	commitRaft(t, e, 2, 8, 4, &pb.ConfState{Voters: []uint64{7}})
	i, term, gotCS, err := ss.RaftMeta()
	if err != nil || i != 6 || term != 4 || !proto.Equal(gotCS, cs) {
		t.Fatalf("RaftMeta = %d, %d, %v, %v; want the state when taken", i, term, gotCS, err)
	}
	if i, term, err := s.Applied(); i != 8 || term != 4 || err != nil {
		t.Fatalf("Applied = %d, %d, %v", i, term, err)
	}
}

// raftSnapshotOf streams shard's snapshot and returns it with its metadata.
func raftSnapshotOf(t testing.TB, e *Engine, shard int) ([]byte, *pb.SnapshotMetadata) {
	t.Helper()
	ss, err := e.SnapshotShard(shard)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	i, term, cs, err := ss.RaftMeta()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := ss.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), &pb.SnapshotMetadata{Index: new(i), Term: new(term), ConfState: cs}
}

// replicated returns the raw entries of the replicated kinds of shard,
// shard id stripped.
func replicated(t testing.TB, e *Engine, shard int) []rawEntry {
	var out []rawEntry
	for _, r := range dumpShard(t, e, shard) {
		if isReplicatedKind(r.K[0]) {
			out = append(out, r)
		}
	}
	return out
}

// stageAndIngest installs the snapshot stream data as the log writer does.
func stageAndIngest(t testing.TB, s *RaftStorage, meta *pb.SnapshotMetadata, data []byte) {
	t.Helper()
	const path = "staged.sst"
	if err := s.StageSnapshot(path, meta, bytesReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IngestSnapshot(path, meta); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.cfg.FS.Stat(path); err == nil {
		t.Fatalf("staged table still at %s after the ingest (%v)", path, err)
	}
}

func TestRaftIngestSnapshot(t *testing.T) {
	e := newEngine(t)
	const src, dst, other = 1, 2, 3
	// The source: data in both spaces, a feed, and raft applied state.
	cs := &pb.ConfState{Voters: []uint64{1, 2, 3}}
	a := e.NewApply(src)
	for i := 0; i < 50; i++ {
		if err := a.Put(fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "v%d", i), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.PutIn(System, []byte("sys"), []byte("s"), 3); err != nil {
		t.Fatal(err)
	}
	if err := a.AppendFeed(FeedRecord{Index: 20, Op: FeedPut, Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if err := a.CommitRaft(20, 3, cs); err != nil {
		t.Fatal(err)
	}
	data, meta := raftSnapshotOf(t, e, src)
	if meta.GetIndex() != 20 || meta.GetTerm() != 3 || !proto.Equal(meta.GetConfState(), cs) {
		t.Fatalf("RaftMeta = %v", meta)
	}

	// The destination has a log, a hard state and data of its own.
	d := raftStorage(t, e, dst)
	o := raftStorage(t, e, other)
	appendEnts(t, e, d, mkEnts(1, 30, 1))
	raftCommit(t, e, func(b *RaftBatch) {
		if err := b.SetHardState(d, &pb.HardState{Term: new(uint64(2)), Vote: new(uint64(1)), Commit: new(uint64(5))}); err != nil {
			t.Fatal(err)
		}
	})
	put(t, e, dst, 5, kvPair{"k000", "old", 1}, kvPair{"dst-only", "x", 1})

	t.Run("mismatch", func(t *testing.T) {
		corrupt := bytes.Clone(data)
		corrupt[len(corrupt)/2] ^= 1
		for _, tc := range []struct {
			name string
			meta *pb.SnapshotMetadata
			data []byte
		}{
			{"index", &pb.SnapshotMetadata{Index: new(uint64(21)), Term: new(uint64(3)), ConfState: cs}, data},
			{"term", &pb.SnapshotMetadata{Index: new(uint64(20)), Term: new(uint64(2)), ConfState: cs}, data},
			{"confstate", &pb.SnapshotMetadata{Index: new(uint64(20)), Term: new(uint64(3)), ConfState: &pb.ConfState{Voters: []uint64{1, 2}}}, data},
			{"no confstate", &pb.SnapshotMetadata{Index: new(uint64(20)), Term: new(uint64(3))}, data},
			{"index 0", &pb.SnapshotMetadata{}, data},
			{"nil meta", nil, data},
			{"corrupt stream", meta, corrupt},
			{"truncated stream", meta, data[:len(data)-1]},
			{"no applied state", &pb.SnapshotMetadata{Index: new(uint64(5)), Term: new(uint64(0))},
				buildSnapshot(snapEntry{kindData, "k", record(1, "v")})},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := dumpAll(t, e)
				path := "staged-" + tc.name
				if err := d.StageSnapshot(path, tc.meta, bytesReader(tc.data)); !errors.Is(err, ErrBadSnapshot) {
					t.Fatalf("StageSnapshot = %v; want ErrBadSnapshot", err)
				}
				if d := diffEntries(dumpAll(t, e), before); d != "" {
					t.Fatal(d)
				}
				wantRaftBounds(t, raftStorage(t, e, dst), 1, 30)
			})
		}
	})

	// Sorted differently, the ConfState is still the same configuration.
	reordered := proto.Clone(meta).(*pb.SnapshotMetadata)
	reordered.ConfState.Voters = []uint64{3, 1, 2}
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, o, mkEnts(1, 3, 1))
		mustAppend(t, b, d, mkEnts(31, 32, 2)) // cleared by the install
	})
	if err := d.StageSnapshot("staged", reordered, bytesReader(data)); err != nil {
		t.Fatal(err)
	}
	wantRaftBounds(t, d, 1, 32) // staging changes nothing
	if _, err := d.IngestSnapshot("staged", reordered); err != nil {
		t.Fatal(err)
	}
	wantRaftBounds(t, d, 21, 20)
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, d, mkEnts(21, 22, 4))
	})
	if diff := diffEntries(replicated(t, e, dst), replicated(t, e, src)); diff != "" {
		t.Fatalf("replicated state differs from the source: %s", diff)
	}
	wantAbsent(t, e, dst, "dst-only")
	wantRecord(t, e, dst, "k000", "v0", 1)
	for _, s := range []*RaftStorage{d, raftStorage(t, e, dst)} {
		wantRaftBounds(t, s, 21, 22)
		wantTerm(t, s, 20, 3)
		wantEntries(t, s, 21, 23, mkEnts(21, 22, 4))
		if i, term, err := s.Applied(); i != 20 || term != 3 || err != nil {
			t.Fatalf("Applied = %d, %d, %v", i, term, err)
		}
		hs, gotCS, err := s.InitialState()
		if err != nil || !proto.Equal(gotCS, cs) {
			t.Fatalf("InitialState ConfState %v, %v; want %v", gotCS, err, cs)
		}
		// The stored hard state (term 2, vote 1) is older than the
		// snapshot's term: it is raised to term 3, without a vote.
		if hs.GetCommit() != 20 || hs.GetTerm() != 3 || hs.GetVote() != 0 {
			t.Fatalf("InitialState hard state %v", hs)
		}
	}
	if got := rawEntryIndexes(t, e, dst); !slices.Equal(got, seq(21, 22)) {
		t.Fatalf("stored indexes %v", got)
	}
	wantRaftBounds(t, o, 1, 3)
	// The source's log and replica state are untouched (it had none).
	if got := rawEntryIndexes(t, e, src); len(got) != 0 {
		t.Fatalf("source entries %v", got)
	}

	// Truncate right after an install uses the snapshot's applied index
	// and term.
	data2, meta2 := raftSnapshotOf(t, e, src)
	stageAndIngest(t, o, meta2, data2)
	raftCommit(t, e, func(b *RaftBatch) {
		if err := b.Truncate(o, 21); err == nil {
			t.Fatal("Truncate beyond the installed log succeeded")
		}
		if err := b.Truncate(o, 20); err != nil { // a no-op
			t.Fatal(err)
		}
	})
	wantRaftBounds(t, o, 21, 20)
	wantTerm(t, o, 20, 3)
}

func TestCrashRaftBatch(t *testing.T) {
	fs := vfs.NewCrashableMem()
	e := openEngine(t, fs, "node/db")
	s1, s2 := raftStorage(t, e, 1), raftStorage(t, e, 2)
	if err := s2.Bootstrap(5, 1, &pb.ConfState{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, s1, mkEnts(1, 8, 1))
		mustAppend(t, b, s2, mkEnts(6, 9, 2))
		if err := b.SetHardState(s1, &pb.HardState{Term: new(uint64(1)), Vote: new(uint64(3)), Commit: new(uint64(6))}); err != nil {
			t.Fatal(err)
		}
	})
	// Unsynced state-machine steps become durable with the next synced
	// raft commit.
	commitRaft(t, e, 1, 6, 1, &pb.ConfState{Voters: []uint64{1, 2, 3}})
	commitRaft(t, e, 2, 7, 2, nil)
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, s1, mkEnts(7, 10, 2))
		if err := b.Truncate(s1, 4); err != nil {
			t.Fatal(err)
		}
		if err := b.Truncate(s2, 7); err != nil {
			t.Fatal(err)
		}
	})
	// An unsynced raft commit may be lost.
	b := e.NewRaftBatch()
	mustAppend(t, b, s1, mkEnts(11, 12, 2))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}

	e2, _ := crashAndReopen(t, fs, "node/db", e, vfs.CrashCloneCfg{})
	r1, r2 := raftStorage(t, e2, 1), raftStorage(t, e2, 2)
	wantRaftBounds(t, r1, 5, 10)
	wantTerm(t, r1, 4, 1)
	wantEntries(t, r1, 5, 11, append(mkEnts(5, 6, 1), mkEnts(7, 10, 2)...))
	hs, cs, err := r1.InitialState()
	if err != nil || hs.GetVote() != 3 || hs.GetCommit() != 6 || !slices.Equal(cs.GetVoters(), []uint64{1, 2, 3}) {
		t.Fatalf("InitialState after crash = %v, %v, %v", hs, cs, err)
	}
	wantRaftBounds(t, r2, 8, 9)
	wantTerm(t, r2, 7, 2)
	if i, term, err := r2.Applied(); i != 7 || term != 2 || err != nil {
		t.Fatalf("Applied after crash = %d, %d, %v", i, term, err)
	}
}

func TestCrashRaftRepair(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup leaves shard 1 with an applied index of 10 (term 2) that
		// its log does not hold.
		setup func(t *testing.T, e *Engine, s *RaftStorage)
	}{
		{"applied beyond last", func(t *testing.T, e *Engine, s *RaftStorage) {
			appendEnts(t, e, s, mkEnts(1, 5, 1))
		}},
		{"applied entry missing", func(t *testing.T, e *Engine, s *RaftStorage) {
			appendEnts(t, e, s, mkEnts(1, 12, 2))
			if err := e.db.Delete(raftEntryKey(1, 10), pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}},
		{"applied below truncated", func(t *testing.T, e *Engine, s *RaftStorage) {
			appendEnts(t, e, s, mkEnts(1, 14, 2))
			commitRaft(t, e, 1, 13, 2, nil)
			raftCommit(t, e, func(b *RaftBatch) {
				if err := b.Truncate(s, 12); err != nil {
					t.Fatal(err)
				}
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			e := openEngine(t, fs, "db")
			s := raftStorage(t, e, 1)
			tc.setup(t, e, s)
			raftCommit(t, e, func(b *RaftBatch) {
				if err := b.SetHardState(s, &pb.HardState{Term: new(uint64(2)), Commit: new(uint64(12))}); err != nil {
					t.Fatal(err)
				}
			})
			commitRaft(t, e, 1, 10, 2, &pb.ConfState{Voters: []uint64{1}})
			if err := e.SyncWAL(); err != nil {
				t.Fatal(err)
			}
			e2, fs2 := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
			check := func(t *testing.T, e *Engine) {
				t.Helper()
				r := raftStorage(t, e, 1)
				wantRaftBounds(t, r, 11, 10)
				wantTerm(t, r, 10, 2)
				if got := rawEntryIndexes(t, e, 1); len(got) != 0 {
					t.Fatalf("entries after repair: %v", got)
				}
				hs, _, err := r.InitialState()
				if err != nil || hs.GetCommit() != 10 || hs.GetTerm() != 2 {
					t.Fatalf("InitialState after repair = %v, %v", hs, err)
				}
			}
			check(t, e2)
			// The repair was synced: it survives another crash. (e2 is
			// closed by crashAndReopen's cleanup.)
			e3 := openEngine(t, fs2.CrashClone(vfs.CrashCloneCfg{}), "db")
			t.Cleanup(func() { e3.Close() })
			check(t, e3)
		})
	}

	t.Run("consistent log is left alone", func(t *testing.T) {
		e := newEngine(t)
		s := raftStorage(t, e, 1)
		appendEnts(t, e, s, mkEnts(1, 12, 2))
		commitRaft(t, e, 1, 10, 2, nil)
		before := dumpAll(t, e)
		wantRaftBounds(t, raftStorage(t, e, 1), 1, 12)
		if d := diffEntries(dumpAll(t, e), before); d != "" {
			t.Fatal(d)
		}
	})
}

// TestRaftStorageConcurrent reads while one goroutine appends, overwrites
// and truncates: every read is either a clean error or a consistent answer.
func TestRaftStorageConcurrent(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 1)
	appendEnts(t, e, s, mkEnts(1, 1, 1))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				ents, err := s.Entries(first, last+1, 1<<10)
				if err == raft.ErrCompacted {
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				for i, ent := range ents {
					if ent.GetIndex() != first+uint64(i) || string(ent.GetData()) != fmt.Sprintf("t%d-i%d", ent.GetTerm(), ent.GetIndex()) {
						errc <- fmt.Errorf("inconsistent entry %v", ent)
						return
					}
				}
				if _, err := s.Term(last); err != nil && err != raft.ErrCompacted {
					errc <- err
					return
				}
			}
		}()
	}
	for i := uint64(2); i <= 300; i++ {
		commitRaft(t, e, 1, i-1, 1, nil)
		raftCommit(t, e, func(b *RaftBatch) {
			mustAppend(t, b, s, mkEnts(i, i, 1))
			if i%7 == 0 {
				if err := b.Truncate(s, i-3); err != nil {
					t.Error(err)
				}
			}
		})
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

// FuzzRaftEntryDecode: decoding a stored entry never panics; whatever
// proto.Unmarshal accepts, the Term/Index scanner reads the same way, and
// an accepted entry re-encodes to an equal one.
func FuzzRaftEntryDecode(f *testing.F) {
	for _, ent := range append(mkEnts(1, 2, 3), &pb.Entry{}, &pb.Entry{Index: new(uint64(math.MaxUint64)), Term: new(uint64(math.MaxUint64)), Type: new(pb.EntryType_EntryConfChangeV2), Data: []byte{}}) {
		v, err := proto.Marshal(ent)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ent.GetIndex(), v)
	}
	f.Add(uint64(5), []byte{0x10, 0x01, 0x18, 0x05, 0x10, 0x07})    // repeated Term: last wins
	f.Add(uint64(5), []byte{0x12, 0x01, 0x09, 0x18, 0x05})          // Term with the wrong wire type
	f.Add(uint64(5), []byte{0x18, 0x85, 0x80, 0x80, 0x80, 0x80, 0}) // non-minimal varint
	f.Add(uint64(1), []byte{0x22, 0x05, 'a'})                       // short Data
	f.Add(uint64(1), []byte{0x00, 0x01})                            // field 0
	f.Add(uint64(1), []byte{0x2b, 0x2c, 0x18, 0x01})                // empty group
	f.Fuzz(func(t *testing.T, index uint64, v []byte) {
		term, got, scanErr := entryTermIndex(v)
		if scanErr != nil && !errors.Is(scanErr, ErrCorrupt) {
			t.Fatalf("entryTermIndex error %v is not ErrCorrupt", scanErr)
		}
		var ref pb.Entry
		if err := proto.Unmarshal(v, &ref); err == nil {
			if scanErr != nil {
				t.Fatalf("proto.Unmarshal accepts %x, entryTermIndex: %v", v, scanErr)
			}
			if term != ref.GetTerm() || got != ref.GetIndex() {
				t.Fatalf("entryTermIndex(%x) = %d, %d; proto says %d, %d", v, term, got, ref.GetTerm(), ref.GetIndex())
			}
		}
		ent, err := decodeRaftEntry(index, v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeRaftEntry error %v is not ErrCorrupt", err)
			}
			return
		}
		if ent.GetIndex() != index || ent.GetTerm() != term {
			t.Fatalf("decodeRaftEntry(%d, %x) = %v", index, v, ent)
		}
		enc, err := proto.Marshal(ent)
		if err != nil {
			t.Fatal(err)
		}
		ent2, err := decodeRaftEntry(index, enc)
		if err != nil || !proto.Equal(ent, ent2) {
			t.Fatalf("round trip of %v = %v, %v", ent, ent2, err)
		}
		if uint64(proto.Size(ent2)) != uint64(len(enc)) {
			t.Fatalf("proto.Size %d != stored size %d", proto.Size(ent2), len(enc))
		}
	})
}

// FuzzDecodeRaftState: the truncated state decoder and the stored hard
// state and ConfState never panic, and fail only with ErrCorrupt.
func FuzzDecodeRaftState(f *testing.F) {
	f.Add(encodeTrunc(7, 3))
	f.Add([]byte{})
	f.Add(make([]byte, 15))
	hs, _ := proto.Marshal(&pb.HardState{Term: new(uint64(2)), Vote: new(uint64(1)), Commit: new(uint64(9))})
	f.Add(hs)
	cs, _ := proto.Marshal(&pb.ConfState{Voters: []uint64{1, 2}, LearnersNext: []uint64{3}, AutoLeave: new(true)})
	f.Add(cs)
	e := openEngine(f, vfs.NewMem(), "db")
	f.Cleanup(func() { e.Close() })
	s := raftStorage(f, e, 1)
	f.Fuzz(func(t *testing.T, v []byte) {
		index, term, err := decodeTrunc(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeTrunc error %v", err)
			}
		} else if got := encodeTrunc(index, term); !bytes.Equal(got, v) {
			t.Fatalf("encodeTrunc(decodeTrunc(%x)) = %x", v, got)
		}
		for _, key := range [][]byte{
			shardKey(1, kindRaftState, hardStateName),
			shardKey(1, kindMeta, confStateName),
		} {
			if err := e.db.Set(key, v, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.InitialState(); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("InitialState error %v is not ErrCorrupt", err)
		}
	})
}

// TestRaftEntryCacheMatchesPebble drives one storage through random
// appends (including overwrites of its tail with a new term), truncations
// and snapshot installs, and after every commit checks that whatever the
// entry cache serves is exactly what Pebble holds, and that Entries and
// Term agree with a model of the log.
func TestRaftEntryCacheMatchesPebble(t *testing.T) {
	e := newEngine(t)
	s := raftStorage(t, e, 3)
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[uint64]uint64{} // index → term, (trunc, last]
	var trunc, last, term uint64 = 0, 0, 1
	applied := uint64(0)
	big := bytes.Repeat([]byte("x"), 3000) // some entries large enough to hit the byte bound
	for step := 0; step < 3000; step++ {
		switch op := rng.IntN(20); {
		case op < 14: // append, sometimes overwriting a suffix with a higher term
			from := last + 1
			if op < 3 && last > trunc+1 {
				from = trunc + 1 + rng.Uint64N(last-trunc)
				term++
			}
			n := 1 + rng.Uint64N(40)
			ents := mkEnts(from, from+n-1, term)
			for _, ent := range ents {
				if rng.IntN(8) == 0 {
					ent.Data = append(big, ent.Data...)
				}
			}
			appendEnts(t, e, s, ents)
			for i := from; i <= last; i++ {
				delete(model, i)
			}
			for i := from; i < from+n; i++ {
				model[i] = term
			}
			last = from + n - 1
			if applied > last {
				applied = last
			}
		case op < 17: // apply some, then truncate up to applied
			if last > applied {
				applied += 1 + rng.Uint64N(last-applied)
				commitRaft(t, e, 3, applied, model[applied], nil)
			}
			if applied > trunc {
				to := trunc + 1 + rng.Uint64N(applied-trunc)
				raftCommit(t, e, func(b *RaftBatch) {
					if err := b.Truncate(s, to); err != nil {
						t.Fatal(err)
					}
				})
				for i := trunc + 1; i <= to; i++ {
					delete(model, i)
				}
				trunc = to
			}
		default: // install a snapshot ahead of the log
			src := newEngine(t)
			idx := last + 1 + rng.Uint64N(100)
			term++
			commitRaft(t, src, 3, idx, term, &pb.ConfState{Voters: []uint64{1}})
			snap, err := src.SnapshotShard(3)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := snap.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			snap.Close()
			meta := &pb.SnapshotMetadata{Index: new(idx), Term: new(term), ConfState: &pb.ConfState{Voters: []uint64{1}}}
			stageAndIngest(t, s, meta, buf.Bytes())
			clear(model)
			trunc, last, applied = idx, idx, idx
		}

		// The cache, wherever it serves, matches Pebble.
		s.mu.Lock()
		from, n := s.cacheFrom, uint64(len(s.cache))
		s.mu.Unlock()
		if n > raftCacheEntries {
			t.Fatalf("step %d: cache holds %d entries", step, n)
		}
		if n > 0 {
			if from <= trunc || from+n-1 != last {
				t.Fatalf("step %d: cache [%d, %d] outside log (%d, %d]", step, from, from+n-1, trunc, last)
			}
			got, ok := s.cached(from, from+n, math.MaxUint64)
			want, err := s.storedEntries(from, from+n, math.MaxUint64)
			if !ok || err != nil || !slices.EqualFunc(got, want, func(a, b *pb.Entry) bool { return proto.Equal(a, b) }) {
				t.Fatalf("step %d: cache %s differs from pebble %s (%v)", step, fmtEnts(got), fmtEnts(want), err)
			}
			got, _ = s.cached(from, from+n, 4000)
			want, _ = s.storedEntries(from, from+n, 4000)
			if len(got) != len(want) {
				t.Fatalf("step %d: maxSize: cache gives %d entries, pebble %d", step, len(got), len(want))
			}
		}
		// And the storage agrees with the model.
		if last > trunc {
			lo := trunc + 1 + rng.Uint64N(last-trunc)
			ents, err := s.Entries(lo, last+1, math.MaxUint64)
			if err != nil || uint64(len(ents)) != last+1-lo {
				t.Fatalf("step %d: Entries(%d, %d): %d, %v", step, lo, last+1, len(ents), err)
			}
			for _, ent := range ents {
				if ent.GetTerm() != model[ent.GetIndex()] {
					t.Fatalf("step %d: entry %d term %d; want %d", step, ent.GetIndex(), ent.GetTerm(), model[ent.GetIndex()])
				}
				if tm, err := s.Term(ent.GetIndex()); err != nil || tm != ent.GetTerm() {
					t.Fatalf("step %d: Term(%d) = %d, %v", step, ent.GetIndex(), tm, err)
				}
			}
		}
	}
}

// TestIngestSnapshotBesideHardState: a replica that has just joined has
// its hard state in the memtable (and other shards' writes around it); its
// snapshot's tables leave that key out of their spans, so they are
// ingested into the LSM directly, not queued behind a memtable flush.
func TestIngestSnapshotBesideHardState(t *testing.T) {
	src := newEngine(t)
	cs := &pb.ConfState{Voters: []uint64{1, 2, 3}}
	a := src.NewApply(5)
	for i := range 50 {
		if err := a.Put(fmt.Appendf(nil, "k%03d", i), []byte("v"), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.PutIn(System, []byte("sys"), []byte("s"), 3); err != nil {
		t.Fatal(err)
	}
	if err := a.CommitRaft(30, 2, cs); err != nil {
		t.Fatal(err)
	}
	data, meta := raftSnapshotOf(t, src, 5)

	e := newEngine(t)
	put(t, e, 4, 7, kvPair{"below", "x", 1})
	put(t, e, 6, 7, kvPair{"above", "x", 1})
	s := raftStorage(t, e, 5)
	raftCommit(t, e, func(b *RaftBatch) {
		if err := b.SetHardState(s, &pb.HardState{Term: new(uint64(2)), Commit: new(uint64(0))}); err != nil {
			t.Fatal(err)
		}
	})
	const path = "staged.sst"
	if err := s.StageSnapshot(path, meta, bytesReader(data)); err != nil {
		t.Fatal(err)
	}
	st, err := s.IngestSnapshot(path, meta)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemtableOverlap != 0 || st.L0Bytes != 0 || st.Bytes == 0 {
		t.Fatalf("ingest %+v; want the tables ingested below L0, beside the memtable", st)
	}
	wantRecord(t, e, 5, "k049", "v", 50)
	wantApplied(t, e, 5, 30)
	wantRaftBounds(t, s, 31, 30)
	hs, _, err := s.InitialState()
	if err != nil || hs.GetTerm() != 2 || hs.GetCommit() != 30 {
		t.Fatalf("InitialState = %v, %v", hs, err)
	}
}
