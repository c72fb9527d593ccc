package server

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names of the trigger metrics: one series per trigger and shard
// this node runs the trigger of (the shards it leads).
const (
	MetricTriggerLag         = "lambdadb_trigger_lag_entries"
	MetricTriggerIteratorAge = "lambdadb_trigger_iterator_age_seconds"
	MetricTriggerDelivered   = "lambdadb_trigger_delivered_total"
	MetricTriggerDeadLetters = "lambdadb_trigger_dead_letters_total"
	MetricTriggerRetries     = "lambdadb_trigger_retries_total"
)

var (
	triggerLagDesc = prometheus.NewDesc(MetricTriggerLag,
		"Raft entries between a trigger's checkpoint and the shard's applied index, for the shards this node runs it on.",
		[]string{"trigger", "shard"}, nil)
	triggerAgeDesc = prometheus.NewDesc(MetricTriggerIteratorAge,
		"Age of the oldest change a trigger has not delivered on a shard this node runs it on (0: none waiting).",
		[]string{"trigger", "shard"}, nil)
	triggerDeliveredDesc = prometheus.NewDesc(MetricTriggerDelivered,
		"Changes a trigger delivered on a shard, as its checkpoint counts them (it moves with the shard's leader).",
		[]string{"trigger", "shard"}, nil)
	triggerDeadDesc = prometheus.NewDesc(MetricTriggerDeadLetters,
		"Changes a trigger dead-lettered on a shard, as its checkpoint counts them (it moves with the shard's leader).",
		[]string{"trigger", "shard"}, nil)
	triggerRetriesDesc = prometheus.NewDesc(MetricTriggerRetries,
		"Handler calls a trigger retried on a shard, as its checkpoint counts them (it moves with the shard's leader).",
		[]string{"trigger", "shard"}, nil)
)

// triggerCollector reports the node's triggers at scrape time, from the
// same status GET /v1/triggers?scope=node shows.
type triggerCollector struct{ s *Server }

func (c triggerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{triggerLagDesc, triggerAgeDesc, triggerDeliveredDesc, triggerDeadDesc, triggerRetriesDesc} {
		ch <- d
	}
}

func (c triggerCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for name, shards := range c.s.triggers.Local() {
		for _, st := range shards {
			sh := strconv.Itoa(st.Shard)
			var lag uint64
			if applied := c.s.node.AppliedIndex(st.Shard); applied > st.Checkpoint {
				lag = applied - st.Checkpoint
			}
			var age float64
			if !st.Oldest.IsZero() {
				age = max(0, now.Sub(st.Oldest).Seconds())
			}
			ch <- prometheus.MustNewConstMetric(triggerLagDesc, prometheus.GaugeValue, float64(lag), name, sh)
			ch <- prometheus.MustNewConstMetric(triggerAgeDesc, prometheus.GaugeValue, age, name, sh)
			ch <- prometheus.MustNewConstMetric(triggerDeliveredDesc, prometheus.CounterValue, float64(st.Delivered), name, sh)
			ch <- prometheus.MustNewConstMetric(triggerDeadDesc, prometheus.CounterValue, float64(st.DeadLetters), name, sh)
			ch <- prometheus.MustNewConstMetric(triggerRetriesDesc, prometheus.CounterValue, float64(st.Retries), name, sh)
		}
	}
}

// registerTriggerMetrics registers the trigger metrics when the node runs
// triggers.
func (s *Server) registerTriggerMetrics(reg *prometheus.Registry) error {
	if s.triggers == nil {
		return nil
	}
	_, err := register(reg, triggerCollector{s})
	return err
}
