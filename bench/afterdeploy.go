package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// afterDeployMode is one configuration of burst-after-deploy's cluster.
type afterDeployMode struct {
	Name string
	Args []string // lambdadb serve flags
	What string
}

var afterDeployModes = []afterDeployMode{
	{"precompile", nil, "the default: every node compiles the deploy in the background and the deploy answers once they report it compiled (--fn-deploy-wait 10s)"},
	{"background", []string{"--fn-deploy-wait", "0"}, "every node compiles in the background, but the deploy answers at commit (--fn-deploy-wait 0): calls wait for the compile in progress"},
	{"off", []string{"--fn-precompile=false"}, "the old behaviour (--fn-precompile=false): a node compiles at its first call"},
}

// afterDeployBurst is one burst's outcome.
type afterDeployBurst struct {
	Mode        string         `json:"mode"`
	Calls       int            `json:"calls"`
	DeployS     float64        `json:"deploy_s"`      // PUT sent → answer read
	CompiledOn  string         `json:"compiled_on"`   // X-Compiled-On of the deploy
	AllDoneS    float64        `json:"all_done_s"`    // first call sent → last answer read
	Starts      map[string]int `json:"starts"`        // by X-Start
	Errors      map[string]int `json:"errors"`        // by code
	StartMS     Summary        `json:"start_ms"`      // X-Start-Us, in ms
	LatencyMS   Summary        `json:"latency_ms"`    // at the client
	CallCompile float64        `json:"call_compiles"` // nodes 2 and 3: compiles_total{reason="call"}
	BgCompile   float64        `json:"deploy_compiles"`
	Waits       float64        `json:"compile_waits"`
}

func runBurstAfterDeploy(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sleepMS := e.Sizes.BurstSleepMS
	sizes := e.Sizes.AfterDeployBursts
	rep := &ScenarioReport{
		Measures: fmt.Sprintf("How long a burst of %s outstanding %d ms calls takes on the other nodes right after a deploy "+
			"through node 1, how many of them had to compile the module, and how the sandboxes started.",
			joinInts(sizes), sleepMS),
		Method: fmt.Sprintf("Three `lambdadb serve` processes (4 shards, 3 replicas) per mode. The sleep example (2.7 MB; "+
			"its sleep waits in the host, no CPU), made unique by a custom section so no node holds it compiled or cached, is deployed through node 1 under a fresh name with max_instances "+
			"equal to the burst; as soon as the deploy answers, every call of the burst is sent at once, alternating "+
			"nodes 2 and 3 (no key, so each runs where it arrives unless a peer advertises a paused sandbox). All "+
			"done is from the first call sent to the last answer read. Modes: %s.", modesText()),
	}
	rep.Param("bursts", joinInts(sizes))
	rep.Param("handler sleep", fmt.Sprintf("%d ms", sleepMS))
	wasm, err := e.Wasm("sleep")
	if err != nil {
		return rep, err
	}
	var all []afterDeployBurst
	rep.Data = &all
	table := Table{Title: "Bursts right after a deploy, on nodes 2 and 3",
		Columns: []string{"mode", "calls", "deploy s", "compiled on", "all done s", "calls that compiled", "warm/restart/cold",
			"X-Start-Us p50/p90/max ms", "latency max ms", "errors", "compiles (deploy/call) n2+n3", "waited"}}
	for _, m := range afterDeployModes {
		e.logf("mode %s: starting 3 lambdadb nodes", m.Name)
		c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 3, Shards: 4, Args: m.Args})
		if err != nil {
			return rep, err
		}
		for _, n := range sizes {
			b, err := afterDeployOnce(ctx, c, wasm, m.Name, n, sleepMS)
			if err != nil {
				c.Stop()
				return rep, err
			}
			all = append(all, b)
			e.logf("  %s, %d calls: deploy %.2f s (compiled on %q), all done %.2f s, %d compiled (cold), starts %v, errors %v",
				m.Name, n, b.DeployS, b.CompiledOn, b.AllDoneS, b.Starts["cold"], b.Starts, b.Errors)
			pre := fmt.Sprintf("%s %d:", m.Name, n)
			rep.Metric(pre+" deploy", b.DeployS, "s")
			rep.Metric(pre+" all done", b.AllDoneS, "s")
			rep.Metric(pre+" calls that compiled", float64(b.Starts["cold"]), "calls")
			rep.Metric(pre+" restart starts", float64(b.Starts["restart"]), "calls")
			rep.Metric(pre+" warm starts", float64(b.Starts["warm"]), "calls")
			rep.Metric(pre+" X-Start-Us p50", b.StartMS.P50, "ms")
			rep.Metric(pre+" X-Start-Us p90", b.StartMS.P90, "ms")
			rep.Metric(pre+" X-Start-Us max", b.StartMS.Max, "ms")
			errs := 0
			for _, k := range b.Errors {
				errs += k
			}
			rep.Metric(pre+" failed calls", float64(errs), "calls")
			table.Rows = append(table.Rows, []string{m.Name, fmt.Sprint(n), fmt.Sprintf("%.2f", b.DeployS), b.CompiledOn,
				fmt.Sprintf("%.2f", b.AllDoneS), fmt.Sprint(b.Starts["cold"]),
				fmt.Sprintf("%d/%d/%d", b.Starts["warm"], b.Starts["restart"], b.Starts["cold"]),
				fmt.Sprintf("%.0f/%.0f/%.0f", b.StartMS.P50, b.StartMS.P90, b.StartMS.Max),
				fmt.Sprintf("%.0f", b.LatencyMS.Max), fmt.Sprint(errs),
				fmt.Sprintf("%.0f/%.0f", b.BgCompile, b.CallCompile), fmt.Sprintf("%.0f", b.Waits)})
		}
		c.Stop()
	}
	rep.Tables = append(rep.Tables, table)
	rep.Note("The target: %d calls on another node right after a deploy, all done within 1 s, none compiling. "+
		"Restarts cost CPU (each instantiates the module and runs its init), so a burst of restarts on 2 cores "+
		"takes about calls × restart time / 2 on top of the sleep.", sizes[0])
	return rep, nil
}

