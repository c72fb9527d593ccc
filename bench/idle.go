package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (sysconf(_SC_CLK_TCK), `getconf CLK_TCK`): 100 on every architecture Go
// runs Linux on, whatever the kernel's internal HZ.
const clockTicks = 100

// idleSampleEvery is how often idle samples the processes in its window.
const idleSampleEvery = time.Second

// idleNode is one process's cost over the window.
type idleNode struct {
	Name        string  `json:"name"`
	CPUTicks    uint64  `json:"cpu_ticks"`     // utime+stime over the window, 1/100 s each
	CPUPct      float64 `json:"cpu_pct"`       // CPU time over the window, % of one core
	RSSBytes    int64   `json:"rss_bytes"`     // median of the samples
	RSSMaxBytes int64   `json:"rss_max_bytes"` // largest sample
}

// idleRun is one shard count.
type idleRun struct {
	Shards        int        `json:"shards"`
	Started       bool       `json:"started"`                 // every node up, every shard with a leader
	Error         string     `json:"error,omitempty"`         // why the start or the sampling failed
	StartSeconds  float64    `json:"start_seconds,omitempty"` // until the cluster was ready
	WindowSeconds float64    `json:"window_seconds,omitempty"`
	Samples       int        `json:"samples,omitempty"` // per node
	Nodes         []idleNode `json:"nodes,omitempty"`
}

// ok reports whether the run measured all three nodes.
func (r *idleRun) ok() bool { return r.Started && r.Error == "" && len(r.Nodes) > 0 }

// cpu returns the median and the largest node's CPU, % of one core.
func (r *idleRun) cpu() (median, largest float64) {
	var xs []float64
	for _, n := range r.Nodes {
		xs = append(xs, n.CPUPct)
	}
	s := Summarize(xs)
	return s.P50, s.Max
}

// rssMiB returns the median and the largest node's resident memory, MiB.
func (r *idleRun) rssMiB() (median, largest float64) {
	var xs []float64
	for _, n := range r.Nodes {
		xs = append(xs, float64(n.RSSBytes)/(1<<20))
	}
	s := Summarize(xs)
	return s.P50, s.Max
}

