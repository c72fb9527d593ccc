package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"sync"
	"time"
)

// densityStep is one step of the density ramp.
type densityStep struct {
	Offered      int     `json:"offered"`       // concurrent calls
	OK           int     `json:"ok"`            // calls that ran
	Refused      int     `json:"refused"`       // 429: no room in the memory budget
	OtherErrors  int     `json:"other_errors"`  // anything else
	Paused       int     `json:"paused"`        // paused sandboxes after the step
	LiveBytes    float64 `json:"live_bytes"`    // lambdadb_function_sandbox_memory_bytes after the step
	BudgetEvicts float64 `json:"budget_evicts"` // evictions by the memory budget so far
	RSSBytes     int64   `json:"rss_bytes"`     // the node's resident memory after the step
	PSSBytes     int64   `json:"pss_bytes"`     // its proportional set size (shared pages counted once)
}

// densitySleep is how long each call of a step sleeps: long enough that
// every call of the step is running at once.
const densitySleep = 3 * time.Second

func runDensity(ctx context.Context, e *Env) (*ScenarioReport, error) {
	budget := e.Sizes.DensityBudgetMB
	rep := &ScenarioReport{
		Measures: "How many paused sandboxes one node holds per GiB: ever more concurrent calls are offered to " +
			"one node until its sandbox memory budget (--fn-memory-mb) binds — new sandboxes are refused (429) " +
			"because the running ones fill it — and the sandboxes left paused are counted.",
		Method: fmt.Sprintf("Over HTTP against one `lambdadb serve` process (4 shards, --fn-memory-mb %d, "+
			"--fn-keep-alive 10m). The sleep example (~3 MiB of linear memory once started, memory cap 64 MB, "+
			"max_instances 1000) is called by N concurrent clients, each call sleeping %v in the host (no CPU), so N "+
			"sandboxes run at once and stay paused afterwards. N doubles from 16 until calls are refused. After each "+
			"step: paused sandboxes (GET /v1/functions/sleep?scope=node), the node's accounted sandbox memory and "+
			"budget evictions (/metrics), and the process's resident memory (VmRSS, and PSS from smaps_rollup, which "+
			"counts a page mapped by many sandboxes once). The ramp runs twice, on a fresh node each: with sandbox "+
			"snapshots (the default) and with --fn-snapshots=false.", budget, densitySleep),
	}
	data := map[string]*[]densityStep{}
	rep.Data = data
	for _, snap := range []bool{true, false} {
		steps, err := densityRamp(ctx, e, rep, budget, snap)
		data[fmt.Sprintf("snapshots=%v", snap)] = &steps
		if err != nil {
			return rep, err
		}
	}
	rep.Paper = "Counterpart of Figure 6: how many idle handlers a machine keeps paused, which memory bounds. " +
		"It is reported here for lambdadb's WebAssembly sandboxes, per GiB of the node's sandbox budget and per GiB " +
		"of resident memory actually used; no number from the paper is compared."
	return rep, nil
}

