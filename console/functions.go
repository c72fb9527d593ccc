package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"lambdadb/lambda"
)

// Functions is what the functions pages read, through the same code as
// the API's function routes (GET /v1/functions, /v1/functions/{name},
// .../logs and .../series), so the pages show the numbers the API and
// the CLI show. Every method acts in the request's namespace and, for
// cluster-wide views, asks the other nodes on the caller's behalf.
type Functions interface {
	// List returns the namespace's functions with their stats merged
	// over the cluster.
	List(r *http.Request) ([]FunctionStats, error)
	// Get returns one function with its merged and per-node stats; an
	// unknown name fails with an error wrapping lambda.ErrNotFound.
	Get(r *http.Request, name string) (FunctionStats, error)
	// Series returns the function's samples merged over the cluster
	// (lambda.MergeSeries) and the sampling interval.
	Series(r *http.Request, name string) (time.Duration, []lambda.Point, error)
	// Logs returns the function's recent log lines on every node,
	// oldest first.
	Logs(r *http.Request, name string) ([]lambda.LogLine, error)
	// Deploys returns the function's deploy history, newest first.
	Deploys(r *http.Request, name string) ([]lambda.Deploy, error)
}

// FunctionStats is a function (by its user name) with its stats.
type FunctionStats struct {
	Function *lambda.Function
	lambda.Stats
	// Nodes holds each node's stats (Get only).
	Nodes map[string]NodeStats
}

// NodeStats is one node's stats of a function, or why they are missing.
type NodeStats struct {
	Stats *lambda.Stats
	Error string
}

// Function pages' sizes.
const (
	// maxStreams bounds the live log tails open on the node at once.
	maxStreams = 64
	// streamLife ends a live log tail after this long; the browser's
	// EventSource connects again (and gets the tail from the start).
	streamLife = 10 * time.Minute
	// logPoll is how often a live log tail looks for new lines.
	logPoll = time.Second
	// shownDeploys is how many deploys the history table shows.
	shownDeploys = 10
)

var errNoFunctions = errors.New("this node runs without functions")

type functionsView struct {
	Page      page
	Functions []functionRow
	Time      string
	Error     string
}

type functionRow struct {
	Name string
	FunctionStats
}

type functionView struct {
	Page     page
	Name     string
	Fn       *lambda.Function
	Stats    lambda.Stats
	Nodes    []nodeRow
	Deploys  []lambda.Deploy
	More     int // deploys recorded but not shown
	CanLogs  bool
	Time     string
	Error    string
	NotFound bool
}

type nodeRow struct {
	ID    string
	Stats *lambda.Stats
	Error string
}

func (c *Console) functionsPage(w http.ResponseWriter, r *http.Request) {
	v, status := c.functionsData(r)
	c.render(w, r, status, "functions.html", v)
}

func (c *Console) functionsFragment(w http.ResponseWriter, r *http.Request) {
	v, status := c.functionsData(r)
	c.render(w, r, status, "functions-live", v)
}

func (c *Console) functionsData(r *http.Request) (functionsView, int) {
	v := functionsView{Page: c.pageOf(r, "Functions", "functions"), Time: now()}
	switch {
	case c.fns == nil:
		v.Error = errNoFunctions.Error()
		return v, http.StatusNotFound
	case !c.canFunctions(r, "fn_list"):
		v.Error = "this token may not list functions (it needs one of the scopes fn:deploy, fn:invoke, fn:logs)"
		return v, http.StatusForbidden
	}
	list, err := c.fns.List(r)
	if err != nil {
		v.Error = err.Error()
		return v, http.StatusServiceUnavailable
	}
	for _, f := range list {
		v.Functions = append(v.Functions, functionRow{Name: f.Function.Name, FunctionStats: f})
	}
	return v, http.StatusOK
}

// fnName returns the function the path names, or answers 404.
func (c *Console) fnName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if c.fns == nil || lambda.ValidateName(name) != nil {
		c.render(w, r, http.StatusNotFound, "function.html", functionView{Page: c.pageOf(r, "Not found", "functions"),
			Name: name, NotFound: true, Error: fmt.Sprintf("no function %q", name)})
		return "", false
	}
	return name, true
}

func (c *Console) functionPage(w http.ResponseWriter, r *http.Request) {
	name, ok := c.fnName(w, r)
	if !ok {
		return
	}
	v, status := c.functionData(r, name)
	c.render(w, r, status, "function.html", v)
}

func (c *Console) functionFragment(w http.ResponseWriter, r *http.Request) {
	name, ok := c.fnName(w, r)
	if !ok {
		return
	}
	v, status := c.functionData(r, name)
	c.render(w, r, status, "function-live", v)
}

