package shard_test

import (
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/shard"
)

// TestEngineRecordedPerDirectory: a data directory keeps the engine it was
// created with; opening it without an engine works with either, and naming
// the other engine is refused with an error that says which one it holds.
func TestEngineRecordedPerDirectory(t *testing.T) {
	for _, tc := range []struct{ created, other string }{
		{shard.EngineHashicorp, shard.EngineMultiRaft},
		{shard.EngineMultiRaft, shard.EngineHashicorp},
	} {
		t.Run(tc.created, func(t *testing.T) {
			fs := vfs.NewMem()
			cfg := shard.Config{FS: fs, Dir: "/d", Shards: 2, Engine: tc.created}
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

			cfg.Engine = tc.other
			if _, err := shard.Open(cfg); err == nil || !strings.Contains(err.Error(), "replicated by the "+tc.created+" engine") {
				t.Fatalf("open a %s directory as %s: %v", tc.created, tc.other, err)
			}

			cfg.Engine = ""
			n, err = shard.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			res, err := n.Get(ctx, "k", shard.ReadOptions{})
			if err != nil || !res.Found || string(res.Record.Value) != "v" {
				t.Fatalf("get after reopen: %+v, %v", res, err)
			}
			if got := n.RaftStats(shard.For("k", 2)); tc.created == shard.EngineMultiRaft && got["first_index"] == "" {
				t.Fatalf("a multiraft directory reopened with another engine: stats %v", got)
			}
		})
	}
	if _, err := shard.Open(shard.Config{FS: vfs.NewMem(), Dir: "/x", Engine: "paxos"}); err == nil {
		t.Fatal("an unknown engine was accepted")
	}
}
