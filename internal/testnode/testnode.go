package testnode

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/shard"
)

// DefaultShards is the shard count of nodes opened by New.
const DefaultShards = 4

// New opens a one-node cluster with DefaultShards shards on a fresh
// in-memory file system (Dir "/n1") and closes it at the end of the test.
func New(tb testing.TB) *shard.Node {
	tb.Helper()
	return NewWithConfig(tb, shard.Config{})
}

// NewWithConfig is New with cfg as the base configuration: an empty Dir
// becomes "/n1", a nil FS a fresh vfs.NewMem() and a zero Shards
// DefaultShards; other fields keep shard.Open's defaults.
func NewWithConfig(tb testing.TB, cfg shard.Config) *shard.Node {
	tb.Helper()
	if cfg.Dir == "" {
		cfg.Dir = "/n1"
	}
	if cfg.FS == nil {
		cfg.FS = vfs.NewMem()
	}
	if cfg.Shards == 0 {
		cfg.Shards = DefaultShards
	}
	n, err := shard.Open(cfg)
	if err != nil {
		tb.Fatalf("testnode: open node: %v", err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("testnode: close node: %v", err)
		}
	})
	return n
}
