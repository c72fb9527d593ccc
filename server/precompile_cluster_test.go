package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/clustertest"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
	"lambdadb/shard"
)

// compileCluster is three in-process nodes serving the HTTP API, each with
// its own function engine and metrics registry.
type compileCluster struct {
	*clustertest.Cluster
	mu      sync.Mutex
	engines map[string]*lambda.Engine
	regs    map[string]*prometheus.Registry
}

func newCompileCluster(t *testing.T, deployWait time.Duration) *compileCluster {
	t.Helper()
	cc := &compileCluster{engines: map[string]*lambda.Engine{}, regs: map[string]*prometheus.Registry{}}
	cache := t.TempDir()
	t.Cleanup(func() {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		for _, e := range cc.engines {
			_ = e.Close()
		}
	})
	cc.Cluster = clustertest.Start(t, clustertest.Options{
		Nodes: 3,
		Handler: func(n *shard.Node) (http.Handler, error) {
			reg := prometheus.NewRegistry()
			e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: cache, Registerer: reg})
			if err != nil {
				return nil, err
			}
			cc.mu.Lock()
			if old := cc.engines[n.ID()]; old != nil {
				_ = old.Close()
			}
			cc.engines[n.ID()], cc.regs[n.ID()] = e, reg
			cc.mu.Unlock()
			return server.New(server.Config{Node: n, Functions: e, DeployCompileWait: deployWait})
		},
	})
	// Deploy notices go to the members a node sees up.
	for _, m := range cc.Members {
		cc.Eventually(30*time.Second, "every member sees the others up", func() bool {
			for _, p := range m.Node().Peers() {
				if !p.Up {
					return false
				}
			}
			return true
		})
	}
	return cc
}

func (cc *compileCluster) engine(id string) *lambda.Engine {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.engines[id]
}

// compiles returns member id's lambdadb_function_compiles_total{reason}.
func (cc *compileCluster) compiles(t *testing.T, id, reason string) float64 {
	t.Helper()
	cc.mu.Lock()
	reg := cc.regs[id]
	cc.mu.Unlock()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != lambda.MetricCompiles {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestDeployCompilesOnEveryNode: a deploy through node 1 is compiled on
// nodes 2 and 3 without any call there, before the deploy answers; a
// redeploy compiles its new version the same way.
func TestDeployCompilesOnEveryNode(t *testing.T) {
	cc := newCompileCluster(t, 0) // the default wait
	n1 := cc.Members[0]
	all := strings.Join(cc.IDs(), ",")
	for round, example := range []string{"echo", "sleep"} {
		r := do(t, "PUT", memberURL(n1)+"/v1/functions/fn", wasmtest.Example(t, example))
		if r.status != 201 {
			t.Fatalf("deploy %s: %d %s", example, r.status, r.body)
		}
		var f lambda.Function
		if err := json.Unmarshal(r.body, &f); err != nil {
			t.Fatal(err)
		}
		if got := r.header.Get("X-Compiled-On"); got != all {
			t.Fatalf("deploy %s: X-Compiled-On %q, want %q", example, got, all)
		}
		for _, m := range cc.Members[1:] {
			if !cc.engine(m.ID).CompiledVersion("fn", f.Version) {
				t.Fatalf("deploy %s: not compiled on %s", example, m.ID)
			}
			if n := cc.compiles(t, m.ID, lambda.CompileDeploy); n != float64(round+1) {
				t.Fatalf("deploy %s: %s compiled %v times in the background, want %d", example, m.ID, n, round+1)
			}
		}
		if n := cc.compiles(t, n1.ID, lambda.CompileValidate); n != float64(round+1) {
			t.Fatalf("deploy %s: node 1 validated %v times, want %d", example, n, round+1)
		}
		// Every node's stats say it holds the version compiled.
		g := do(t, "GET", memberURL(cc.Members[1])+"/v1/functions/fn", nil)
		var v struct {
			Version uint64 `json:"version"`
			Nodes   map[string]struct {
				Sandboxes lambda.SandboxCounts `json:"sandboxes"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal(g.body, &v); err != nil || v.Version != f.Version || len(v.Nodes) != 3 {
			t.Fatalf("stats: %s (%v)", g.body, err)
		}
		for id, ns := range v.Nodes {
			if ns.Sandboxes.Cold != 0 || ns.Sandboxes.Compiling != 0 {
				t.Fatalf("deploy %s: %s reports %+v", example, id, ns.Sandboxes)
			}
		}
	}
	// Calls on nodes 2 and 3 start from the compiled module.
	for _, m := range cc.Members[1:] {
		r := do(t, "POST", memberURL(m)+"/v1/functions/fn/invoke", []byte("1"))
		if r.status != 200 || r.header.Get("X-Start") == lambda.StartCold {
			t.Fatalf("call via %s: %d %q %s", m.ID, r.status, r.header.Get("X-Start"), r.body)
		}
	}
	for _, m := range cc.Members {
		if n := cc.compiles(t, m.ID, lambda.CompileCall); n != 0 {
			t.Fatalf("%s: %v calls compiled", m.ID, n)
		}
	}
}

// TestBurstAfterDeployCompilesOnce: with a deploy that answers without
// waiting for compiles, a burst of calls sent on its answer to nodes 2
// and 3 waits for each node's background compile: each compiles the
// module once, and no call compiles.
func TestBurstAfterDeployCompilesOnce(t *testing.T) {
	cc := newCompileCluster(t, -1)
	r := do(t, "PUT", memberURL(cc.Members[0])+"/v1/functions/nap?max_instances=20&timeout_ms=20000", wasmtest.Example(t, "sleep"))
	if r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := cc.Members[1+i%2]
			r := do(t, "POST", memberURL(m)+"/v1/functions/nap/invoke", []byte("50"))
			if r.status != 200 || r.header.Get("X-Start") == lambda.StartCold {
				t.Errorf("call %d via %s: %d %q %s", i, m.ID, r.status, r.header.Get("X-Start"), r.body)
			}
		}()
	}
	wg.Wait()
	for _, m := range cc.Members[1:] {
		deploy, call := cc.compiles(t, m.ID, lambda.CompileDeploy), cc.compiles(t, m.ID, lambda.CompileCall)
		if deploy != 1 || call != 0 {
			t.Fatalf("%s: %v background compiles, %v by calls; want 1 and 0", m.ID, deploy, call)
		}
	}
	st := do(t, "GET", memberURL(cc.Members[1])+"/v1/functions/nap", nil)
	var v struct {
		Starts map[string]int `json:"starts"`
	}
	if err := json.Unmarshal(st.body, &v); err != nil || v.Starts[lambda.StartCold] != 0 {
		t.Fatalf("stats: %s (%v)", st.body, err)
	}
}
