package scatter

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are an executor's Prometheus metrics.
type metrics struct {
	queries  *prometheus.CounterVec
	duration prometheus.Histogram
	leaves   prometheus.Counter
	retries  prometheus.Counter
	hedges   prometheus.Counter
	subs     *prometheus.CounterVec
	scanned  prometheus.Counter
	gathered prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, x *Executor) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lambdadb_queries_total", Help: "Scatter/gather queries rooted at this node, by outcome."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lambdadb_query_duration_seconds", Help: "Time of queries rooted at this node that answered.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
		leaves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_query_leaves_total", Help: "Leaves this node started, for its own queries and others'."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_query_retries_total", Help: "Shards read again on another replica after a failure, in queries rooted here."}),
		hedges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_query_hedges_total", Help: "Shards also started elsewhere because their attempt was slow, in queries rooted here."}),
		subs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lambdadb_subqueries_total", Help: "Sub-queries from other nodes, by outcome (ok, refused, invalid, failed)."}, []string{"outcome"}),
		scanned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_query_bytes_scanned_total", Help: "Key and value bytes read by queries rooted here."}),
		gathered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_query_bytes_gathered_total", Help: "Bytes of sub-query answers received by queries rooted here."}),
	}
	if reg == nil {
		return m, nil
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lambdadb_query_leaves_running", Help: "Leaves running on this node now."}, func() float64 {
		return float64(x.ActiveLeaves())
	})
	// Collectors already registered (another executor on the same
	// registry) are shared.
	var err error
	reuse := func(c prometheus.Collector) prometheus.Collector {
		if err != nil {
			return c
		}
		if e := reg.Register(c); e != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(e, &are) {
				return are.ExistingCollector
			}
			err = fmt.Errorf("scatter: metrics: %w", e)
		}
		return c
	}
	m.queries, _ = reuse(m.queries).(*prometheus.CounterVec)
	m.duration, _ = reuse(m.duration).(prometheus.Histogram)
	m.leaves, _ = reuse(m.leaves).(prometheus.Counter)
	m.retries, _ = reuse(m.retries).(prometheus.Counter)
	m.hedges, _ = reuse(m.hedges).(prometheus.Counter)
	m.subs, _ = reuse(m.subs).(*prometheus.CounterVec)
	m.scanned, _ = reuse(m.scanned).(prometheus.Counter)
	m.gathered, _ = reuse(m.gathered).(prometheus.Counter)
	reuse(active)
	if err != nil {
		return nil, err
	}
	if m.queries == nil || m.duration == nil || m.leaves == nil || m.retries == nil || m.hedges == nil ||
		m.subs == nil || m.scanned == nil || m.gathered == nil {
		return nil, errors.New("scatter: metrics: a collector of another type is registered under one of our names")
	}
	return m, nil
}

// queryOutcome names a query's result for lambdadb_queries_total.
func queryOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrInvalidQuery):
		return "invalid"
	case errors.Is(err, ErrOverloaded):
		return "refused"
	case errors.Is(err, ErrIncomplete):
		return "incomplete"
	case fatal(err):
		return "handler_error"
	}
	return "failed"
}
