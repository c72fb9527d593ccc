package bench

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Start kinds measured by sandbox-start, in report order. "first-compile"
// is a cold start (X-Start: cold) with an empty compilation cache.
var startKinds = []string{"warm", "restart", "cold", "first-compile"}

// startKeepAlive is the node's --fn-keep-alive in sandbox-start: a paused
// sandbox idle this long is stopped, so the next call restarts it.
const startKeepAlive = 100 * time.Millisecond

// startSamples collects latencies by start kind.
type startSamples struct {
	StartUS map[string][]float64 `json:"start_us"` // X-Start-Us: obtaining the sandbox, on the node
	CallUS  map[string][]float64 `json:"call_us"`  // whole invocation at the client
	// Mismatched counts calls that reported another start than the
	// phase aimed for (they are filed under the kind they reported).
	Mismatched int `json:"mismatched"`
}

func (s *startSamples) add(kind string, c Call) {
	s.StartUS[kind] = append(s.StartUS[kind], float64(c.StartUS))
	s.CallUS[kind] = append(s.CallUS[kind], float64(c.Latency)/float64(time.Microsecond))
}

// file records c under the kind it reports, counting a mismatch when the
// phase aimed for another.
func (s *startSamples) file(want string, c Call) {
	kind := c.Start
	if want == "first-compile" && kind == "cold" {
		kind = want
	}
	if kind != want {
		s.Mismatched++
	}
	if kind == "" {
		kind = "unknown"
	}
	s.add(kind, c)
}