func (c *Console) functionData(r *http.Request, name string) (functionView, int) {
	v := functionView{Page: c.pageOf(r, name+" · Functions", "functions"), Name: name, Time: now(),
		CanLogs: c.canFunctions(r, "fn_logs")}
	if !c.canFunctions(r, "fn_get") {
		v.Error = "this token may not read functions (it needs one of the scopes fn:deploy, fn:invoke, fn:logs)"
		return v, http.StatusForbidden
	}
	f, err := c.fns.Get(r, name)
	if errors.Is(err, lambda.ErrNotFound) {
		v.NotFound, v.Error = true, fmt.Sprintf("no function %q in namespace %s", name, v.Page.Namespace)
		return v, http.StatusNotFound
	}
	if err != nil {
		v.Error = err.Error()
		return v, http.StatusServiceUnavailable
	}
	v.Fn, v.Stats = f.Function, f.Stats
	ids := make([]string, 0, len(f.Nodes))
	for id := range f.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		v.Nodes = append(v.Nodes, nodeRow{ID: id, Stats: f.Nodes[id].Stats, Error: f.Nodes[id].Error})
	}
	d, err := c.fns.Deploys(r, name)
	if err != nil {
		v.Error = "deploy history: " + err.Error()
	}
	if len(d) > shownDeploys {
		v.More = len(d) - shownDeploys
		d = d[:shownDeploys]
	}
	v.Deploys = d
	return v, http.StatusOK
}

// seriesJSON is a function's series as the charts read it: one array per
// line, uPlot's layout, on a grid of every interval from the first sample
// to the last, at least minGrid of them (null where no node has a
// sample).
type seriesJSON struct {
	IntervalS float64               `json:"interval_s"`
	T         []int64               `json:"t"` // Unix seconds
	Lines     map[string][]*float64 `json:"lines"`
}

// seriesLines are the lines of the charts, by name, and how each is read
// from a point.
var seriesLines = map[string]func(p lambda.Point) float64{
	"invocations":       func(p lambda.Point) float64 { return float64(p.Invocations) },
	"errors":            func(p lambda.Point) float64 { return float64(p.Errors) },
	"throttles":         func(p lambda.Point) float64 { return float64(p.Throttles) },
	"p50_ms":            func(p lambda.Point) float64 { return p.P50US / 1000 },
	"p99_ms":            func(p lambda.Point) float64 { return p.P99US / 1000 },
	"start_warm":        func(p lambda.Point) float64 { return float64(p.Starts[lambda.StartWarm]) },
	"start_restart":     func(p lambda.Point) float64 { return float64(p.Starts[lambda.StartRestart]) },
	"start_cold":        func(p lambda.Point) float64 { return float64(p.Starts[lambda.StartCold]) },
	"sandboxes_running": func(p lambda.Point) float64 { return float64(p.Sandboxes.Running) },
	"sandboxes_paused":  func(p lambda.Point) float64 { return float64(p.Sandboxes.Paused) },
	"sandboxes_stopped": func(p lambda.Point) float64 { return float64(p.Sandboxes.Stopped) },
	"sandboxes_cold":    func(p lambda.Point) float64 { return float64(p.Sandboxes.Cold) },
	"billed_ms":         func(p lambda.Point) float64 { return float64(p.BilledMS) },
	"gb_s":              func(p lambda.Point) float64 { return p.GBSeconds },
	"kv_calls":          func(p lambda.Point) float64 { return float64(p.KVCalls) },
	"kv_bytes":          func(p lambda.Point) float64 { return float64(p.KVBytes) },
}

// Bounds of the charts' grid, in intervals.
const (
	minGrid = 60
	maxGrid = 10000
)

// columns lays points out on the interval grid.
func columns(interval time.Duration, points []lambda.Point) seriesJSON {
	out := seriesJSON{IntervalS: interval.Seconds(), T: []int64{}, Lines: map[string][]*float64{}}
	for name := range seriesLines {
		out.Lines[name] = []*float64{}
	}
	if len(points) == 0 {
		return out
	}
	step := max(interval.Milliseconds(), 1)
	first, last := points[0].T, points[len(points)-1].T
	byT := make(map[int64]lambda.Point, len(points))
	for _, p := range points {
		byT[p.T] = p
	}
	// A grid of at least minGrid intervals, so that a new function's
	// first samples show on a steady time axis, and at most maxGrid
	// (points from nodes with another interval would otherwise make it
	// huge).
	first = min(first, last-(minGrid-1)*step)
	if (last-first)/step > maxGrid {
		first = last - maxGrid*step
	}
	for t := first; t <= last; t += step {
		out.T = append(out.T, t/1000)
		p, ok := byT[t]
		for name, get := range seriesLines {
			if !ok {
				out.Lines[name] = append(out.Lines[name], nil)
				continue
			}
			x := get(p)
			out.Lines[name] = append(out.Lines[name], &x)
		}
	}
	return out
}