func runIdle(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sz := e.Sizes
	rep := &ScenarioReport{
		Measures: "What a 3-node lambdadb cluster costs when nobody uses it, by shard count: CPU time and resident " +
			"memory of each `lambdadb serve` process, with no client request at all. Every node holds a replica of " +
			"every shard, so each process runs one Raft group per shard.",
		Method: "For each shard count, a fresh 3-node lambdadb cluster (three `lambdadb serve` processes on 127.0.0.1, " +
			"--shards N --replicas 3, data on disk in a temporary directory), waited for until every node reports " +
			"every node up and every shard with a leader (GET /v1/cluster), then left alone for the settle time. Over " +
			"the window that follows, with no request (not even the readiness poll), each process's CPU time " +
			"(utime+stime from /proc/<pid>/stat, in 1/100 s ticks) and resident memory (VmRSS from " +
			"/proc/<pid>/status) are sampled every second. A node's CPU is its CPU time over the window as a " +
			"percentage of one core (100% = one core busy the whole time), its memory the median of its samples; of " +
			"the three nodes the median and the largest are reported. CPU time is the processes' own, so other work " +
			"on the machine does not add to it. A cluster that does not start is recorded as such and the next shard " +
			"count still runs. Linux only (/proc).",
	}
	rep.Param("nodes", 3)
	rep.Param("replicas per shard", 3)
	rep.Param("shard counts", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(sz.IdleShards)), ", "), "[]"))
	rep.Param("settle after ready", sz.IdleSettle.String())
	rep.Param("sampling window", sz.IdleWindow.String())
	rep.Param("sample interval", idleSampleEvery.String())
	if runtime.GOOS != "linux" {
		return rep, fmt.Errorf("bench: idle reads /proc/<pid>/stat and /proc/<pid>/status and runs only on Linux, not %s", runtime.GOOS)
	}
	var runs []idleRun
	rep.Data = &runs
	for _, shards := range sz.IdleShards {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		r, err := idleOnce(ctx, e, shards)
		runs = append(runs, r)
		if err != nil { // interrupted
			return rep, err
		}
	}
	started := 0
	for i := range runs {
		r := &runs[i]
		med, mx := math.NaN(), math.NaN()
		rss, rssMax := math.NaN(), math.NaN()
		if r.ok() {
			started++
			med, mx = r.cpu()
			rss, rssMax = r.rssMiB()
		}
		rep.Metric(fmt.Sprintf("%d shards: idle CPU per node (median of 3)", r.Shards), med, "% of a core")
		rep.Metric(fmt.Sprintf("%d shards: idle CPU per node (max)", r.Shards), mx, "% of a core")
		rep.Metric(fmt.Sprintf("%d shards: resident memory per node (median of 3)", r.Shards), rss, "MiB")
		rep.Metric(fmt.Sprintf("%d shards: resident memory per node (max)", r.Shards), rssMax, "MiB")
	}
	rep.Metric("clusters that failed to start or to be sampled", float64(len(runs)-started), "")
	t := Table{Columns: []string{"shards", "started", "ready after", "CPU per node (median)", "CPU per node (max)",
		"CPU n1 / n2 / n3", "RSS per node (median)", "RSS n1 / n2 / n3"}}
	cpuMed, cpuMax := Series{Name: "median node"}, Series{Name: "busiest node"}
	rssMed := Series{Name: "median node"}
	var cats []string
	for i := range runs {
		r := &runs[i]
		cats = append(cats, fmt.Sprint(r.Shards))
		if !r.ok() {
			state := "no"
			if r.Started {
				state = "yes, sampling failed"
			}
			t.Rows = append(t.Rows, []string{fmt.Sprint(r.Shards), state + ": " + firstLine(r.Error), "—", "—", "—", "—", "—", "—"})
			cpuMed.Values, cpuMax.Values = append(cpuMed.Values, math.NaN()), append(cpuMax.Values, math.NaN())
			rssMed.Values = append(rssMed.Values, math.NaN())
			continue
		}
		med, mx := r.cpu()
		rss, _ := r.rssMiB()
		var cpus, rsss []string
		for _, n := range r.Nodes {
			cpus = append(cpus, fmt.Sprintf("%.1f%%", n.CPUPct))
			rsss = append(rsss, fmt.Sprintf("%.0f", float64(n.RSSBytes)/(1<<20)))
		}
		t.Rows = append(t.Rows, []string{fmt.Sprint(r.Shards), "yes", fmt.Sprintf("%.1f s", r.StartSeconds),
			fmt.Sprintf("%.1f%%", med), fmt.Sprintf("%.1f%%", mx), strings.Join(cpus, " / "),
			fmt.Sprintf("%.0f MiB", rss), strings.Join(rsss, " / ") + " MiB"})
		cpuMed.Values, cpuMax.Values = append(cpuMed.Values, med), append(cpuMax.Values, mx)
		rssMed.Values = append(rssMed.Values, rss)
	}
	rep.Tables = append(rep.Tables, t)
	for _, r := range runs {
		if !r.Started {
			rep.Note("%d shards: the cluster did not start: %s", r.Shards, r.Error)
		} else if r.Error != "" {
			rep.Note("%d shards: sampling failed: %s", r.Shards, r.Error)
		}
	}
	rep.Note("CPU resolution: one tick (10 ms) over a %v window is %.2f%% of a core.", sz.IdleWindow, 100/(clockTicks*sz.IdleWindow.Seconds()))
	cpuPlot, rssPlot := "idle-cpu.svg", "idle-rss.svg"
	if err := WriteBars(filepath.Join(e.OutDir, cpuPlot), Bars{
		Title:  "idle: CPU per node of an idle 3-node cluster",
		XLabel: "shards (replicas 3)", YLabel: "% of one core", Categories: cats, Series: []Series{cpuMed, cpuMax},
	}); err != nil {
		return rep, err
	}
	if err := WriteBars(filepath.Join(e.OutDir, rssPlot), Bars{
		Title:  "idle: resident memory per node of an idle 3-node cluster",
		XLabel: "shards (replicas 3)", YLabel: "MiB", Categories: cats, Series: []Series{rssMed},
	}); err != nil {
		return rep, err
	}
	rep.Plots = append(rep.Plots, cpuPlot, rssPlot)
	if started == 0 && len(runs) > 0 {
		return rep, fmt.Errorf("bench: no cluster started or could be sampled (%s)", firstLine(runs[0].Error))
	}
	return rep, nil
}

