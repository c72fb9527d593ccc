package lambda

import (
	"maps"
	"sort"
	"time"
)

// Series: each node samples every function's meters every
// Config.SampleInterval into a ring of Config.SampleCount points, so that
// the console can chart a function's activity over the last
// SampleInterval × SampleCount (by default 5 s × 360 = 30 min). A point
// holds what happened during one interval (the difference of the
// cumulative Stats at its two ends), and the sandboxes at its end.
// Points are stamped with the end of their interval, a multiple of the
// interval since the Unix epoch on every node, so the points of several
// nodes for one interval carry the same T and MergeSeries adds them up.

// Defaults of Config.SampleInterval and Config.SampleCount.
const (
	DefaultSampleInterval = 5 * time.Second
	DefaultSampleCount    = 360
)

// Point is a function's activity during one sampling interval, on one
// node or merged over nodes.
type Point struct {
	// T is the end of the interval, in Unix milliseconds.
	T           int64             `json:"t"`
	Invocations uint64            `json:"invocations"`
	Errors      uint64            `json:"errors"`
	Throttles   uint64            `json:"throttles"`
	Starts      map[string]uint64 `json:"starts,omitempty"`
	// Sandboxes are the function's sandboxes at T (a gauge, not a
	// difference).
	Sandboxes SandboxCounts `json:"sandboxes"`
	BilledMS  uint64        `json:"billed_ms"`
	GBSeconds float64       `json:"gb_seconds"`
	KVCalls   uint64        `json:"kv_calls"`
	KVBytes   uint64        `json:"kv_bytes"`
	// P50US and P99US are the percentiles of the interval's calls (0
	// without calls), from Histogram.
	P50US     float64        `json:"p50_us"`
	P99US     float64        `json:"p99_us"`
	Histogram map[int]uint64 `json:"histogram,omitempty"`
}

// Ring keeps the last n values pushed.
type Ring[T any] struct {
	items []T
	next  int
	full  bool
}

// NewRing returns a ring of n (at least 1) values.
func NewRing[T any](n int) *Ring[T] { return &Ring[T]{items: make([]T, max(n, 1))} }

// Push adds v, dropping the oldest value when the ring is full.
func (r *Ring[T]) Push(v T) {
	r.items[r.next] = v
	r.next = (r.next + 1) % len(r.items)
	if r.next == 0 {
		r.full = true
	}
}

// Len returns how many values the ring holds.
func (r *Ring[T]) Len() int {
	if r.full {
		return len(r.items)
	}
	return r.next
}

// Items returns the values, oldest first.
func (r *Ring[T]) Items() []T {
	out := make([]T, 0, r.Len())
	if r.full {
		out = append(out, r.items[r.next:]...)
	}
	return append(out, r.items[:r.next]...)
}

// diff returns the point of the interval ending at t, from the cumulative
// meters prev at its start (nil: none, the meters started within it) and
// cur at its end. A counter lower than before (meters restarted from
// what was saved) counts from zero.
func diff(t time.Time, prev, cur *Stats) Point {
	if prev == nil {
		prev = &Stats{}
	}
	sub := func(a, b uint64) uint64 {
		if a < b {
			return a
		}
		return a - b
	}
	p := Point{
		T:           t.UnixMilli(),
		Invocations: sub(cur.Invocations, prev.Invocations),
		Errors:      sub(cur.Errors, prev.Errors),
		Throttles:   sub(cur.Throttles, prev.Throttles),
		BilledMS:    sub(cur.BilledMS, prev.BilledMS),
		KVCalls:     sub(cur.KVCalls, prev.KVCalls),
		KVBytes:     sub(cur.KVBytes, prev.KVBytes),
		GBSeconds:   max(cur.GBSeconds-prev.GBSeconds, 0),
	}
	if cur.GBSeconds < prev.GBSeconds {
		p.GBSeconds = cur.GBSeconds
	}
	for k, n := range cur.Starts {
		if d := sub(n, prev.Starts[k]); d > 0 {
			if p.Starts == nil {
				p.Starts = map[string]uint64{}
			}
			p.Starts[k] = d
		}
	}
	for k, n := range cur.Histogram {
		if d := sub(n, prev.Histogram[k]); d > 0 {
			if p.Histogram == nil {
				p.Histogram = map[int]uint64{}
			}
			p.Histogram[k] = d
		}
	}
	p.percentiles()
	return p
}

