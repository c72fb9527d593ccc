package kv

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	raft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestOpenRequiresDir(t *testing.T) {
	if _, err := Open(Config{FS: vfs.NewMem()}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
}

func TestApplyPutGetDelete(t *testing.T) {
	e := newEngine(t)
	const shard = 3

	t.Run("missing key", func(t *testing.T) {
		wantAbsent(t, e, shard, "k1")
		wantApplied(t, e, shard, 0)
	})

	t.Run("put", func(t *testing.T) {
		put(t, e, shard, 10,
			kvPair{"k1", "v1", 1},
			kvPair{"k2", "v2", 7},
			kvPair{"", "empty key", 2},
			kvPair{"empty value", "", 3},
			kvPair{"max version", "m", math.MaxUint64},
			kvPair{"zero version", "z", 0},
			kvPair{"bin\x00\xff", "\x00\x01\xff", 9},
		)
		wantRecord(t, e, shard, "k1", "v1", 1)
		wantRecord(t, e, shard, "k2", "v2", 7)
		wantRecord(t, e, shard, "", "empty key", 2)
		wantRecord(t, e, shard, "empty value", "", 3)
		wantRecord(t, e, shard, "max version", "m", math.MaxUint64)
		wantRecord(t, e, shard, "zero version", "z", 0)
		wantRecord(t, e, shard, "bin\x00\xff", "\x00\x01\xff", 9)
		wantAbsent(t, e, shard, "k3")
		wantAbsent(t, e, shard, "k") // prefix of a stored key
		wantApplied(t, e, shard, 10)
	})

	t.Run("overwrite and delete", func(t *testing.T) {
		apply(t, e, shard, 11, func(a *Apply) {
			if err := a.Put([]byte("k1"), []byte("v1b"), 2); err != nil {
				t.Fatal(err)
			}
			if err := a.Delete([]byte("k2")); err != nil {
				t.Fatal(err)
			}
			if err := a.Delete([]byte("never existed")); err != nil {
				t.Fatal(err)
			}
		})
		wantRecord(t, e, shard, "k1", "v1b", 2)
		wantAbsent(t, e, shard, "k2")
		wantAbsent(t, e, shard, "never existed")
		wantApplied(t, e, shard, 11)
	})

	t.Run("put then delete in one batch", func(t *testing.T) {
		apply(t, e, shard, 12, func(a *Apply) {
			_ = a.Put([]byte("tmp"), []byte("x"), 1)
			_ = a.Delete([]byte("tmp"))
			_ = a.Delete([]byte("k1"))
			_ = a.Put([]byte("k1"), []byte("v1c"), 3)
		})
		wantAbsent(t, e, shard, "tmp")
		wantRecord(t, e, shard, "k1", "v1c", 3)
	})

	t.Run("returned value is a copy", func(t *testing.T) {
		rec, _, _ := e.Get(shard, []byte("k1"))
		rec.Value[0] = 'X'
		wantRecord(t, e, shard, "k1", "v1c", 3)
	})

	t.Run("caller may reuse buffers after Put", func(t *testing.T) {
		k, v := []byte("reuse"), []byte("orig")
		apply(t, e, shard, 13, func(a *Apply) {
			if err := a.Put(k, v, 5); err != nil {
				t.Fatal(err)
			}
			copy(k, "XXXXX")
			copy(v, "YYYY")
		})
		wantRecord(t, e, shard, "reuse", "orig", 5)
		wantAbsent(t, e, shard, "XXXXX")
	})
}

func TestApplySeesOwnWrites(t *testing.T) {
	e := newEngine(t)
	const shard = 1
	put(t, e, shard, 1, kvPair{"old", "o", 1}, kvPair{"gone", "g", 1})

	a := e.NewApply(shard)
	defer a.Close()
	get := func(key string) (Record, bool) {
		t.Helper()
		rec, ok, err := a.Get([]byte(key))
		if err != nil {
			t.Fatalf("Apply.Get(%q): %v", key, err)
		}
		return rec, ok
	}

	if rec, ok := get("old"); !ok || string(rec.Value) != "o" || rec.Version != 1 {
		t.Fatalf("Apply.Get(old) = %q@%d %v; want committed value", rec.Value, rec.Version, ok)
	}
	if err := a.Put([]byte("new"), []byte("n"), 4); err != nil {
		t.Fatal(err)
	}
	if err := a.Put([]byte("old"), []byte("o2"), 2); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete([]byte("gone")); err != nil {
		t.Fatal(err)
	}
	if rec, ok := get("new"); !ok || string(rec.Value) != "n" || rec.Version != 4 {
		t.Fatalf("Apply.Get(new) = %q@%d %v; want n@4", rec.Value, rec.Version, ok)
	}
	if rec, ok := get("old"); !ok || string(rec.Value) != "o2" || rec.Version != 2 {
		t.Fatalf("Apply.Get(old) = %q@%d %v; want o2@2", rec.Value, rec.Version, ok)
	}
	if _, ok := get("gone"); ok {
		t.Fatal("Apply.Get(gone) found a key the Apply deleted")
	}

	// Nothing is visible outside the Apply before Commit.
	wantAbsent(t, e, shard, "new")
	wantRecord(t, e, shard, "old", "o", 1)
	wantRecord(t, e, shard, "gone", "g", 1)
	wantApplied(t, e, shard, 1)

	if err := a.Commit(2); err != nil {
		t.Fatal(err)
	}
	wantRecord(t, e, shard, "new", "n", 4)
	wantRecord(t, e, shard, "old", "o2", 2)
	wantAbsent(t, e, shard, "gone")
	wantApplied(t, e, shard, 2)
}

func TestApplyCommitWritesApplied(t *testing.T) {
	for _, applied := range []uint64{0, 1, 255, 256, 1 << 40, math.MaxUint64} {
		e := newEngine(t)
		apply(t, e, 9, applied, nil) // a Commit with no writes still records applied
		wantApplied(t, e, 9, applied)
	}

	t.Run("applied follows the last commit", func(t *testing.T) {
		e := newEngine(t)
		for _, n := range []uint64{5, 6, 100} {
			put(t, e, 2, n, kvPair{"k", "v", n})
			wantApplied(t, e, 2, n)
		}
	})
}

func TestApplyCloseWithoutCommit(t *testing.T) {
	e := newEngine(t)
	const shard = 4
	put(t, e, shard, 7, kvPair{"keep", "k", 1})
	before := dumpAll(t, e)

	a := e.NewApply(shard)
	_ = a.Put([]byte("new"), []byte("n"), 1)
	_ = a.Put([]byte("keep"), []byte("changed"), 2)
	_ = a.Delete([]byte("keep"))
	a.Close()
	a.Close() // idempotent

	if d := diffEntries(dumpAll(t, e), before); d != "" {
		t.Fatalf("closed Apply changed the engine:%s", d)
	}
	wantApplied(t, e, shard, 7)

	t.Run("use after Close fails", func(t *testing.T) {
		if err := a.Commit(8); err == nil {
			t.Error("Commit after Close succeeded")
		}
		if err := a.Put([]byte("x"), []byte("y"), 1); err == nil {
			t.Error("Put after Close succeeded")
		}
		if err := a.Delete([]byte("keep")); err == nil {
			t.Error("Delete after Close succeeded")
		}
		if _, _, err := a.Get([]byte("keep")); err == nil {
			t.Error("Get after Close succeeded")
		}
		if d := diffEntries(dumpAll(t, e), before); d != "" {
			t.Fatalf("closed Apply changed the engine:%s", d)
		}
		// A fresh Apply must not see anything of the closed one (its batch
		// may have been recycled).
		b := e.NewApply(shard)
		defer b.Close()
		if _, ok, err := b.Get([]byte("x")); ok || err != nil {
			t.Fatalf("fresh Apply sees x: ok %v err %v", ok, err)
		}
	})

	t.Run("use after Commit fails", func(t *testing.T) {
		b := e.NewApply(shard)
		if err := b.Commit(9); err != nil {
			t.Fatal(err)
		}
		b.Close() // no-op
		if err := b.Commit(10); err == nil {
			t.Error("second Commit succeeded")
		}
		if err := b.Put([]byte("late"), []byte("l"), 1); err == nil {
			t.Error("Put after Commit succeeded")
		}
		wantApplied(t, e, shard, 9)
		wantAbsent(t, e, shard, "late")
	})
}

func TestShardIsolation(t *testing.T) {
	e := newEngine(t)
	// 1 and 256 differ only in which byte of the id is set.
	shards := []int{0, 1, 255, 256, 65535}
	rs := raftStorage(t, e, 1) // before shard 1 has an applied index
	for i, s := range shards {
		put(t, e, s, uint64(100+i), kvPair{"k", "v" + string(rune('a'+i)), uint64(i + 1)},
			kvPair{"only-" + string(rune('a'+i)), "x", 1})
	}
	// Raft state of one shard must not leak into any shard's records.
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, rs, mkEnts(1, 3, 1))
		if err := b.SetHardState(rs, &pb.HardState{Term: new(uint64(1)), Vote: new(uint64(2)), Commit: new(uint64(3))}); err != nil {
			t.Fatal(err)
		}
	})

	for i, s := range shards {
		wantRecord(t, e, s, "k", "v"+string(rune('a'+i)), uint64(i+1))
		wantApplied(t, e, s, uint64(100+i))
		got := scanAll(t, e, s, nil, nil)
		want := []kvPair{{"k", "v" + string(rune('a'+i)), uint64(i + 1)}, {"only-" + string(rune('a'+i)), "x", 1}}
		if !slices.Equal(got, want) {
			t.Errorf("shard %d scan = %v; want %v", s, got, want)
		}
	}

	t.Run("delete in one shard", func(t *testing.T) {
		apply(t, e, 65535, 200, func(a *Apply) { _ = a.Delete([]byte("k")) })
		wantAbsent(t, e, 65535, "k")
		for i, s := range shards[:len(shards)-1] {
			wantRecord(t, e, s, "k", "v"+string(rune('a'+i)), uint64(i+1))
		}
	})

	t.Run("unused shard", func(t *testing.T) {
		wantAbsent(t, e, 2, "k")
		wantApplied(t, e, 2, 0)
		if got := scanAll(t, e, 2, nil, nil); len(got) != 0 {
			t.Fatalf("unused shard scan = %v", got)
		}
	})
}

