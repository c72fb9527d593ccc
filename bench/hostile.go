package bench

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sort"
	"strings"
	"time"
)

// hostilePhase is one measurement of the hostile scenario.
type hostilePhase struct {
	Name           string         `json:"name"`
	Error          string         `json:"error,omitempty"`
	RSSBeforeBytes int64          `json:"rss_before_bytes,omitempty"`
	RSSMaxBytes    int64          `json:"rss_max_bytes,omitempty"`
	Writes         *WriteResult   `json:"-"`
	WriteRate      float64        `json:"write_rate,omitempty"`
	WriteP50MS     float64        `json:"write_p50_ms,omitempty"`
	WriteP99MS     float64        `json:"write_p99_ms,omitempty"`
	ServerP50MS    float64        `json:"server_p50_ms,omitempty"` // handler time, from the nodes' histograms
	ServerP99MS    float64        `json:"server_p99_ms,omitempty"`
	WritesShed     int            `json:"writes_shed,omitempty"`
	WritesFailed   int            `json:"writes_failed,omitempty"`
	Polls          *PollStats     `json:"polls,omitempty"`
	Sockets        int            `json:"sockets,omitempty"`
	SocketsRefused int            `json:"sockets_refused,omitempty"`
	SocketsDropped float64        `json:"sockets_dropped,omitempty"`
	Uploads        *UploadStats   `json:"uploads,omitempty"`
	Extra          map[string]any `json:"extra,omitempty"`
}

func (p *hostilePhase) growthMiB() float64 {
	if p.RSSMaxBytes == 0 {
		return math.NaN()
	}
	return float64(p.RSSMaxBytes-p.RSSBeforeBytes) / (1 << 20)
}

func (p *hostilePhase) setWrites(r WriteResult) {
	p.Writes = &r
	p.WriteRate = r.Rate()
	s := Summarize(r.LatenciesMS)
	p.WriteP50MS, p.WriteP99MS = s.P50, s.P99
	p.WritesShed, p.WritesFailed = r.Shed, r.Failed
}

