package lambda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/shard"
)

// Stats are a function's meters on one node (or merged over nodes). With
// Config.Meters they are saved every Config.MeterFlushInterval and when
// the engine closes, and survive restarts (a crash loses at most the last
// interval's); without, they restart from zero with the node.
type Stats struct {
	Invocations uint64 `json:"invocations"`
	Errors      uint64 `json:"errors"`
	// Throttles counts calls refused with 429: by the engine (more calls
	// than max_instances and the queue allow, or the node's sandbox
	// memory budget in use — these count as errors too when a sandbox
	// start was refused) and by the server's namespace quotas
	// (CountThrottle).
	Throttles    uint64            `json:"throttles"`
	ErrorsByCode map[string]uint64 `json:"errors_by_code"`
	Starts       map[string]uint64 `json:"starts"` // by StartWarm, StartRestart, StartCold
	Sandboxes    SandboxCounts     `json:"sandboxes"`
	DurationUS   uint64            `json:"duration_us"` // total wall time
	BilledMS     uint64            `json:"billed_ms"`
	GBSeconds    float64           `json:"gb_seconds"`
	KVCalls      uint64            `json:"kv_calls"`
	KVBytes      uint64            `json:"kv_bytes"`
	P50US        float64           `json:"p50_us"`
	P99US        float64           `json:"p99_us"`
	// Histogram holds call durations: bucket i counts calls shorter than
	// BucketUpperUS(i) µs and not shorter than BucketUpperUS(i-1).
	Histogram map[int]uint64 `json:"histogram,omitempty"`
}

// Duration histogram: four buckets per doubling from 1 µs (±9 %).
const (
	bucketsPerDoubling = 4
	numBuckets         = 40 * bucketsPerDoubling
)

// BucketUpperUS returns the upper bound of histogram bucket i in µs.
func BucketUpperUS(i int) float64 { return math.Exp2(float64(i+1) / bucketsPerDoubling) }

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	i := int(math.Floor(math.Log2(us) * bucketsPerDoubling))
	return min(max(i, 0), numBuckets-1)
}

// Quantile returns the q-quantile (0..1) of the histogram in µs: the upper
// bound of the bucket holding it.
func (s *Stats) Quantile(q float64) float64 {
	var total uint64
	keys := make([]int, 0, len(s.Histogram))
	for k, n := range s.Histogram {
		total += n
		keys = append(keys, k)
	}
	if total == 0 {
		return 0
	}
	sort.Ints(keys)
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for _, k := range keys {
		seen += s.Histogram[k]
		if seen >= rank {
			return BucketUpperUS(k)
		}
	}
	return BucketUpperUS(keys[len(keys)-1])
}

// Merge adds o's meters to s and recomputes the percentiles.
func (s *Stats) Merge(o Stats) {
	s.Invocations += o.Invocations
	s.Errors += o.Errors
	s.Throttles += o.Throttles
	s.DurationUS += o.DurationUS
	s.BilledMS += o.BilledMS
	s.GBSeconds += o.GBSeconds
	s.KVCalls += o.KVCalls
	s.KVBytes += o.KVBytes
	s.Sandboxes.add(o.Sandboxes)
	s.ErrorsByCode = addCounts(s.ErrorsByCode, o.ErrorsByCode)
	s.Starts = addCounts(s.Starts, o.Starts)
	if len(o.Histogram) > 0 && s.Histogram == nil {
		s.Histogram = map[int]uint64{}
	}
	for k, n := range o.Histogram {
		s.Histogram[k] += n
	}
	s.P50US, s.P99US = s.Quantile(0.50), s.Quantile(0.99)
}

func addCounts[K comparable](a, b map[K]uint64) map[K]uint64 {
	if a == nil {
		a = map[K]uint64{}
	}
	for k, n := range b {
		a[k] += n
	}
	return a
}

// fnStats accumulates one function's Stats; guarded by Engine.mu.
type fnStats struct {
	// Created is the incarnation metered (incarnation of the Function): a
	// function removed and deployed again under its name starts afresh.
	Created int64 `msgpack:"c"`
	S       Stats `msgpack:"s"`
}

// incarnation identifies one life of a function under its name.
func incarnation(f *Function) int64 {
	if f.CreatedAt.IsZero() {
		return 0
	}
	return f.CreatedAt.UnixNano()
}

func newFnStats(created int64) *fnStats {
	return &fnStats{Created: created, S: Stats{ErrorsByCode: map[string]uint64{}, Starts: map[string]uint64{}, Histogram: map[int]uint64{}}}
}

// ErrorCode is the API code of an invocation error (as in the HTTP API).
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, ErrStackOverflow):
		return "stack_overflow"
	case errors.Is(err, ErrHandler):
		return "handler_error"
	case errors.Is(err, ErrMemoryLimit):
		return "memory_limit"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrOverloaded):
		return "too_many_requests"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrNoEntrypoint):
		return "no_entrypoint"
	}
	return "internal"
}