func TestInvalidShard(t *testing.T) {
	e := newEngine(t)
	// Shards that alias valid ones if the id is truncated to 16 bits.
	put(t, e, 0, 1, kvPair{"k", "zero", 1})
	put(t, e, 65535, 1, kvPair{"k", "max", 1})
	before := dumpAll(t, e)
	snap := buildSnapshot(snapEntry{kindData, "k", record(1, "evil")})

	for _, shard := range []int{-1, -65536, 65536, 65537, 1 << 20, math.MaxInt, math.MinInt} {
		t.Run("", func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrInvalidShard) {
					t.Errorf("shard %d: %s: err = %v; want ErrInvalidShard", shard, what, err)
				}
			}
			_, _, err := e.Get(shard, []byte("k"))
			check("Get", err)
			_, err = e.Applied(shard)
			check("Applied", err)
			check("Scan", e.Scan(shard, nil, nil, func(k, v []byte, ver uint64) bool { return true }))
			_, err = e.RaftStorage(shard)
			check("RaftStorage", err)
			_, err = e.SnapshotShard(shard)
			check("SnapshotShard", err)
			check("RestoreShard", e.RestoreShard(shard, bytesReader(snap)))

			r := e.NewReader()
			_, _, err = r.Get(shard, []byte("k"))
			check("Reader.Get", err)
			_, err = r.Applied(shard)
			check("Reader.Applied", err)
			check("Reader.Scan", r.Scan(shard, nil, nil, func(k, v []byte, ver uint64) bool { return true }))
			_, _, err = r.GetIn(shard, System, []byte("k"))
			check("Reader.GetIn", err)
			check("Reader.ScanIn", r.ScanIn(shard, System, nil, nil, func(k, v []byte, ver uint64) bool { return true }))
			r.Close()
			_, _, err = e.GetIn(shard, System, []byte("k"))
			check("GetIn", err)
			check("ScanIn", e.ScanIn(shard, System, nil, nil, func(k, v []byte, ver uint64) bool { return true }))

			a := e.NewApply(shard)
			_, _, err = a.Get([]byte("k"))
			check("Apply.Get", err)
			check("Apply.Put", a.Put([]byte("k"), []byte("evil"), 9))
			check("Apply.Delete", a.Delete([]byte("k")))
			check("Apply.PutIn", a.PutIn(System, []byte("k"), []byte("evil"), 9))
			check("Apply.DeleteIn", a.DeleteIn(System, []byte("k")))
			_, _, err = a.GetIn(System, []byte("k"))
			check("Apply.GetIn", err)
			check("Apply.Commit", a.Commit(99))
			a.Close()

			if d := diffEntries(dumpAll(t, e), before); d != "" {
				t.Fatalf("shard %d: invalid shard changed the engine:%s", shard, d)
			}
		})
	}
}