func runHostile(ctx context.Context, e *Env) (*ScenarioReport, error) {
	sz := e.Sizes
	d := sz.HostileDuration
	rep := &ScenarioReport{
		Measures: "How a node holds up against careless or hostile clients: idle long polls, WebSocket consumers " +
			"that never read, uploads that stall, and a thousand writers — the resident memory it grows by, the " +
			"write rate it keeps, and the latency of the writes it admits.",
		Method: fmt.Sprintf("Separate `lambdadb serve` processes on 127.0.0.1 with their default limits, a fresh "+
			"cluster per phase; clients are plain HTTP, each on its own connection, in this process. "+
			"Resident memory (VmRSS) of the node under attack is sampled every 100 ms; growth is its largest "+
			"sample minus its size just before the phase. (1) 1 node: %d writers of %d-byte values for %v, "+
			"alone; then, on a fresh node, the same writers with %d long polls (wait %v) open on prefixes "+
			"nothing is written to. (2) 1 node: %d WebSocket streams on the writers' prefix that never read "+
			"(128 KiB receive buffers), with the writers for %v; the streams the node dropped are read from "+
			"lambdadb_feed_streams_dropped_total %v later. (3) 1 node: %d uploads of a %d MiB module that stop "+
			"halfway; how long until the node answered or closed each. (4) 3 nodes: %d writers of %d-byte "+
			"values spread over the nodes for %v, first retrying a refused write at once, then (fresh cluster) "+
			"waiting out its Retry-After: the latency of the acknowledged writes as the clients saw it and as "+
			"the nodes' handlers did, and the count refused (503/429).",
			sz.HostileWriters, sz.HostileValue, d, sz.HostilePolls, sz.HostilePollWait,
			sz.HostileSockets, d, 12*time.Second, sz.HostileUploads, sz.HostileUploadMB,
			sz.HostileFloodWriters, 256, d),
	}
	rep.Param("writers × value", fmt.Sprintf("%d × %d B", sz.HostileWriters, sz.HostileValue))
	rep.Param("duration per phase", d.String())
	rep.Param("idle long polls", sz.HostilePolls)
	rep.Param("never-reading WebSockets", sz.HostileSockets)
	rep.Param("stalled uploads", fmt.Sprintf("%d × %d MiB", sz.HostileUploads, sz.HostileUploadMB))
	rep.Param("writers on 3 nodes", sz.HostileFloodWriters)
	if runtime.GOOS != "linux" {
		return rep, fmt.Errorf("bench: hostile reads /proc/<pid>/status and runs only on Linux, not %s", runtime.GOOS)
	}
	var phases []*hostilePhase
	rep.Data = &phases
	run := func(name string, nodes int, f func(ctx context.Context, c *Cluster, p *hostilePhase) error) *hostilePhase {
		p := &hostilePhase{Name: name}
		phases = append(phases, p)
		e.logf("%s", name)
		c, err := StartLambdaDBWith(LambdaOptions{Bin: e.LambdaBin, Nodes: nodes, Shards: 16})
		if err != nil {
			p.Error = err.Error()
			e.logf("  cluster did not start: %v", err)
			return p
		}
		defer c.Stop()
		if p.RSSBeforeBytes, err = rssBytes(c.Procs[0].Pid()); err != nil {
			p.Error = err.Error()
			return p
		}
		s := SampleRSS(c.Procs[0].Pid())
		err = f(ctx, c, p)
		if p.RSSMaxBytes, _ = s.Stop(); err != nil && p.Error == "" {
			p.Error = err.Error()
		}
		e.logf("  RSS %0.f → max %.0f MiB (+%.0f)", float64(p.RSSBeforeBytes)/(1<<20), float64(p.RSSMaxBytes)/(1<<20), p.growthMiB())
		return p
	}
	writers := func(c *Cluster, prefix string) Writers {
		return Writers{Addrs: c.Addrs()[:1], N: sz.HostileWriters, ValueBytes: sz.HostileValue, Prefix: prefix}
	}

	base := run("writers alone (1 node)", 1, func(ctx context.Context, c *Cluster, p *hostilePhase) error {
		p.setWrites(writers(c, "w/").Run(ctx, d))
		e.logf("  %.0f writes/s", p.WriteRate)
		return nil
	})
	polls := run("writers + idle long polls (1 node)", 1, func(ctx context.Context, c *Cluster, p *hostilePhase) error {
		ip := &IdlePolls{Addr: c.Addrs()[0], N: sz.HostilePolls, Wait: sz.HostilePollWait, Prefix: "idle/"}
		ip.Start(ctx)
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			ip.Stop()
			return err
		}
		p.setWrites(writers(c, "w/").Run(ctx, d))
		// Let every poll answer at least once after the writes.
		_ = sleepCtx(ctx, sz.HostilePollWait+time.Second)
		st := ip.Stop()
		p.Polls = &st
		e.logf("  %.0f writes/s; polls: %d answers, %d late (max %d ms past their wait), %d refused, %d failed",
			p.WriteRate, st.Answers, st.Late, st.MaxLateMS, st.Refused, st.Failed)
		return nil
	})
	sockets := run("writers + never-reading WebSockets (1 node)", 1, func(ctx context.Context, c *Cluster, p *hostilePhase) error {
		ds, refused, err := OpenDeadSockets(ctx, c.Addrs()[0], "", sz.HostileSockets, "w/")
		if err != nil {
			return err
		}
		defer ds.Close()
		p.Sockets, p.SocketsRefused = len(ds.conns), refused
		p.setWrites(writers(c, "w/").Run(ctx, d))
		deadline := time.Now().Add(12 * time.Second) // the node's --feed-write-timeout is 10 s
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if v, err := metricValue(ctx, c.Addrs()[0], "lambdadb_feed_streams_dropped_total"); err == nil {
				p.SocketsDropped = v
				if int(v) >= p.Sockets {
					break
				}
			}
			_ = sleepCtx(ctx, 500*time.Millisecond)
		}
		e.logf("  %.0f writes/s; %d streams open, %d refused, %.0f dropped by the node", p.WriteRate, p.Sockets, refused, p.SocketsDropped)
		return nil
	})
	uploads := run("stalled uploads (1 node)", 1, func(ctx context.Context, c *Cluster, p *hostilePhase) error {
		u := &StalledUploads{Addr: c.Addrs()[0], N: sz.HostileUploads, Size: sz.HostileUploadMB << 20}
		u.Start(ctx)
		st := u.Wait(ctx, 45*time.Second)
		p.Uploads = &st
		cut := Summarize(st.CutSeconds)
		e.logf("  %d cut after stalling (median %.1f s, max %.1f s), %d refused, %d still open; statuses %v",
			st.Cut, cut.P50, cut.Max, st.Refused, st.Open, st.Statuses)
		return nil
	})
	floodPhase := func(honor bool) func(ctx context.Context, c *Cluster, p *hostilePhase) error {
		return func(ctx context.Context, c *Cluster, p *hostilePhase) error {
			_, before, err := ServerLatency(ctx, c.Addrs(), "kv_put", nil, 0.5)
			if err != nil {
				return err
			}
			w := Writers{Addrs: c.Addrs(), N: sz.HostileFloodWriters, ValueBytes: 256, Prefix: "f/", HonorRetryAfter: honor}
			p.setWrites(w.Run(ctx, d))
			q, _, err := ServerLatency(ctx, c.Addrs(), "kv_put", before, 0.5, 0.99)
			if err != nil {
				return err
			}
			p.ServerP50MS, p.ServerP99MS = q[0], q[1]
			e.logf("  %.0f writes/s acknowledged, p50 %.0f ms, p99 %.0f ms (handler time p50 %.0f ms, p99 %.0f ms); %d refused, %d failed",
				p.WriteRate, p.WriteP50MS, p.WriteP99MS, p.ServerP50MS, p.ServerP99MS, p.WritesShed, p.WritesFailed)
			return nil
		}
	}
	flood := run("1,000 writers retrying at once (3 nodes)", 3, floodPhase(false))
	floodPolite := run("1,000 writers waiting out Retry-After (3 nodes)", 3, floodPhase(true))

	ratio := math.NaN()
	if base.WriteRate > 0 {
		ratio = polls.WriteRate / base.WriteRate
	}
	rep.Metric("idle long polls: RSS growth", polls.growthMiB(), "MiB")
	rep.Metric("writers alone: RSS growth", base.growthMiB(), "MiB")
	rep.Metric("idle long polls: write rate vs alone", 100*ratio, "%")
	rep.Metric("never-reading WebSockets: RSS growth", sockets.growthMiB(), "MiB")
	rep.Metric("never-reading WebSockets: dropped by the node", sockets.SocketsDropped, "")
	rep.Metric("stalled uploads: RSS growth", uploads.growthMiB(), "MiB")
	cutMax := math.NaN()
	if uploads.Uploads != nil && len(uploads.Uploads.CutSeconds) > 0 {
		cutMax = Summarize(uploads.Uploads.CutSeconds).Max
	}
	rep.Metric("stalled uploads: slowest cut after stalling", cutMax, "s")
	rep.Metric("1,000 writers: p99 of acknowledged writes", flood.WriteP99MS, "ms")
	rep.Metric("1,000 writers: p99 handler time of acknowledged writes", flood.ServerP99MS, "ms")
	rep.Metric("1,000 writers: refused", float64(flood.WritesShed), "")
	rep.Metric("1,000 writers waiting out Retry-After: p99 of acknowledged writes", floodPolite.WriteP99MS, "ms")
	rep.Metric("1,000 writers waiting out Retry-After: p99 handler time", floodPolite.ServerP99MS, "ms")
	rep.Metric("1,000 writers waiting out Retry-After: write rate", floodPolite.WriteRate, "writes/s")

	t := Table{Columns: []string{"phase", "RSS growth", "writes/s", "write p50 / p99 (client)", "handler p50 / p99", "refused", "other"}}
	for _, p := range phases {
		if p.Error != "" {
			t.Rows = append(t.Rows, []string{p.Name, "—", "—", "—", "—", "—", "failed: " + firstLine(p.Error)})
			continue
		}
		var other []string
		if p.Polls != nil {
			other = append(other, fmt.Sprintf("%d poll answers, %d late (max %.1f s past wait)", p.Polls.Answers, p.Polls.Late, float64(p.Polls.MaxLateMS)/1000))
		}
		if p.Sockets > 0 || p.SocketsRefused > 0 {
			other = append(other, fmt.Sprintf("%d streams, %.0f dropped by the node, %d refused", p.Sockets, p.SocketsDropped, p.SocketsRefused))
		}
		if p.Uploads != nil {
			cut := Summarize(p.Uploads.CutSeconds)
			codes := make([]string, 0, len(p.Uploads.Statuses))
			for code, n := range p.Uploads.Statuses {
				codes = append(codes, fmt.Sprintf("%d×%d", n, code))
			}
			sort.Strings(codes)
			other = append(other, fmt.Sprintf("%d cut (median %.1f s, max %.1f s after stalling), %d refused, %d open; answers %s",
				p.Uploads.Cut, cut.P50, cut.Max, p.Uploads.Refused, p.Uploads.Open, strings.Join(codes, " ")))
		}
		rate, lat, slat, shed := "—", "—", "—", "—"
		if p.Writes != nil {
			rate = fmt.Sprintf("%.0f", p.WriteRate)
			lat = fmt.Sprintf("%.0f / %.0f ms", p.WriteP50MS, p.WriteP99MS)
			shed = fmt.Sprint(p.WritesShed)
		}
		if p.ServerP99MS > 0 {
			slat = fmt.Sprintf("%.0f / %.0f ms", p.ServerP50MS, p.ServerP99MS)
		}
		t.Rows = append(t.Rows, []string{p.Name, fmt.Sprintf("%.0f MiB", p.growthMiB()), rate, lat, slat, shed, strings.Join(other, "; ")})
	}
	rep.Tables = append(rep.Tables, t)
	rep.Note("The clients run on the same cores as the nodes: a write's latency as its client sees it includes the " +
		"client's own scheduling and the node's parsing before the handler starts. The handler time (from the " +
		"nodes' lambdadb_http_request_duration_seconds, interpolated within 2× buckets) is the node's part.")
	return rep, nil
}
