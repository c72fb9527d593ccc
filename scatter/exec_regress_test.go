package scatter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"lambdadb/lambda"
	"lambdadb/shard"
)

// fakeCluster is a one-node Cluster whose OpenShard blocks until the
// leaf's context ends (a slow or stuck replica).
type fakeCluster struct {
	shards int
}

func (f *fakeCluster) ID() string                { return "n1" }
func (f *fakeCluster) Shards() int               { return f.shards }
func (f *fakeCluster) Replicas(int) []shard.Peer { return []shard.Peer{{ID: "n1", Addr: "a1"}} }
func (f *fakeCluster) Leader(int) shard.Peer     { return shard.Peer{ID: "n1", Addr: "a1"} }
func (f *fakeCluster) Peers() []shard.PeerState {
	return []shard.PeerState{{Peer: shard.Peer{ID: "n1", Addr: "a1"}, Up: true}}
}
func (f *fakeCluster) OpenShard(ctx context.Context, s int, ro shard.ReadOptions) (*shard.ShardSnapshot, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (f *fakeCluster) CallInternal(context.Context, string, string, any, any) error {
	return errors.New("no rpc")
}

// executorGoroutines counts goroutines still inside an executor's query.
func executorGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "scatter.(*Executor).execute") {
			n++
		}
	}
	return n
}

// TestTimeoutLeavesNothingRunning: queries that time out with more
// attempts in flight than the results buffer holds leave no goroutine
// behind (they once blocked forever sending their results), and are
// reported as timeouts (504), not as incomplete (503).
func TestTimeoutLeavesNothingRunning(t *testing.T) {
	x, err := New(Config{Cluster: &fakeCluster{shards: 64}, LeafConcurrency: 2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	notTimedOut := 0
	const runs = 20
	for i := 0; i < runs; i++ {
		_, err := x.Run(context.Background(), Query{Aggregate: &Spec{Op: OpCount}, Consistency: shard.Stale, Timeout: 20 * time.Millisecond})
		var ie *IncompleteError
		if !errors.As(err, &ie) {
			t.Fatalf("err = %v", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			notTimedOut++
			if notTimedOut == 1 {
				t.Logf("deadline reported as: %v", err)
			}
		}
	}
	if notTimedOut > 0 {
		t.Errorf("%d of %d timed-out queries not reported as timeouts", notTimedOut, runs)
	}
	deadline := time.Now().Add(10 * time.Second)
	for executorGoroutines() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := executorGoroutines(); n > 0 {
		t.Errorf("%d goroutines of finished queries still running", n)
	}
}

// TestFatalErrors: the handler's own faults fail a query; failures that
// are the cluster's (even when a handler gave up over one of its calls)
// are retried on another replica.
func TestFatalErrors(t *testing.T) {
	for _, c := range []struct {
		err   error
		fatal bool
	}{
		{lambda.ErrHandler, true},
		{lambda.ErrMemoryLimit, true},
		{lambda.ErrTimeout, true},
		{lambda.ErrNoEntrypoint, true},
		{lambda.ErrNotFound, true},
		{fmt.Errorf("%w: %w", lambda.ErrHandler, shard.ErrUnavailable), false},
		{fmt.Errorf("%w: %w", lambda.ErrHandler, shard.ErrNotLeader), false},
		{lambda.ErrOverloaded, false},
		{lambda.ErrClosed, false},
		{shard.ErrClosed, false},
		{context.DeadlineExceeded, false},
		{errors.New("connection reset"), false},
	} {
		if got := fatal(c.err); got != c.fatal {
			t.Errorf("fatal(%v) = %v, want %v", c.err, got, c.fatal)
		}
	}
}