// densityRamp runs the ramp on a fresh node with snapshots on or off; the
// off run's metrics are suffixed " (snapshots off)".
func densityRamp(ctx context.Context, e *Env, rep *ScenarioReport, budget int, snap bool) ([]densityStep, error) {
	sfx, file := "", "density.svg"
	if !snap {
		sfx, file = " (snapshots off)", "density-nosnap.svg"
	}
	var steps []densityStep
	if snap {
		rep.Param("node memory budget (--fn-memory-mb)", budget)
		rep.Param("sleep per call", densitySleep.String())
		rep.Param("function memory cap", "64 MB")
	}
	wasm, err := e.Wasm("sleep")
	if err != nil {
		return steps, err
	}
	e.logf("starting one lambdadb node, sandbox memory budget %d MiB, --fn-snapshots=%v", budget, snap)
	c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 1, Shards: 4,
		Args: []string{"--fn-memory-mb", fmt.Sprint(budget), "--fn-keep-alive", "10m", fmt.Sprintf("--fn-snapshots=%v", snap)}})
	if err != nil {
		return steps, err
	}
	defer c.Stop()
	node := c.Procs[0]
	fc := NewFnClient(node.Addr, 2048)
	defer fc.Close()
	if err := fc.Deploy(ctx, "sleep", wasm, DeployOptions{TimeoutMS: 60000, MaxInstances: 1000}); err != nil {
		return steps, err
	}
	rss0, err := rssBytes(node.Pid())
	if err != nil {
		return steps, err
	}
	pss0, _ := pssBytes(node.Pid())
	body := []byte(fmt.Sprint(densitySleep.Milliseconds()))
	for n := 16; n <= 1000; n *= 2 {
		if err := ctx.Err(); err != nil {
			return steps, err
		}
		e.logf("%d concurrent calls", n)
		st := densityStep{Offered: n}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				defer cancel()
				r, err := fc.Invoke(cctx, "sleep", body)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					st.OtherErrors++
				case r.Status == http.StatusOK:
					st.OK++
				case r.Status == http.StatusTooManyRequests:
					st.Refused++
				default:
					st.OtherErrors++
				}
			}()
		}
		wg.Wait()
		fs, err := fc.Stats(ctx, "sleep")
		if err != nil {
			return steps, err
		}
		m, err := fc.Metrics(ctx)
		if err != nil {
			return steps, err
		}
		st.Paused = fs.Sandboxes.Paused
		st.LiveBytes = m["lambdadb_function_sandbox_memory_bytes"]
		st.BudgetEvicts = m[`lambdadb_function_sandbox_evictions_total{reason="memory_budget"}`]
		if st.RSSBytes, err = rssBytes(node.Pid()); err != nil {
			return steps, err
		}
		st.PSSBytes, _ = pssBytes(node.Pid())
		steps = append(steps, st)
		e.logf("  ok %d, refused %d, other errors %d, paused %d, sandbox memory %.0f MiB, RSS %.0f MiB, PSS %.0f MiB",
			st.OK, st.Refused, st.OtherErrors, st.Paused, st.LiveBytes/(1<<20), float64(st.RSSBytes)/(1<<20), float64(st.PSSBytes)/(1<<20))
		if st.OtherErrors > 0 {
			return steps, fmt.Errorf("bench: %d of %d calls failed other than by the memory budget", st.OtherErrors, n)
		}
		if st.Refused > 0 {
			break
		}
	}
	last := steps[len(steps)-1]
	held := 0
	var heldStep densityStep
	for _, s := range steps {
		if s.Paused > held {
			held, heldStep = s.Paused, s
		}
	}
	gib := float64(budget) / 1024
	perSandbox := math.NaN()
	if held > 0 {
		perSandbox = heldStep.LiveBytes / float64(held)
	}
	// Resident growth per sandbox from the last step nothing was evicted
	// in: an evicted sandbox's memory may stay resident in the allocator's
	// pool of reusable mappings, which would count against the survivors.
	rssPer, pssPer, rssStep := math.NaN(), math.NaN(), densityStep{}
	for _, s := range steps {
		if s.BudgetEvicts == 0 && s.Refused == 0 && s.Paused > 0 {
			rssStep = s
		}
	}
	if rssStep.Paused > 0 {
		rssPer = float64(rssStep.RSSBytes-rss0) / float64(rssStep.Paused)
		if pss0 > 0 && rssStep.PSSBytes > 0 {
			pssPer = float64(rssStep.PSSBytes-pss0) / float64(rssStep.Paused)
		}
	}
	rep.Metric("paused sandboxes per GiB of budget"+sfx, float64(held)/gib, "per GiB")
	rep.Metric("paused sandboxes held"+sfx, float64(held), "sandboxes")
	rep.Metric("budget bound (1 = yes)"+sfx, boolf(last.Refused > 0), "")
	rep.Metric("accounted memory per paused sandbox"+sfx, perSandbox/(1<<20), "MiB")
	rep.Metric("paused sandboxes per GiB by accounted memory"+sfx, (1<<30)/perSandbox, "per GiB")
	rep.Metric("resident memory growth per paused sandbox"+sfx, rssPer/(1<<20), "MiB")
	rep.Metric("paused sandboxes per GiB by resident memory growth"+sfx, (1<<30)/rssPer, "per GiB")
	rep.Metric("PSS growth per paused sandbox"+sfx, pssPer/(1<<20), "MiB")
	rep.Metric("paused sandboxes per GiB by PSS growth"+sfx, (1<<30)/pssPer, "per GiB")
	if last.Refused == 0 {
		rep.Note("The budget never bound%s: %d concurrent calls all ran, so 'per GiB of budget' is a lower bound; 'by accounted memory' extrapolates. Raise the ramp's ceiling or lower the budget.", sfx, last.Offered)
	}
	t := Table{Title: "snapshots " + map[bool]string{true: "on", false: "off"}[snap],
		Columns: []string{"concurrent calls", "ran", "refused (429)", "paused after", "sandbox memory", "budget evictions", "node RSS", "node PSS"}}
	offered := Series{Name: "concurrent calls offered"}
	paused := Series{Name: "paused sandboxes after"}
	refused := Series{Name: "calls refused (429)"}
	var cats []string
	for _, s := range steps {
		t.Rows = append(t.Rows, []string{fmt.Sprint(s.Offered), fmt.Sprint(s.OK), fmt.Sprint(s.Refused), fmt.Sprint(s.Paused),
			fmt.Sprintf("%.0f MiB", s.LiveBytes/(1<<20)), fmt.Sprint(s.BudgetEvicts), fmt.Sprintf("%.0f MiB", float64(s.RSSBytes)/(1<<20)), fmt.Sprintf("%.0f MiB", float64(s.PSSBytes)/(1<<20))})
		cats = append(cats, fmt.Sprint(s.Offered))
		offered.Values = append(offered.Values, float64(s.Offered))
		paused.Values = append(paused.Values, float64(s.Paused))
		refused.Values = append(refused.Values, float64(s.Refused))
	}
	rep.Tables = append(rep.Tables, t)
	rep.Note("Node resident memory before the first step%s: %.0f MiB. Resident growth per sandbox is taken at the last step without evictions (%d paused); it counts the pages sandboxes touched and the engine's own bookkeeping. RSS counts a snapshot page once per sandbox mapping it, PSS once in all. With snapshots the budget counts the pages each sandbox dirtied plus the snapshot once; without, each sandbox's whole linear memory.", sfx, float64(rss0)/(1<<20), rssStep.Paused)
	plot := file
	if err := WriteBars(filepath.Join(e.OutDir, plot), Bars{
		Title:      fmt.Sprintf("density: sandboxes held by one node, %d MiB budget%s", budget, sfx),
		XLabel:     "concurrent calls, each sleeping " + densitySleep.String(),
		YLabel:     "calls / sandboxes",
		Categories: cats,
		Series:     []Series{offered, paused, refused},
	}); err != nil {
		return steps, err
	}
	rep.Plots = append(rep.Plots, plot)
	return steps, nil
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
