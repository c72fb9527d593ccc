package scatter

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/shard"
)

type countingCluster struct {
	fakeCluster
	calls atomic.Int64
}

func (c *countingCluster) Peers() []shard.PeerState {
	return []shard.PeerState{{Peer: shard.Peer{ID: "n1", Addr: "a1"}, Up: true}, {Peer: shard.Peer{ID: "n2", Addr: "a2"}, Up: true}}
}

func (c *countingCluster) CallInternal(ctx context.Context, addr, path string, req, resp any) error {
	c.calls.Add(1)
	b, _ := msgpack.Marshal(subResp{})
	*(resp.(*msgpack.RawMessage)) = b
	return nil
}

// TestSubQueryFanOutRefused: a sub-query naming a member many times (or
// members without shards) is refused before the node calls anyone: one
// body under 1 MiB once made a node send 40,000 sub-queries.
func TestSubQueryFanOutRefused(t *testing.T) {
	c := &countingCluster{fakeCluster: fakeCluster{shards: 4}}
	x, err := New(Config{Cluster: c, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	plan := planNode{ID: "n1"}
	for i := 0; i < 40000; i++ {
		plan.Children = append(plan.Children, planNode{ID: "n2"})
	}
	body, err := msgpack.Marshal(subReq{Query: wireQuery{Aggregate: &Spec{Op: OpCount}, Consistency: int(shard.Stale)}, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	x.InternalHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, RPCPath, bytes.NewReader(body)))
	var resp subResp
	_ = msgpack.Unmarshal(rec.Body.Bytes(), &resp)
	if c.calls.Load() != 0 || resp.Code != "invalid_query" {
		t.Fatalf("body %d bytes -> %d internal calls (code %q)", len(body), c.calls.Load(), resp.Code)
	}
}
