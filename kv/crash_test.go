package kv

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
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

func TestCrashSyncedRaftStateSurvives(t *testing.T) {
	fs := vfs.NewCrashableMem()
	const dir = "node1/data/db" // nested, not yet existing directories
	e := openEngine(t, fs, dir)
	ls := logStore(t, e, 1)
	logs := roundTripLogs() // once: it holds a time.Now()
	storeLogs(t, ls, logs)
	storeLogs(t, logStore(t, e, 2), makeLogs(1, 50, 4))
	if err := logStore(t, e, 2).DeleteRange(1, 20); err != nil {
		t.Fatal(err)
	}
	ss := stableStore(t, e, 1)
	if err := ss.SetUint64([]byte("CurrentTerm"), 5); err != nil {
		t.Fatal(err)
	}
	if err := ss.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}

	e2, _ := crashAndReopen(t, fs, dir, e, vfs.CrashCloneCfg{})

	ls2 := logStore(t, e2, 1)
	wantBounds(t, ls2, 1, uint64(len(logs)))
	for _, l := range logs {
		checkGetLog(t, ls2, l)
	}
	wantBounds(t, logStore(t, e2, 2), 21, 50)
	ss2 := stableStore(t, e2, 1)
	if n, err := ss2.GetUint64([]byte("CurrentTerm")); err != nil || n != 5 {
		t.Fatalf("CurrentTerm after crash = %d, %v", n, err)
	}
	if v, err := ss2.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("LastVoteCand after crash = %q, %v", v, err)
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
		// Every shard shares one WAL: a synced log append persists the
		// unsynced batches committed before it.
		for _, syncer := range []string{"StoreLogs", "StableStore.Set", "DeleteRange"} {
			t.Run(syncer, func(t *testing.T) {
				fs := vfs.NewCrashableMem()
				e := openEngine(t, fs, "db")
				ls := logStore(t, e, 9)
				storeLogs(t, ls, makeLogs(1, 2, 1))
				writeBatches(t, e, 1, 1, 4, 2)
				switch syncer {
				case "StoreLogs":
					storeLogs(t, ls, makeLogs(3, 3, 1))
				case "StableStore.Set":
					if err := stableStore(t, e, 9).SetUint64([]byte("t"), 1); err != nil {
						t.Fatal(err)
					}
				case "DeleteRange":
					if err := ls.DeleteRange(1, 1); err != nil {
						t.Fatal(err)
					}
				}
				e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
				wantApplied(t, e2, 1, 4)
				checkApplyAtomic(t, e2, 1, 4, 2)
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
			logs := logStore(t, e, 1)
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
					storeLogs(t, logs, makeLogs(logIndex, logIndex, 1))
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
			ls := logStore(t, e2, 1)
			first, _ := ls.FirstIndex()
			last, _ := ls.LastIndex()
			if logIndex > 0 && (first != 1 || last < logIndex) {
				t.Fatalf("log bounds after crash [%d, %d]; want [1, >=%d]", first, last, logIndex)
			}
			var l raft.Log
			for i := uint64(1); i <= logIndex; i++ {
				if err := ls.GetLog(i, &l); err != nil {
					t.Fatalf("synced log %d lost: %v", i, err)
				}
			}
		})
	}
}