func (c *Console) functionSeries(w http.ResponseWriter, r *http.Request) {
	name, ok := c.fnName(w, r)
	if !ok {
		return
	}
	if !c.canFunctions(r, "fn_get") {
		http.Error(w, "403 this token may not read functions", http.StatusForbidden)
		return
	}
	iv, points, err := c.fns.Series(r, name)
	switch {
	case errors.Is(err, lambda.ErrNotFound):
		http.Error(w, "404 no such function", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "503 "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	b, err := json.Marshal(columns(iv, points))
	if err != nil {
		http.Error(w, "500 "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// logStream is the live log tail: a text/event-stream of the function's
// log lines on every node. It starts with a "reset" event and the lines
// the nodes hold, then sends each new line as it is logged (polling the
// nodes every logPoll), until the client goes away or streamLife ends.
func (c *Console) logStream(w http.ResponseWriter, r *http.Request) {
	name, ok := c.fnName(w, r)
	if !ok {
		return
	}
	if !c.canFunctions(r, "fn_logs") {
		http.Error(w, "403 this token may not read logs (it needs scope fn:logs)", http.StatusForbidden)
		return
	}
	if _, err := c.fns.Get(r, name); err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, lambda.ErrNotFound) {
			status = http.StatusNotFound
		}
		http.Error(w, fmt.Sprintf("%d %v", status, err), status)
		return
	}
	if c.streams.Add(1) > maxStreams {
		c.streams.Add(-1)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "503 too many live log tails open on this node", http.StatusServiceUnavailable)
		return
	}
	defer c.streams.Add(-1)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ctx, cancel := context.WithTimeout(r.Context(), c.streamLife)
	defer cancel()
	send := func(event string, data []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("reset", []byte("{}")) {
		return
	}
	tail := newLogTail()
	t := time.NewTicker(c.logPoll)
	defer t.Stop()
	for {
		lines, err := c.fns.Logs(r.WithContext(ctx), name)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			for _, l := range tail.fresh(lines, time.Now()) {
				b, _ := json.Marshal(l)
				if !send("line", b) {
					return
				}
			}
		} else if !send("problem", mustJSON(err.Error())) {
			return
		}
		if !send("ping", mustJSON(now())) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func mustJSON(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// logTail remembers the lines a stream has sent, so that each poll of
// the nodes' rings sends only the lines not seen before, whatever order
// the nodes' clocks put them in. A line is forgotten a while after the
// nodes stop returning it (it dropped out of their rings).
type logTail struct {
	seen map[lambda.LogLine]time.Time // line → last poll that returned it
}

func newLogTail() *logTail { return &logTail{seen: map[lambda.LogLine]time.Time{}} }

// tailForget is how long a line no longer returned is remembered: a node
// that misses a poll or two does not have its lines sent again.
const tailForget = time.Minute

// fresh returns the lines of a poll at now not seen before, in order.
func (t *logTail) fresh(lines []lambda.LogLine, now time.Time) []lambda.LogLine {
	var out []lambda.LogLine
	for _, l := range lines {
		if _, ok := t.seen[l]; !ok {
			out = append(out, l)
		}
		t.seen[l] = now
	}
	for l, at := range t.seen {
		if now.Sub(at) > tailForget {
			delete(t.seen, l)
		}
	}
	return out
}

func now() string { return time.Now().UTC().Format("15:04:05 UTC") }

// Template helpers for the functions pages, formatting numbers as the CLI
// does (lambdadb fn stats).

// fmtUS formats a duration in µs: "-" for none.
func fmtUS(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.1fms", us/1000)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

func fmtGBs(v float64) string { return fmt.Sprintf("%.6f", v) }

// fmtBytes formats a byte count: exact below 10 KiB, else in KiB/MiB/GiB.
func fmtBytes(n uint64) string {
	if n < 10<<10 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	v := float64(n)
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// fnURL returns the path of a function's page (with suffix appended).
func fnURL(name string, suffix ...string) string {
	return Prefix + "functions/" + url.PathEscape(name) + strings.Join(suffix, "")
}

// errorCodes formats a function's errors by code, sorted.
func errorCodes(m map[string]uint64) string {
	var codes []string
	for code, n := range m {
		codes = append(codes, fmt.Sprintf("%s %d", code, n))
	}
	slices.Sort(codes)
	return strings.Join(codes, ", ")
}

// errorRate formats errors/invocations as a percentage.
func errorRate(errs, calls uint64) string {
	if calls == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", math.Round(float64(errs)*1000/float64(calls))/10)
}
