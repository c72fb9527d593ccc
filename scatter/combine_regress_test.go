package scatter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/lambda"
	"lambdadb/shard"
)

type busyCombine struct{}

func (busyCombine) Get(context.Context, string) (*lambda.Function, error) { return nil, nil }
func (busyCombine) CallLeaf(context.Context, lambda.LeafCall) (lambda.Result, error) {
	return lambda.Result{Body: []byte("part")}, nil
}
func (busyCombine) CallCombine(context.Context, lambda.CombineCall) (lambda.Result, error) {
	return lambda.Result{}, fmt.Errorf("%w: max_instances reached", lambda.ErrOverloaded)
}

// TestSubCombineTransientFailureIsRetryable: a sub-node whose Combine
// fails for a transient reason (overloaded; likewise the engine closing)
// reports what it read as failed shards, for its parent to read
// elsewhere — not as a fatal "internal" error (a 500, never retried).
func TestSubCombineTransientFailureIsRetryable(t *testing.T) {
	n, err := shard.Open(shard.Config{Dir: "/n1", FS: vfs.NewMem(), Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	x, err := New(Config{Cluster: n, Functions: busyCombine{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := msgpack.Marshal(subReq{Query: wireQuery{Function: "f", Consistency: int(shard.Stale)},
		Plan: planNode{ID: n.ID(), Shards: []int{0, 1}}, TimeoutMS: 5000})
	rec := httptest.NewRecorder()
	x.InternalHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, RPCPath, bytes.NewReader(body)))
	var resp subResp
	if err := msgpack.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Code != "" || len(resp.Covered) != 0 || len(resp.Failed) != 2 {
		t.Fatalf("answer: code %q, covered %v, failed %v; want both shards failed, retryable", resp.Code, resp.Covered, resp.Failed)
	}
	if f := resp.Failed[0]; !strings.Contains(f.Err, lambda.ErrOverloaded.Error()) || len(f.Tried) != 1 {
		t.Fatalf("failure %+v", f)
	}
}
