package scatter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/shard"
)

// TestLeafPanicFailsQueryNotNode: a defect that panics while aggregating
// a record fails the query with an error; the node keeps running. (A
// group value with a huge exponent once panicked in groupKey and took the
// node down, then the next replica the shard was retried on.) The panic
// here comes from a spec Validate refuses (topk with k 0), which the leaf
// is handed directly.
func TestLeafPanicFailsQueryNotNode(t *testing.T) {
	n, err := shard.Open(shard.Config{Dir: "/n1", FS: vfs.NewMem(), Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	x, err := New(Config{Cluster: n, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := n.Put(ctx, "o/1", []byte(`{"a":1}`), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	out := x.localLeaf(ctx, Query{Prefix: "o/", Aggregate: &Spec{Op: OpTopK, Field: "a", K: 0}, Consistency: shard.Stale}, 0)
	if out.fatal == nil || len(out.covered) != 0 {
		t.Fatalf("outcome of a panicking leaf: %+v", out)
	}
	// The executor still serves.
	res, err := x.Run(ctx, Query{Prefix: "o/", Aggregate: &Spec{Op: OpCount}, Consistency: shard.Stale})
	if err != nil || fmt.Sprint(res.Result) != "1" {
		t.Fatalf("count after the panic: %v, %v", res, err)
	}
}
