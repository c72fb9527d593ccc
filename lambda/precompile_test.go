package lambda_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

// counterValue reads a counter of reg by name and label value ("" for
// none); 0 when absent.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// peerEngine is a second engine over v's node, as another node of the
// cluster would be: its own compiled modules and compilation cache.
func peerEngine(t *testing.T, v *env, cfg lambda.Config) (*lambda.Engine, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Store, cfg.NodeID, cfg.Registerer = v.node, "peer", reg
	cfg.CacheDir = t.TempDir()
	cfg.KeepAlive = time.Hour
	e, err := lambda.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, reg
}

// TestPrecompileBurstCompilesOnce: a node told of a deploy compiles the
// module in the background, and a burst of calls arriving meanwhile waits
// for that compile: the module is compiled once and no call compiles.
func TestPrecompileBurstCompilesOnce(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	peer, reg := peerEngine(t, v, lambda.Config{})
	f := v.deploy(t, "sleep", wasmtest.Example(t, "sleep"), lambda.DeployOptions{MaxInstances: 20, TimeoutMS: 30000})
	if peer.Compiled(f) {
		t.Fatal("compiled on the peer before it was told of the deploy")
	}
	done := peer.Precompile(f.Name, f.Version, nil)
	if done == nil {
		t.Fatal("Precompile returned no channel")
	}
	// Send the burst once the compile is under way (or over).
	waitFor(t, func() bool { return peer.Sandboxes(f.Name).Compiling == 1 || peer.Compiled(f) })
	var wg sync.WaitGroup
	starts := make(chan string, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := peer.Invoke(context.Background(), lambda.Invocation{Name: f.Name, Body: []byte("10"), Consistency: shard.Session})
			if err != nil {
				t.Error(err)
			}
			starts <- res.Start
		}()
	}
	wg.Wait()
	<-done
	close(starts)
	for s := range starts {
		if s == lambda.StartCold {
			t.Fatal("a call compiled the module while the background compile ran")
		}
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileDeploy); n != 1 {
		t.Fatalf("background compiles = %v, want 1", n)
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileCall); n != 0 {
		t.Fatalf("compiles by calls = %v, want 0", n)
	}
	if !peer.Compiled(f) || !peer.CompiledVersion(f.Name, f.Version) {
		t.Fatal("not compiled after the background compile")
	}
	if s := peer.Sandboxes(f.Name); s.Cold != 0 || s.Compiling != 0 {
		t.Fatalf("sandboxes = %+v", s)
	}
	// Told again (a duplicate notice): nothing to compile.
	<-peer.Precompile(f.Name, f.Version, nil)
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileDeploy); n != 1 {
		t.Fatalf("background compiles after a duplicate notice = %v, want 1", n)
	}

	// A redeploy: the new version compiles in the background too.
	g := v.deploy(t, "sleep", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	if peer.CompiledVersion(g.Name, g.Version) {
		t.Fatal("redeploy compiled on the peer before it was told")
	}
	ok, err := peer.PrecompileWait(context.Background(), g.Name, g.Version, nil)
	if err != nil || !ok {
		t.Fatalf("PrecompileWait after redeploy = %v, %v", ok, err)
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileDeploy); n != 2 {
		t.Fatalf("background compiles after a redeploy = %v, want 2", n)
	}
	res, err := peer.Invoke(context.Background(), lambda.Invocation{Name: g.Name, Body: []byte("hi"), Consistency: shard.Session})
	if err != nil || string(res.Body) != "hi" || res.Start != lambda.StartRestart {
		t.Fatalf("call of the redeployed version: %q %q %v", res.Body, res.Start, err)
	}
}

// TestPrecompileDisabled: with DisablePrecompile, a notice compiles
// nothing and the first call compiles, as before.
func TestPrecompileDisabled(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	peer, reg := peerEngine(t, v, lambda.Config{DisablePrecompile: true})
	f := v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	if done := peer.Precompile(f.Name, f.Version, nil); done != nil || peer.PrecompileEnabled() {
		t.Fatal("Precompile ran with DisablePrecompile")
	}
	if ok, err := peer.PrecompileWait(context.Background(), f.Name, f.Version, nil); ok || err != nil {
		t.Fatalf("PrecompileWait = %v, %v", ok, err)
	}
	res, err := peer.Invoke(context.Background(), lambda.Invocation{Name: f.Name, Body: []byte("x"), Consistency: shard.Session})
	if err != nil || res.Start != lambda.StartCold {
		t.Fatalf("first call: %q %v", res.Start, err)
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileCall); n != 1 {
		t.Fatalf("compiles by calls = %v, want 1", n)
	}
}

// TestPrecompileRemoved: a notice for a function removed since compiles
// nothing.
func TestPrecompileRemoved(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	peer, reg := peerEngine(t, v, lambda.Config{})
	f := v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	if _, err := v.e.Remove(context.Background(), f.Name, nil); err != nil {
		t.Fatal(err)
	}
	if ok, err := peer.PrecompileWait(context.Background(), f.Name, f.Version, nil); ok || err != nil {
		t.Fatalf("PrecompileWait = %v, %v", ok, err)
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileDeploy); n != 0 {
		t.Fatalf("background compiles = %v, want 0", n)
	}
}

// TestPrecompileAll: a node that starts (joins, or restarts) compiles
// every deployed function it does not hold compiled, without being told
// of the deploys; its first calls start warm from a compiled module.
func TestPrecompileAll(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	echo := v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	counter := v.deploy(t, "counter", wasmtest.Example(t, "counter"), lambda.DeployOptions{})
	peer, reg := peerEngine(t, v, lambda.Config{})
	if peer.Compiled(echo) || peer.Compiled(counter) {
		t.Fatal("compiled on the new node before it started compiling")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := peer.PrecompileAll(ctx); err != nil {
		t.Fatal(err)
	}
	if !peer.Compiled(echo) || !peer.Compiled(counter) {
		t.Fatal("PrecompileAll left a function uncompiled")
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileDeploy); n != 2 {
		t.Fatalf("background compiles = %v, want 2", n)
	}
	res, err := peer.Invoke(context.Background(), lambda.Invocation{Name: echo.Name, Body: []byte("x"), Consistency: shard.Session})
	if err != nil || res.Start == lambda.StartCold {
		t.Fatalf("first call after PrecompileAll: %q %v", res.Start, err)
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileCall); n != 0 {
		t.Fatalf("compiles by calls = %v, want 0", n)
	}
	// A second pass has nothing to do.
	if err := peer.PrecompileAll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, lambda.MetricCompiles, lambda.CompileDeploy); n != 2 {
		t.Fatalf("background compiles after a second pass = %v, want 2", n)
	}
}
