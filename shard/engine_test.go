package shard_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/kv"
	"lambdadb/shard"
)

// TestOlderEngineDirectoryRefused: a data directory written by the earlier
// replication engine (recorded as such, or from before the engine was
// recorded at all) is refused with ErrDataDir and an error that says what
// to do; a directory this release wrote reopens with its data.
func TestOlderEngineDirectoryRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta map[string]string
	}{
		{"before the engine record", map[string]string{"id": "n1", "shards": "2"}},
		{"recorded hashicorp", map[string]string{"id": "n1", "engine": "hashicorp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			e, err := kv.Open(kv.Config{FS: fs, Dir: "/d/db"})
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.meta {
				if err := e.SetNodeMeta(k, []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			_, err = shard.Open(shard.Config{FS: fs, Dir: "/d", Shards: 2})
			if !errors.Is(err, shard.ErrDataDir) || !strings.Contains(err.Error(), "hashicorp") ||
				!strings.Contains(err.Error(), "lambdadb scan --json") {
				t.Fatalf("open an older directory: %v", err)
			}
		})
	}

	fs := vfs.NewMem()
	cfg := shard.Config{FS: fs, Dir: "/d", Shards: 2}
	n, err := shard.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Put(ctx, "k", []byte("v"), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err = shard.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	res, err := n.Get(ctx, "k", shard.ReadOptions{})
	if err != nil || !res.Found || string(res.Record.Value) != "v" {
		t.Fatalf("get after reopen: %+v, %v", res, err)
	}
}
