package scatter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/scatter"
	"lambdadb/shard"
)

// qcluster is a cluster whose members each run a function engine and a
// scatter executor.
type qcluster struct {
	*clustertest.Cluster
	mu      sync.Mutex
	execs   map[string]*scatter.Executor
	engines map[string]*lambda.Engine
}

func (c *qcluster) exec(id string) *scatter.Executor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.execs[id]
}

func startQueryCluster(t *testing.T, nodes, shards int, tune func(*scatter.Config)) *qcluster {
	t.Helper()
	qc := &qcluster{execs: map[string]*scatter.Executor{}, engines: map[string]*lambda.Engine{}}
	var engines []*lambda.Engine
	cache := t.TempDir()
	t.Cleanup(func() {
		qc.mu.Lock()
		defer qc.mu.Unlock()
		for _, e := range engines {
			_ = e.Close()
		}
	})
	qc.Cluster = clustertest.Start(t, clustertest.Options{
		Nodes: nodes, Shards: shards,
		Handler: func(n *shard.Node) (http.Handler, error) {
			e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: cache})
			if err != nil {
				return nil, err
			}
			// No hedging unless a test asks for it: on a loaded machine a
			// hedge would move leaves and change the tree the tests check.
			cfg := scatter.Config{Cluster: n, Functions: e, HedgeAfter: time.Hour}
			if tune != nil {
				tune(&cfg)
			}
			x, err := scatter.New(cfg)
			if err != nil {
				return nil, err
			}
			n.HandleInternal(scatter.RPCPath, x.InternalHandler())
			qc.mu.Lock()
			engines = append(engines, e)
			qc.execs[n.ID()] = x
			qc.engines[n.ID()] = e
			qc.mu.Unlock()
			return http.NotFoundHandler(), nil
		},
	})
	return qc
}

type rec struct {
	key   string
	value string
}

// load writes recs through node n in per-shard batches and waits until
// every running replica has applied them.
func (c *qcluster) load(t *testing.T, n *shard.Node, recs []rec) {
	t.Helper()
	load(t, n, recs)
	c.caughtUp(t)
}

// caughtUp waits until every running replica has applied what any has.
func (c *qcluster) caughtUp(t *testing.T) {
	t.Helper()
	c.Eventually(30*time.Second, "replicas caught up", c.isCaughtUp)
}

// isCaughtUp reports whether every running replica has applied what any
// has.
func (c *qcluster) isCaughtUp() bool {
	n := c.Running()[0].Node()
	for s := 0; s < n.Shards(); s++ {
		var want uint64
		for _, m := range c.Running() {
			want = max(want, m.Node().AppliedIndex(s))
		}
		for _, m := range c.Running() {
			if m.Node().Hosts(s) && m.Node().AppliedIndex(s) < want {
				return false
			}
		}
	}
	return true
}

