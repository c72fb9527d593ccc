package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Result summarises one closed-loop load run.
type Result struct {
	System      string  `json:"system"`
	Op          string  `json:"op"`
	Consistency string  `json:"consistency,omitempty"`
	Round       int     `json:"round,omitempty"` // 1-based, when measured in rounds
	Clients     int     `json:"clients"`
	ValueBytes  int     `json:"value_bytes"`
	Seconds     float64 `json:"seconds"`
	Ops         int     `json:"ops"`
	Errors      int     `json:"errors"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	FirstError  string  `json:"first_error,omitempty"`
	// CPU time per successful operation, in µs, when measured
	// (KVConfig.CPU): of the server processes summed, and of the process
	// generating the load (the clients).
	NodeCPUus   float64 `json:"node_cpu_us_per_op,omitempty"`
	ClientCPUus float64 `json:"client_cpu_us_per_op,omitempty"`
}

func (r Result) String() string {
	return fmt.Sprintf("%-9s %-6s %-13s %8.0f ops/s  p50 %7.0fµs  p99 %7.0fµs  (%d ops, %d errors)",
		r.System, r.Op, r.Consistency, r.OpsPerSec, r.P50us, r.P99us, r.Ops, r.Errors)
}

// ErrStop, returned by an Op, ends that worker without counting an error.
var ErrStop = errors.New("bench: stop")

// Op is one operation of worker w, its i-th.
type Op func(ctx context.Context, w, i int) error

// Run drives clients closed-loop workers calling op for d and summarises
// the latencies of successful operations.
func Run(clients int, d time.Duration, op Op) Result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	lats := make([][]time.Duration, clients)
	errs := make([]int, clients)
	firstErr := make([]error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				opCtx, c := context.WithTimeout(context.Background(), 10*time.Second)
				err := op(opCtx, w, i)
				c()
				if errors.Is(err, ErrStop) {
					return
				}
				if err != nil {
					if ctx.Err() == nil {
						errs[w]++
						if firstErr[w] == nil {
							firstErr[w] = err
						}
					}
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	r := Result{Clients: clients, Seconds: elapsed.Seconds()}
	for w := range lats {
		all = append(all, lats[w]...)
		r.Errors += errs[w]
		if firstErr[w] != nil && r.FirstError == "" {
			r.FirstError = firstErr[w].Error()
		}
	}
	slices.Sort(all)
	r.Ops = len(all)
	r.OpsPerSec = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 { // no NaN: results are encoded as JSON
		r.P50us = quantile(all, 0.50)
		r.P99us = quantile(all, 0.99)
	}
	return r
}

func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i].Nanoseconds()) / 1e3
}