// bill fills res's billed time and GB-s from its duration.
func (e *Engine) bill(f *Function, res *Result) {
	g := e.cfg.BillingGranularity
	billed := (res.Duration + g - 1) / g * g
	res.BilledMS = int64(math.Ceil(float64(billed) / float64(time.Millisecond)))
	res.GBSeconds = float64(f.MemoryMB) / 1024 * billed.Seconds()
}

// record meters one call that reached a sandbox (or failed to start one).
func (e *Engine) record(f *Function, res *Result, err error) {
	e.bill(f, res)
	start := res.Start
	outcome := "ok"
	if err != nil {
		outcome = ErrorCode(err)
	}
	e.mu.Lock()
	st := e.statsLocked(f)
	if st == nil {
		e.mu.Unlock()
		return
	}
	e.metersDirty = true
	s := &st.S
	s.Invocations++
	if err != nil {
		s.Errors++
		s.ErrorsByCode[outcome]++
		if errors.Is(err, ErrOverloaded) {
			s.Throttles++
		}
	}
	if start != "" {
		s.Starts[start]++
	}
	s.DurationUS += uint64(res.Duration / time.Microsecond)
	s.BilledMS += uint64(res.BilledMS)
	s.GBSeconds += res.GBSeconds
	s.KVCalls += uint64(res.KVCalls)
	s.KVBytes += uint64(res.KVBytes)
	s.Histogram[bucketOf(res.Duration)]++
	e.mu.Unlock()

	if start == "" {
		start = "none"
	}
	e.m.invocations.WithLabelValues(f.Name, start, outcome).Inc()
	e.m.duration.WithLabelValues(f.Name).Observe(res.Duration.Seconds())
	e.m.billed.WithLabelValues(f.Name).Add(float64(res.BilledMS))
	e.m.gbSeconds.WithLabelValues(f.Name).Add(res.GBSeconds)
	e.m.kvCalls.WithLabelValues(f.Name).Add(float64(res.KVCalls))
}

// statsLocked returns f's meters, starting them when f is a new
// incarnation; nil for a call of a function since removed and created
// again (ending late: the new function's meters are not its).
func (e *Engine) statsLocked(f *Function) *fnStats {
	st := e.stats[f.Name]
	switch {
	case st == nil || st.Created < incarnation(f):
		st = newFnStats(incarnation(f))
		e.stats[f.Name] = st
	case st.Created > incarnation(f):
		return nil
	}
	return st
}

// throttle counts a call of f refused with 429.
func (e *Engine) throttle(f *Function) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st := e.statsLocked(f); st != nil {
		st.S.Throttles++
		e.metersDirty = true
	}
}

// CountThrottle counts a call of the function named name (its stored
// name) refused with 429 before it reached the engine — by a namespace
// quota — in its Stats.Throttles. A name that is not deployed is not
// counted. It reads the registry from the local replica only, so that a
// refused call stays cheap.
func (e *Engine) CountThrottle(ctx context.Context, name string) {
	if ValidateStoredName(name) != nil {
		return
	}
	res, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnKey(name), shard.ReadOptions{Consistency: shard.Stale})
	if err != nil || !res.Found {
		return
	}
	if f, err := e.decodeFunction(name, res.Record); err == nil {
		e.throttle(f)
	}
}

// Stats returns function f's meters on this node.
func (e *Engine) Stats(f *Function) Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	var s Stats
	if st := e.stats[f.Name]; st != nil && st.Created == incarnation(f) {
		s.Merge(st.S)
	} else {
		s.Merge(Stats{})
	}
	s.Sandboxes = e.sandboxesLocked(f.Name)
	return s
}

// Meter persistence: the engine's meters as one node-local value.
const metersKey = "lambda/meters"

// loadMeters restores the meters Config.Meters holds.
func (e *Engine) loadMeters() error {
	if e.cfg.Meters == nil {
		return nil
	}
	b, found, err := e.cfg.Meters.LocalMeta(metersKey)
	if err != nil || !found {
		return err
	}
	var m map[string]*fnStats
	if err := msgpack.Unmarshal(b, &m); err != nil {
		// Meters are not worth refusing to start over: say so and start
		// from zero.
		e.log.Error("saved function meters do not decode; starting from zero", "err", err)
		return nil
	}
	for name, st := range m {
		if st == nil {
			continue
		}
		fresh := newFnStats(st.Created)
		fresh.S.Merge(st.S)
		fresh.S.P50US, fresh.S.P99US, fresh.S.Sandboxes = 0, 0, SandboxCounts{}
		e.stats[name] = fresh
	}
	return nil
}

