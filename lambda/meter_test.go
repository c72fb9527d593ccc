package lambda_test

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

func openNode(t *testing.T, fs vfs.FS) *shard.Node {
	t.Helper()
	n, err := shard.Open(shard.Config{Dir: "/n1", FS: fs, Shards: 4})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newMeteredEngine(t *testing.T, n *shard.Node, flush time.Duration) *lambda.Engine {
	t.Helper()
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: cacheDir, Meters: n, MeterFlushInterval: flush})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestMetersSurviveRestart: a node's function meters are saved when its
// engine closes and restored when it starts again.
func TestMetersSurviveRestart(t *testing.T) {
	fs := vfs.NewMem()
	n := openNode(t, fs)
	e := newMeteredEngine(t, n, time.Hour)
	ctx := context.Background()
	res, err := e.Deploy(ctx, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Function
	if f.CreatedAt.IsZero() {
		t.Fatal("a new function has no created_at")
	}
	for range 3 {
		if _, err := e.Invoke(ctx, lambda.Invocation{Name: "echo", Body: []byte("x"), Consistency: shard.Session}); err != nil {
			t.Fatal(err)
		}
	}
	before := e.Stats(f)
	if before.Invocations != 3 || before.BilledMS < 3 {
		t.Fatalf("stats before the restart: %+v", before)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n = openNode(t, fs)
	defer n.Close()
	e = newMeteredEngine(t, n, time.Hour)
	defer e.Close()
	after := e.Stats(f)
	if after.Invocations != 3 || after.BilledMS != before.BilledMS || after.DurationUS != before.DurationUS ||
		after.GBSeconds != before.GBSeconds || after.Starts["restart"] != before.Starts["restart"] || after.P50US != before.P50US {
		t.Fatalf("stats after the restart: %+v, before %+v", after, before)
	}
	if _, err := e.Invoke(ctx, lambda.Invocation{Name: "echo", Body: []byte("x"), Consistency: shard.Session}); err != nil {
		t.Fatal(err)
	}
	if got := e.Stats(f).Invocations; got != 4 {
		t.Fatalf("invocations after one more call: %d", got)
	}
}

// TestMetersSavedPeriodically: a node that never closes its engine (a
// crash) still has the meters of the last flush.
func TestMetersSavedPeriodically(t *testing.T) {
	n := openNode(t, vfs.NewMem())
	defer n.Close()
	e := newMeteredEngine(t, n, 20*time.Millisecond)
	defer e.Close()
	ctx := context.Background()
	res, err := e.Deploy(ctx, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := e.Invoke(ctx, lambda.Invocation{Name: "echo", Body: []byte("x"), Consistency: shard.Session}); err != nil {
			t.Fatal(err)
		}
	}
	// A second engine over the same node reads what the first saved.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e2 := newMeteredEngine(t, n, time.Hour)
		got := e2.Stats(res.Function).Invocations
		if err := e2.Close(); err != nil {
			t.Fatal(err)
		}
		if got == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("saved meters show %d invocations, want 2", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetersFollowTheFunctionsLife: a redeploy keeps a function's meters;
// a remove and deploy under the same name starts from zero, also on nodes
// that did not see the remove.
func TestMetersFollowTheFunctionsLife(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	f := v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	if _, err := v.invoke("echo", "x"); err != nil {
		t.Fatal(err)
	}
	f2 := v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{MemoryMB: 32})
	if !f2.CreatedAt.Equal(f.CreatedAt) || f2.Version == f.Version {
		t.Fatalf("redeploy: created %v → %v, version %d → %d", f.CreatedAt, f2.CreatedAt, f.Version, f2.Version)
	}
	if _, err := v.invoke("echo", "x"); err != nil {
		t.Fatal(err)
	}
	if got := v.e.Stats(f2).Invocations; got != 2 {
		t.Fatalf("invocations across a redeploy: %d, want 2", got)
	}
	// Another engine on the node removes and recreates the function; this
	// engine never hears of the remove.
	other, err := lambda.New(lambda.Config{Store: v.node, NodeID: "other", CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	if _, err := other.Remove(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	v.now.Advance(time.Second)
	res, err := other.Deploy(ctx, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f3 := res.Function
	if f3.CreatedAt.Equal(f.CreatedAt) {
		t.Fatal("a recreated function kept its created_at")
	}
	if got := v.e.Stats(f3).Invocations; got != 0 {
		t.Fatalf("a recreated function shows %d invocations of its predecessor", got)
	}
	if _, err := v.invoke("echo", "x"); err != nil {
		t.Fatal(err)
	}
	if got := v.e.Stats(f3).Invocations; got != 1 {
		t.Fatalf("invocations of the recreated function: %d, want 1", got)
	}
}

// TestLateCallOfRemovedFunction: a call of a function that is removed and
// created again while the call runs does not count toward (or reset) the
// new function's meters when it ends.
func TestLateCallOfRemovedFunction(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	ctx := context.Background()
	v.deploy(t, "s", wasmtest.Example(t, "sleep"), lambda.DeployOptions{TimeoutMS: 10000})
	done := make(chan error, 1)
	go func() {
		_, err := v.invoke("s", "1500")
		done <- err
	}()
	// Wait until the slow call runs, then remove and recreate.
	deadline := time.Now().Add(10 * time.Second)
	for v.e.Sandboxes("s").Running == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow call never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := v.e.Remove(ctx, "s", nil); err != nil {
		t.Fatal(err)
	}
	v.now.Advance(time.Second)
	f := v.deploy(t, "s", wasmtest.Example(t, "sleep"), lambda.DeployOptions{TimeoutMS: 10000})
	for range 3 {
		if _, err := v.invoke("s", "0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("the slow call of the removed function: %v", err)
	}
	if got := v.e.Stats(f).Invocations; got != 3 {
		t.Fatalf("the recreated function shows %d invocations, want 3", got)
	}
	if _, err := v.invoke("s", "0"); err != nil {
		t.Fatal(err)
	}
	if got := v.e.Stats(f).Invocations; got != 4 {
		t.Fatalf("the recreated function shows %d invocations after one more, want 4", got)
	}
}