func (p *Point) percentiles() {
	s := Stats{Histogram: p.Histogram}
	p.P50US, p.P99US = s.Quantile(0.50), s.Quantile(0.99)
}

// add adds o's activity and sandboxes to p.
func (p *Point) add(o Point) {
	p.Invocations += o.Invocations
	p.Errors += o.Errors
	p.Throttles += o.Throttles
	p.BilledMS += o.BilledMS
	p.GBSeconds += o.GBSeconds
	p.KVCalls += o.KVCalls
	p.KVBytes += o.KVBytes
	p.Sandboxes.add(o.Sandboxes)
	if len(o.Starts) > 0 {
		p.Starts = addCounts(p.Starts, o.Starts)
	}
	if len(o.Histogram) > 0 && p.Histogram == nil {
		p.Histogram = map[int]uint64{}
	}
	for k, n := range o.Histogram {
		p.Histogram[k] += n
	}
}

// MergeSeries merges the series of several nodes: the points with the
// same T are added up (their percentiles recomputed from the merged
// histograms); the result is ordered by T. A node without a point for
// an interval (it was down, or started sampling later) adds nothing to
// it.
func MergeSeries(series ...[]Point) []Point {
	byT := map[int64]*Point{}
	for _, s := range series {
		for _, p := range s {
			m := byT[p.T]
			if m == nil {
				m = &Point{T: p.T}
				byT[p.T] = m
			}
			m.add(p)
		}
	}
	out := make([]Point, 0, len(byT))
	for _, p := range byT {
		p.percentiles()
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].T < out[j].T })
	return out
}

// sampled is what the sampler remembers of a function between samples.
type sampled struct {
	ring    *Ring[Point]
	created int64
	last    *Stats // cumulative meters at the last sample
}

// sample records the interval ending at t for every function this node
// has meters or sandboxes of.
func (e *Engine) sample(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	names := map[string]bool{}
	for name := range e.stats {
		names[name] = true
	}
	for name := range e.pools {
		names[name] = true
	}
	for name := range names {
		sm := e.series[name]
		if sm == nil {
			sm = &sampled{ring: NewRing[Point](e.cfg.SampleCount)}
			e.series[name] = sm
		}
		var cur Stats
		created := int64(-1)
		if st := e.stats[name]; st != nil {
			cur, created = st.S, st.Created
		}
		prev := sm.last
		if created != sm.created {
			prev = nil // a new incarnation's meters start from zero
		}
		p := diff(t, prev, &cur)
		p.Sandboxes = e.sandboxesLocked(name)
		sm.ring.Push(p)
		snap := cur
		snap.Starts, snap.Histogram, snap.ErrorsByCode = maps.Clone(cur.Starts), maps.Clone(cur.Histogram), nil
		sm.last, sm.created = &snap, created
	}
}

// primeSeries takes the meters restored from Config.Meters as the start of
// the first interval, so that they do not show as activity in it.
func (e *Engine) primeSeries() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, st := range e.stats {
		snap := st.S
		snap.Starts, snap.Histogram, snap.ErrorsByCode = maps.Clone(st.S.Starts), maps.Clone(st.S.Histogram), nil
		e.series[name] = &sampled{ring: NewRing[Point](e.cfg.SampleCount), created: st.Created, last: &snap}
	}
}

// Series returns the function's points on this node, oldest first: one
// per Config.SampleInterval since the node started metering it, at most
// Config.SampleCount. name is its stored name.
func (e *Engine) Series(name string) []Point {
	e.mu.Lock()
	defer e.mu.Unlock()
	sm := e.series[name]
	if sm == nil {
		return []Point{}
	}
	return sm.ring.Items()
}

// SampleInterval returns Config.SampleInterval.
func (e *Engine) SampleInterval() time.Duration { return e.cfg.SampleInterval }

// sampleLoop samples at every multiple of the interval.
func (e *Engine) sampleLoop() {
	defer e.wg.Done()
	iv := e.cfg.SampleInterval
	for {
		next := time.Now().Truncate(iv).Add(iv)
		t := time.NewTimer(time.Until(next))
		select {
		case <-e.stop:
			t.Stop()
			return
		case <-t.C:
			e.sample(next)
		}
	}
}
