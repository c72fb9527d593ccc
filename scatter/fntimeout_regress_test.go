package scatter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/lambda"
	"lambdadb/shard"
)

type halfStuck struct{ combines int }

func (h *halfStuck) Get(context.Context, string) (*lambda.Function, error) {
	return &lambda.Function{Name: "f", Entrypoints: []string{"leaf", "combine"}}, nil
}
func (h *halfStuck) CallLeaf(ctx context.Context, c lambda.LeafCall) (lambda.Result, error) {
	items, _, _, _ := c.Scan(ctx, "", "", 1)
	if len(items) == 0 { // the empty shard's leaf never finishes
		<-ctx.Done()
		return lambda.Result{}, ctx.Err()
	}
	return lambda.Result{Body: []byte("part")}, nil
}
func (h *halfStuck) CallCombine(ctx context.Context, _ lambda.CombineCall) (lambda.Result, error) {
	h.combines++
	if err := ctx.Err(); err != nil {
		return lambda.Result{}, err
	}
	return lambda.Result{Body: []byte("combined")}, nil
}

// TestFunctionTimeoutNamesMissingShards: a function query that times out
// after reading some shards runs no root Combine (it once did, with the
// expired context, and its error hid the missing shards from the 504).
func TestFunctionTimeoutNamesMissingShards(t *testing.T) {
	n, err := shard.Open(shard.Config{Dir: "/n1", FS: vfs.NewMem(), Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	// Put one key in exactly one shard.
	for i := 0; ; i++ {
		k := "k" + string(rune('a'+i))
		if shard.For(k, 2) == 0 {
			if _, err := n.Put(ctx, k, []byte("v"), shard.Cond{}, nil); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	fns := &halfStuck{}
	x, err := New(Config{Cluster: n, Functions: fns, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = x.Run(ctx, Query{Function: "f", Consistency: shard.Stale, Timeout: 300 * time.Millisecond})
	var ie *IncompleteError
	if !errors.As(err, &ie) || !ie.TimedOut || len(ie.Missing) != 1 || fns.combines != 0 {
		t.Fatalf("err = %v (IncompleteError: %v, combines run: %d), want a timeout naming 1 shard and no combine", err, errors.As(err, &ie), fns.combines)
	}
}
