package scatter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/scatter"
	"lambdadb/shard"
)

// redeployHook is shared by every node's executor: while armed, the first
// leaf of the cluster runs, then the function is redeployed and every
// replica has applied the new version before any other leaf starts.
type redeployHook struct {
	armed    atomic.Bool
	calls    atomic.Int64
	gate     chan struct{}
	redeploy func() error
	err      error // the redeploy's, read after the gate closes
}

// hooked is one node's Functions with the shared hook in front.
type hooked struct {
	*lambda.Engine
	h *redeployHook
}

func (f hooked) CallLeaf(ctx context.Context, c lambda.LeafCall) (lambda.Result, error) {
	h := f.h
	if !h.armed.Load() {
		return f.Engine.CallLeaf(ctx, c)
	}
	if h.calls.Add(1) == 1 {
		res, err := f.Engine.CallLeaf(ctx, c)
		h.err = h.redeploy()
		close(h.gate)
		return res, err
	}
	select {
	case <-h.gate:
	case <-ctx.Done():
		return lambda.Result{}, ctx.Err()
	}
	return f.Engine.CallLeaf(ctx, c)
}

// TestRedeployMidQueryConflicts: a function redeployed while its query
// runs fails the query with a conflict; no answer combines leaves of two
// versions (unpinned, the leaves after the first ran the new version).
func TestRedeployMidQueryConflicts(t *testing.T) {
	h := &redeployHook{gate: make(chan struct{})}
	qc := startQueryCluster(t, 3, 8, func(c *scatter.Config) {
		c.Functions = hooked{Engine: c.Functions.(*lambda.Engine), h: h}
	})
	wasm := wasmtest.Example(t, "wordcount")
	deployer := qc.engines[qc.Members[0].ID]
	h.redeploy = func() error {
		if _, err := deployer.Deploy(context.Background(), "wordcount", wasm, lambda.DeployOptions{TimeoutMS: 10000}, nil); err != nil {
			return err
		}
		for deadline := time.Now().Add(30 * time.Second); !qc.isCaughtUp(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				return errors.New("replicas did not catch up with the redeploy")
			}
		}
		return nil
	}
	var recs []rec
	for i := range 60 {
		recs = append(recs, rec{fmt.Sprintf("doc/%03d", i), "fox cat"})
	}
	qc.load(t, qc.Members[0].Node(), recs)
	qc.deploy(t, qc.Members[0].ID, "wordcount", wasm, 10000)
	qc.caughtUp(t)
	old, err := deployer.Get(context.Background(), "wordcount")
	if err != nil {
		t.Fatal(err)
	}

	h.armed.Store(true)
	_, err = qc.exec(qc.Members[1].ID).Run(context.Background(), scatter.Query{Prefix: "doc/", Function: "wordcount", Consistency: shard.Stale})
	h.armed.Store(false)
	if h.calls.Load() == 0 {
		t.Fatal("no leaf ran")
	}
	<-h.gate
	if h.err != nil {
		t.Fatal(h.err)
	}
	if !errors.Is(err, lambda.ErrConflict) || !strings.Contains(err.Error(), "redeployed") {
		t.Fatalf("query across a redeploy: err = %v, want a conflict", err)
	}
	cur, err := deployer.Get(context.Background(), "wordcount")
	if err != nil || cur.Version == old.Version {
		t.Fatalf("the function was not redeployed: %v (version %d → %d)", err, old.Version, cur.Version)
	}
	// A query pinned to the old version fails before fanning out; the next
	// query runs the new version everywhere.
	if _, err := qc.exec(qc.Members[2].ID).Run(context.Background(), scatter.Query{Prefix: "doc/", Function: "wordcount", FunctionVersion: old.Version}); !errors.Is(err, lambda.ErrConflict) {
		t.Fatalf("query pinned to version %d after a redeploy: %v", old.Version, err)
	}
	res, err := qc.exec(qc.Members[1].ID).Run(context.Background(), scatter.Query{Prefix: "doc/", Function: "wordcount", Consistency: shard.Stale})
	if err != nil {
		t.Fatalf("query after the redeploy: %v", err)
	}
	if got := string(res.Raw); !strings.Contains(got, `"fox":60`) {
		t.Fatalf("query after the redeploy = %s", got)
	}
}
