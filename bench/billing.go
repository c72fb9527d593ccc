package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"time"
)

// billingRun is one pass of the trace against a node billing at one
// granularity.
type billingRun struct {
	Granularity   string         `json:"granularity"`
	Calls         int            `json:"calls"`
	DurationUS    []int64        `json:"-"` // X-Duration-Us per call, trace order
	BilledMS      []int64        `json:"-"` // X-Billed-Ms per call
	GBSeconds     float64        `json:"gb_seconds"`
	Starts        map[string]int `json:"starts"`
	SumDurationMS float64        `json:"sum_duration_ms"`
	SumBilledMS   int64          `json:"sum_billed_ms"`
	NodeBilledMS  uint64         `json:"node_billed_ms"` // the function's meter, trace calls only
}

// billingData is billing's raw data.
type billingData struct {
	Seed       int64        `json:"seed"`
	Theta      float64      `json:"short_theta_ms"`
	Requested  []int        `json:"requested_ms"`
	Short      []bool       `json:"short"`
	Runs       []billingRun `json:"runs"`
	Recomputed int64        `json:"billed_100ms_recomputed_from_1ms_run"`
}

func runBilling(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sz := e.Sizes
	mix := NewGmailMix()
	reqMS, short := mix.Trace(sz.BillingCalls, sz.BillingSeed)
	theta := mix.Theta()
	rep := &ScenarioReport{
		Measures: "What an RPC mix shaped like the paper's Gmail trace costs when each call is billed in 100 ms " +
			"units (as AWS Lambda billed in 2016) and in 1 ms units (lambdadb's default), from real metered invocations.",
		Method: fmt.Sprintf("A trace of %d durations is drawn (seed %d): %.0f%% short RPCs of 1–99 ms with "+
			"P(k) ∝ exp(-k/θ), θ = %.1f ms so that their mean is %.0f ms; the rest log-uniform in %.0f–%.0f ms. "+
			"Each duration is the body of a call to the sleep example (it sleeps that long in the host). The same "+
			"trace runs twice, each time against a fresh `lambdadb serve` process (4 shards) started with "+
			"--billing-granularity 1ms and then 100ms, %d calls at a time, after a warm-up that leaves %d paused "+
			"sandboxes (so the metered time is the handler's, not sandbox starts). Billed time and GB-s are summed "+
			"from each call's X-Billed-Ms and X-Gb-Seconds and checked against the function's meter on the node.",
			sz.BillingCalls, sz.BillingSeed, mix.ShortFraction*100, theta, mix.ShortMeanMS, mix.LongMinMS, mix.LongMaxMS,
			sz.BillingConcurrency, sz.BillingConcurrency),
	}
	rep.Param("calls per granularity", sz.BillingCalls)
	rep.Param("seed", sz.BillingSeed)
	rep.Param("concurrent callers", sz.BillingConcurrency)
	rep.Param("short fraction", mix.ShortFraction)
	rep.Param("short mean (target)", fmt.Sprintf("%.0f ms", mix.ShortMeanMS))
	rep.Param("long range", fmt.Sprintf("%.0f–%.0f ms, log-uniform", mix.LongMinMS, mix.LongMaxMS))
	rep.Param("function memory cap", "64 MB")
	data := &billingData{Seed: sz.BillingSeed, Theta: theta, Requested: reqMS, Short: short}
	rep.Data = data
	wasm, err := e.Wasm("sleep")
	if err != nil {
		return rep, err
	}
	for _, g := range []time.Duration{time.Millisecond, 100 * time.Millisecond} {
		run, err := billingPass(ctx, e, wasm, g, reqMS)
		if err != nil {
			return rep, err
		}
		data.Runs = append(data.Runs, run)
	}
	r1, r100 := data.Runs[0], data.Runs[1]
	for _, d := range r1.DurationUS {
		data.Recomputed += int64(Billed(time.Duration(d)*time.Microsecond, 100*time.Millisecond) / time.Millisecond)
	}

	// Means per call by class.
	type means struct{ req, dur1, dur100, b1, b100 float64 }
	class := func(want func(i int) bool) (m means, n int) {
		for i := range reqMS {
			if !want(i) {
				continue
			}
			n++
			m.req += float64(reqMS[i])
			m.dur1 += float64(r1.DurationUS[i]) / 1000
			m.dur100 += float64(r100.DurationUS[i]) / 1000
			m.b1 += float64(r1.BilledMS[i])
			m.b100 += float64(r100.BilledMS[i])
		}
		if n > 0 {
			f := 1 / float64(n)
			m = means{m.req * f, m.dur1 * f, m.dur100 * f, m.b1 * f, m.b100 * f}
		} else {
			nan := math.NaN()
			m = means{nan, nan, nan, nan, nan}
		}
		return m, n
	}
	sm, sn := class(func(i int) bool { return short[i] })
	lm, ln := class(func(i int) bool { return !short[i] })
	am, _ := class(func(int) bool { return true })

	rep.Metric("billed at 100 ms / billed at 1 ms, whole mix", ratio(float64(r100.SumBilledMS), float64(r1.SumBilledMS)), "×")
	rep.Metric("billed at 100 ms / billed at 1 ms, short RPCs", ratio(sm.b100, sm.b1), "×")
	rep.Metric("short RPCs", float64(sn), "calls")
	rep.Metric("long RPCs", float64(ln), "calls")
	rep.Metric("short RPCs mean requested", sm.req, "ms")
	rep.Metric("short RPCs mean metered (1 ms run)", sm.dur1, "ms")
	rep.Metric("short RPCs mean billed at 1 ms", sm.b1, "ms")
	rep.Metric("short RPCs mean billed at 100 ms", sm.b100, "ms")
	rep.Metric("long RPCs mean metered (1 ms run)", lm.dur1, "ms")
	rep.Metric("long RPCs mean billed at 1 ms", lm.b1, "ms")
	rep.Metric("long RPCs mean billed at 100 ms", lm.b100, "ms")
	rep.Metric("total metered, 1 ms run", r1.SumDurationMS, "ms")
	rep.Metric("total metered, 100 ms run", r100.SumDurationMS, "ms")
	rep.Metric("total billed at 1 ms", float64(r1.SumBilledMS), "ms")
	rep.Metric("total billed at 100 ms", float64(r100.SumBilledMS), "ms")
	rep.Metric("total billed at 100 ms, recomputed from the 1 ms run's metered durations", float64(data.Recomputed), "ms")
	rep.Metric("GB-s at 1 ms", r1.GBSeconds, "GB-s")
	rep.Metric("GB-s at 100 ms", r100.GBSeconds, "GB-s")
	rep.Metric("overhead billed over metered at 1 ms", ratio(float64(r1.SumBilledMS), r1.SumDurationMS), "×")
	rep.Metric("overhead billed over metered at 100 ms", ratio(float64(r100.SumBilledMS), r100.SumDurationMS), "×")
	t := Table{Columns: []string{"granularity", "calls", "starts", "metered (sum)", "billed (sum, headers)", "billed (node meter)", "GB-s"}}
	for _, r := range data.Runs {
		t.Rows = append(t.Rows, []string{r.Granularity, fmt.Sprint(r.Calls), fmtCounts(r.Starts),
			fmt.Sprintf("%.0f ms", r.SumDurationMS), fmt.Sprintf("%d ms", r.SumBilledMS), fmt.Sprintf("%d ms", r.NodeBilledMS),
			formatValue(r.GBSeconds, "")})
		if uint64(r.SumBilledMS) != r.NodeBilledMS {
			rep.Note("At %s the node's meter (%d ms) and the sum of X-Billed-Ms (%d ms) differ.", r.Granularity, r.NodeBilledMS, r.SumBilledMS)
		}
	}
	rep.Tables = append(rep.Tables, t)
	plot := "billing.svg"
	if err := WriteBars(filepath.Join(e.OutDir, plot), Bars{
		Title:      "billing: mean time per call, Gmail-shaped mix",
		YLabel:     "milliseconds per call",
		Categories: []string{fmt.Sprintf("short RPCs (%d)", sn), fmt.Sprintf("long RPCs (%d)", ln), "all"},
		Series: []Series{
			{Name: "metered (1 ms run)", Values: []float64{sm.dur1, lm.dur1, am.dur1}},
			{Name: "billed at 1 ms", Values: []float64{sm.b1, lm.b1, am.b1}},
			{Name: "billed at 100 ms", Values: []float64{sm.b100, lm.b100, am.b100}},
		},
	}); err != nil {
		return rep, err
	}
	rep.Plots = append(rep.Plots, plot)
	rep.Paper = fmt.Sprintf("In the Gmail trace most RPCs take under 100 ms and the short ones average 27 ms, "+
		"so billing in 100 ms units charges such an RPC about 100/27 = 3.7× its duration. Measured here: short RPCs "+
		"were billed %.1f ms on average at 100 ms granularity against %.1f ms at 1 ms (%.2f×); the whole mix %.2f×.",
		sm.b100, sm.b1, ratio(sm.b100, sm.b1), ratio(float64(r100.SumBilledMS), float64(r1.SumBilledMS)))
	rep.Note("A call is billed from taking its sandbox to returning it, so even a warm call of k ms is metered slightly over k ms and billed k+1 ms at 1 ms granularity — and a 100 ms call is billed 200 ms at 100 ms granularity.")
	return rep, nil
}