func TestScan(t *testing.T) {
	e := newEngine(t)
	const shard = 256
	keys := []string{"", "a", "a\x00", "ab", "b", "z", "\xfe\xff", "\xff", "\xff\x00", "\xff\xff", "\xff\xff\xff"}
	var pairs []kvPair
	for i, k := range keys {
		pairs = append(pairs, kvPair{k, "v" + k, uint64(i + 1)})
	}
	rs := raftStorage(t, e, shard) // before the shard has an applied index
	put(t, e, shard, 1, pairs...)
	// Neighbours in key order: the previous and next shard, and this shard's
	// raft log and replica state, which sort after its records.
	put(t, e, shard-1, 1, kvPair{"\xff\xff\xff\xff", "prev shard", 1})
	put(t, e, shard+1, 1, kvPair{"", "next shard", 1}, kvPair{"a", "next shard", 1})
	raftCommit(t, e, func(b *RaftBatch) {
		mustAppend(t, b, rs, mkEnts(1, 2, 1))
		if err := b.SetHardState(rs, &pb.HardState{Term: new(uint64(1)), Commit: new(uint64(1))}); err != nil {
			t.Fatal(err)
		}
	})

	rng := func(lo, hi int) []kvPair { return pairs[lo:hi] }
	tests := []struct {
		name       string
		start, end []byte
		want       []kvPair
	}{
		{"all", nil, nil, pairs},
		{"empty start", []byte{}, nil, pairs},
		{"from a", []byte("a"), nil, rng(1, len(pairs))},
		{"a to b", []byte("a"), []byte("b"), rng(1, 4)},
		{"end is exclusive", []byte("a"), []byte("ab"), rng(1, 3)},
		{"start is inclusive", []byte("ab"), []byte("ab\x00"), rng(3, 4)},
		{"between keys", []byte("a\x01"), []byte("aa"), nil},
		{"to 0xff", nil, []byte("\xff"), rng(0, 7)},
		{"from 0xff", []byte("\xff"), nil, rng(7, len(pairs))},
		{"0xff to 0xff 0xff", []byte("\xff"), []byte("\xff\xff"), rng(7, 9)},
		{"from 0xff 0xff 0xff", []byte("\xff\xff\xff"), nil, rng(10, 11)},
		{"past every key", []byte("\xff\xff\xff\x00"), nil, nil},
		{"start == end", []byte("a"), []byte("a"), nil},
		{"start > end", []byte("z"), []byte("a"), nil},
		{"empty end", nil, []byte{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := scanAll(t, e, shard, tc.start, tc.end)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Scan(%v, %v) =\n %v\nwant\n %v", tc.start, tc.end, got, tc.want)
			}
		})
	}

	t.Run("early stop", func(t *testing.T) {
		for stopAfter := 1; stopAfter <= 3; stopAfter++ {
			var got []string
			err := e.Scan(shard, nil, nil, func(k, v []byte, ver uint64) bool {
				got = append(got, string(k))
				return len(got) < stopAfter
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := keys[:stopAfter]; !slices.Equal(got, want) {
				t.Fatalf("stop after %d: got %q; want %q", stopAfter, got, want)
			}
		}
	})
}

func TestReaderPointInTime(t *testing.T) {
	e := newEngine(t)
	put(t, e, 1, 1, kvPair{"k", "v1", 1}, kvPair{"del", "d", 1})
	put(t, e, 2, 5, kvPair{"other", "o", 1})

	r := e.NewReader()
	defer r.Close()

	apply(t, e, 1, 2, func(a *Apply) {
		_ = a.Put([]byte("k"), []byte("v2"), 2)
		_ = a.Put([]byte("new"), []byte("n"), 1)
		_ = a.Delete([]byte("del"))
	})
	put(t, e, 2, 6, kvPair{"other", "o2", 2})
	// Restores are writes too.
	if err := e.RestoreShard(3, bytesReader(buildSnapshot(snapEntry{kindData, "r", record(1, "x")}))); err != nil {
		t.Fatal(err)
	}

	wantRecord(t, r, 1, "k", "v1", 1)
	wantRecord(t, r, 1, "del", "d", 1)
	wantAbsent(t, r, 1, "new")
	wantApplied(t, r, 1, 1)
	wantRecord(t, r, 2, "other", "o", 1)
	wantApplied(t, r, 2, 5)
	wantAbsent(t, r, 3, "r")
	if got, want := scanAll(t, r, 1, nil, nil), []kvPair{{"del", "d", 1}, {"k", "v1", 1}}; !slices.Equal(got, want) {
		t.Fatalf("Reader scan = %v; want %v", got, want)
	}

	// The engine itself sees the new state.
	wantRecord(t, e, 1, "k", "v2", 2)
	wantAbsent(t, e, 1, "del")
	wantApplied(t, e, 1, 2)
	wantRecord(t, e, 3, "r", "x", 1)
}

// TestCorruptRecord stores records too short to hold a version through the
// one public path that writes raw values: a (checksummed, well-formed)
// snapshot stream.
func TestCorruptRecord(t *testing.T) {
	e := newEngine(t)
	const shard = 6
	snap := buildSnapshot(
		snapEntry{kindMeta, "applied", "abc"}, // not 8 bytes
		snapEntry{kindData, "a-good", record(1, "fine")},
		snapEntry{kindData, "b-short", "1234567"}, // 7 bytes: no version
		snapEntry{kindData, "c-empty", ""},
		snapEntry{kindData, "d-good", record(2, "")},
	)
	if err := e.RestoreShard(shard, bytesReader(snap)); err != nil {
		t.Fatal(err)
	}

	for _, key := range []string{"b-short", "c-empty"} {
		t.Run(key, func(t *testing.T) {
			if _, _, err := e.Get(shard, []byte(key)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Engine.Get err = %v; want ErrCorrupt", err)
			}
			r := e.NewReader()
			if _, _, err := r.Get(shard, []byte(key)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Reader.Get err = %v; want ErrCorrupt", err)
			}
			r.Close()
			a := e.NewApply(shard)
			if _, _, err := a.Get([]byte(key)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Apply.Get err = %v; want ErrCorrupt", err)
			}
			a.Close()
		})
	}

	wantRecord(t, e, shard, "a-good", "fine", 1)
	wantRecord(t, e, shard, "d-good", "", 2)

	t.Run("scan stops at the corrupt record", func(t *testing.T) {
		var seen []string
		err := e.Scan(shard, nil, nil, func(k, v []byte, ver uint64) bool {
			seen = append(seen, string(k))
			return true
		})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Scan err = %v; want ErrCorrupt", err)
		}
		if !slices.Equal(seen, []string{"a-good"}) {
			t.Fatalf("Scan delivered %q before failing; want [a-good]", seen)
		}
		// A range that avoids the bad records is fine.
		if got := scanAll(t, e, shard, []byte("d"), nil); !slices.Equal(got, []kvPair{{"d-good", "", 2}}) {
			t.Fatalf("Scan(d..) = %v", got)
		}
	})

	t.Run("applied", func(t *testing.T) {
		if _, err := e.Applied(shard); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Applied err = %v; want ErrCorrupt", err)
		}
		r := e.NewReader()
		defer r.Close()
		if _, err := r.Applied(shard); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Reader.Applied err = %v; want ErrCorrupt", err)
		}
		s, err := e.SnapshotShard(shard)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Applied(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ShardSnapshot.Applied err = %v; want ErrCorrupt", err)
		}
	})
}