func runSandboxStart(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sz := e.Sizes
	rep := &ScenarioReport{
		Measures: "How long an invocation takes to get a sandbox, by the sandbox's state: warm (a paused " +
			"sandbox resumes), restart (instantiate the compiled module from the node's snapshot of it; and, on a second node " +
			"with --fn-snapshots=false, running the module's init — the Go runtime's start — in the new sandbox), cold (compile from the node's on-disk " +
			"compilation cache, then instantiate) and first-compile (compile from scratch: the cache emptied). " +
			"Reference points for process sandboxes: fork/exec of a minimal process (/bin/true) and of `python3 -c pass`, " +
			"start to exit.",
		Method: fmt.Sprintf("Over HTTP against one `lambdadb serve` process (4 shards, --fn-keep-alive %v), the echo "+
			"example (no KV call, %s module built for wasip1 like a user's). Each call is filed under the start kind "+
			"the node reports in X-Start; *start* is X-Start-Us (time to obtain the sandbox, on the node), *call* the "+
			"whole invocation at the client over a kept-alive loopback connection. Warm: back-to-back calls. "+
			"Restart: a call after %v idle (the keep-alive stopped the paused sandbox; the compiled module stays). "+
			"Cold: distinct copies of echo (each with a different custom section, so different bytes and hashes, "+
			"identical code) are deployed (deploying compiles them, filling the on-disk cache), the node process is "+
			"restarted (no compiled module in memory) and each copy is called once. First-compile: the node is "+
			"stopped, its compilation cache files deleted, restarted, and each copy called once. Process "+
			"references: exec.Command(...).Run() from the bench process.", startKeepAlive, "~2.7 MB", 2*startKeepAlive+50*time.Millisecond),
	}
	rep.Param("warm calls", sz.StartWarm)
	rep.Param("restarts", sz.StartRestart)
	rep.Param("cold starts and first compiles (distinct modules)", sz.StartCold)
	rep.Param("fork/exec /bin/true", sz.StartProcess)
	rep.Param("python3 -c pass", sz.StartPython)
	rep.Param("node --fn-keep-alive", startKeepAlive.String())
	if e.Python != "" {
		rep.Param("python3", e.Python)
	}

	echo, err := e.Wasm("echo")
	if err != nil {
		return rep, err
	}
	s := &startSamples{StartUS: map[string][]float64{}, CallUS: map[string][]float64{}}
	rep.Data = s
	e.logf("starting one lambdadb node")
	c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 1, Shards: 4,
		Args: []string{"--fn-keep-alive", startKeepAlive.String()}})
	if err != nil {
		return rep, err
	}
	defer c.Stop()
	fc := NewFnClient(c.Procs[0].Addr, 4)
	defer fc.Close()
	if err := fc.Deploy(ctx, "echo", echo, DeployOptions{}); err != nil {
		return rep, err
	}
	call := func(name string) (Call, error) {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := fc.Invoke(cctx, name, []byte("x"))
		if err != nil {
			return r, err
		}
		return r, r.mustOK(name)
	}
	// The first call starts the first sandbox; not a sample.
	if _, err := call("echo"); err != nil {
		return rep, err
	}
	e.logf("warm: %d back-to-back calls", sz.StartWarm)
	for i := 0; i < sz.StartWarm; i++ {
		r, err := call("echo")
		if err != nil {
			return rep, err
		}
		s.file("warm", r)
	}
	e.logf("restart: %d calls, each after %v idle", sz.StartRestart, 2*startKeepAlive+50*time.Millisecond)
	for i := 0; i < sz.StartRestart; i++ {
		if err := sleepCtx(ctx, 2*startKeepAlive+50*time.Millisecond); err != nil {
			return rep, err
		}
		r, err := call("echo")
		if err != nil {
			return rep, err
		}
		s.file("restart", r)
	}

	// The old path, for comparison: a second node whose sandboxes each run
	// the module's init (the Go runtime's start) instead of starting from
	// its snapshot.
	if err := offSnapshotStarts(ctx, e, s); err != nil {
		return rep, err
	}

	e.logf("cold: deploying %d distinct copies of echo", sz.StartCold)
	var names []string
	for i := 0; i < sz.StartCold; i++ {
		name := fmt.Sprintf("echo-copy-%d", i)
		mod := withCustomSection(echo, "lambdabench", fmt.Appendf(nil, "copy %d %d", i, time.Now().UnixNano()))
		if err := fc.Deploy(ctx, name, mod, DeployOptions{}); err != nil {
			return rep, err
		}
		names = append(names, name)
	}
	node := c.Procs[0]
	for _, phase := range []string{"cold", "first-compile"} {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		var between func() error
		if phase == "first-compile" {
			between = func() error { return clearCompilationCache(filepath.Join(node.Dir, "wasm-cache")) }
			e.logf("first-compile: restarting the node with its compilation cache emptied; one call per copy")
		} else {
			e.logf("cold: restarting the node (cache kept); one call per copy")
		}
		fc.Close()
		if err := c.Restart(between); err != nil {
			return rep, err
		}
		for _, name := range names {
			r, err := call(name)
			if err != nil {
				return rep, err
			}
			s.file(phase, r)
		}
	}

	e.logf("process references: %d × /bin/true, %d × python3 -c pass", sz.StartProcess, sz.StartPython)
	procs := []struct {
		kind string
		n    int
		argv []string
	}{{"fork/exec /bin/true", sz.StartProcess, []string{"true"}}}
	if e.Python != "" {
		procs = append(procs, struct {
			kind string
			n    int
			argv []string
		}{"python3 -c pass", sz.StartPython, []string{e.Python, "-c", "pass"}})
	} else {
		rep.Note("python3 was not found: its reference point is missing.")
	}
	for _, p := range procs {
		bin, err := exec.LookPath(p.argv[0])
		if err != nil {
			return rep, fmt.Errorf("bench: %w", err)
		}
		for i := 0; i < p.n; i++ {
			t0 := time.Now()
			if err := exec.CommandContext(ctx, bin, p.argv[1:]...).Run(); err != nil {
				return rep, fmt.Errorf("bench: %s: %w", p.kind, err)
			}
			s.CallUS[p.kind] = append(s.CallUS[p.kind], float64(time.Since(t0))/float64(time.Microsecond))
		}
	}

	// Metrics, table, plot.
	kinds := append([]string{"warm", "warm (snapshots off)", "restart", "restart (snapshots off)"}, startKinds[2:]...)
	kinds = append(kinds, "fork/exec /bin/true", "python3 -c pass")
	t := Table{Columns: []string{"start", "samples", "start p50", "start p90", "start max", "call p50", "call p90", "call max"}}
	startSeries, callSeries := Series{Name: "sandbox start (X-Start-Us, on the node)"}, Series{Name: "whole call / process run (client)"}
	for _, k := range kinds {
		st, cl := Summarize(s.StartUS[k]), Summarize(s.CallUS[k])
		if cl.N == 0 {
			st, cl = Summary{P50: math.NaN()}, Summary{P50: math.NaN()}
		}
		isProc := strings.HasPrefix(k, "fork/exec") || strings.HasPrefix(k, "python3")
		if !isProc {
			rep.Metric(k+" start p50", st.P50/1000, "ms")
		}
		rep.Metric(k+" call p50", cl.P50/1000, "ms")
		startV := st.P50
		if isProc {
			startV = math.NaN()
		}
		startSeries.Values = append(startSeries.Values, startV)
		callSeries.Values = append(callSeries.Values, cl.P50)
		if cl.N == 0 {
			continue
		}
		row := []string{k, fmt.Sprint(cl.N), "—", "—", "—", fmtMicros(cl.P50), fmtMicros(cl.P90), fmtMicros(cl.Max)}
		if !isProc {
			row[2], row[3], row[4] = fmtMicros(st.P50), fmtMicros(st.P90), fmtMicros(st.Max)
		}
		t.Rows = append(t.Rows, row)
	}
	// Headline first.
	warm, _ := rep.Lookup("warm call p50")
	restart, _ := rep.Lookup("restart call p50")
	restartOff, _ := rep.Lookup("restart (snapshots off) start p50")
	restartOn, _ := rep.Lookup("restart start p50")
	rep.Metrics = append([]Metric{{Name: "restart call p50 / warm call p50", Value: ratio(restart, warm), Unit: "×"},
		{Name: "restart start p50, snapshots off / on", Value: ratio(restartOff, restartOn), Unit: "×"}}, rep.Metrics...)
	rep.Tables = append(rep.Tables, t)
	if s.Mismatched > 0 {
		rep.Note("%d calls reported another start than their phase aimed for (a keep-alive tick, a concurrent eviction); each is filed under the start it reported.", s.Mismatched)
	}
	rep.Note("Cold starts read the compiled module from the node's disk cache, which the operating system's page cache " +
		"likely still holds (the files were written seconds before): cold here means not compiled in the node's memory, " +
		"not read from a cold disk.")
	rep.Note("A warm call has no sandbox start (X-Start-Us rounds it to 0 µs): its bar is the whole call. A cold start right after the node restarted also creates the node's wazero runtime for the memory cap (first copy only).")
	plot := "sandbox-start.svg"
	if err := WriteBars(filepath.Join(e.OutDir, plot), Bars{
		Title:      "sandbox-start: median latency by start kind (log scale)",
		YLabel:     "median latency",
		Categories: []string{"warm", "warm (snapshots off)", "restart", "restart (snapshots off)", "cold (disk cache)", "first compile", "fork/exec /bin/true", "python3 -c pass"},
		Series:     []Series{startSeries, callSeries},
		Log:        true,
		Format:     fmtMicros,
	}); err != nil {
		return rep, err
	}
	rep.Plots = append(rep.Plots, plot)
	cold, _ := rep.Lookup("cold start p50")
	first, _ := rep.Lookup("first-compile start p50")
	forkExec, _ := rep.Lookup("fork/exec /bin/true call p50")
	py, _ := rep.Lookup("python3 -c pass call p50")
	rep.Paper = fmt.Sprintf("Figure 5 (Docker containers): unpausing a paused container ≈ 1 ms; restarting a stopped one "+
		"and starting a fresh one take hundreds of ms. Here: a warm call takes %s end to end, a restart %s, "+
		"a cold start from the disk cache %s and a first compile %s (medians; sandbox start only for the last three). "+
		"Process sandboxes on this machine: fork/exec of /bin/true %s, python3 -c pass %s, start to exit.",
		fmtMicros(warm*1000), fmtMicros(restart*1000), fmtMicros(cold*1000), fmtMicros(first*1000),
		fmtMicros(forkExec*1000), fmtMicros(py*1000))
	return rep, nil
}

