package kv

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// crashAndReopen simulates a machine crash of e's filesystem (only synced
// data survives) and opens the surviving database. The original engine is
// left open, as a crashed process would leave it; it is closed at cleanup.
func crashAndReopen(t *testing.T, fs *vfs.MemFS, dir string, e *Engine, cfg vfs.CrashCloneCfg) (*Engine, *vfs.MemFS) {
	t.Helper()
	clone := fs.CrashClone(cfg)
	t.Cleanup(func() { e.Close() })
	e2 := openEngine(t, clone, dir)
	t.Cleanup(func() { e2.Close() })
	return e2, clone
}

// roundTripEnts exercises what a stored raftpb.Entry keeps: every entry
// type (and none), nil, empty and large data, and extreme terms.
func roundTripEnts() []*pb.Entry {
	big := make([]byte, 100<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	return []*pb.Entry{
		{Index: new(uint64(1)), Term: new(uint64(0)), Type: new(pb.EntryType_EntryNormal), Data: []byte("hello")},
		{Index: new(uint64(2)), Term: new(uint64(1)), Type: new(pb.EntryType_EntryConfChange)}, // nil Data
		{Index: new(uint64(3)), Term: new(uint64(1)), Type: new(pb.EntryType_EntryConfChangeV2), Data: []byte{}},
		{Index: new(uint64(4)), Term: new(uint64(2)), Data: big}, // no Type
		{Index: new(uint64(5)), Term: new(uint64(1 << 63)), Type: new(pb.EntryType_EntryNormal), Data: []byte{0}},
		{Index: new(uint64(6)), Term: new(uint64(math.MaxUint64)), Type: new(pb.EntryType_EntryNormal), Data: []byte("x")},
	}
}

func TestCrashSyncedRaftStateSurvives(t *testing.T) {
	fs := vfs.NewCrashableMem()
	const dir = "node1/data/db" // nested, not yet existing directories
	e := openEngine(t, fs, dir)
	s1, s2 := raftStorage(t, e, 1), raftStorage(t, e, 2)
	ents := roundTripEnts()
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, s1, ents)
		mustAppend(t, b, s2, mkEnts(1, 50, 4))
	})
	raftCommit(t, e, func(b *RaftBatch) {
		hs := &pb.HardState{Term: new(uint64(5)), Vote: new(uint64(2)), Commit: new(uint64(3))}
		if err := b.SetHardState(s1, hs); err != nil {
			t.Fatal(err)
		}
	})
	// Truncation discards only applied entries; the synced truncation also
	// makes this unsynced step durable.
	commitRaft(t, e, 2, 20, 4, nil)
	raftCommit(t, e, func(b *RaftBatch) {
		if err := b.Truncate(s2, 20); err != nil {
			t.Fatal(err)
		}
	})

	e2, _ := crashAndReopen(t, fs, dir, e, vfs.CrashCloneCfg{})

	r1 := raftStorage(t, e2, 1)
	wantRaftBounds(t, r1, 1, uint64(len(ents)))
	wantEntries(t, r1, 1, uint64(len(ents))+1, ents)
	for _, ent := range ents {
		wantTerm(t, r1, ent.GetIndex(), ent.GetTerm())
	}
	hs, _, err := r1.InitialState()
	if err != nil || hs.GetTerm() != 5 || hs.GetVote() != 2 || hs.GetCommit() != 3 {
		t.Fatalf("hard state after crash = %v, %v; want term 5, vote 2, commit 3", hs, err)
	}
	r2 := raftStorage(t, e2, 2)
	wantRaftBounds(t, r2, 21, 50)
	wantTerm(t, r2, 20, 4)
	wantEntries(t, r2, 21, 51, mkEnts(21, 50, 4))
	if got := rawEntryIndexes(t, e2, 2); !slices.Equal(got, seq(21, 50)) {
		t.Fatalf("shard 2 stored indexes after crash %v", got)
	}
	if hs, _, err := r2.InitialState(); err != nil || hs.GetVote() != 0 || hs.GetCommit() != 20 {
		t.Fatalf("shard 2 hard state after crash = %v, %v", hs, err)
	}
}

