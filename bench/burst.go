package bench

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"
)

// burstResult is what burst measured.
type burstResult struct {
	LatencyMS []float64         `json:"-"`      // every successful call, at the client
	CDF       [][2]float64      `json:"cdf_ms"` // (latency ms, fraction of calls ≤ it), at most 500 points
	Starts    map[string]int    `json:"starts"` // by X-Start
	Errors    map[string]int    `json:"errors"` // by code
	Seconds   float64           `json:"seconds"`
	Summary   Summary           `json:"summary_ms"`
	Stats     map[string]uint64 `json:"node_starts"` // starts by kind, from the node's meters
}

func runBurst(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sz := e.Sizes
	n, d, sleepMS := sz.BurstOutstanding, sz.BurstDuration, sz.BurstSleepMS
	rep := &ScenarioReport{
		Measures: fmt.Sprintf("Latency of a handler that sleeps %d ms while %d invocations are kept outstanding for %v: "+
			"each of %d clients calls again as soon as its call returns. The ideal is %d ms per call.", sleepMS, n, d, n, sleepMS),
		Method: fmt.Sprintf("Over HTTP (kept-alive loopback connections) against one `lambdadb serve` process "+
			"(4 shards, default keep-alive and memory budget). The sleep example (its sleep waits in the host, no "+
			"CPU) is deployed with max_instances %d, and the burst starts with no sandbox: the first wave restarts "+
			"sandboxes from the module compiled at deploy, later calls find paused ones. Latency is per call at the "+
			"client, request sent to response read, sandbox starts included.", n),
	}
	rep.Param("outstanding invocations", n)
	rep.Param("duration", d.String())
	rep.Param("handler sleep", fmt.Sprintf("%d ms", sleepMS))
	wasm, err := e.Wasm("sleep")
	if err != nil {
		return rep, err
	}
	e.logf("starting one lambdadb node")
	c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 1, Shards: 4})
	if err != nil {
		return rep, err
	}
	defer c.Stop()
	fc := NewFnClient(c.Procs[0].Addr, 2*n)
	defer fc.Close()
	if err := fc.Deploy(ctx, "sleep", wasm, DeployOptions{MaxInstances: n, TimeoutMS: 10000}); err != nil {
		return rep, err
	}
	res := &burstResult{Starts: map[string]int{}, Errors: map[string]int{}}
	rep.Data = res
	body := []byte(fmt.Sprint(sleepMS))
	e.logf("%d outstanding calls for %v", n, d)
	bctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bctx.Err() == nil {
				// A call in flight when the time is up finishes and counts.
				cctx, ccancel := context.WithTimeout(ctx, time.Minute)
				r, err := fc.Invoke(cctx, "sleep", body)
				ccancel()
				mu.Lock()
				switch {
				case err != nil:
					res.Errors["transport"]++
				case r.Status != http.StatusOK:
					res.Errors[r.Code]++
				default:
					res.LatencyMS = append(res.LatencyMS, float64(r.Latency)/float64(time.Millisecond))
					res.Starts[r.Start]++
				}
				mu.Unlock()
			}
		}()
	}
	// Progress every 10 s while the calls run.
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				mu.Lock()
				ok := len(res.LatencyMS)
				mu.Unlock()
				e.logf("  %.0f s: %d calls done", time.Since(t0).Seconds(), ok)
			}
		}
	}()
	wg.Wait()
	close(done)
	res.Seconds = time.Since(t0).Seconds()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if st, err := fc.Stats(ctx, "sleep"); err == nil {
		res.Stats = st.Starts
	}
	res.Summary = Summarize(res.LatencyMS)
	s := res.Summary
	errs := 0
	for _, k := range res.Errors {
		errs += k
	}
	e.logf("  %d calls, median %.0f ms, p99 %.0f ms, %d errors", s.N, s.P50, s.P99, errs)
	rep.Metric("median latency", s.P50, "ms")
	rep.Metric("p90 latency", s.P90, "ms")
	rep.Metric("p99 latency", s.P99, "ms")
	rep.Metric("max latency", s.Max, "ms")
	rep.Metric("min latency", s.Min, "ms")
	rep.Metric("calls completed", float64(s.N), "calls")
	rep.Metric("calls per second", float64(s.N)/res.Seconds, "calls/s")
	rep.Metric("ideal calls per second", float64(n)*1000/float64(sleepMS), "calls/s")
	rep.Metric("failed calls", float64(errs), "calls")
	for _, k := range []string{"warm", "restart", "cold"} {
		rep.Metric(k+" starts", float64(res.Starts[k]), "calls")
	}
	if errs > 0 {
		rep.Note("Failed calls by code: %s", fmtCounts(res.Errors))
	}
	x, y := CDF(res.LatencyMS, 2000)
	if len(x) == 0 {
		return rep, fmt.Errorf("bench: no call succeeded (%v)", res.Errors)
	}
	cx, cy := CDF(res.LatencyMS, 500)
	for i := range cx {
		res.CDF = append(res.CDF, [2]float64{cx[i], cy[i]})
	}
	plot := "burst-cdf.svg"
	if err := WriteLines(filepath.Join(e.OutDir, plot), Lines{
		Title:  fmt.Sprintf("burst: %d outstanding %d ms calls for %v, latency CDF", n, sleepMS, d),
		XLabel: "latency at the client (ms)", YLabel: "fraction of calls",
		Curves: []Curve{{Name: "lambdadb, one node", X: x, Y: y}},
		VLines: []Mark{
			{Name: fmt.Sprintf("lambdadb median %.0f ms", s.P50), X: s.P50},
			{Name: "AWS Lambda median in the paper: 1.6 s", X: 1600},
		},
		YMax: 1,
	}); err != nil {
		return rep, err
	}
	rep.Plots = append(rep.Plots, plot)
	rep.Paper = fmt.Sprintf("Figure 2: with 100 outstanding 200 ms requests for a minute, AWS Lambda's median "+
		"response time was 1.6 s and Elastic Beanstalk's about 20 s. lambdadb's median here: %.0f ms (%.2f× the "+
		"handler's own %d ms; AWS Lambda's was %.1f× it).", s.P50, s.P50/float64(sleepMS), sleepMS, 1600/float64(sleepMS))
	rep.Note("One node on this machine, not a fleet: the comparison is of what the platform adds to a %d ms handler, not of capacity.", sleepMS)
	return rep, nil
}