// afterDeployOnce deploys a fresh function through node 1 and sends n
// calls at once to nodes 2 and 3.
func afterDeployOnce(ctx context.Context, c *Cluster, wasm []byte, mode string, n, sleepMS int) (afterDeployBurst, error) {
	b := afterDeployBurst{Mode: mode, Calls: n, Starts: map[string]int{}, Errors: map[string]int{}}
	name := fmt.Sprintf("sleep-%d", n)
	// A module no node has compiled (nor holds in its compilation cache):
	// the sleep example with a custom section naming this burst.
	wasm = withCustomSection(wasm, "lambdabench", []byte(fmt.Sprintf("%s %d %d", mode, n, time.Now().UnixNano())))
	peers := []*FnClient{NewFnClient(c.Procs[1].Addr, n), NewFnClient(c.Procs[2].Addr, n)}
	defer peers[0].Close()
	defer peers[1].Close()
	before := compileCounters(ctx, peers)
	// Open the connections first, so the burst measures calls, not dials.
	warmConns(ctx, peers, n)
	u := fmt.Sprintf("http://%s/v1/functions/%s?max_instances=%d&timeout_ms=10000", c.Procs[0].Addr, url.PathEscape(name), max(n, 1))
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(wasm))
	if err != nil {
		return b, err
	}
	t0 := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return b, fmt.Errorf("bench: deploy %s: %w", name, err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	b.DeployS = time.Since(t0).Seconds()
	if res.StatusCode != http.StatusCreated {
		return b, fmt.Errorf("bench: deploy %s: %s: %s", name, res.Status, bytes.TrimSpace(body))
	}
	b.CompiledOn = res.Header.Get("X-Compiled-On")
	arg := []byte(fmt.Sprint(sleepMS))
	var mu sync.Mutex
	var wg sync.WaitGroup
	var startMS, latMS []float64
	t1 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			r, err := peers[i%2].Invoke(cctx, name, arg)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				b.Errors["transport"]++
			case r.Status != http.StatusOK:
				b.Errors[r.Code]++
			default:
				b.Starts[r.Start]++
				startMS = append(startMS, float64(r.StartUS)/1000)
				latMS = append(latMS, float64(r.Latency)/float64(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	b.AllDoneS = time.Since(t1).Seconds()
	b.StartMS, b.LatencyMS = Summarize(startMS), Summarize(latMS)
	after := compileCounters(ctx, peers)
	b.BgCompile = after[0] - before[0]
	b.CallCompile = after[1] - before[1]
	b.Waits = after[2] - before[2]
	return b, ctx.Err()
}

// compileCounters sums, over the nodes, background compiles, calls that
// compiled and calls that waited for a compile.
func compileCounters(ctx context.Context, cs []*FnClient) [3]float64 {
	var out [3]float64
	for _, c := range cs {
		m, err := c.Metrics(ctx)
		if err != nil {
			continue
		}
		out[0] += m[`lambdadb_function_compiles_total{reason="deploy"}`]
		out[1] += m[`lambdadb_function_compiles_total{reason="call"}`]
		out[2] += m["lambdadb_function_compile_waits_total"]
	}
	return out
}

// warmConns opens up to n/len(cs) kept-alive connections to each node.
func warmConns(ctx context.Context, cs []*FnClient, n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[i%len(cs)]
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+"/healthz", nil)
			if err != nil {
				return
			}
			if res, err := c.hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
}

func modesText() string {
	var parts []string
	for _, m := range afterDeployModes {
		parts = append(parts, m.Name+": "+m.What)
	}
	return strings.Join(parts, "; ")
}

func joinInts(xs []int) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprint(x))
	}
	return strings.Join(parts, " and ")
}