func TestCrashRestoreSurvives(t *testing.T) {
	fs := vfs.NewCrashableMem()
	e := openEngine(t, fs, "db")
	snap := buildSnapshot(snapEntry{kindMeta, "applied", string(beBytes(9))},
		snapEntry{kindData, "k", record(3, "v")})
	if err := e.RestoreShard(4, bytesReader(snap)); err != nil {
		t.Fatal(err)
	}
	e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
	wantApplied(t, e2, 4, 9)
	wantRecord(t, e2, 4, "k", "v", 3)
}

// checkApplyAtomic checks that shard's data matches its applied index: the
// Apply committed as batch n (1-based) wrote "n" to each of its own keys and
// to shared keys.
func checkApplyAtomic(t *testing.T, e *Engine, shard int, applied uint64, keysPerBatch int) {
	t.Helper()
	for _, p := range scanAll(t, e, shard, nil, nil) {
		n, err := strconv.ParseUint(strings.SplitN(p.Value, "|", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("shard %d key %q: bad value %q", shard, p.Key, p.Value)
		}
		if n > applied {
			t.Errorf("shard %d key %q holds batch %d > applied %d", shard, p.Key, n, applied)
		}
		if p.Version != n {
			t.Errorf("shard %d key %q: version %d, value of batch %d", shard, p.Key, p.Version, n)
		}
		if strings.HasPrefix(p.Key, "shared-") && n != applied {
			t.Errorf("shard %d shared key %q holds batch %d; applied is %d", shard, p.Key, n, applied)
		}
	}
	for n := uint64(1); n <= applied; n++ {
		for i := 0; i < keysPerBatch; i++ {
			key := fmt.Sprintf("b%04d-k%d", n, i)
			rec, ok, err := e.Get(shard, []byte(key))
			if err != nil || !ok || !strings.HasPrefix(string(rec.Value), strconv.FormatUint(n, 10)+"|") {
				t.Fatalf("shard %d applied %d but %q = %q, %v, %v", shard, applied, key, rec.Value, ok, err)
			}
		}
	}
	if applied > 0 {
		for i := 0; i < 3; i++ {
			wantRecord(t, e, shard, fmt.Sprintf("shared-%d", i), sharedValue(applied), applied)
		}
	}
}

func sharedValue(n uint64) string { return strconv.FormatUint(n, 10) + "|shared" }

// writeBatches commits batches from..to to shard. Each sets keysPerBatch
// keys of its own and three shared keys, with ~1 KiB values so that batches
// span many filesystem blocks.
func writeBatches(t *testing.T, e *Engine, shard int, from, to uint64, keysPerBatch int) {
	t.Helper()
	pad := strings.Repeat("p", 1000)
	for n := from; n <= to; n++ {
		apply(t, e, shard, n, func(a *Apply) {
			for i := 0; i < keysPerBatch; i++ {
				v := strconv.FormatUint(n, 10) + "|" + pad
				if err := a.Put([]byte(fmt.Sprintf("b%04d-k%d", n, i)), []byte(v), n); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 3; i++ {
				if err := a.Put([]byte(fmt.Sprintf("shared-%d", i)), []byte(sharedValue(n)), n); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestCrashUnsyncedApply(t *testing.T) {
	t.Run("lost without sync", func(t *testing.T) {
		// This checks the harness as much as the engine: if unsynced
		// commits survived a zero-config crash clone, the SyncWAL test
		// below would prove nothing.
		fs := vfs.NewCrashableMem()
		e := openEngine(t, fs, "db")
		writeBatches(t, e, 1, 1, 3, 2)
		e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
		wantApplied(t, e2, 1, 0)
		checkApplyAtomic(t, e2, 1, 0, 2)
	})

	t.Run("SyncWAL makes it durable", func(t *testing.T) {
		fs := vfs.NewCrashableMem()
		e := openEngine(t, fs, "db")
		writeBatches(t, e, 1, 1, 3, 2)
		writeBatches(t, e, 2, 1, 2, 2)
		if err := e.SyncWAL(); err != nil {
			t.Fatal(err)
		}
		writeBatches(t, e, 1, 4, 5, 2) // after the sync: may be lost
		e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
		wantApplied(t, e2, 1, 3)
		checkApplyAtomic(t, e2, 1, 3, 2)
		wantApplied(t, e2, 2, 2)
		checkApplyAtomic(t, e2, 2, 2, 2)
	})

	t.Run("a later synced Raft write makes it durable", func(t *testing.T) {
		// Every shard shares one WAL: a synced raft commit persists the
		// unsynced batches committed before it.
		for _, syncer := range []string{"Append", "SetHardState", "Truncate"} {
			t.Run(syncer, func(t *testing.T) {
				fs := vfs.NewCrashableMem()
				e := openEngine(t, fs, "db")
				rs := raftStorage(t, e, 9)
				commitRaft(t, e, 9, 1, 1, nil) // made durable by the append
				appendEnts(t, e, rs, mkEnts(1, 2, 1))
				writeBatches(t, e, 1, 1, 4, 2)
				raftCommit(t, e, func(b *RaftBatch) {
					var err error
					switch syncer {
					case "Append":
						err = b.Append(rs, mkEnts(3, 3, 1))
					case "SetHardState":
						err = b.SetHardState(rs, &pb.HardState{Term: new(uint64(1)), Commit: new(uint64(2))})
					case "Truncate":
						err = b.Truncate(rs, 1)
					}
					if err != nil {
						t.Fatal(err)
					}
					if b.Empty() {
						t.Fatal("syncer wrote nothing")
					}
				})
				e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
				wantApplied(t, e2, 1, 4)
				checkApplyAtomic(t, e2, 1, 4, 2)
				// The syncer itself survived too.
				r := raftStorage(t, e2, 9)
				switch syncer {
				case "Append":
					wantRaftBounds(t, r, 1, 3)
					wantEntries(t, r, 1, 4, mkEnts(1, 3, 1))
				case "SetHardState":
					wantRaftBounds(t, r, 1, 2)
					if hs, _, err := r.InitialState(); err != nil || hs.GetTerm() != 1 || hs.GetCommit() != 2 {
						t.Fatalf("hard state after crash = %v, %v", hs, err)
					}
				case "Truncate":
					wantRaftBounds(t, r, 2, 2)
					wantTerm(t, r, 1, 1)
				}
			})
		}
	})
}

// TestCrashApplyAtomic crashes with half of the unsynced blocks and
// directory entries surviving at random: every shard's applied index must
// still describe its data exactly, and nothing synced may be lost.
func TestCrashApplyAtomic(t *testing.T) {
	shards := []int{1, 2, 300}
	const keysPerBatch = 4
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			fs := vfs.NewCrashableMem()
			e := openEngine(t, fs, "db")
			// The log is a shard of its own: RaftStorage resets a log that
			// does not hold its shard's applied index, and these steps are
			// not tied to log entries.
			const logShard = 7
			rs := raftStorage(t, e, logShard)
			durable := map[int]uint64{} // applied index known to be synced
			next := map[int]uint64{}
			var logIndex uint64
			for round := 0; round < 12; round++ {
				for _, s := range shards {
					k := uint64(rng.IntN(5))
					writeBatches(t, e, s, next[s]+1, next[s]+k, keysPerBatch)
					next[s] += k
				}
				switch rng.IntN(4) {
				case 0:
					if err := e.SyncWAL(); err != nil {
						t.Fatal(err)
					}
					for _, s := range shards {
						durable[s] = next[s]
					}
				case 1:
					logIndex++
					appendEnts(t, e, rs, mkEnts(logIndex, logIndex, 1))
					for _, s := range shards {
						durable[s] = next[s]
					}
				}
			}
			e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng})
			for _, s := range shards {
				a, err := e2.Applied(s)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("shard %d: committed %d, synced %d, recovered %d", s, next[s], durable[s], a)
				if a < durable[s] || a > next[s] {
					t.Fatalf("shard %d recovered applied %d; want within [synced %d, committed %d]",
						s, a, durable[s], next[s])
				}
				checkApplyAtomic(t, e2, s, a, keysPerBatch)
			}
			// Every log append was synced: all of them survive, and no more.
			r := raftStorage(t, e2, logShard)
			wantRaftBounds(t, r, 1, logIndex)
			wantEntries(t, r, 1, logIndex+1, mkEnts(1, logIndex, 1))
		})
	}
}

// TestCrashIngestSnapshot crashes a node's file system around a snapshot
// install (IngestSnapshot, then the batch with the hard state and new
// entries): before the ingest the old state survives whole; after it the
// snapshot survives whole, with an empty log at its index, and the hard
// state written before it is raised to the snapshot's commit and term.
func TestCrashIngestSnapshot(t *testing.T) {
	src := newEngine(t)
	cs := &pb.ConfState{Voters: []uint64{1, 2, 3}}
	a := src.NewApply(7)
	for i := range 100 {
		if err := a.Put(fmt.Appendf(nil, "new%03d", i), []byte("v"), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.CommitRaft(40, 6, cs); err != nil {
		t.Fatal(err)
	}
	data, meta := raftSnapshotOf(t, src, 7)

	for _, stage := range []string{"staged", "ingested", "hard state written"} {
		t.Run(stage, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			const dir = "node/db"
			e := openEngine(t, fs, dir)
			s := raftStorage(t, e, 7)
			put(t, e, 7, 10, kvPair{"old", "x", 1})
			raftCommit(t, e, func(b *RaftBatch) {
				mustAppend(t, b, s, mkEnts(1, 12, 2))
				if err := b.SetHardState(s, &pb.HardState{Term: new(uint64(2)), Vote: new(uint64(3)), Commit: new(uint64(10))}); err != nil {
					t.Fatal(err)
				}
			})
			if err := s.StageSnapshot("node/snap.sst", meta, bytesReader(data)); err != nil {
				t.Fatal(err)
			}
			if stage != "staged" {
				if _, err := s.IngestSnapshot("node/snap.sst", meta); err != nil {
					t.Fatal(err)
				}
			}
			if stage == "hard state written" {
				raftCommit(t, e, func(b *RaftBatch) {
					if err := b.SetHardState(s, &pb.HardState{Term: new(uint64(7)), Vote: new(uint64(1)), Commit: new(uint64(40))}); err != nil {
						t.Fatal(err)
					}
				})
			}
			e2, _ := crashAndReopen(t, fs, dir, e, vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
			s2 := raftStorage(t, e2, 7)
			hs, _, err := s2.InitialState()
			if err != nil {
				t.Fatal(err)
			}
			if stage == "staged" {
				wantRecord(t, e2, 7, "old", "x", 1)
				wantAbsent(t, e2, 7, "new000")
				wantRaftBounds(t, s2, 1, 12)
				if hs.GetTerm() != 2 || hs.GetVote() != 3 || hs.GetCommit() != 10 {
					t.Fatalf("hard state %v; want the old one", hs)
				}
				return
			}
			wantAbsent(t, e2, 7, "old")
			for i := range 100 {
				wantRecord(t, e2, 7, fmt.Sprintf("new%03d", i), "v", uint64(i+1))
			}
			wantApplied(t, e2, 7, 40)
			wantRaftBounds(t, s2, 41, 40)
			wantTerm(t, s2, 40, 6)
			want := &pb.HardState{Term: new(uint64(6)), Vote: new(uint64(0)), Commit: new(uint64(40))}
			if stage == "hard state written" {
				want = &pb.HardState{Term: new(uint64(7)), Vote: new(uint64(1)), Commit: new(uint64(40))}
			}
			if hs.GetTerm() != want.GetTerm() || hs.GetVote() != want.GetVote() || hs.GetCommit() != want.GetCommit() {
				t.Fatalf("hard state %v; want %v", hs, want)
			}
		})
	}
}