// billingPass runs the trace against a fresh node billing at g.
func billingPass(ctx context.Context, e *Env, wasm []byte, g time.Duration, reqMS []int) (billingRun, error) {
	conc := e.Sizes.BillingConcurrency
	run := billingRun{Granularity: g.String(), Calls: len(reqMS), Starts: map[string]int{},
		DurationUS: make([]int64, len(reqMS)), BilledMS: make([]int64, len(reqMS))}
	e.logf("starting one lambdadb node with --billing-granularity %v", g)
	c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 1, Shards: 4,
		Args: []string{"--billing-granularity", g.String()}})
	if err != nil {
		return run, err
	}
	defer c.Stop()
	fc := NewFnClient(c.Procs[0].Addr, 2*conc)
	defer fc.Close()
	if err := fc.Deploy(ctx, "sleep", wasm, DeployOptions{TimeoutMS: 5000, MaxInstances: conc}); err != nil {
		return run, err
	}
	// Warm-up: conc overlapping calls leave conc paused sandboxes.
	var wg sync.WaitGroup
	werr := make(chan error, conc)
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := fc.Invoke(ctx, "sleep", []byte("1000"))
			if err == nil {
				err = r.mustOK("sleep")
			}
			werr <- err
		}()
	}
	wg.Wait()
	close(werr)
	for err := range werr {
		if err != nil {
			return run, err
		}
	}
	before, err := fc.Stats(ctx, "sleep")
	if err != nil {
		return run, err
	}
	e.logf("%d calls, %d at a time", len(reqMS), conc)
	next := make(chan int)
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, err := fc.Invoke(ctx, "sleep", []byte(fmt.Sprint(reqMS[i])))
				if err == nil {
					err = r.mustOK("sleep")
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				run.DurationUS[i], run.BilledMS[i] = r.DurationUS, r.BilledMS
				run.GBSeconds += r.GBSeconds
				run.Starts[r.Start]++
				mu.Unlock()
			}
		}()
	}
	for i := range reqMS {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return run, err
	}
	if firstErr != nil {
		return run, firstErr
	}
	after, err := fc.Stats(ctx, "sleep")
	if err != nil {
		return run, err
	}
	run.NodeBilledMS = after.BilledMS - before.BilledMS
	for i := range reqMS {
		run.SumDurationMS += float64(run.DurationUS[i]) / 1000
		run.SumBilledMS += run.BilledMS[i]
	}
	e.logf("  metered %.0f ms, billed %d ms, starts: %s", run.SumDurationMS, run.SumBilledMS, fmtCounts(run.Starts))
	return run, nil
}
