package multiraft

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg           prometheus.Registerer
	syncs         prometheus.Counter
	batchItems    prometheus.Histogram
	readies       prometheus.Counter
	applied       prometheus.Counter
	dropped       prometheus.Counter
	readRounds    prometheus.Counter
	snapshotsSent prometheus.Counter
	snapIngest    prometheus.Histogram
	// Bytes of received snapshots ingested, and those that went into L0
	// (to be compacted down later).
	snapIngestBytes, snapIngestL0Bytes prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		syncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_log_syncs_total",
			Help: "Synced raft log batches (one per log-writer round that held acknowledgements)."}),
		batchItems: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lambdadb_multiraft_log_batch_appends",
			Help:    "Group appends written per log-writer batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		readies: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_ready_total",
			Help: "Raft Ready rounds handled, over all groups."}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_entries_applied_total",
			Help: "Raft entries applied, over all groups."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_proposals_dropped_total",
			Help: "Proposals raft refused or another entry replaced."}),
		readRounds: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_read_index_rounds_total",
			Help: "ReadIndex requests issued (each shared by the reads waiting at the time)."}),
		snapshotsSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_snapshots_sent_total",
			Help: "Snapshots streamed to followers."}),
		snapIngest: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "lambdadb_multiraft_snapshot_ingest_seconds",
			Help:    "Time the log writer spent installing a received snapshot (ingesting its staged table).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		snapIngestBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_snapshot_ingested_bytes_total",
			Help: "Bytes of received snapshots' tables ingested into the store."}),
		snapIngestL0Bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "lambdadb_multiraft_snapshot_ingested_l0_bytes_total",
			Help: "Of those, about how many went into L0 (overlapping a memtable or L0), to be compacted further down later."}),
	}
	if reg != nil {
		for _, c := range m.all() {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.syncs, m.batchItems, m.readies, m.applied, m.dropped, m.readRounds, m.snapshotsSent, m.snapIngest, m.snapIngestBytes, m.snapIngestL0Bytes}
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all() {
		m.reg.Unregister(c)
	}
}
