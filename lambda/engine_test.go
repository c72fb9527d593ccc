package lambda_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lambdadb/internal/session"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

type env struct {
	node *shard.Node
	e    *lambda.Engine
	now  *fakeClock
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// cacheDir is a compilation cache shared by the package's tests, so each
// module is compiled once per run ("cold" starts then read the cache, as
// on a restarted node).
var cacheDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "lambda-test-cache-")
	if err != nil {
		panic(err)
	}
	cacheDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func newEnv(t *testing.T, cfg lambda.Config) *env {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = cacheDir
	}
	n := testnode.New(t)
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg.Store = n
	cfg.NodeID = n.ID()
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = time.Hour // tests reap by hand
	}
	e, err := lambda.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return &env{node: n, e: e, now: clock}
}

func (v *env) deploy(t *testing.T, name string, wasm []byte, o lambda.DeployOptions) *lambda.Function {
	t.Helper()
	res, err := v.e.Deploy(context.Background(), name, wasm, o, nil)
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return res.Function
}

func (v *env) invoke(name, body string) (lambda.Result, error) {
	return v.e.Invoke(context.Background(), lambda.Invocation{Name: name, Body: []byte(body), Consistency: shard.Session})
}

func TestDeployAndInvokeStartKinds(t *testing.T) {
	v := newEnv(t, lambda.Config{ModuleKeepAlive: 2 * time.Hour})
	f := v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	if f.MemoryMB != 64 || f.TimeoutMS != 1000 || f.MaxInstances != 100 || len(f.SHA256) != 64 || !f.Has("handle") {
		t.Fatalf("deployed config = %+v", f)
	}
	// Deploy compiled the module on this node: the first call restarts.
	for i, want := range []string{lambda.StartRestart, lambda.StartWarm, lambda.StartWarm} {
		res, err := v.invoke("echo", fmt.Sprint("hello ", i))
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Body) != fmt.Sprint("hello ", i) || res.Start != want {
			t.Fatalf("call %d: body %q start %q, want %q", i, res.Body, res.Start, want)
		}
		if res.Node != v.node.ID() || res.Duration <= 0 || res.BilledMS < 1 || res.GBSeconds <= 0 {
			t.Fatalf("call %d: meters %+v", i, res)
		}
	}
	if s := v.e.Sandboxes("echo"); s.Paused != 1 || s.Running != 0 || s.Cold != 0 {
		t.Fatalf("sandboxes = %+v", s)
	}
	// Keep-alive: the paused sandbox is stopped; the next call restarts.
	v.now.Advance(2 * time.Hour)
	lambda.Reap(v.e)
	if s := v.e.Sandboxes("echo"); s.Paused != 0 || s.Stopped != 1 || s.Cold != 0 {
		t.Fatalf("after keep-alive: %+v", s)
	}
	if res, err := v.invoke("echo", "x"); err != nil || res.Start != lambda.StartRestart {
		t.Fatalf("after keep-alive: %q %v", res.Start, err)
	}
	// Module keep-alive: once no instance remains, the module is dropped.
	v.now.Advance(3 * time.Hour)
	lambda.Reap(v.e)
	v.now.Advance(3 * time.Hour)
	lambda.Reap(v.e)
	if s := v.e.Sandboxes("echo"); s.Cold != 1 || s.Paused != 0 {
		t.Fatalf("after module keep-alive: %+v", s)
	}
	if res, err := v.invoke("echo", "x"); err != nil || res.Start != lambda.StartCold {
		t.Fatalf("after module keep-alive: %q %v", res.Start, err)
	}
	st := v.e.Stats(f)
	if st.Invocations != 5 || st.Starts["warm"] != 2 || st.Starts["restart"] != 2 || st.Starts["cold"] != 1 || st.P50US <= 0 || st.P99US < st.P50US {
		t.Fatalf("stats = %+v", st)
	}
}

