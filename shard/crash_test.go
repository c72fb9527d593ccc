package shard_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/shard"
)

// valueFor is the only value ever written under key, so a read can tell an
// intact value from a torn or foreign one.
func valueFor(key string) []byte { return []byte(strings.Repeat(key+";", 8)) }

// TestCrashKeepsAcknowledgedWrites crashes a node at a random moment of a
// concurrent write load (keeping a random part of the unsynced data), then
// restarts it from the crashed filesystem: every write acknowledged before
// the crash is there, and every value present is exactly a value written.
// Some runs snapshot every shard first, so Raft has truncated its log.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 0))
			fs := vfs.NewCrashableMem()
			cfg := shard.Config{FS: fs, Dir: "/d", Shards: 4, LogRetainEntries: 8}
			n, err := shard.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu    sync.Mutex
				acked []string
				stop  = make(chan struct{})
				wg    sync.WaitGroup
			)
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						k := fmt.Sprintf("w%d/%05d", w, i)
						if _, err := n.Put(ctx, k, valueFor(k), shard.Cond{}, nil); err != nil {
							return // the node is closing
						}
						mu.Lock()
						acked = append(acked, k)
						mu.Unlock()
					}
				}()
			}
			crashAt := 100 + rng.IntN(400)
			snapshotFirst := seed%2 == 0
			for {
				mu.Lock()
				c := len(acked)
				mu.Unlock()
				if snapshotFirst && c >= crashAt/2 {
					if err := n.SnapshotAll(); err != nil {
						t.Fatal(err)
					}
					snapshotFirst = false
				}
				if c >= crashAt {
					break
				}
				waitForWrites(n)
			}
			mu.Lock()
			before := append([]string(nil), acked...)
			mu.Unlock()
			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
			close(stop)
			wg.Wait()
			n.Close()

			cfg.FS = crashed
			n2 := open(t, cfg)
			for _, k := range before {
				g, err := n2.Get(ctx, k, shard.ReadOptions{})
				if err != nil || !g.Found || string(g.Record.Value) != string(valueFor(k)) {
					t.Fatalf("acknowledged %s after crash: found=%v err=%v", k, g.Found, err)
				}
			}
			r, err := n2.Scan(ctx, shard.ScanRequest{Limit: shard.MaxScanLimit}, shard.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range r.Items {
				if string(it.Value) != string(valueFor(it.Key)) {
					t.Fatalf("key %s holds a value never written: %q", it.Key, it.Value)
				}
			}
			if len(r.Items) < len(before) {
				t.Fatalf("scan found %d keys, %d were acknowledged", len(r.Items), len(before))
			}
			t.Logf("acknowledged %d, present after crash %d", len(before), len(r.Items))
		})
	}
}

// waitForWrites yields to the writers by doing one cheap stale read.
func waitForWrites(n *shard.Node) {
	_, _ = n.Get(ctx, "probe", shard.ReadOptions{Consistency: shard.Stale})
}

// After a snapshot truncates the Raft log, a crash that keeps only synced
// data must still hold every write: the snapshot synced the state machine
// before the log entries went away.
func TestSnapshotTruncationSurvivesCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	cfg := shard.Config{FS: fs, Dir: "/d", Shards: 2, LogRetainEntries: 4}
	n, err := shard.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("k%04d", i)
		if _, err := n.Put(ctx, k, valueFor(k), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := n.SnapshotAll(); err != nil {
		t.Fatal(err)
	}
	for s := 0; s < cfg.Shards; s++ {
		if first := n.LogFirstIndex(s); first <= 1 {
			t.Fatalf("shard %d log not truncated (first index %d)", s, first)
		}
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // synced data only
	n.Close()
	cfg.FS = crashed
	n2 := open(t, cfg)
	for _, k := range keys {
		g, err := n2.Get(ctx, k, shard.ReadOptions{})
		if err != nil || !g.Found {
			t.Fatalf("%s lost after truncation and crash: %v", k, err)
		}
	}
}
