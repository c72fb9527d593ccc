package shard

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's shard-level Prometheus metrics.
type metrics struct {
	applied          prometheus.Counter
	writes           *prometheus.CounterVec
	reads            *prometheus.CounterVec
	readIndexReads   prometheus.Counter
	sessionFallbacks prometheus.Counter
	forwardBatch     prometheus.Histogram
	shed             *prometheus.CounterVec
	mapVersion       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_raft_entries_applied_total", Help: "Raft entries applied to the state machine."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lambdadb_writes_total", Help: "Writes proposed, by operation and outcome."}, []string{"op", "outcome"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lambdadb_reads_total", Help: "Reads served, by consistency level."}, []string{"consistency"}),
		readIndexReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_read_index_reads_total", Help: "Read indexes this node handed out as leader (one per linearizable read, its own or a follower's); divided by lambdadb_multiraft_read_index_rounds_total, the coalescing factor."}),
		sessionFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lambdadb_session_read_fallbacks_total", Help: "Reads (session, or linearizable through a follower) that waited past the bound for this replica to catch up and were served by the leader instead."}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lambdadb_requests_shed_total", Help: "Client requests refused as overloaded (beyond MaxInflightWrites / MaxInflightReads after AdmissionWait), by kind."}, []string{"kind"}),
		mapVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lambdadb_cluster_map_version", Help: "Version of the cluster map (membership and placement) this node has."}),
		forwardBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lambdadb_forward_batch_writes", Help: "Writes per forwarding RPC this node sent to a shard leader on another node.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9)}),
	}
	if reg == nil {
		return m, nil
	}
	leaders := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lambdadb_shards_led", Help: "Shards this node currently leads."}, func() float64 {
		return float64(n.ledCount())
	})
	replicas := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lambdadb_replicas", Help: "Shard replicas this node holds (the metadata group's included)."}, func() float64 {
		return float64(len(n.localGroups(true)))
	})
	moves := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lambdadb_replica_moves_in_flight", Help: "Replica moves in flight in the cluster, as this node's map records them."}, func() float64 {
		if m := n.cmap.Load(); m != nil {
			return float64(len(m.Moves))
		}
		return 0
	})
	snapBytes := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "lambdadb_snapshot_bytes_sent_total", Help: "Bytes of shard snapshots this node has sent (replica moves, followers far behind)."}, func() float64 {
		if n.tr == nil {
			return 0
		}
		return float64(n.tr.SnapshotBytesTotal())
	})
	for _, c := range []prometheus.Collector{m.applied, m.writes, m.reads, m.readIndexReads, m.sessionFallbacks, m.forwardBatch, m.shed, m.mapVersion, leaders, replicas, moves, snapBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