// idleOnce measures one shard count on a fresh cluster. A cluster that
// does not start, or a process that fails during the window, is recorded
// in the run; the error is only the context's.
func idleOnce(ctx context.Context, e *Env, shards int) (idleRun, error) {
	sz := e.Sizes
	r := idleRun{Shards: shards}
	e.logf("%d shards: starting a 3-node cluster", shards)
	t0 := time.Now()
	c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: 3, Shards: shards, Args: []string{"--replicas", "3"}})
	if err != nil {
		r.Error = err.Error()
		e.logf("  did not start after %.1f s: %v", time.Since(t0).Seconds(), err)
		return r, nil
	}
	defer c.Stop()
	r.Started, r.StartSeconds = true, time.Since(t0).Seconds()
	e.logf("  ready after %.1f s; settling %v, then sampling %v with no load", r.StartSeconds, sz.IdleSettle, sz.IdleWindow)
	if err := sleepCtx(ctx, sz.IdleSettle); err != nil {
		return r, err
	}
	nodes, secs, samples, err := sampleIdle(ctx, c.Procs, sz.IdleWindow)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if err != nil {
		r.Error = err.Error()
		e.logf("  sampling failed: %v", err)
		return r, nil
	}
	r.Nodes, r.WindowSeconds, r.Samples = nodes, secs, samples
	var cpus, rss []string
	for _, n := range nodes {
		cpus = append(cpus, fmt.Sprintf("%.1f%%", n.CPUPct))
		rss = append(rss, fmt.Sprintf("%.0f", float64(n.RSSBytes)/(1<<20)))
	}
	e.logf("  CPU per node %s of a core, RSS %s MiB", strings.Join(cpus, " / "), strings.Join(rss, " / "))
	return r, nil
}

// sampleIdle samples every process each idleSampleEvery for window and
// returns each one's CPU over the window, the window's length in seconds
// and the number of samples per process.
func sampleIdle(ctx context.Context, procs []*Proc, window time.Duration) ([]idleNode, float64, int, error) {
	type sample struct {
		ticks uint64
		rss   int64
	}
	read := func() ([]sample, time.Time, error) {
		out := make([]sample, len(procs))
		for i, p := range procs {
			ticks, rss, err := procUsage(p.Pid())
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("%s: %w", p.Name, err)
			}
			out[i] = sample{ticks, rss}
		}
		return out, time.Now(), nil
	}
	first, t0, err := read()
	if err != nil {
		return nil, 0, 0, err
	}
	all := [][]sample{first}
	last, t1 := first, t0
	for end := t0.Add(window); t1.Before(end); {
		if err := sleepCtx(ctx, min(idleSampleEvery, time.Until(end))); err != nil {
			return nil, 0, 0, err
		}
		if last, t1, err = read(); err != nil {
			return nil, 0, 0, err
		}
		all = append(all, last)
	}
	secs := t1.Sub(t0).Seconds()
	nodes := make([]idleNode, len(procs))
	for i, p := range procs {
		var rss []float64
		for _, s := range all {
			rss = append(rss, float64(s[i].rss))
		}
		rs := Summarize(rss)
		ticks := last[i].ticks - first[i].ticks
		nodes[i] = idleNode{Name: p.Name, CPUTicks: ticks, CPUPct: 100 * float64(ticks) / clockTicks / secs,
			RSSBytes: int64(rs.P50), RSSMaxBytes: int64(rs.Max)}
	}
	return nodes, secs, len(all), nil
}

// procUsage returns a running process's CPU time so far (utime+stime, in
// clock ticks) and its resident memory in bytes.
func procUsage(pid int) (uint64, int64, error) {
	if pid == 0 {
		return 0, 0, fmt.Errorf("bench: process not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	st, err := parseProcStat(string(b))
	if err != nil {
		return 0, 0, err
	}
	if st.State == 'Z' || st.State == 'X' {
		return 0, 0, fmt.Errorf("bench: process %d exited", pid)
	}
	rss, err := rssBytes(pid)
	if err != nil {
		return 0, 0, err
	}
	return st.Ticks, rss, nil
}

// procStat is what idle reads from a /proc/<pid>/stat line.
type procStat struct {
	State byte   // field 3: R, S, D, Z…
	Ticks uint64 // fields 14 and 15, utime+stime, in clock ticks
}

// parseProcStat parses a /proc/<pid>/stat line. The command name (field
// 2) is in parentheses and may itself hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseProcStat(line string) (procStat, error) {
	short := line
	if len(short) > 80 {
		short = short[:80] + "…"
	}
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("bench: /proc stat %q: no command name", short)
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3
	if len(f) < 13 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("bench: /proc stat %q: too few fields", short)
	}
	utime, err := strconv.ParseUint(f[14-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("bench: /proc stat utime: %w", err)
	}
	stime, err := strconv.ParseUint(f[15-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("bench: /proc stat stime: %w", err)
	}
	return procStat{State: f[0][0], Ticks: utime + stime}, nil
}
