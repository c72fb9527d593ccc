package shard_test

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/kv"
	"lambdadb/shard"
)

// TestShardCount: a new data directory gets DefaultShards unless told
// otherwise, and only a power of two; a reopened one keeps its count when
// none is given — including a count an earlier release allowed — and
// refuses another.
func TestShardCount(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stored  int // created earlier with this count (0: new directory)
		want    int // Config.Shards
		opened  int // the count the node opens with (0: Open fails)
		wantErr error
	}{
		{name: "new, default", opened: shard.DefaultShards},
		{name: "new, power of two", want: 8, opened: 8},
		{name: "new, not a power of two", want: 12, wantErr: shard.ErrShardCount},
		{name: "reopen, default keeps the count", stored: 8, opened: 8},
		{name: "reopen, same count", stored: 8, want: 8, opened: 8},
		{name: "reopen, another count", stored: 8, want: 16},
		{name: "earlier release's count is kept", stored: 12, opened: 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			switch {
			case tc.stored == 8:
				n, err := shard.Open(shard.Config{FS: fs, Dir: "/d", Shards: 8})
				if err != nil {
					t.Fatal(err)
				}
				n.Close()
			case tc.stored > 0:
				// An earlier release's directory: its identity records,
				// no cluster map, no replica yet.
				eng, err := kv.Open(kv.Config{Dir: "/d/db", FS: fs})
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range map[string]string{"engine": "multiraft", "id": "n1", "shards": "12",
					"peers": "n1=127.0.0.1:7070", "replicas": "3"} {
					if err := eng.SetNodeMeta(k, []byte(v)); err != nil {
						t.Fatal(err)
					}
				}
				eng.Close()
			}
			n, err := shard.Open(shard.Config{FS: fs, Dir: "/d", Shards: tc.want})
			if tc.opened == 0 {
				if err == nil {
					n.Close()
					t.Fatalf("opened with %d shards, want an error", n.Shards())
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if n.Shards() != tc.opened {
				t.Fatalf("opened with %d shards, want %d", n.Shards(), tc.opened)
			}
		})
	}
}