func TestDeployRejects(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	echo := wasmtest.Example(t, "echo")
	tests := []struct {
		name    string
		fn      string
		wasm    []byte
		opts    lambda.DeployOptions
		want    error
		wantMsg string
	}{
		{"garbage", "g", []byte("definitely not wasm"), lambda.DeployOptions{}, lambda.ErrInvalidModule, ""},
		{"empty", "g", nil, lambda.DeployOptions{}, lambda.ErrInvalidModule, ""},
		{"no sdk exports", "g", wasmtest.Guest(t, "noexports"), lambda.DeployOptions{}, lambda.ErrInvalidModule, "ldb_abi_version, ldb_entrypoints, ldb_invoke"},
		{"init panics", "g", wasmtest.Guest(t, "badinit"), lambda.DeployOptions{}, lambda.ErrInvalidModule, "init failed"},
		{"too large", "g", make([]byte, lambda.MaxModuleBytes+1), lambda.DeployOptions{}, lambda.ErrModuleTooLarge, ""},
		{"bad name", "a/b", echo, lambda.DeployOptions{}, lambda.ErrInvalidName, ""},
		{"empty name", "", echo, lambda.DeployOptions{}, lambda.ErrInvalidName, ""},
		{"memory too big", "g", echo, lambda.DeployOptions{MemoryMB: 1 << 20}, lambda.ErrInvalidConfig, "memory_mb"},
		{"negative timeout", "g", echo, lambda.DeployOptions{TimeoutMS: -1}, lambda.ErrInvalidConfig, "timeout_ms"},
		{"instances", "g", echo, lambda.DeployOptions{MaxInstances: 100000}, lambda.ErrInvalidConfig, "max_instances"},
		{"memory below module", "g", echo, lambda.DeployOptions{MemoryMB: 1}, lambda.ErrInvalidModule, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.e.Deploy(context.Background(), tt.fn, tt.wasm, tt.opts, nil)
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.wantMsg)
			}
		})
	}
	if fns, err := v.e.List(context.Background()); err != nil || len(fns) != 0 {
		t.Fatalf("after rejected deploys: %v, %v", fns, err)
	}
}

// TestFaultsContained: every way a handler can fail is reported with its
// own error, and neither the node nor other functions notice.
func TestFaultsContained(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	faulty := v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{TimeoutMS: 2000, MemoryMB: 32})
	v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	tests := []struct {
		req  string
		want error
		msg  string
	}{
		{"loop", lambda.ErrTimeout, "2s"},
		{"sleep 5000", lambda.ErrTimeout, ""},
		{"alloc", lambda.ErrMemoryLimit, "memory_mb=32"},
		{"alloc-mb 100", lambda.ErrMemoryLimit, ""},
		{"panic", lambda.ErrHandler, "panic: boom"},
		{"error", lambda.ErrHandler, "handler said no"},
		{"exit", lambda.ErrHandler, "exit"},
		{"badptr", lambda.ErrHandler, "out-of-bounds"},
		{"big 7000000", lambda.ErrHandler, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.req, func(t *testing.T) {
			began := time.Now()
			_, err := v.invoke("faulty", tt.req)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
			if d := time.Since(began); d > 5*time.Second {
				t.Fatalf("took %v", d)
			}
			// The same function and another one still serve.
			if res, err := v.invoke("faulty", "ok"); err != nil || string(res.Body) != "ok" {
				t.Fatalf("faulty after %s: %q %v", tt.req, res.Body, err)
			}
			if res, err := v.invoke("echo", "still here"); err != nil || string(res.Body) != "still here" {
				t.Fatalf("echo after %s: %q %v", tt.req, res.Body, err)
			}
		})
	}
	st := v.e.Stats(faulty)
	if st.Errors != uint64(len(tests)) || st.ErrorsByCode["timeout"] != 2 || st.ErrorsByCode["memory_limit"] != 2 {
		t.Fatalf("stats = %+v", st)
	}
	if s := v.e.Sandboxes("faulty"); s.Running != 0 {
		t.Fatalf("sandboxes = %+v", s)
	}
}

func TestSandboxHasNoAmbientAuthority(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{})
	res, err := v.invoke("faulty", "env")
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != "env=0 args=0 file=true" {
		t.Fatalf("sandbox sees %q", res.Body)
	}
}

func TestLogs(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{})
	if _, err := v.invoke("faulty", "stdout"); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range v.e.Logs("faulty") {
		lines = append(lines, l.Line)
	}
	got := strings.Join(lines, "|")
	for _, want := range []string{"to stdout", "to stderr", "via Log 42"} {
		if !strings.Contains(got, want) {
			t.Fatalf("logs %q lack %q", got, want)
		}
	}
}

