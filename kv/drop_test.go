package kv

import (
	"errors"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// fillShard writes every key kind into shard: user and system records,
// feed records and trim point, a checkpoint, the applied index, term and
// ConfState, raft log entries, a hard state and a truncation record. It
// returns the shard's raft storage.
func fillShard(t *testing.T, e *Engine, shard int) *RaftStorage {
	t.Helper()
	s := raftStorage(t, e, shard)
	appendEnts(t, e, s, mkEnts(1, 20, 2))
	raftCommit(t, e, func(b *RaftBatch) {
		hs := &pb.HardState{Term: new(uint64(2)), Vote: new(uint64(1)), Commit: new(uint64(20))}
		if err := b.SetHardState(s, hs); err != nil {
			t.Fatal(err)
		}
	})
	a := e.NewApply(shard)
	for _, err := range []error{
		a.Put([]byte("user"), []byte("u"), 10),
		a.PutIn(System, []byte("sys"), []byte("s"), 10),
		a.AppendFeed(FeedRecord{Index: 9, Op: FeedPut, Key: []byte("old"), Value: []byte("o")}),
		a.AppendFeed(FeedRecord{Index: 10, Op: FeedPut, Key: []byte("user"), Value: []byte("u")}),
		a.TrimFeed(9),
		a.CommitRaft(10, 2, &pb.ConfState{Voters: []uint64{1, 2, 3}}),
	} {
		if err != nil {
			t.Fatalf("shard %d: %v", shard, err)
		}
	}
	// Checkpoints have no writer yet: store one directly.
	if err := e.db.Set(shardKey(shard, kindCheckpoint, []byte("trigger")), []byte("cp"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	raftCommit(t, e, func(b *RaftBatch) {
		if err := b.Truncate(s, 5); err != nil {
			t.Fatal(err)
		}
	})
	return s
}

// shardKinds lists the key kinds present in shard.
func shardKinds(t *testing.T, e *Engine, shard int) []byte {
	t.Helper()
	var kinds []byte
	for _, r := range dumpShard(t, e, shard) {
		if !slices.Contains(kinds, r.K[0]) {
			kinds = append(kinds, r.K[0])
		}
	}
	return kinds
}

// withoutShard returns the entries of dump outside shard's key space.
func withoutShard(dump []rawEntry, shard int) []rawEntry {
	lo, hi := shardRange(shard)
	return slices.DeleteFunc(slices.Clone(dump), func(r rawEntry) bool {
		return r.K >= string(lo) && r.K < string(hi)
	})
}

func TestDropShard(t *testing.T) {
	for _, tc := range []struct {
		name      string
		shard     int
		neighbors []int
	}{
		{"first", 0, []int{1}},
		{"middle", 300, []int{299, 301, 300 + 256, 300 - 256}}, // also the same low byte
		{"last", MaxShards - 1, []int{MaxShards - 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t)
			if err := e.SetNodeMeta("id", []byte("n1")); err != nil {
				t.Fatal(err)
			}
			old := fillShard(t, e, tc.shard)
			others := map[int]*RaftStorage{}
			for _, n := range tc.neighbors {
				others[n] = fillShard(t, e, n)
			}
			want := []byte{kindMeta, kindCheckpoint, kindData, kindRaftEntry, kindFeed, kindRaftState, kindSystem}
			if got := shardKinds(t, e, tc.shard); !slices.Equal(got, want) {
				t.Fatalf("filled shard holds kinds %q; want %q", got, want)
			}
			before := dumpAll(t, e)

			if err := e.DropShard(tc.shard); err != nil {
				t.Fatal(err)
			}

			if got := dumpShard(t, e, tc.shard); len(got) != 0 {
				t.Fatalf("shard %d after DropShard holds %q", tc.shard, got)
			}
			if d := diffEntries(dumpAll(t, e), withoutShard(before, tc.shard)); d != "" {
				t.Fatalf("DropShard touched keys outside its shard:%s", d)
			}
			wantApplied(t, e, tc.shard, 0)
			wantAbsent(t, e, tc.shard, "user")
			if trimmed, err := e.FeedTrimmed(tc.shard); err != nil || trimmed != 0 {
				t.Fatalf("FeedTrimmed after drop = %d, %v", trimmed, err)
			}

			// A storage opened now is empty and can start a new replica.
			fresh := raftStorage(t, e, tc.shard)
			wantRaftBounds(t, fresh, 1, 0)
			hs, cs, err := fresh.InitialState()
			if err != nil || hs != nil || len(cs.GetVoters()) != 0 {
				t.Fatalf("InitialState after drop = %v, %v, %v; want none", hs, cs, err)
			}
			if _, err := fresh.Snapshot(); err == nil {
				t.Fatal("Snapshot of a dropped shard succeeded")
			}

			// The storage opened before is stale: it writes nothing.
			b := e.NewRaftBatch()
			if err := b.Append(old, mkEnts(21, 21, 2)); !errors.Is(err, ErrStaleRaftStorage) {
				t.Fatalf("Append through a stale storage: %v; want ErrStaleRaftStorage", err)
			}
			if err := b.SetHardState(old, &pb.HardState{Term: new(uint64(3))}); !errors.Is(err, ErrStaleRaftStorage) {
				t.Fatalf("SetHardState through a stale storage: %v; want ErrStaleRaftStorage", err)
			}
			b.Close()
			if err := old.Bootstrap(5, 5, nil); !errors.Is(err, ErrStaleRaftStorage) {
				t.Fatalf("Bootstrap through a stale storage: %v; want ErrStaleRaftStorage", err)
			}
			if got := dumpShard(t, e, tc.shard); len(got) != 0 {
				t.Fatalf("stale storage wrote %q", got)
			}

			// The neighbours' storages are not stale, and the fresh one works.
			raftCommit(t, e, func(b *RaftBatch) {
				for _, s := range others {
					mustAppend(t, b, s, mkEnts(21, 21, 2))
				}
			})
			if err := fresh.Bootstrap(5, 5, &pb.ConfState{Voters: []uint64{1}}); err != nil {
				t.Fatal(err)
			}
			appendEnts(t, e, fresh, mkEnts(6, 8, 6))
			wantRaftBounds(t, fresh, 6, 8)
			wantApplied(t, e, tc.shard, 5)
		})
	}
}

// TestDropShardStaleBatch: a batch that took a storage's writes before
// its shard was dropped fails at Commit and writes nothing, not even what
// it holds for other shards.
func TestDropShardStaleBatch(t *testing.T) {
	e := newEngine(t)
	s3, s4 := fillShard(t, e, 3), fillShard(t, e, 4)
	before := dumpShard(t, e, 4)
	b := e.NewRaftBatch()
	defer b.Close()
	mustAppend(t, b, s4, mkEnts(21, 22, 2))
	if err := b.SetHardState(s3, &pb.HardState{Term: new(uint64(9))}); err != nil {
		t.Fatal(err)
	}
	if err := e.DropShard(3); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); !errors.Is(err, ErrStaleRaftStorage) {
		t.Fatalf("Commit after the drop: %v; want ErrStaleRaftStorage", err)
	}
	if got := dumpShard(t, e, 3); len(got) != 0 {
		t.Fatalf("shard 3 after a stale commit holds %q", got)
	}
	if d := diffEntries(dumpShard(t, e, 4), before); d != "" {
		t.Fatalf("a failed commit wrote shard 4:%s", d)
	}
	wantRaftBounds(t, s4, 6, 20)
}

func TestDropShardInvalid(t *testing.T) {
	e := newEngine(t)
	for _, shard := range []int{-1, MaxShards} {
		if err := e.DropShard(shard); !errors.Is(err, ErrInvalidShard) {
			t.Fatalf("DropShard(%d) = %v; want ErrInvalidShard", shard, err)
		}
	}
	// Dropping a shard that holds nothing is fine.
	if err := e.DropShard(7); err != nil {
		t.Fatal(err)
	}
}

// TestCrashDropShardSurvives: DropShard is synced — after a crash the
// shard is still empty — and a crash loses it whole or not at all.
func TestCrashDropShardSurvives(t *testing.T) {
	fs := vfs.NewCrashableMem()
	e := openEngine(t, fs, "db")
	fillShard(t, e, 2)
	fillShard(t, e, 5)
	if err := e.SyncWAL(); err != nil {
		t.Fatal(err)
	}
	kept := dumpShard(t, e, 5)
	if err := e.DropShard(2); err != nil {
		t.Fatal(err)
	}
	e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
	if got := dumpShard(t, e2, 2); len(got) != 0 {
		t.Fatalf("dropped shard after a crash holds %q", got)
	}
	if d := diffEntries(dumpShard(t, e2, 5), kept); d != "" {
		t.Fatalf("shard 5 after a crash:%s", d)
	}
	wantRaftBounds(t, raftStorage(t, e2, 2), 1, 0)
}