// saveMeters writes the meters to Config.Meters when they changed since
// the last save.
func (e *Engine) saveMeters() error {
	if e.cfg.Meters == nil {
		return nil
	}
	e.mu.Lock()
	if !e.metersDirty {
		e.mu.Unlock()
		return nil
	}
	b, err := msgpack.Marshal(e.stats)
	e.metersDirty = false
	e.mu.Unlock()
	if err == nil {
		err = e.cfg.Meters.SetLocalMeta(metersKey, b)
	}
	if err != nil {
		e.mu.Lock()
		e.metersDirty = true
		e.mu.Unlock()
		return fmt.Errorf("lambda: save meters: %w", err)
	}
	return nil
}

// meterLoop saves the meters every Config.MeterFlushInterval.
func (e *Engine) meterLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.cfg.MeterFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if err := e.saveMeters(); err != nil {
				e.log.Warn("saving function meters failed", "err", err)
			}
		}
	}
}

// logRing keeps a function's recent log lines on this node.
type logRing struct {
	lines []LogLine
	next  int
	full  bool
}

// LogLine is one line a handler logged (Ctx.Log, stdout or stderr).
type LogLine struct {
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	Line string    `json:"line"`
}

func (e *Engine) appendLog(name, line string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.logs[name]
	if r == nil {
		r = &logRing{lines: make([]LogLine, e.cfg.LogLines)}
		e.logs[name] = r
	}
	r.lines[r.next] = LogLine{Time: e.cfg.Now().UTC(), Node: e.cfg.NodeID, Line: line}
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
}

// Logs returns the function's recent log lines on this node, oldest first.
func (e *Engine) Logs(name string) []LogLine {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.logs[name]
	if r == nil {
		return []LogLine{}
	}
	var out []LogLine
	if r.full {
		out = append(out, r.lines[r.next:]...)
	}
	return append(out, r.lines[:r.next]...)
}

// metrics are the engine's Prometheus metrics.
type metrics struct {
	invocations *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	billed      *prometheus.CounterVec
	gbSeconds   *prometheus.CounterVec
	kvCalls     *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	evictions   *prometheus.CounterVec
}

// Metric names exported by an Engine.
const (
	MetricInvocations = "lambdadb_function_invocations_total"
	MetricDuration    = "lambdadb_function_duration_seconds"
	MetricSandboxes   = "lambdadb_function_sandboxes"
)

func newMetrics(e *Engine, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricInvocations,
			Help: "Function invocations on this node by function, start kind (warm, restart, cold, none) and result code."},
			[]string{"function", "start", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricDuration,
			Help:    "Wall time of function calls on this node, sandbox start included.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 20)}, []string{"function"}),
		billed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lambdadb_function_billed_milliseconds_total",
			Help: "Billed time of function calls on this node."}, []string{"function"}),
		gbSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lambdadb_function_gb_seconds_total",
			Help: "Memory cap times billed time of function calls on this node, in GB-s."}, []string{"function"}),
		kvCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lambdadb_function_kv_calls_total",
			Help: "Host KV calls made by functions on this node."}, []string{"function"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lambdadb_function_rejected_total",
			Help: "Calls refused because max_instances and the queue were full."}, []string{"function"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lambdadb_function_sandbox_evictions_total",
			Help: "Paused sandboxes stopped, by reason (memory_budget, keep_alive)."}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.invocations, m.duration, m.billed, m.gbSeconds, m.kvCalls, m.rejected, m.evictions, sandboxCollector{e}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// sandboxCollector reports sandbox counts by function and state, and the
// memory of live sandboxes.
type sandboxCollector struct{ e *Engine }

var (
	sandboxesDesc = prometheus.NewDesc(MetricSandboxes, "Sandboxes on this node by function and state.", []string{"function", "state"}, nil)
	memoryDesc    = prometheus.NewDesc("lambdadb_function_sandbox_memory_bytes", "Linear memory of this node's live sandboxes.", nil, nil)
	budgetDesc    = prometheus.NewDesc("lambdadb_function_memory_budget_bytes", "The node's sandbox memory budget.", nil, nil)
)

func (c sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sandboxesDesc
	ch <- memoryDesc
	ch <- budgetDesc
}

func (c sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	for name := range e.pools {
		s := e.sandboxesLocked(name)
		for _, v := range []struct {
			state string
			n     int
		}{{"running", s.Running}, {"paused", s.Paused}, {"stopped", s.Stopped}, {"cold", s.Cold}} {
			ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(v.n), name, v.state)
		}
	}
	ch <- prometheus.MustNewConstMetric(memoryDesc, prometheus.GaugeValue, float64(e.liveBytes))
	ch <- prometheus.MustNewConstMetric(budgetDesc, prometheus.GaugeValue, float64(e.cfg.MemoryBudget))
}