func TestHandlerKVAndSession(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "counter", wasmtest.Example(t, "counter"), lambda.DeployOptions{})
	var tok session.Token
	for i := 1; i <= 3; i++ {
		res, err := v.e.Invoke(context.Background(), lambda.Invocation{Name: "counter", Key: "hits", Session: tok, Consistency: shard.Session})
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Body) != fmt.Sprint(i) || res.KVCalls != 2 || res.KVBytes == 0 {
			t.Fatalf("call %d: %q, %d calls, %d bytes", i, res.Body, res.KVCalls, res.KVBytes)
		}
		tok = res.Session
	}
	s := shard.For("hits", v.node.Shards())
	if tok.Index(s) == 0 {
		t.Fatalf("session token %v does not cover the handler's write on shard %d", tok, s)
	}
	g, err := v.node.Get(context.Background(), "hits", shard.ReadOptions{Consistency: shard.Session, Session: tok})
	if err != nil || string(g.Record.Value) != "3" {
		t.Fatalf("read after handler: %q %v", g.Record.Value, err)
	}
}

func TestCounterConcurrent(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "counter", wasmtest.Example(t, "counter"), lambda.DeployOptions{MaxInstances: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.e.Invoke(context.Background(), lambda.Invocation{Name: "counter", Key: "c", Consistency: shard.Session})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	g, err := v.node.Get(context.Background(), "c", shard.ReadOptions{})
	if err != nil || string(g.Record.Value) != "40" {
		t.Fatalf("counter = %q, %v", g.Record.Value, err)
	}
}

func TestScanFromHandler(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{})
	var want []string
	for i := 0; i < 1500; i++ { // more than one host page
		k := fmt.Sprintf("s/%04d", i)
		want = append(want, k)
		if _, err := v.node.Put(context.Background(), k, []byte("v"), shard.Cond{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	res, err := v.invoke("faulty", "scan s/")
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != strings.Join(want, ",") {
		t.Fatalf("scan returned %d bytes, want %d", len(res.Body), len(strings.Join(want, ",")))
	}
}

func TestConcurrencyLimitAndQueue(t *testing.T) {
	v := newEnv(t, lambda.Config{QueueLength: 1})
	f := v.deploy(t, "sleep", wasmtest.Example(t, "sleep"), lambda.DeployOptions{MaxInstances: 2})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = v.invoke("sleep", "300")
		}()
	}
	waitFor(t, func() bool { return v.e.Sandboxes("sleep").Running == 2 })
	time.Sleep(50 * time.Millisecond) // the third call is queued
	_, err := v.invoke("sleep", "1")
	if !errors.Is(err, lambda.ErrOverloaded) {
		t.Fatalf("fourth call: %v, want ErrOverloaded", err)
	}
	wg.Wait()
	// The refused call is a throttle, not an invocation.
	if st := v.e.Stats(f); st.Throttles != 1 || st.Invocations != 3 {
		t.Fatalf("throttles %d invocations %d, want 1 and 3", st.Throttles, st.Invocations)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if s := v.e.Sandboxes("sleep"); s.Paused != 2 || s.Running != 0 {
		t.Fatalf("sandboxes = %+v", s)
	}
}

func TestMemoryBudgetEvictsLRU(t *testing.T) {
	// Without snapshots, each paused sandbox is accounted its whole
	// linear memory (with them, both fit: TestSnapshotAccounting).
	v := newEnv(t, lambda.Config{MemoryBudget: 5 << 20, DisableSnapshots: true})
	v.deploy(t, "a", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	v.deploy(t, "b", wasmtest.Example(t, "sleep"), lambda.DeployOptions{})
	if _, err := v.invoke("a", "x"); err != nil {
		t.Fatal(err)
	}
	if s := v.e.Sandboxes("a"); s.Paused != 1 {
		t.Fatalf("a = %+v", s)
	}
	v.now.Advance(time.Second)
	if _, err := v.invoke("b", "0"); err != nil {
		t.Fatal(err)
	}
	// Two ~2-4 MiB sandboxes do not fit in 5 MiB: a, the least recently
	// used, was stopped.
	if sa, sb := v.e.Sandboxes("a"), v.e.Sandboxes("b"); sa.Paused != 0 || sa.Stopped != 1 || sb.Paused != 1 {
		t.Fatalf("a = %+v, b = %+v, live %d", sa, sb, v.e.LiveBytes())
	}
	if v.e.LiveBytes() > 5<<20 {
		t.Fatalf("live bytes %d over budget", v.e.LiveBytes())
	}
	if res, err := v.invoke("a", "x"); err != nil || res.Start != lambda.StartRestart {
		t.Fatalf("a after eviction: %q %v", res.Start, err)
	}
}

// TestRedeployWhileRunning: calls in flight finish on the version they
// started with; calls after the deploy run the new one.
func TestRedeployWhileRunning(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "f", wasmtest.Example(t, "sleep"), lambda.DeployOptions{})
	done := make(chan lambda.Result, 1)
	go func() {
		res, err := v.invoke("f", "400")
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	waitFor(t, func() bool { return v.e.Sandboxes("f").Running == 1 })
	v.deploy(t, "f", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	res, err := v.invoke("f", "400")
	if err != nil || string(res.Body) != "400" {
		t.Fatalf("after redeploy: %q %v", res.Body, err)
	}
	old := <-done
	if string(old.Body) != "slept 400 ms" {
		t.Fatalf("in-flight call answered %q", old.Body)
	}
	if s := v.e.Sandboxes("f"); s.Paused != 1 || s.Running != 0 {
		t.Fatalf("sandboxes after the old call ended: %+v", s)
	}
}

func TestRemove(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	v.deploy(t, "echo2", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	fns, err := v.e.List(context.Background())
	if err != nil || len(fns) != 2 || fns[0].Name != "echo" || fns[0].SHA256 != fns[1].SHA256 {
		t.Fatalf("list = %v, %v", fns, err)
	}
	if _, err := v.e.Remove(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.invoke("echo", "x"); !errors.Is(err, lambda.ErrNotFound) {
		t.Fatalf("invoke after remove: %v", err)
	}
	if _, err := v.e.Remove(context.Background(), "echo", nil); !errors.Is(err, lambda.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	// The other function sharing the module still runs.
	if res, err := v.invoke("echo2", "y"); err != nil || string(res.Body) != "y" {
		t.Fatalf("echo2: %q %v", res.Body, err)
	}
	if _, err := v.invoke("nope", "x"); !errors.Is(err, lambda.ErrNotFound) {
		t.Fatalf("unknown function: %v", err)
	}
}

// TestMaxFunctions: a deploy of a new name into a registry that holds
// MaxFunctions functions is refused with ErrTooManyFunctions; redeploys
// and removes always work, and a remove makes room. The count lives in the
// replicated registry: another engine (as on another node) sees it,
// concurrent deploys of new names never exceed it, and a registry written
// before the count existed is counted.
func TestMaxFunctions(t *testing.T) {
	const max = 3
	v := newEnv(t, lambda.Config{MaxFunctions: max})
	ctx := context.Background()
	echo := wasmtest.Example(t, "echo")
	other, err := lambda.New(lambda.Config{Store: v.node, NodeID: "other", CacheDir: cacheDir, MaxFunctions: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	deploy := func(e *lambda.Engine, name string) error {
		_, err := e.Deploy(ctx, name, echo, lambda.DeployOptions{}, nil)
		return err
	}
	remove := func(e *lambda.Engine, name string) error {
		_, err := e.Remove(ctx, name, nil)
		return err
	}
	for i, step := range []struct {
		op   func(*lambda.Engine, string) error
		e    *lambda.Engine
		name string
		want error
	}{
		{deploy, v.e, "a", nil},
		{deploy, v.e, "b", nil},
		{deploy, other, "c", nil},
		{deploy, v.e, "d", lambda.ErrTooManyFunctions},
		{deploy, other, "d", lambda.ErrTooManyFunctions},
		{deploy, v.e, "a", nil}, // a redeploy
		{deploy, other, "c", nil},
		{remove, other, "b", nil},
		{deploy, v.e, "d", nil},
		{deploy, other, "e", lambda.ErrTooManyFunctions},
		{remove, v.e, "nope", lambda.ErrNotFound},
		{deploy, v.e, "e", lambda.ErrTooManyFunctions},
	} {
		if err := step.op(step.e, step.name); !errors.Is(err, step.want) || (step.want == nil) != (err == nil) {
			t.Fatalf("step %d (%s): %v, want %v", i, step.name, err, step.want)
		}
	}
	// A registry from before the count: the functions are counted.
	if _, err := v.node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: lambda.FnCountKey, Delete: true}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := deploy(v.e, "e"); !errors.Is(err, lambda.ErrTooManyFunctions) || !strings.Contains(err.Error(), "has 3, the limit is 3") {
		t.Fatalf("without the count: %v", err)
	}
	if err := remove(other, "a"); err != nil {
		t.Fatal(err)
	}
	// Concurrent deploys of new names fill the room left, no more.
	names := []string{"p", "q", "r", "s", "t", "u"}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := v.e
			if i%2 == 1 {
				e = other
			}
			errs[i] = deploy(e, name)
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, lambda.ErrTooManyFunctions):
			t.Fatalf("deploy %s: %v", names[i], err)
		}
	}
	if fns, err := v.e.List(ctx); ok != 1 || err != nil || len(fns) != max {
		t.Fatalf("%d concurrent deploys succeeded, registry holds %d functions (%v), want 1 and %d", ok, len(fns), err, max)
	}
}

func TestEntrypointMissing(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "indexer", wasmtest.Example(t, "indexer"), lambda.DeployOptions{})
	_, err := v.invoke("indexer", "x")
	if !errors.Is(err, lambda.ErrNoEntrypoint) {
		t.Fatalf("err = %v", err)
	}
}

func TestBillingGranularity(t *testing.T) {
	v := newEnv(t, lambda.Config{BillingGranularity: 100 * time.Millisecond})
	v.deploy(t, "sleep", wasmtest.Example(t, "sleep"), lambda.DeployOptions{MemoryMB: 128})
	res, err := v.invoke("sleep", "20")
	if err != nil {
		t.Fatal(err)
	}
	if res.BilledMS != 100 || res.Duration < 20*time.Millisecond {
		t.Fatalf("billed %d ms for %v", res.BilledMS, res.Duration)
	}
	if want := 128.0 / 1024 * 0.1; res.GBSeconds < want*0.999 || res.GBSeconds > want*1.001 {
		t.Fatalf("GB-s = %v, want %v", res.GBSeconds, want)
	}
}

func TestRequestTooLarge(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	_, err := v.invoke("echo", string(bytes.Repeat([]byte("x"), lambda.MaxMessageBytes+1)))
	if !errors.Is(err, lambda.ErrRequestTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

// TestMessageLimitIsThePayloads: MaxMessageBytes bounds what a handler
// receives and returns, not the framing around it across the guest
// boundary: echoing the largest request, returning the largest response
// and combining parts of the largest total size succeed (framing used to
// push each a few bytes over and fail it).
func TestMessageLimitIsThePayloads(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{})
	const max = lambda.MaxMessageBytes
	part := func(n int) []byte { return bytes.Repeat([]byte("p"), n) }
	tests := []struct {
		name    string
		call    func() ([]byte, error)
		wantLen int   // of the answer, when it succeeds
		want    error // nil: succeeds
	}{
		{"echo max", func() ([]byte, error) {
			res, err := v.invoke("echo", string(bytes.Repeat([]byte("e"), max)))
			return res.Body, err
		}, max, nil},
		{"response max", func() ([]byte, error) {
			res, err := v.invoke("faulty", fmt.Sprint("big ", max))
			return res.Body, err
		}, max, nil},
		{"response max+1", func() ([]byte, error) {
			res, err := v.invoke("faulty", fmt.Sprint("big ", max+1))
			return res.Body, err
		}, 0, lambda.ErrHandler},
		{"combine max", func() ([]byte, error) {
			res, err := v.e.CallCombine(context.Background(), lambda.CombineCall{Name: "faulty", Parts: [][]byte{part(max / 2), part(max - max/2)}})
			return res.Body, err
		}, len(fmt.Sprint(max)), nil}, // the guest answers the parts' total size
		{"combine max+1", func() ([]byte, error) {
			res, err := v.e.CallCombine(context.Background(), lambda.CombineCall{Name: "faulty", Parts: [][]byte{part(max / 2), part(max - max/2 + 1)}})
			return res.Body, err
		}, 0, lambda.ErrRequestTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.call()
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), "limit") {
					t.Fatalf("err = %v, want %v naming the limit", err, tt.want)
				}
				return
			}
			if err != nil || len(out) != tt.wantLen {
				t.Fatalf("%d bytes, %v; want %d bytes", len(out), err, tt.wantLen)
			}
		})
	}
}

// TestStackOverflow: a handler that recurses without end fails with
// ErrStackOverflow (a handler fault), not as a timeout or a plain memory
// cap. At the default memory a goroutine stack cannot double past 16 MiB.
// The Go runtime's crash report walks every frame of every goroutine and
// may take longer than the overflow itself: when the deadline passes
// while it is printed, the call still failed by its overflow. (The
// "parked" row makes the report long on purpose: goroutines 10,000
// frames deep, parked by earlier calls of the same sandbox.)
func TestStackOverflow(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	tests := []struct {
		name    string
		o       lambda.DeployOptions
		prepare []string // calls before the overflow, in the same sandbox
		req     string
	}{
		{"default memory", lambda.DeployOptions{TimeoutMS: 5000}, nil, "recurse"},
		{"deadline during the report", lambda.DeployOptions{TimeoutMS: 300, MaxInstances: 1},
			slices.Repeat([]string{"park 10000"}, 10), "recurse big"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("deep", i)
			v.deploy(t, name, wasmtest.Guest(t, "faulty"), tt.o)
			for _, req := range tt.prepare {
				if _, err := v.invoke(name, req); err != nil {
					t.Fatalf("%s: %v", req, err)
				}
			}
			_, err := v.invoke(name, tt.req)
			if !errors.Is(err, lambda.ErrStackOverflow) || !errors.Is(err, lambda.ErrHandler) || !strings.Contains(err.Error(), "recursion") {
				t.Fatalf("err = %v, want a stack overflow", err)
			}
			if code := lambda.ErrorCode(err); code != "stack_overflow" {
				t.Fatalf("code %q", code)
			}
			if res, err := v.invoke(name, "ok"); err != nil || string(res.Body) != "ok" {
				t.Fatalf("after the overflow: %q %v", res.Body, err)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSandboxMemoryReturned: every sandbox's memory is freed, whether its
// call ended normally, timed out in a host sleep, or trapped, and paused
// sandboxes of a redeployed or removed function are released.
func TestSandboxMemoryReturned(t *testing.T) {
	if lambda.LiveMemories() < 0 {
		t.Skip("memory accounting needs the mmap allocator (linux)")
	}
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{TimeoutMS: 200, MaxInstances: 4})
	base := lambda.LiveMemories()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := []string{"sleep 5000", "loop", "panic", "exit"}[i%4]
			_, _ = v.invoke("faulty", req)
		}()
	}
	wg.Wait()
	// Paused sandboxes hold memory; stop them and everything is back.
	lambda.StopPaused(v.e)
	waitFor(t, func() bool { return lambda.LiveMemories() == base })

	// Redeploys and a remove release the old versions' paused sandboxes.
	sandbox := int64(0)
	for i := 0; i < 3; i++ {
		v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{TimeoutMS: 200 + i})
		if _, err := v.invoke("faulty", "ok"); err != nil {
			t.Fatal(err)
		}
		if sandbox == 0 {
			sandbox = v.e.LiveBytes()
		}
		if got := v.e.LiveBytes(); got > sandbox*3/2 {
			t.Fatalf("after redeploy %d live bytes %d, one sandbox is %d", i, got, sandbox)
		}
	}
	if _, err := v.e.Remove(context.Background(), "faulty", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return v.e.LiveBytes() == 0 && lambda.LiveMemories() == base })
}

func TestLogLinesBounded(t *testing.T) {
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{})
	if _, err := v.invoke("faulty", "spam 100000"); err != nil {
		t.Fatal(err)
	}
	logs := v.e.Logs("faulty")
	if len(logs) != 1 || len(logs[0].Line) != 4096 {
		t.Fatalf("%d lines, first %d bytes", len(logs), len(logs[0].Line))
	}
}

// TestCanceledSleepFreesMemory: callers that go away while their handler
// sleeps in the host leave no sandbox memory behind (the host used to
// unwind such guests in a way that skipped freeing their memory).
func TestCanceledSleepFreesMemory(t *testing.T) {
	if lambda.LiveMemories() < 0 {
		t.Skip("memory accounting needs the mmap allocator (linux)")
	}
	v := newEnv(t, lambda.Config{})
	v.deploy(t, "faulty", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{})
	base := lambda.LiveMemories()
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, _ = v.e.Invoke(ctx, lambda.Invocation{Name: "faulty", Body: []byte("sleep 500"), Consistency: shard.Session})
		cancel()
	}
	lambda.StopPaused(v.e)
	waitFor(t, func() bool { return lambda.LiveMemories() == base })
}