func load(t *testing.T, n *shard.Node, recs []rec) {
	t.Helper()
	byShard := map[int][]shard.Op{}
	for _, r := range recs {
		s := shard.For(r.key, n.Shards())
		byShard[s] = append(byShard[s], shard.Op{Key: r.key, Value: []byte(r.value)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, ops := range byShard {
		for len(ops) > 0 {
			k := min(len(ops), 500)
			if _, err := n.Batch(ctx, ops[:k], nil); err != nil {
				t.Fatalf("load: %v", err)
			}
			ops = ops[k:]
		}
	}
}

// orders makes n order records under orders/ with a region and an amount,
// plus records that are not JSON, lack the field, or have a non-numeric
// one, and records under other prefixes.
func orders(rng *rand.Rand, n int) []rec {
	regions := []string{`"eu"`, `"us"`, `"ap"`, `1`, `null`}
	var recs []rec
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("orders/%06d", i)
		var v string
		switch i % 50 {
		case 0:
			v = "not json"
		case 1:
			v = fmt.Sprintf(`{"region":%s}`, regions[rng.IntN(len(regions))])
		case 2:
			v = `{"amount":"12","region":"eu"}`
		case 3:
			v = `{"amount":7}` // no region: the null group
		case 4:
			v = `[1,2,3]`
		default:
			// Amounts repeat so topk has ties.
			v = fmt.Sprintf(`{"region":%s,"amount":%d,"pad":"%s"}`, regions[rng.IntN(len(regions))], rng.IntN(200)-50,
				strings.Repeat("x", rng.IntN(40)))
		}
		recs = append(recs, rec{key, v})
	}
	for i := 0; i < n/10; i++ {
		recs = append(recs, rec{fmt.Sprintf("other/%05d", i), `{"region":"eu","amount":1000000}`})
	}
	return recs
}

// reference computes an aggregate over recs directly, independently of
// scatter's partials.
func reference(recs []rec, lo, hi string, spec scatter.Spec) (any, int) {
	type agg struct {
		n        int
		sum      float64
		min, max *float64
		top      []scatter.Item
	}
	groups := map[string]*agg{}
	scanned := 0
	for _, r := range recs {
		if r.key < lo || hi != "" && r.key >= hi {
			continue
		}
		scanned++
		var obj map[string]any
		if json.Unmarshal([]byte(r.value), &obj) != nil || obj == nil {
			continue
		}
		g := ""
		if spec.GroupBy != "" {
			if v, ok := obj[spec.GroupBy]; ok {
				b, _ := json.Marshal(v)
				g = string(b)
			} else {
				g = "null"
			}
		}
		a := groups[g]
		if a == nil {
			a = &agg{}
			groups[g] = a
		}
		if spec.Op == scatter.OpCount && spec.Field == "" {
			a.n++
			continue
		}
		x, ok := obj[spec.Field].(float64)
		if !ok {
			continue
		}
		a.n++
		a.sum += x
		if a.min == nil || x < *a.min {
			a.min = &x
		}
		if a.max == nil || x > *a.max {
			a.max = &x
		}
		a.top = append(a.top, scatter.Item{Key: r.key, Value: x})
	}
	value := func(a *agg) any {
		switch spec.Op {
		case scatter.OpCount:
			return float64(a.n)
		case scatter.OpSum:
			return a.sum
		case scatter.OpMin:
			if a.min == nil {
				return nil
			}
			return *a.min
		case scatter.OpMax:
			if a.max == nil {
				return nil
			}
			return *a.max
		case scatter.OpAvg:
			if a.n == 0 {
				return nil
			}
			return a.sum / float64(a.n)
		case scatter.OpTopK:
			sort.Slice(a.top, func(i, j int) bool {
				if a.top[i].Value != a.top[j].Value {
					return a.top[i].Value > a.top[j].Value
				}
				return a.top[i].Key < a.top[j].Key
			})
			if len(a.top) > spec.K {
				a.top = a.top[:spec.K]
			}
			out := []any{}
			for _, it := range a.top {
				out = append(out, map[string]any{"key": it.Key, "value": it.Value})
			}
			return out
		}
		return nil
	}
	if spec.GroupBy == "" {
		a := groups[""]
		if a == nil {
			a = &agg{}
		}
		return value(a), scanned
	}
	out := map[string]any{}
	for g, a := range groups {
		out[g] = value(a)
	}
	return out, scanned
}

// normalize passes v through JSON, as an API client sees it; a group_by
// answer becomes a map from each group's JSON text to its value.
func normalize(t *testing.T, v any) any {
	t.Helper()
	if gs, ok := v.([]scatter.Group); ok {
		m := make(map[string]any, len(gs))
		for _, g := range gs {
			m[string(g.Group)] = g.Value
		}
		v = m
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// close compares JSON values, numbers within a relative 1e-9 (sums add in
// a different order).
func closeTo(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(x))
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !closeTo(v, y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !closeTo(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestBuiltinsAcrossThreeNodes: every built-in aggregate, with and without
// group_by, at each consistency, from each node, equals a client-side
// computation over the same records; stats account for every record.
func TestBuiltinsAcrossThreeNodes(t *testing.T) {
	qc := startQueryCluster(t, 3, 8, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	recs := orders(rng, 3000)
	qc.load(t, qc.Members[0].Node(), recs)

	specs := []scatter.Spec{
		{Op: "count"}, {Op: "count", GroupBy: "region"}, {Op: "count", Field: "amount"},
		{Op: "sum", Field: "amount"}, {Op: "sum", Field: "amount", GroupBy: "region"},
		{Op: "min", Field: "amount"}, {Op: "max", Field: "amount", GroupBy: "region"},
		{Op: "avg", Field: "amount"}, {Op: "avg", Field: "amount", GroupBy: "region"},
		{Op: "topk", Field: "amount", K: 7}, {Op: "topk", Field: "amount", K: 3, GroupBy: "region"},
		{Op: "min", Field: "missing"}, {Op: "topk", Field: "missing", K: 2},
	}
	cons := []shard.Consistency{shard.Linearizable, shard.Session, shard.Stale}
	for i, spec := range specs {
		spec := spec
		m := qc.Members[i%3]
		c := cons[i%3]
		t.Run(fmt.Sprintf("%s_%s_%s_%s", spec.Op, spec.Field, spec.GroupBy, m.ID), func(t *testing.T) {
			res, err := qc.exec(m.ID).Run(context.Background(), scatter.Query{Prefix: "orders/", Aggregate: &spec, Consistency: c})
			if err != nil {
				t.Fatal(err)
			}
			want, scanned := reference(recs, "orders/", "orders0", spec)
			got := normalize(t, res.Result)
			if !closeTo(normalize(t, want), got) {
				t.Fatalf("result\n got %v\nwant %v", got, normalize(t, want))
			}
			st := res.Stats
			nodes := map[string]bool{}
			for _, l := range st.PerShard {
				nodes[l.Node] = true
			}
			// Stale and session leaves spread over every node; linearizable
			// ones go to the leaders, wherever they are. The node asked
			// takes part (it combines) even when it leads no shard.
			leafNodes := len(nodes)
			nodes[m.ID] = true
			if c != shard.Linearizable && leafNodes != 3 || st.Nodes != len(nodes) {
				t.Fatalf("leaves on %v (with the root), stats name %d nodes", nodes, st.Nodes)
			}
			if st.Shards != 8 || st.Levels != 3 || int(st.RecordsScanned) != scanned {
				t.Fatalf("stats %+v, want 8 shards, 3 levels, %d records", st, scanned)
			}
			if st.RecordsSkipped != 120 { // 3000/50 not JSON + 3000/50 arrays
				t.Fatalf("skipped %d, want 120", st.RecordsSkipped)
			}
			if st.BytesGathered == 0 || st.BytesGathered >= st.BytesScanned {
				t.Fatalf("gathered %d of %d scanned", st.BytesGathered, st.BytesScanned)
			}
			if len(st.PerShard) != 8 || len(st.PerLevel) != 3 {
				t.Fatalf("per shard %d, per level %d", len(st.PerShard), len(st.PerLevel))
			}
			for _, l := range st.PerShard {
				if l.Applied == 0 || l.Node == "" {
					t.Fatalf("leaf %+v", l)
				}
			}
		})
	}
}

// TestRangeAndEmpty: a key range narrows the prefix; an empty range, and
// shards without matching records, give empty results, not errors.
func TestRangeAndEmpty(t *testing.T) {
	qc := startQueryCluster(t, 3, 8, nil)
	recs := orders(rand.New(rand.NewPCG(3, 4)), 400)
	qc.load(t, qc.Members[1].Node(), recs)
	x := qc.exec(qc.Members[0].ID)
	spec := scatter.Spec{Op: "sum", Field: "amount", GroupBy: "region"}
	res, err := x.Run(context.Background(), scatter.Query{Prefix: "orders/", Start: "orders/000100", End: "orders/000200", Aggregate: &spec})
	if err != nil {
		t.Fatal(err)
	}
	want, scanned := reference(recs, "orders/000100", "orders/000200", spec)
	if got := normalize(t, res.Result); !closeTo(normalize(t, want), got) || int(res.Stats.RecordsScanned) != scanned {
		t.Fatalf("range: got %v (%d scanned), want %v (%d)", got, res.Stats.RecordsScanned, want, scanned)
	}
	// Three records: most shards have none in range.
	res, err = x.Run(context.Background(), scatter.Query{Prefix: "orders/00010", End: "orders/000103", Aggregate: &scatter.Spec{Op: "topk", Field: "amount", K: 5}})
	if err != nil || res.Stats.RecordsScanned != 3 {
		t.Fatalf("narrow: %v %+v", err, res)
	}
	for _, spec := range []scatter.Spec{{Op: "count"}, {Op: "min", Field: "a"}, {Op: "topk", Field: "a", K: 1}, {Op: "sum", Field: "a", GroupBy: "g"}} {
		res, err := x.Run(context.Background(), scatter.Query{Prefix: "nothing/", Aggregate: &spec})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(res.Result)
		want := map[string]string{"count": "0", "min": "null", "topk": "[]", "sum": "[]"}[spec.Op]
		if string(b) != want || res.Stats.RecordsScanned != 0 {
			t.Fatalf("%s over nothing = %s, want %s", spec.Op, b, want)
		}
	}
}

// TestTooManyGroups: a built-in aggregate whose group_by makes more groups
// than Config.MaxGroups fails with ErrTooManyGroups — whether one leaf
// already holds too many (on the root or another node) or only the merge
// of several does — instead of answering with every group.
func TestTooManyGroups(t *testing.T) {
	const maxGroups = 50
	qc := startQueryCluster(t, 3, 8, func(c *scatter.Config) { c.MaxGroups = maxGroups })
	// at/: 50 groups. over/: 7 groups per shard, 56 in all. many/: a
	// group per record.
	var recs []rec
	for i := 0; i < 1000; i++ {
		over := fmt.Sprintf("over/%04d", i)
		recs = append(recs,
			rec{fmt.Sprintf("at/%04d", i), fmt.Sprintf(`{"g":%d,"n":1}`, i%maxGroups)},
			rec{over, fmt.Sprintf(`{"g":%d,"n":1}`, shard.For(over, 8)*7+i%7)},
			rec{fmt.Sprintf("many/%04d", i), fmt.Sprintf(`{"g":%d,"n":1}`, i)})
	}
	qc.load(t, qc.Members[1].Node(), recs)
	x := qc.exec(qc.Members[0].ID)
	for _, tt := range []struct {
		prefix string
		spec   scatter.Spec
		groups int    // 0: refused
		where  string // refused: by a leaf or by a merge
	}{
		{"at/", scatter.Spec{Op: "count", GroupBy: "g"}, maxGroups, ""},
		{"at/", scatter.Spec{Op: "topk", Field: "n", K: 3, GroupBy: "g"}, maxGroups, ""},
		{"over/", scatter.Spec{Op: "count", GroupBy: "g"}, 0, "merge"},
		{"many/", scatter.Spec{Op: "sum", Field: "n", GroupBy: "g"}, 0, "leaf"},
		{"many/", scatter.Spec{Op: "sum", Field: "n"}, 1, ""},        // no group_by: one value
		{"many/", scatter.Spec{Op: "count", GroupBy: "none"}, 1, ""}, // every record in group null
	} {
		t.Run(tt.prefix+tt.spec.Op+"/"+tt.spec.GroupBy, func(t *testing.T) {
			res, err := x.Run(context.Background(), scatter.Query{Prefix: tt.prefix, Aggregate: &tt.spec})
			if tt.groups == 0 {
				if !errors.Is(err, scatter.ErrTooManyGroups) || !errors.Is(err, scatter.ErrInvalidQuery) || !strings.Contains(err.Error(), "more than 50 groups") {
					t.Fatalf("err = %v, want ErrTooManyGroups", err)
				}
				// A leaf stops as soon as it holds too many.
				if byLeaf := strings.Contains(err.Error(), "leaf of shard"); byLeaf != (tt.where == "leaf") {
					t.Fatalf("refused by the %s, not as expected: %v", tt.where, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			n := 1
			if gs, ok := res.Result.([]scatter.Group); ok {
				n = len(gs)
			}
			if n != tt.groups {
				t.Fatalf("%d groups, want %d", n, tt.groups)
			}
		})
	}
}

// TestInvalidQueries are refused before anything runs.
func TestInvalidQueries(t *testing.T) {
	qc := startQueryCluster(t, 1, 2, nil)
	x := qc.exec(qc.Members[0].ID)
	for _, q := range []scatter.Query{
		{Prefix: "a"},
		{Aggregate: &scatter.Spec{Op: "count"}, Function: "f"},
		{Aggregate: &scatter.Spec{Op: "median", Field: "x"}},
		{Aggregate: &scatter.Spec{Op: "sum"}},
		{Aggregate: &scatter.Spec{Op: "topk", Field: "x", K: 0}},
		{Aggregate: &scatter.Spec{Op: "count"}, Start: "b", End: "a"},
		{Aggregate: &scatter.Spec{Op: "count"}, Consistency: 9},
	} {
		if _, err := x.Run(context.Background(), q); !errors.Is(err, scatter.ErrInvalidQuery) {
			t.Errorf("%+v: %v, want ErrInvalidQuery", q, err)
		}
	}
}

func (c *qcluster) deploy(t *testing.T, on, name string, wasm []byte, timeoutMS int) {
	t.Helper()
	c.mu.Lock()
	e := c.engines[on]
	c.mu.Unlock()
	if _, err := e.Deploy(context.Background(), name, wasm, lambda.DeployOptions{TimeoutMS: timeoutMS}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestFunctionLeafCombine: the wordcount example's Leaf and Combine over
// three nodes equal a client-side count; each leaf's scan saw its own
// shard only (else words would be counted once per shard).
func TestFunctionLeafCombine(t *testing.T) {
	qc := startQueryCluster(t, 3, 8, nil)
	words := []string{"fox", "cat", "dog", "Fox", "owl", "eel"}
	rng := rand.New(rand.NewPCG(5, 6))
	var recs []rec
	want := map[string]float64{}
	for i := 0; i < 2000; i++ {
		var ws []string
		for j := rng.IntN(6); j >= 0; j-- {
			w := words[rng.IntN(len(words))]
			ws = append(ws, w)
			want[strings.ToLower(w)]++
		}
		recs = append(recs, rec{fmt.Sprintf("doc/%05d", i), strings.Join(ws, " ")})
	}
	recs = append(recs, rec{"docx/1", "zebra"}, rec{"other/1", "fox fox"})
	qc.load(t, qc.Members[2].Node(), recs)
	qc.deploy(t, qc.Members[0].ID, "wordcount", wasmtest.Example(t, "wordcount"), 10000)
	for _, m := range qc.Members {
		res, err := qc.exec(m.ID).Run(context.Background(), scatter.Query{Prefix: "doc/", Function: "wordcount", Consistency: shard.Stale})
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]float64
		if err := json.Unmarshal(res.Raw, &got); err != nil {
			t.Fatalf("%s: %q: %v", m.ID, res.Raw, err)
		}
		if !closeTo(normalize(t, want), normalize(t, got)) {
			t.Fatalf("%s: got %v, want %v", m.ID, got, want)
		}
		if res.Stats.RecordsScanned != 2000 || res.Stats.Nodes != 3 || res.Stats.Levels != 3 {
			t.Fatalf("%s: stats %+v", m.ID, res.Stats)
		}
	}
	// A function without Leaf and Combine, and an unknown one.
	qc.deploy(t, qc.Members[0].ID, "echo", wasmtest.Example(t, "echo"), 1000)
	x := qc.exec(qc.Members[1].ID)
	if _, err := x.Run(context.Background(), scatter.Query{Prefix: "doc/", Function: "echo"}); !errors.Is(err, lambda.ErrNoEntrypoint) {
		t.Fatalf("echo: %v", err)
	}
	if _, err := x.Run(context.Background(), scatter.Query{Prefix: "doc/", Function: "nope"}); !errors.Is(err, lambda.ErrNotFound) {
		t.Fatalf("nope: %v", err)
	}
}

// TestLeafFaultFailsQuery: a leaf that fails is the handler's fault: the
// query fails with it (another replica would fail the same way).
func TestLeafFaultFailsQuery(t *testing.T) {
	qc := startQueryCluster(t, 3, 4, nil)
	n := qc.Members[0].Node()
	load(t, n, []rec{{"p/1", "x"}, {"cfg/leaf_fail", "1"}})
	qc.deploy(t, qc.Members[0].ID, "probe", wasmtest.Guest(t, "leafprobe"), 10000)
	_, err := qc.exec(qc.Members[1].ID).Run(context.Background(), scatter.Query{Prefix: "p/", Function: "probe"})
	if !errors.Is(err, lambda.ErrHandler) || !strings.Contains(err.Error(), "leaf told to fail") {
		t.Fatalf("err = %v, want a handler error", err)
	}
}

// TestNodeKilledMidQuery: a node killed while its leaves run; the query
// still completes, from the other replicas, with every shard counted
// once.
func TestNodeKilledMidQuery(t *testing.T) {
	qc := startQueryCluster(t, 3, 8, nil)
	var recs []rec
	for i := 0; i < 800; i++ {
		recs = append(recs, rec{fmt.Sprintf("p/%04d", i), "v"})
	}
	recs = append(recs, rec{"cfg/leaf_sleep_ms", "700"})
	qc.load(t, qc.Members[0].Node(), recs)
	qc.deploy(t, qc.Members[0].ID, "probe", wasmtest.Guest(t, "leafprobe"), 60000)
	root, victim := qc.Members[0], qc.Members[1]
	type answer struct {
		res *scatter.Response
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := qc.exec(root.ID).Run(context.Background(), scatter.Query{Prefix: "p/", Function: "probe", Consistency: shard.Stale})
		done <- answer{res, err}
	}()
	// Kill the victim once it runs a leaf of this query.
	deadline := time.Now().Add(20 * time.Second)
	for qc.exec(victim.ID).ActiveLeaves() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the victim never ran a leaf")
		}
		time.Sleep(5 * time.Millisecond)
	}
	qc.Kill(victim.ID)
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	var got struct{ Leaves, Records int }
	if err := json.Unmarshal(a.res.Raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Leaves != 8 || got.Records != 800 {
		t.Fatalf("got %+v, want 8 leaves over 800 records", got)
	}
	if a.res.Stats.Retries == 0 {
		t.Fatalf("no retry recorded: %+v", a.res.Stats)
	}
	for _, l := range a.res.Stats.PerShard {
		if l.Node == victim.ID {
			t.Fatalf("shard %d counted from the killed node", l.Shard)
		}
	}
}

// TestCancelStopsLeaves: cancelling a query ends its leaves on every node
// long before they would have finished.
func TestCancelStopsLeaves(t *testing.T) {
	qc := startQueryCluster(t, 3, 8, nil)
	qc.load(t, qc.Members[0].Node(), []rec{{"p/1", "v"}, {"cfg/leaf_sleep_ms", "100000"}})
	qc.deploy(t, qc.Members[0].ID, "probe", wasmtest.Guest(t, "leafprobe"), 200000)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := qc.exec(qc.Members[0].ID).Run(ctx, scatter.Query{Prefix: "p/", Function: "probe", Consistency: shard.Stale})
		errc <- err
	}()
	active := func() int64 {
		var n int64
		for _, m := range qc.Members {
			n += qc.exec(m.ID).ActiveLeaves()
		}
		return n
	}
	qc.Eventually(30*time.Second, "leaves running on every node", func() bool {
		for _, m := range qc.Members {
			if qc.exec(m.ID).ActiveLeaves() == 0 {
				return false
			}
		}
		return true
	})
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled query succeeded")
	}
	// The leaves sleep 100 s; they must stop well before.
	qc.Eventually(30*time.Second, "no leaf running", func() bool { return active() == 0 })
}

// TestFanInLevels: with more nodes than the fan-in, intermediate combine
// levels appear and the answer is unchanged.
func TestFanInLevels(t *testing.T) {
	qc := startQueryCluster(t, 4, 8, func(c *scatter.Config) { c.FanIn = 2 })
	recs := orders(rand.New(rand.NewPCG(7, 8)), 600)
	qc.load(t, qc.Members[0].Node(), recs)
	spec := scatter.Spec{Op: "avg", Field: "amount", GroupBy: "region"}
	res, err := qc.exec(qc.Members[3].ID).Run(context.Background(), scatter.Query{Prefix: "orders/", Aggregate: &spec, Consistency: shard.Stale})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := reference(recs, "orders/", "orders0", spec)
	if got := normalize(t, res.Result); !closeTo(normalize(t, want), got) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Root + three others under fan-in 2: root ← {a ← b, c}: 4 levels.
	if res.Stats.Nodes != 4 || res.Stats.Levels != 4 {
		t.Fatalf("stats %+v, want 4 nodes and 4 levels", res.Stats)
	}
}

// TestIncompleteNamesShards: with a majority gone no shard can be read
// linearizably; the query fails naming every shard, never answering
// partially. A stale query still answers from the survivor.
func TestIncompleteNamesShards(t *testing.T) {
	qc := startQueryCluster(t, 3, 4, nil)
	recs := orders(rand.New(rand.NewPCG(9, 10)), 200)
	qc.load(t, qc.Members[0].Node(), recs)
	qc.Kill(qc.Members[1].ID)
	qc.Kill(qc.Members[2].ID)
	x := qc.exec(qc.Members[0].ID)
	spec := scatter.Spec{Op: "count"}
	_, err := x.Run(context.Background(), scatter.Query{Prefix: "orders/", Aggregate: &spec, Timeout: 3 * time.Second})
	var ie *scatter.IncompleteError
	if !errors.As(err, &ie) || !errors.Is(err, scatter.ErrIncomplete) || len(ie.Missing) == 0 {
		t.Fatalf("err = %v, want incomplete naming shards", err)
	}
	for _, s := range ie.Missing {
		if ie.Errors[s] == "" {
			t.Fatalf("shard %d missing without a reason: %v", s, err)
		}
	}
	t.Logf("%v", err)
	res, err := x.Run(context.Background(), scatter.Query{Prefix: "orders/", Aggregate: &spec, Consistency: shard.Stale})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := reference(recs, "orders/", "orders0", spec)
	if got := normalize(t, res.Result); !closeTo(normalize(t, want), got) || res.Stats.Nodes != 1 {
		t.Fatalf("stale on the survivor: %v (%+v), want %v", got, res.Stats, want)
	}
}

// TestSlowNodeHedged: a node whose answers are delayed far beyond the
// others' has its shards read again elsewhere; the query answers without
// waiting for it.
func TestSlowNodeHedged(t *testing.T) {
	qc := startQueryCluster(t, 3, 8, func(c *scatter.Config) { c.HedgeAfter = 300 * time.Millisecond })
	recs := orders(rand.New(rand.NewPCG(11, 12)), 800)
	qc.load(t, qc.Members[0].Node(), recs)
	root, slow := qc.Members[0], qc.Members[2]
	qc.Faults.Delay(slow.ID, root.ID, 5*time.Second)
	defer qc.Faults.Heal()
	spec := scatter.Spec{Op: "sum", Field: "amount", GroupBy: "region"}
	res, err := qc.exec(root.ID).Run(context.Background(), scatter.Query{Prefix: "orders/", Aggregate: &spec, Consistency: shard.Stale})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := reference(recs, "orders/", "orders0", spec)
	if got := normalize(t, res.Result); !closeTo(normalize(t, want), got) {
		t.Fatalf("got %v, want %v", got, want)
	}
	t.Logf("answered in %.0f ms with %d hedges", res.Stats.ElapsedMS, res.Stats.Hedges)
	if res.Stats.Hedges == 0 {
		t.Fatalf("no hedge: %+v", res.Stats)
	}
	for _, l := range res.Stats.PerShard {
		if l.Node == slow.ID {
			t.Fatalf("shard %d answered by the delayed node", l.Shard)
		}
	}
}
