package changefeed_test

import (
	"context"
	"fmt"
	"github.com/vmihailenco/msgpack/v5"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

var cacheDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "changefeed-test-cache-")
	if err != nil {
		panic(err)
	}
	cacheDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

type tenv struct {
	node *shard.Node
	fns  *lambda.Engine
	trg  *changefeed.Triggers
}

func newTEnv(t testing.TB, lcfg lambda.Config) *tenv {
	t.Helper()
	return newTEnvWith(t, lcfg, shard.Config{}, changefeed.TriggersConfig{})
}

// newTEnvWith is newTEnv with base configurations for the node (its
// FeedTrimLimit asks the triggers unless scfg sets one) and the triggers.
func newTEnvWith(t testing.TB, lcfg lambda.Config, scfg shard.Config, tcfg changefeed.TriggersConfig) *tenv {
	t.Helper()
	var trgp atomic.Pointer[changefeed.Triggers]
	if scfg.FeedTrimLimit == nil {
		scfg.FeedTrimLimit = func(s int) uint64 {
			if tr := trgp.Load(); tr != nil {
				return tr.TrimLimit(s)
			}
			return 0
		}
	}
	n := testnode.NewWithConfig(t, scfg)
	lcfg.Store, lcfg.NodeID, lcfg.CacheDir = n, n.ID(), cacheDir
	e, err := lambda.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tcfg.Node, tcfg.Functions = n, e
	if tcfg.Poll == 0 {
		tcfg.Poll = 50 * time.Millisecond
	}
	tr, err := changefeed.NewTriggers(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
	trgp.Store(tr)
	t.Cleanup(tr.Close)
	return &tenv{node: n, fns: e, trg: tr}
}

func (v *tenv) put(t testing.TB, k, val string) uint64 {
	t.Helper()
	r, err := v.node.Put(context.Background(), k, []byte(val), shard.Cond{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Version
}

func (v *tenv) get(t testing.TB, k string) string {
	t.Helper()
	r, err := v.node.Get(context.Background(), k, shard.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(r.Record.Value)
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func total(v *tenv, name string) (st changefeed.ShardStats) {
	for _, s := range v.trg.Status(name) {
		st.Delivered += s.Delivered
		st.Invocations += s.Invocations
		st.Retries += s.Retries
		st.DeadLetters += s.DeadLetters
		st.Atomic += s.Atomic
	}
	return st
}

// TestTriggerDeliversEveryChangeOnce: every matching put and delete
// reaches the handler once, in order per key; with keys and writes on one
// shard (hash tags), each batch commits with its checkpoint.
func TestTriggerDeliversEveryChangeOnce(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	ctx := context.Background()
	if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	v.put(t, "{a}before", "ignored") // before the trigger: start=now skips it
	if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "t", Function: "rec", Prefix: "{"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i < 60; i++ {
		k := fmt.Sprintf("{k%d}x", i%7)
		val := fmt.Sprint("v", i)
		ver := v.put(t, k, val)
		want[k] += fmt.Sprintf("%d:%s;", ver, val)
		if i%13 == 0 {
			r, err := v.node.Delete(ctx, k, shard.Cond{}, nil)
			if err != nil || !r.Deleted {
				t.Fatal(err)
			}
			want[k] += fmt.Sprintf("%d:<deleted>;", r.Session.Index(shard.For(k, v.node.Shards())))
		}
	}
	v.put(t, "other/x", "not matching")
	for k, w := range want {
		eventually(t, "log/"+k+" complete", func() bool { return v.get(t, "log/"+k) == w })
	}
	if got := v.get(t, "log/{a}before"); got != "" {
		t.Fatalf("a change from before the trigger was delivered: %q", got)
	}
	st := total(v, "t")
	if st.Delivered != 65 || st.DeadLetters != 0 || st.Atomic == 0 || st.Atomic != st.Invocations {
		t.Fatalf("stats %+v", st)
	}
	// Nothing more arrives: exactly once.
	time.Sleep(300 * time.Millisecond)
	for k, w := range want {
		if got := v.get(t, "log/"+k); got != w {
			t.Fatalf("log/%s = %q, want %q", k, got, w)
		}
	}
}

// TestTriggerPoisonDeadLetter: a change whose handler always fails is
// isolated by bisection, dead-lettered with the error, and later changes
// are still delivered.
func TestTriggerPoisonDeadLetter(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	ctx := context.Background()
	if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "p", Function: "rec", Prefix: "{q}", MaxRetries: 1, BatchSize: 10, MaxWaitMS: 300}); err != nil {
		t.Fatal(err)
	}
	// One shard ({q}), so the poison shares batches with good changes.
	for i := 0; i < 8; i++ {
		val := fmt.Sprint("ok", i)
		if i == 3 {
			val = "poison"
		}
		v.put(t, fmt.Sprintf("{q}%d", i), val)
	}
	eventually(t, "the poison is dead-lettered", func() bool {
		dl, err := v.trg.DeadLetters(ctx, "p")
		return err == nil && len(dl) == 1
	})
	dl, _ := v.trg.DeadLetters(ctx, "p")
	if dl[0].Key != "{q}3" || !strings.Contains(dl[0].Error, "poison change at {q}3") || string(dl[0].Value) != "poison" {
		t.Fatalf("dead letter %+v", dl[0])
	}
	for i := 0; i < 8; i++ {
		if i == 3 {
			continue
		}
		k := fmt.Sprintf("log/{q}%d", i)
		eventually(t, k+" delivered", func() bool { return strings.Contains(v.get(t, k), fmt.Sprint("ok", i)) })
	}
	v.put(t, "{q}later", "fine")
	eventually(t, "a later change is delivered", func() bool { return v.get(t, "log/{q}later") != "" })
	if st := total(v, "p"); st.DeadLetters != 1 || st.Retries == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTriggerBatchingFollowsSandboxState: with no paused sandbox, changes
// wait up to max_wait_ms to fill a batch; with one paused, they go at once
// in small batches — more invocations, lower latency.
func TestTriggerBatchingFollowsSandboxState(t *testing.T) {
	run := func(keepAlive time.Duration) (invocations uint64) {
		v := newTEnv(t, lambda.Config{KeepAlive: keepAlive})
		ctx := context.Background()
		if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "b", Function: "rec", Prefix: "{z}", BatchSize: 100, MaxWaitMS: 500}); err != nil {
			t.Fatal(err)
		}
		// Warm the sandbox once when it is to stay paused.
		v.put(t, "{z}warm", "w")
		eventually(t, "warm-up delivered", func() bool { return v.get(t, "log/{z}warm") != "" })
		if keepAlive < time.Second { // the keep-alive stops it at once
			eventually(t, "the sandbox is stopped", func() bool { return !v.fns.HasPaused("rec") })
		}
		before := total(v, "b").Invocations
		for i := 0; i < 40; i++ {
			v.put(t, fmt.Sprintf("{z}%d", i), "v")
			time.Sleep(5 * time.Millisecond)
		}
		eventually(t, "all delivered", func() bool { return v.get(t, "log/{z}39") != "" })
		return total(v, "b").Invocations - before
	}
	paused := run(time.Hour)
	stopped := run(time.Millisecond)
	t.Logf("invocations for 40 changes: paused sandbox %d, stopped sandbox %d", paused, stopped)
	if stopped >= paused {
		t.Fatalf("stopped sandbox took %d invocations, paused %d: batching does not follow the state", stopped, paused)
	}
}

// TestTriggerWaitsForMissingFunction: the cluster's trouble (here, the
// function removed) is retried, never dead-lettered; delivery resumes once
// the function is back.
func TestTriggerWaitsForMissingFunction(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	ctx := context.Background()
	wasm := wasmtest.Guest(t, "faulty")
	if _, err := v.fns.Deploy(ctx, "rec", wasm, lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "m", Function: "rec", Prefix: "{m}", MaxRetries: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.fns.Remove(ctx, "rec", nil); err != nil {
		t.Fatal(err)
	}
	v.put(t, "{m}1", "one")
	// The runner starts over every second; the calls it made (none of
	// them committed) keep counting rather than dropping back to the
	// checkpoint's count at each start.
	var last uint64
	began := time.Now()
	for time.Since(began) < 2500*time.Millisecond || last < 2 {
		if time.Since(began) > 20*time.Second {
			t.Fatalf("%d invocations in 20 s of a missing function", last)
		}
		n := total(v, "m").Invocations
		if n < last {
			t.Fatalf("invocations went from %d back to %d", last, n)
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
	if dl, err := v.trg.DeadLetters(ctx, "m"); err != nil || len(dl) != 0 {
		t.Fatalf("dead letters %v, %v", dl, err)
	}
	if _, err := v.fns.Deploy(ctx, "rec", wasm, lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivered after the function is back", func() bool { return strings.Contains(v.get(t, "log/{m}1"), "one") })
}

// TestTriggerCountersSurviveRestart: a trigger's counters live in its
// checkpoints, so a new runner (after a restart or a leader change) goes
// on from them instead of from zero.
func TestTriggerCountersSurviveRestart(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	ctx := context.Background()
	if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "c", Function: "rec", Prefix: "{c}", MaxRetries: 1, BatchSize: 10, MaxWaitMS: 100}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		val := fmt.Sprint("ok", i)
		if i == 5 {
			val = "poison"
		}
		v.put(t, fmt.Sprintf("{c}%d", i), val)
	}
	eventually(t, "every change delivered or dead", func() bool {
		st := total(v, "c")
		return st.Delivered == 11 && st.DeadLetters == 1
	})
	// Every change is delivered or dead: the counters were last updated
	// with the checkpoint that covered them.
	before := total(v, "c")
	if before.Invocations == 0 || before.Retries == 0 || before.Atomic == 0 {
		t.Fatalf("counters before the restart: %+v", before)
	}

	v.trg.Close()
	tr, err := changefeed.NewTriggers(changefeed.TriggersConfig{Node: v.node, Functions: v.fns, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
	defer tr.Close()
	v.trg = tr
	eventually(t, "the new runner took over the counters", func() bool { return total(v, "c") == before })
	v.put(t, "{c}after", "fine")
	eventually(t, "one more delivery counted on top", func() bool { return total(v, "c").Delivered == before.Delivered+1 })
	if st := total(v, "c"); st.DeadLetters != 1 || st.Invocations <= before.Invocations {
		t.Fatalf("counters after the restart: %+v, before %+v", st, before)
	}
	// A new definition of the name counts from zero.
	d, err := tr.Create(ctx, changefeed.Trigger{Name: "c", Function: "rec", Prefix: "{c}"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new definition's counters", func() bool {
		sts := tr.Status("c")
		for _, st := range sts {
			if st.Definition != d.Version {
				return false
			}
		}
		return len(sts) > 0 && total(v, "c") == changefeed.ShardStats{}
	})
}

// checkpointBeforeCounters is a trigger checkpoint as written before the
// counters were appended: [position, trigger version].
type checkpointBeforeCounters struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Position uint64
	Trigger  uint64
}

// TestCheckpointsOfEarlierVersions: a checkpoint written by an earlier
// version (without counters) is still read as the trigger's position —
// not taken for another definition's, which would deliver everything
// since the trigger's start again.
func TestCheckpointsOfEarlierVersions(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	ctx := context.Background()
	if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "o", Function: "rec", Prefix: "{o}"}); err != nil {
		t.Fatal(err)
	}
	ver := v.put(t, "{o}1", "a")
	want := fmt.Sprintf("%d:a;", ver)
	eventually(t, "the first change delivered", func() bool { return v.get(t, "log/{o}1") == want })
	// The log key shares the change's shard ({o}): the log entry committed
	// in one Raft entry with the checkpoint past the change.
	v.trg.Close()

	// Rewrite the shard's checkpoint as the earlier version wrote it.
	n := v.node.Shards()
	s := shard.For("{o}1", n)
	key := shard.TagFor(s, n) + "trg/o"
	cur, err := v.node.GetIn(ctx, shard.SystemSpace, key, shard.ReadOptions{})
	if err != nil || !cur.Found {
		t.Fatalf("checkpoint: %v, found %v", err, cur.Found)
	}
	var full struct {
		//lint:ignore U1000 read by msgpack through its tag
		_msgpack                      struct{} `msgpack:",as_array"`
		Position, Trigger             uint64
		Delivered, Invocations, Retry uint64
		Dead, Atomic, DeadStreak      uint64
	}
	if err := msgpack.Unmarshal(cur.Record.Value, &full); err != nil {
		t.Fatal(err)
	}
	old, _ := msgpack.Marshal(&checkpointBeforeCounters{Position: full.Position, Trigger: full.Trigger})
	if _, err := v.node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: key, Value: old}}, nil); err != nil {
		t.Fatal(err)
	}

	tr, err := changefeed.NewTriggers(changefeed.TriggersConfig{Node: v.node, Functions: v.fns, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
	defer tr.Close()
	ver2 := v.put(t, "{o}1", "b")
	want += fmt.Sprintf("%d:b;", ver2)
	eventually(t, "the second change delivered", func() bool { return v.get(t, "log/{o}1") == want })
	time.Sleep(300 * time.Millisecond)
	if got := v.get(t, "log/{o}1"); got != want {
		t.Fatalf("log/{o}1 = %q, want %q (the first change delivered again?)", got, want)
	}
}

// TestTriggerLoopStops: a trigger whose handler writes under its own prefix
// feeds itself (the faulty guest logs each change of K to log/K, and the
// trigger watches log/). Each write is one level deeper; the change at
// MaxTriggerDepth is not delivered but dead-lettered as a loop, and the
// chain stops by itself.
func TestTriggerLoopStops(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	ctx := context.Background()
	if _, err := v.fns.Deploy(ctx, "rec", wasmtest.Guest(t, "faulty"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: "loop", Function: "rec", Prefix: "log/"}); err != nil {
		t.Fatal(err)
	}
	v.put(t, "log/a", "x")
	eventually(t, "the loop is dead-lettered", func() bool {
		dl, err := v.trg.DeadLetters(ctx, "loop")
		return err == nil && len(dl) == 1
	})
	dl, _ := v.trg.DeadLetters(ctx, "loop")
	deepest := strings.Repeat("log/", changefeed.MaxTriggerDepth+1) + "a"
	if dl[0].Key != deepest || !strings.Contains(dl[0].Error, "recursive trigger loop") || !strings.Contains(dl[0].Error, `"loop"`) {
		t.Fatalf("dead letter %+v", dl[0])
	}
	time.Sleep(500 * time.Millisecond)
	st := total(v, "loop")
	if st.Delivered != changefeed.MaxTriggerDepth || st.DeadLetters != 1 {
		t.Fatalf("stats %+v; want %d delivered (depths 0..%d) and 1 dead letter", st, changefeed.MaxTriggerDepth, changefeed.MaxTriggerDepth-1)
	}
	if got := v.get(t, "log/"+deepest); got != "" {
		t.Fatalf("the change at the depth limit was delivered: log/%s = %q", deepest, got)
	}
	// A client's write under the prefix still starts a fresh chain.
	v.put(t, "log/b", "y")
	eventually(t, "a new chain runs to the limit too", func() bool {
		dl, err := v.trg.DeadLetters(ctx, "loop")
		return err == nil && len(dl) == 2
	})
}

// TestCheckpointPassesOtherKeys: a trigger reads only its own prefix, yet
// its checkpoint moves past the changes to other keys of its shard (so it
// does not hold the feed's retention back), and what it delivers is its
// own.
func TestCheckpointPassesOtherKeys(t *testing.T) {
	v := newTEnv(t, lambda.Config{})
	define(t, v, "mine", "{x}mine/", 0)
	s := shard.For("{x}", v.node.Shards())
	var last uint64
	for i := range 1200 {
		last = v.put(t, fmt.Sprintf("{x}other/%d", i), "v")
	}
	eventually(t, "the checkpoint passes the other keys' changes", func() bool {
		for _, st := range v.trg.Status("mine") {
			if st.Shard == s {
				return st.Checkpoint >= last
			}
		}
		return false
	})
	if got := v.trg.TrimLimit(s); got < last {
		t.Fatalf("trim limit %d holds back changes through %d", got, last)
	}
	v.put(t, "{x}mine/1", "m")
	eventually(t, "its own change is delivered", func() bool { return v.get(t, "log/{x}mine/1") != "" })
	if st := total(v, "mine"); st.Delivered != 1 {
		t.Fatalf("delivered %d changes, want 1", st.Delivered)
	}
}

// TestTriggerStartsAtOnce: a trigger delivers the changes committed right
// after its creation without waiting for a reconcile tick — the poll here
// is an hour, so only the watch of the definitions can start its runners.
func TestTriggerStartsAtOnce(t *testing.T) {
	v := newTEnvWith(t, lambda.Config{}, shard.Config{}, changefeed.TriggersConfig{Poll: time.Hour})
	ctx := context.Background()
	if _, err := v.fns.Deploy(ctx, "indexer", wasmtest.Example(t, "indexer"), lambda.DeployOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"first", "second"} { // the first definition ever, then another
		if _, err := v.trg.Create(ctx, changefeed.Trigger{Name: name, Function: "indexer", Prefix: name + "/", MaxWaitMS: 1}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		key := fmt.Sprintf("%s/%d", name, i)
		v.put(t, key, "x")
		for v.get(t, "idx/"+key) != "x" {
			if time.Since(start) > 3*time.Second {
				t.Fatalf("trigger %s: the change after its creation not delivered within 3s", name)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("trigger %s: delivered %v after the put", name, time.Since(start))
	}
	// A deletion stops its runners at once too.
	if err := v.trg.Delete(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted trigger's runners stop", func() bool {
		for _, st := range v.trg.Status("first") {
			if st.Running {
				return false
			}
		}
		return true
	})
}