func TestEngineReopen(t *testing.T) {
	fs := vfs.NewMem()
	e := openEngine(t, fs, "a/b/db")
	appendEnts(t, e, raftStorage(t, e, 1), mkEnts(1, 3, 1))
	put(t, e, 1, 3, kvPair{"k", "v", 2})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, fs, "a/b/db")
	defer e.Close()
	wantRecord(t, e, 1, "k", "v", 2)
	wantApplied(t, e, 1, 3)
	rs := raftStorage(t, e, 1)
	wantRaftBounds(t, rs, 1, 3)
	wantEntries(t, rs, 1, 4, mkEnts(1, 3, 1))
}

// TestConcurrentUse runs Applies on several shards, readers, and a Raft
// log with appends and compaction racing a log reader, all at once
// (meaningful under -race).
func TestConcurrentUse(t *testing.T) {
	e := newEngine(t)
	const shards, batches = 4, 50
	const logShard = 100
	rs := raftStorage(t, e, logShard)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for s := 0; s < shards; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := uint64(1); n <= batches; n++ {
				a := e.NewApply(s)
				if err := a.Put([]byte("k"), []byte(strconv.FormatUint(n, 10)), n); err != nil {
					errs <- err
					return
				}
				if err := a.Commit(n); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// Readers: a Reader's applied index and record always agree.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			r := e.NewReader()
			for s := 0; s < shards; s++ {
				a, err := r.Applied(s)
				if err != nil {
					errs <- err
					break
				}
				rec, ok, err := r.Get(s, []byte("k"))
				if err != nil || ok != (a > 0) || (ok && rec.Version != a) {
					errs <- fmt.Errorf("shard %d: reader applied %d but record %v@%d (ok %v, err %v)", s, a, rec.Value, rec.Version, ok, err)
				}
			}
			r.Close()
		}
	}()
	// Raft log: appends, and compaction trailing behind them, from one
	// writer (a storage takes one RaftBatch at a time); a reader checks
	// each appended entry while later batches commit.
	appended := make(chan uint64, 1000)
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(appended)
		for i := uint64(1); i <= 200; i++ {
			b := e.NewRaftBatch()
			err := b.Append(rs, mkEnts(i, i, 1))
			if err == nil && i%10 == 0 {
				// Compaction discards applied entries only.
				err = e.NewApply(logShard).CommitRaft(i, 1, nil)
				if err == nil {
					err = b.Truncate(rs, i-5)
				}
			}
			if err == nil {
				err = b.Commit(true)
			}
			b.Close()
			if err != nil {
				errs <- fmt.Errorf("raft write %d: %v", i, err)
				return
			}
			appended <- i
		}
	}()
	go func() {
		defer wg.Done()
		for i := range appended {
			if last, _ := rs.LastIndex(); last < i {
				errs <- fmt.Errorf("LastIndex %d after %d was appended", last, i)
			}
			ents, err := rs.Entries(i, i+1, math.MaxUint64)
			if err == raft.ErrCompacted {
				// Only if a later batch has truncated it since.
				if first, _ := rs.FirstIndex(); first <= i {
					errs <- fmt.Errorf("Entries(%d): ErrCompacted but first index %d", i, first)
				}
				continue
			}
			if err != nil || len(ents) != 1 || !proto.Equal(ents[0], mkEnts(i, i, 1)[0]) {
				errs <- fmt.Errorf("Entries(%d) = %s, %v", i, fmtEnts(ents), err)
			}
			if term, err := rs.Term(i); (err != nil && err != raft.ErrCompacted) || (err == nil && term != 1) {
				errs <- fmt.Errorf("Term(%d) = %d, %v", i, term, err)
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for s := 0; s < shards; s++ {
		wantApplied(t, e, s, batches)
		wantRecord(t, e, s, "k", strconv.Itoa(batches), batches)
	}
	wantRaftBounds(t, rs, 196, 200)
	wantTerm(t, rs, 195, 1)
	wantRaftBounds(t, raftStorage(t, e, logShard), 196, 200)
	wantEntries(t, rs, 196, 201, mkEnts(196, 200, 1))
}

// spaceScanner adapts ScanIn of one space to the scanner interface.
type spaceScanner struct {
	s interface {
		ScanIn(shard int, sp Space, start, end []byte, fn ScanFunc) error
	}
	sp Space
}

func (s spaceScanner) Scan(shard int, start, end []byte, fn ScanFunc) error {
	return s.s.ScanIn(shard, s.sp, start, end, fn)
}

// spaceGetter adapts GetIn of one space to the recordGetter interface.
type spaceGetter struct {
	g interface {
		GetIn(shard int, sp Space, key []byte) (Record, bool, error)
	}
	sp Space
}

func (g spaceGetter) Get(shard int, key []byte) (Record, bool, error) {
	return g.g.GetIn(shard, g.sp, key)
}

func TestSpaces(t *testing.T) {
	e := newEngine(t)
	const shard = 3
	// The same keys in both spaces, plus one key in each only.
	apply(t, e, shard, 10, func(a *Apply) {
		for _, w := range []struct {
			sp       Space
			key, val string
			ver      uint64
		}{
			{UserData, "k", "user", 1},
			{System, "k", "system", 2},
			{UserData, "u-only", "u", 3},
			{System, "s-only", "s", 4},
			{System, "\xff", "ff", 5},
		} {
			if err := a.PutIn(w.sp, []byte(w.key), []byte(w.val), w.ver); err != nil {
				t.Fatalf("PutIn(%d, %q): %v", w.sp, w.key, err)
			}
		}
		// Reads through the Apply see its own writes, per space.
		if rec, ok, err := a.GetIn(System, []byte("k")); err != nil || !ok || string(rec.Value) != "system" {
			t.Fatalf("Apply.GetIn(System, k) = %q %v %v", rec.Value, ok, err)
		}
		if rec, ok, err := a.Get([]byte("k")); err != nil || !ok || string(rec.Value) != "user" {
			t.Fatalf("Apply.Get(k) = %q %v %v", rec.Value, ok, err)
		}
		if _, ok, err := a.Get([]byte("s-only")); err != nil || ok {
			t.Fatalf("Apply.Get(s-only) = %v %v; want absent", ok, err)
		}
	})
	put(t, e, shard+1, 11, kvPair{"k", "neighbour", 1})

	wantUser := []kvPair{{"k", "user", 1}, {"u-only", "u", 3}}
	wantSys := []kvPair{{"k", "system", 2}, {"s-only", "s", 4}, {"\xff", "ff", 5}}
	r := e.NewReader()
	defer r.Close()
	for _, v := range []struct {
		name string
		get  recordGetter
		user scanner
		sys  scanner
	}{
		{"engine", e, e, spaceScanner{e, System}},
		{"reader", r, r, spaceScanner{r, System}},
	} {
		t.Run(v.name, func(t *testing.T) {
			if got := scanAll(t, v.user, shard, nil, nil); !slices.Equal(got, wantUser) {
				t.Fatalf("UserData scan = %v; want %v", got, wantUser)
			}
			if got := scanAll(t, v.sys, shard, nil, nil); !slices.Equal(got, wantSys) {
				t.Fatalf("System scan = %v; want %v", got, wantSys)
			}
			if got := scanAll(t, v.sys, shard, []byte("l"), []byte("t")); !slices.Equal(got, wantSys[1:2]) {
				t.Fatalf("bounded System scan = %v; want %v", got, wantSys[1:2])
			}
			wantRecord(t, v.get, shard, "k", "user", 1)
			wantAbsent(t, v.get, shard, "s-only")
		})
	}
	wantRecord(t, spaceGetter{e, System}, shard, "k", "system", 2)
	wantRecord(t, spaceGetter{r, System}, shard, "s-only", "s", 4)
	wantAbsent(t, spaceGetter{e, System}, shard, "u-only")
	wantAbsent(t, spaceGetter{e, System}, shard+1, "k")
	if got := scanAll(t, spaceScanner{e, UserData}, shard, nil, nil); !slices.Equal(got, wantUser) {
		t.Fatalf("ScanIn(UserData) = %v; want %v", got, wantUser)
	}

	t.Run("delete in one space", func(t *testing.T) {
		apply(t, e, shard, 12, func(a *Apply) {
			if err := a.DeleteIn(System, []byte("k")); err != nil {
				t.Fatal(err)
			}
		})
		wantAbsent(t, spaceGetter{e, System}, shard, "k")
		wantRecord(t, e, shard, "k", "user", 1)
		apply(t, e, shard, 13, func(a *Apply) {
			if err := a.Delete([]byte("u-only")); err != nil {
				t.Fatal(err)
			}
		})
		wantRecord(t, spaceGetter{e, System}, shard, "s-only", "s", 4)
	})

	t.Run("invalid space", func(t *testing.T) {
		before := dumpAll(t, e)
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrInvalidSpace) {
				t.Errorf("%s: err = %v; want ErrInvalidSpace", what, err)
			}
		}
		for _, sp := range []Space{2, 'd', 255} {
			_, _, err := e.GetIn(shard, sp, []byte("k"))
			check("GetIn", err)
			check("ScanIn", e.ScanIn(shard, sp, nil, nil, func(k, v []byte, ver uint64) bool { return true }))
			rd := e.NewReader()
			_, _, err = rd.GetIn(shard, sp, []byte("k"))
			check("Reader.GetIn", err)
			check("Reader.ScanIn", rd.ScanIn(shard, sp, nil, nil, func(k, v []byte, ver uint64) bool { return true }))
			rd.Close()
			a := e.NewApply(shard)
			_, _, err = a.GetIn(sp, []byte("k"))
			check("Apply.GetIn", err)
			check("Apply.PutIn", a.PutIn(sp, []byte("k"), []byte("evil"), 9))
			check("Apply.DeleteIn", a.DeleteIn(sp, []byte("k")))
			a.Close()
		}
		if d := diffEntries(dumpAll(t, e), before); d != "" {
			t.Fatalf("invalid space changed the engine:%s", d)
		}
	})
}
