package scatter

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/shard"
)

// TestReviewLeafPageUnboundedBytes: a function leaf's scan page is bounded
// only by count (1000), not by shard.MaxScanBytes like every other scan
// page: with 1 MiB values one page holds up to ~1 GiB (cloned, then
// msgpack-encoded again by the host).
func TestLeafPageBoundedBytes(t *testing.T) {
	n, err := shard.Open(shard.Config{Dir: "/n1", FS: vfs.NewMem(), Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	val := make([]byte, 1<<20)
	for i := 0; i < 8; i++ {
		if _, err := n.Put(ctx, fmt.Sprintf("p/%d", i), val, shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := n.OpenShard(ctx, 0, shard.ReadOptions{Consistency: shard.Stale})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var st LeafStat
	items, next, more, err := leafPage(ctx, snap, []byte("p/"), prefixEnd("p/"), "", "", 1000, &st)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, it := range items {
		total += len(it.Key) + len(it.Value)
	}
	if total > shard.MaxScanBytes || !more || next != items[len(items)-1].Key[:2]+fmt.Sprint(len(items)) {
		t.Fatalf("one page: %d items, %d bytes (MaxScanBytes %d), next=%q more=%v", len(items), total, shard.MaxScanBytes, next, more)
	}
	// Paging on from next reads every record once.
	seen := len(items)
	for more {
		items, next, more, err = leafPage(ctx, snap, []byte("p/"), prefixEnd("p/"), "", next, 1000, &st)
		if err != nil {
			t.Fatal(err)
		}
		seen += len(items)
	}
	if seen != 8 || st.Records != 8 {
		t.Fatalf("paged through %d records (stats %d), want 8", seen, st.Records)
	}
}