// offSnapshotStarts measures warm calls and restarts of echo on a node
// started with --fn-snapshots=false, filed under "warm (snapshots off)"
// and "restart (snapshots off)".
func offSnapshotStarts(ctx context.Context, e *Env, s *startSamples) error {
	sz := e.Sizes
	echo, err := e.Wasm("echo")
	if err != nil {
		return err
	}
	e.logf("snapshots off: starting a second node with --fn-snapshots=false")
	c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 1, Shards: 4,
		Args: []string{"--fn-keep-alive", startKeepAlive.String(), "--fn-snapshots=false"}})
	if err != nil {
		return err
	}
	defer c.Stop()
	fc := NewFnClient(c.Procs[0].Addr, 4)
	defer fc.Close()
	if err := fc.Deploy(ctx, "echo", echo, DeployOptions{}); err != nil {
		return err
	}
	call := func(want string) error {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := fc.Invoke(cctx, "echo", []byte("x"))
		if err == nil {
			err = r.mustOK("echo")
		}
		if err != nil {
			return err
		}
		if r.Start != want {
			s.Mismatched++
			return nil
		}
		s.add(want+" (snapshots off)", r)
		return nil
	}
	if err := call("restart"); err != nil { // the first sandbox: not a sample
		return err
	}
	s.StartUS["restart (snapshots off)"], s.CallUS["restart (snapshots off)"] = nil, nil
	e.logf("snapshots off: %d warm calls, %d restarts", sz.StartWarm, sz.StartRestart)
	for i := 0; i < sz.StartWarm; i++ {
		if err := call("warm"); err != nil {
			return err
		}
	}
	for i := 0; i < sz.StartRestart; i++ {
		if err := sleepCtx(ctx, 2*startKeepAlive+50*time.Millisecond); err != nil {
			return err
		}
		if err := call("restart"); err != nil {
			return err
		}
	}
	return nil
}

// ResolvePython returns the interpreter that python runs: a wrapper such
// as a pyenv shim (a shell script starting pyenv) would otherwise be timed
// instead of Python. It returns python itself when it cannot tell, and ""
// for "".
func ResolvePython(python string) string {
	if python == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import sys; print(sys.executable)").Output()
	if p := strings.TrimSpace(string(out)); err == nil && p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return python
}

// clearCompilationCache deletes the files of a wazero compilation cache
// directory, keeping its directories.
func clearCompilationCache(dir string) error {
	removed := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if err = os.Remove(p); err == nil {
				removed++
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("bench: clearing the compilation cache: %w", err)
	}
	if removed == 0 {
		// Else "first compile" would silently measure cached starts.
		return fmt.Errorf("bench: the compilation cache %s held no files: is it still where the node keeps it?", dir)
	}
	return nil
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
