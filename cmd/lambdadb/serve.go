package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/auth"
	"lambdadb/changefeed"
	"lambdadb/lambda"
	"lambdadb/scatter"
	"lambdadb/server"
	"lambdadb/shard"
)

// HTTP server limits for serve. Request bodies are bounded by the
// server package (--body-idle-timeout, --body-timeout, --max-inflight-body-mb),
// not by http.Server.ReadTimeout, which would also cut long uploads that
// make progress.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 10 * time.Second
	// maxHeaderBytes bounds a request's headers (net/http's 431 beyond):
	// keys are at most 1 KiB; X-Session tokens take up to
	// sessionBytesPerShard per shard on top.
	maxHeaderBytes       = 64 << 10
	sessionBytesPerShard = 16
)

// maxSnapshotRateMB bounds --snapshot-rate-mb (1 TiB/s; 0 is unlimited).
const maxSnapshotRateMB = 1 << 20

// headerLimit is http.Server.MaxHeaderBytes for a node with shards shards:
// room for an X-Session token that covers every shard.
func headerLimit(shards int) int { return maxHeaderBytes + sessionBytesPerShard*max(shards, 0) }

var serveCommand = &command{
	name:  "serve",
	args:  "[--id n1] [--addr 127.0.0.1:7070] [--data ./data] [--peers id=host:port,... | --join host:port] [--shards 64] [--replicas 3] [--move-concurrency 2] [--snapshot-rate-mb 64] [--raft-tick 100ms] [--election-timeout 500ms] [--fn-memory-mb 1024] [--fn-keep-alive 5m] [--fn-snapshots=true] [--billing-granularity 1ms] [--max-functions 1000] [--fn-log-lines 500] [--fn-log-line-bytes 4096] [--fn-precompile=true] [--fn-precompile-concurrency 2] [--fn-deploy-wait 10s] [--max-queries 32] [--max-query-groups 10000] [--memory-limit-mb 0] [--max-inflight-writes 64] [--max-inflight-reads 1024] [--max-inflight-body-mb 256] [--body-idle-timeout 10s] [--body-timeout 2m] [--max-feed-subscribers 4096] [--max-feed-subscribers-per-client 1024] [--feed-write-timeout 10s] [--max-feed-send-mb 16] [--trigger-pause-after 100] [--trigger-paused-retention 24h] [--cluster-secret-file FILE | --ca-file FILE --cert-file FILE --key-file FILE | --insecure] [--allow-origin ORIGIN] [--token-cache-ttl 30s] [--pprof] [--unsafe-fault-injection]",
	short: "run a node",
	summary: "Run a node. Without --peers or --join the node is a one-node cluster; --peers creates\n" +
		"a cluster of several nodes, --join adds a node with a new data directory to a running\n" +
		"cluster (through any member). One address carries client HTTP, internal RPC and Raft.\n" +
		"--cluster-secret-file (or --ca-file, --cert-file and --key-file) turns on TLS 1.3 there;\n" +
		"without them the node serves plain HTTP, on a loopback address only unless --insecure.\n" +
		"SIGINT or SIGTERM shuts it down gracefully.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		var o serveOptions
		fs.StringVar(&o.id, "id", "n1", "this node's `id`; with --join a name no member has (required)")
		fs.StringVar(&o.addr, "addr", "127.0.0.1:7070", "`host:port` to listen on and advertise; with --peers, defaults to this node's address there")
		fs.StringVar(&o.data, "data", "./data", "data `directory`")
		fs.StringVar(&o.peers, "peers", "", "initial cluster as `id=host:port,...` (etcd's --initial-cluster)")
		fs.StringVar(&o.join, "join", "", "join the running cluster that the member at `host:port` belongs to; used when the data directory is new, ignored afterwards")
		fs.IntVar(&o.shards, "shards", 0, "number of shards, a power of two, fixed when the data directory is created (default 64, or what the data directory was created with; a joining node takes the cluster's)")
		fs.IntVar(&o.replicas, "replicas", 3, "replicas per shard, capped at the number of nodes (a joining node takes the cluster's)")
		fs.IntVar(&o.moveConcurrency, "move-concurrency", 2, "replica moves the cluster runs at once, `N` (read on the node that leads the metadata group: give every node the same value)")
		fs.Int64Var(&o.snapshotRateMB, "snapshot-rate-mb", 64, "rate at which this node sends snapshots (replica moves, followers far behind), in `MiB/s`; 0: unlimited")
		fs.DurationVar(&o.raftTick, "raft-tick", shard.DefaultTickInterval, "Raft `tick`: leaders send heartbeats every tick; the election timeout is counted in ticks")
		fs.DurationVar(&o.electionTimeout, "election-timeout", shard.DefaultElectionTimeout, "Raft election `timeout`: a follower that hears nothing from its leader for a random time between one and two of these starts an election; at least twice --raft-tick")
		fs.Int64Var(&o.fnMemoryMB, "fn-memory-mb", 1024, "memory budget of this node's live function sandboxes, in `MiB`; beyond it paused sandboxes are stopped, LRU")
		fs.DurationVar(&o.fnKeepAlive, "fn-keep-alive", 5*time.Minute, "stop a paused sandbox idle this `long`")
		fs.BoolVar(&o.fnSnapshots, "fn-snapshots", true, "start function sandboxes from a snapshot taken after the module's init (false: every sandbox runs the init)")
		fs.DurationVar(&o.billing, "billing-granularity", time.Millisecond, "billing granularity (`duration`) invocations are rounded up to")
		fs.IntVar(&o.maxFunctions, "max-functions", lambda.DefaultMaxFunctions, "functions the cluster's registry may hold; deploying a new name beyond gets 409 too_many_functions (give every node the same value)")
		fs.IntVar(&o.logLines, "fn-log-lines", lambda.DefaultLogLines, "recent log lines this node keeps per function")
		fs.IntVar(&o.logLineBytes, "fn-log-line-bytes", lambda.DefaultLogLineBytes, "longest function log line in `bytes`; the rest of a longer line is dropped")
		fs.BoolVar(&o.fnPrecompile, "fn-precompile", true, "compile a function on this node as soon as a deploy is announced to it, in the background, instead of at its first call here; deploys through this node are announced to every member")
		fs.IntVar(&o.fnPrecompileN, "fn-precompile-concurrency", lambda.DefaultPrecompileConcurrency, "background compiles this node runs at once, `N`")
		fs.DurationVar(&o.fnDeployWait, "fn-deploy-wait", server.DefaultDeployCompileWait, "how `long` a deploy through this node waits for the members to report the new version compiled before it answers; 0: answer at once")
		fs.IntVar(&o.maxQueries, "max-queries", scatter.DefaultMaxQueries, "queries this node roots at once; more get 429 too_many_requests")
		fs.IntVar(&o.maxQueryGroups, "max-query-groups", scatter.DefaultMaxGroups, "groups a built-in aggregate's answer may hold; more: 400 too_many_groups (give every node the same value)")
		fs.Int64Var(&o.memoryLimitMB, "memory-limit-mb", 0, "soft memory limit of the Go runtime in `MiB` (debug.SetMemoryLimit); 0: $GOMEMLIMIT if set, else --fn-memory-mb + --max-inflight-body-mb + 1024, at most 90% of the cgroup's memory limit; -1: none")
		fs.IntVar(&o.maxWrites, "max-inflight-writes", shard.DefaultMaxInflightWrites, "client writes in flight on this node (proposed here or forwarded); beyond, a write waits 50 ms for a slot, then gets 503 overloaded")
		fs.IntVar(&o.maxReads, "max-inflight-reads", 1024, "client reads (GET of a key) in flight on this node; beyond, as --max-inflight-writes")
		fs.Int64Var(&o.inflightBodyMB, "max-inflight-body-mb", server.DefaultMaxInflightBodyBytes>>20, "budget of request-body bytes in flight on this node, in `MiB`; a request that finds it full for 1 s gets 503 overloaded")
		fs.DurationVar(&o.bodyIdle, "body-idle-timeout", server.DefaultBodyIdleTimeout, "fail a request whose body sends nothing for this `long` (408 body_timeout)")
		fs.DurationVar(&o.bodyTotal, "body-timeout", server.DefaultBodyTimeout, "fail a request whose body is not complete this `long` after its headers (408 body_timeout)")
		fs.IntVar(&o.maxFeedSubs, "max-feed-subscribers", changefeed.DefaultMaxSubscribers, "feed reads (long polls and WebSocket streams) open on this node; beyond, 503 overloaded")
		fs.IntVar(&o.maxFeedSubsClient, "max-feed-subscribers-per-client", changefeed.DefaultMaxSubscribersPerClient, "feed reads open on this node per client address; beyond, 429 too_many_subscribers")
		fs.DurationVar(&o.feedWrite, "feed-write-timeout", server.DefaultFeedWriteTimeout, "drop a WebSocket feed stream whose consumer does not take a message within this `long`")
		fs.Int64Var(&o.feedSendMB, "max-feed-send-mb", server.DefaultStreamSendBytes>>20, "budget of WebSocket feed message bytes being sent on this node, in `MiB`; streams wait for it")
		fs.IntVar(&o.pauseAfter, "trigger-pause-after", changefeed.DefaultPauseAfter, "pause a trigger once a shard has dead-lettered this many changes in a row, `N` (0: never); the default of triggers created without pause_after")
		fs.DurationVar(&o.pausedRetention, "trigger-paused-retention", changefeed.DefaultPausedRetention, "how `long` a paused trigger's checkpoints hold back the trimming of the change feed")
		fs.StringVar(&o.secretFile, "cluster-secret-file", "", "secure mode: TLS 1.3 with node certificates derived from the cluster secret(s) in `FILE` (at least 32 bytes a line; the first line is current, every line's CA is trusted); give every node the same file")
		fs.StringVar(&o.caFile, "ca-file", "", "secure mode with your own PKI: the CA certificate(s) to trust, PEM `FILE` (with --cert-file, --key-file)")
		fs.StringVar(&o.certFile, "cert-file", "", "this node's certificate, PEM `FILE`; it must carry the URI SAN lambdadb://node/<id>")
		fs.StringVar(&o.keyFile, "key-file", "", "the key of --cert-file, PEM `FILE`")
		fs.BoolVar(&o.insecure, "insecure", false, "serve plain HTTP, with no authentication of nodes, even on an address that is not loopback")
		fs.Func("allow-origin", "a browser `origin` (scheme://host[:port]) besides the node's own that may open WebSocket feeds and change data; repeat for several", func(v string) error {
			o.allowOrigins = append(o.allowOrigins, v)
			return nil
		})
		fs.DurationVar(&o.tokenCacheTTL, "token-cache-ttl", 30*time.Second, "secure mode: how `long` a node trusts a token record it read; a revocation reaches every reachable node at once, others within this time")
		fs.BoolVar(&o.pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ (for operators; off by default)")
		fs.BoolVar(&o.faults, "unsafe-fault-injection", false, "TESTS ONLY: serve /debug/faults to drop, delay and partition this node's traffic")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			o.addrSet = isSet(fs, "addr")
			pkiFiles := o.caFile != "" || o.certFile != "" || o.keyFile != ""
			switch {
			case o.insecure && (o.secretFile != "" || pkiFiles):
				return usagef("--insecure turns transport security off: give it or --cluster-secret-file / --ca-file, not both")
			case o.secretFile != "" && pkiFiles:
				return usagef("give --cluster-secret-file or --ca-file, --cert-file and --key-file, not both")
			case pkiFiles && (o.caFile == "" || o.certFile == "" || o.keyFile == ""):
				return usagef("--ca-file, --cert-file and --key-file go together")
			}
			if o.join != "" {
				if o.peers != "" {
					return usagef("give --peers to create a cluster or --join to join one, not both")
				}
				if !isSet(fs, "id") {
					return usagef("--join needs --id: a name no member of the cluster has")
				}
				if _, _, err := net.SplitHostPort(o.join); err != nil {
					return usagef("--join: %v", err)
				}
			}
			if o.moveConcurrency < 1 || o.snapshotRateMB < 0 || o.snapshotRateMB > maxSnapshotRateMB {
				return usagef("--move-concurrency must be at least 1, --snapshot-rate-mb in 0..%d", maxSnapshotRateMB)
			}
			o.memoryLimitSet = isSet(fs, "memory-limit-mb")
			if o.memoryLimitMB < -1 || o.inflightBodyMB <= 0 || o.bodyIdle <= 0 || o.bodyTotal <= 0 {
				return usagef("--max-inflight-body-mb, --body-idle-timeout and --body-timeout must be positive, --memory-limit-mb at least -1")
			}
			if o.maxWrites < 1 || o.maxReads < 1 {
				return usagef("--max-inflight-writes and --max-inflight-reads must be at least 1")
			}
			if o.maxFeedSubs < 1 || o.maxFeedSubsClient < 1 || o.feedWrite <= 0 || o.feedSendMB < 1 {
				return usagef("--max-feed-subscribers, --max-feed-subscribers-per-client and --max-feed-send-mb must be at least 1, --feed-write-timeout positive")
			}
			if o.pauseAfter < 0 || o.pauseAfter > changefeed.MaxPauseAfter || o.pausedRetention <= 0 {
				return usagef("--trigger-pause-after must be in 0..%d, --trigger-paused-retention positive", changefeed.MaxPauseAfter)
			}
			if o.maxFunctions < 1 || o.logLines < 1 || o.maxQueries < 1 || o.maxQueryGroups < 1 {
				return usagef("--max-functions, --fn-log-lines, --max-queries and --max-query-groups must be at least 1")
			}
			if o.fnPrecompileN < 1 || o.fnDeployWait < 0 {
				return usagef("--fn-precompile-concurrency must be at least 1, --fn-deploy-wait at least 0")
			}
			if o.logLineBytes < 1 || o.logLineBytes > lambda.MaxLogLineBytes {
				return usagef("--fn-log-line-bytes must be in 1..%d", lambda.MaxLogLineBytes)
			}
			if o.raftTick <= 0 || o.electionTimeout < 2*o.raftTick {
				return usagef("--election-timeout (%v) must be at least twice --raft-tick (%v), and both positive", o.electionTimeout, o.raftTick)
			}
			return c.serve(ctx, o)
		}
	},
}

type serveOptions struct {
	id, addr, data, peers  string
	join                   string
	addrSet, pprof, faults bool
	fnSnapshots            bool
	shards, replicas       int
	fnMemoryMB             int64
	fnKeepAlive, billing   time.Duration
	raftTick               time.Duration
	maxWrites, maxReads    int
	electionTimeout        time.Duration
	memoryLimitMB          int64
	memoryLimitSet         bool
	inflightBodyMB         int64
	bodyIdle, bodyTotal    time.Duration
	maxFeedSubs            int
	maxFeedSubsClient      int
	feedWrite              time.Duration
	feedSendMB             int64
	pauseAfter             int
	pausedRetention        time.Duration
	maxFunctions           int
	logLines, logLineBytes int
	fnPrecompile           bool
	fnPrecompileN          int
	fnDeployWait           time.Duration
	maxQueries             int
	maxQueryGroups         int
	moveConcurrency        int
	snapshotRateMB         int64
	secretFile             string
	caFile, certFile       string
	keyFile                string
	insecure               bool
	allowOrigins           []string
	tokenCacheTTL          time.Duration
}

// parsePeers parses "n1=host:port,n2=host:port".
func parsePeers(s string) ([]shard.Peer, error) {
	if s == "" {
		return nil, nil
	}
	var peers []shard.Peer
	for _, item := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || id == "" || addr == "" {
			return nil, usagef("--peers: %q is not id=host:port", item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usagef("--peers: %s: %v", id, err)
		}
		peers = append(peers, shard.Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

func (c *cli) serve(ctx context.Context, o serveOptions) error {
	peers, err := parsePeers(o.peers)
	if err != nil {
		return err
	}
	if !o.addrSet {
		for _, p := range peers {
			if p.ID == o.id {
				o.addr = p.Addr
			}
		}
	}
	log := slog.New(slog.NewTextHandler(c.stderr, nil))
	if o.faults && len(peers) < 2 && o.join == "" {
		return usagef("--unsafe-fault-injection needs a multi-node --peers list or --join")
	}
	if limit, source := memoryLimit(o, c.getenv("GOMEMLIMIT"), cgroupMemoryLimit()); limit == 0 {
		log.Info("memory limit", "source", source, "GOMEMLIMIT", c.getenv("GOMEMLIMIT"))
	} else {
		if limit < 0 {
			limit = math.MaxInt64 // none
		}
		prev := debug.SetMemoryLimit(limit)
		defer debug.SetMemoryLimit(prev)
		log.Info("memory limit", "source", source, "mib", limit>>20)
	}

	tlsSet, err := securitySet(o, log)
	if err != nil {
		return err
	}
	if tlsSet != nil {
		if err := writeCAFile(o.data, tlsSet); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	advertised := o.addr
	if _, port, _ := net.SplitHostPort(o.addr); port == "0" {
		advertised = ln.Addr().String()
	}

	// Client HTTP, internal RPC and Raft share the one address through the
	// mux. A one-node cluster runs it too: other nodes may join it later.
	mc := shard.MuxConfig{NodeID: o.id, TLS: tlsSet, Logger: log}
	if o.faults {
		mc.Faults = &shard.Faults{}
		log.Warn("fault injection is enabled: /debug/faults can cut this node off; never use this in production")
	}
	mux, err := shard.NewMux(ln, mc)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: %w", err)
	}
	go func() { _ = mux.Serve() }()
	public := mux.PublicListener()
	closeListener := func() { _ = mux.Close() }

	if o.fnMemoryMB <= 0 || o.fnKeepAlive <= 0 || o.billing <= 0 {
		closeListener()
		return usagef("--fn-memory-mb, --fn-keep-alive and --billing-granularity must be positive")
	}
	// The function engine needs the node and the node gossips the engine's
	// placement hints: the hook reads the engine once it exists.
	var engine atomic.Pointer[lambda.Engine]
	var triggers atomic.Pointer[changefeed.Triggers]
	reg := prometheus.NewRegistry()
	snapshotRate := o.snapshotRateMB << 20
	if snapshotRate == 0 {
		snapshotRate = -1 // unlimited
	}
	node, err := shard.Open(shard.Config{
		StatusInfo: func() []byte {
			if e := engine.Load(); e != nil {
				return e.StatusInfo()
			}
			return nil
		},
		// Never trim a shard's feed past a trigger's checkpoint (nothing is
		// trimmed until the triggers are known), unless the trigger has been
		// paused for longer than --trigger-paused-retention.
		FeedTrimLimit: func(s int) uint64 {
			if t := triggers.Load(); t != nil {
				return t.TrimLimit(s)
			}
			return 0
		},
		ID:                  o.id,
		Addr:                advertised,
		Dir:                 o.data,
		Shards:              o.shards,
		Replicas:            o.replicas,
		Peers:               peers,
		Join:                o.join,
		MoveConcurrency:     o.moveConcurrency,
		SnapshotBytesPerSec: snapshotRate,
		TickInterval:        o.raftTick,
		MaxInflightWrites:   o.maxWrites,
		MaxInflightReads:    o.maxReads,
		ElectionTimeout:     o.electionTimeout,
		Mux:                 mux,
		Registerer:          reg,
		Logger:              log,
	})
	if err != nil {
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	fns, err := lambda.New(lambda.Config{
		Store:                 node,
		NodeID:                o.id,
		CacheDir:              filepath.Join(o.data, "wasm-cache"),
		MemoryBudget:          o.fnMemoryMB << 20,
		KeepAlive:             o.fnKeepAlive,
		BillingGranularity:    o.billing,
		MaxFunctions:          o.maxFunctions,
		LogLines:              o.logLines,
		LogLineBytes:          o.logLineBytes,
		DisableSnapshots:      !o.fnSnapshots,
		PrecompileConcurrency: o.fnPrecompileN,
		DisablePrecompile:     !o.fnPrecompile,
		Meters:                node,
		Registerer:            reg,
		Logger:                log,
	})
	if err != nil {
		_ = node.Close()
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	engine.Store(fns)
	// Compile what the cluster has deployed before calls for it are routed
	// here: a node that joins, or restarts (from its disk cache), is ready
	// for the shards it comes to lead.
	precompileCtx, stopPrecompile := context.WithCancel(context.Background())
	precompiled := make(chan struct{})
	go func() {
		defer close(precompiled)
		start := time.Now()
		if err := fns.PrecompileAll(precompileCtx); err == nil && fns.PrecompileEnabled() {
			log.Info("deployed functions compiled", "took", time.Since(start).Round(time.Millisecond))
		}
	}()
	defer func() { stopPrecompile(); <-precompiled }()
	pauseAfter := o.pauseAfter
	if pauseAfter == 0 {
		pauseAfter = -1 // never
	}
	trg, err := changefeed.NewTriggers(changefeed.TriggersConfig{Node: node, Functions: fns, Logger: log,
		PauseAfter: pauseAfter, PausedRetention: o.pausedRetention})
	if err != nil {
		_ = fns.Close()
		_ = node.Close()
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	trg.Start()
	triggers.Store(trg)
	// Secure mode: every request but /healthz and the bootstrap carries a
	// token, checked against the replicated token records.
	var tokens *auth.Store
	if tlsSet != nil {
		if tokens, err = auth.New(auth.Config{Node: node, CacheTTL: o.tokenCacheTTL}); err != nil {
			trg.Close()
			_ = fns.Close()
			_ = node.Close()
			closeListener()
			return fmt.Errorf("serve: %w", err)
		}
	}
	handler, err := server.New(server.Config{Node: node, Functions: fns, Triggers: trg, Registry: reg, Logger: log,
		BodyIdleTimeout: o.bodyIdle, BodyTimeout: o.bodyTotal, MaxInflightBodyBytes: o.inflightBodyMB << 20,
		MaxFeedSubscribers: o.maxFeedSubs, MaxFeedSubscribersPerClient: o.maxFeedSubsClient, FeedWriteTimeout: o.feedWrite,
		MaxStreamSendBytes: o.feedSendMB << 20, MaxQueries: o.maxQueries, MaxQueryGroups: o.maxQueryGroups,
		PeerClient: peerClient(tlsSet), PeerScheme: peerScheme(tlsSet), Auth: tokens, AllowedOrigins: o.allowOrigins,
		DeployCompileWait: deployWait(o.fnDeployWait)})
	if err != nil {
		trg.Close()
		_ = fns.Close()
		_ = node.Close()
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	var h http.Handler = handler
	if o.pprof {
		h = withPprof(h, handler.RequireAdmin)
	}
	if mux.Faults() != nil {
		h = withRoute("/debug/faults", handler.RequireAdmin(mux.Faults().Handler()), h)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    headerLimit(node.Shards()),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// net/http's own answers to requests it cannot parse become JSON too.
	public = handler.WrapListener(srv, public)
	transport := "http (insecure)"
	if tlsSet != nil {
		transport = "tls1.3"
	}
	if o.join != "" {
		log.Info("lambdadb serving", "id", o.id, "addr", advertised, "data", o.data,
			"shards", node.Shards(), "join", o.join, "transport", transport)
	} else {
		log.Info("lambdadb serving", "id", o.id, "addr", advertised, "data", o.data,
			"shards", node.Shards(), "peers", max(len(peers), 1), "transport", transport)
	}
	if c.ready != nil {
		c.ready(ln.Addr().String())
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(public) }()
	select {
	case err = <-served:
		err = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		err = srv.Shutdown(sctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("serve: shutdown: %w", err)
		}
	}
	handler.Close()
	stopPrecompile()
	<-precompiled
	trg.Close()
	if cerr := fns.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("serve: close functions: %w", cerr))
	}
	if cerr := node.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("serve: close node: %w", cerr))
	}
	closeListener()
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// memoryLimit is the soft memory limit serve gives the Go runtime, in
// bytes, and where it comes from: an explicit --memory-limit-mb, else
// $GOMEMLIMIT (gomemlimit; the runtime has applied it: 0 is returned,
// leave it), else the automatic limit: the node's memory budgets plus
// 1 GiB, at most 90% of cgroup (the cgroup's memory limit, 0 if none).
// -1 means no limit.
func memoryLimit(o serveOptions, gomemlimit string, cgroup int64) (int64, string) {
	switch {
	case o.memoryLimitSet && o.memoryLimitMB < 0:
		return -1, "--memory-limit-mb"
	case o.memoryLimitSet && o.memoryLimitMB > 0:
		return o.memoryLimitMB << 20, "--memory-limit-mb"
	case gomemlimit != "":
		return 0, "GOMEMLIMIT"
	}
	limit := (o.fnMemoryMB + o.inflightBodyMB + 1024) << 20
	if cgroup > 0 && cgroup/10*9 < limit {
		return cgroup / 10 * 9, "cgroup"
	}
	return limit, "auto"
}

// cgroupMemoryLimit is the memory limit of this process's cgroup (v2, or
// v1's memory controller), 0 if there is none or it cannot be read.
func cgroupMemoryLimit() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	return cgroupLimit(string(b), "/sys/fs/cgroup")
}

// cgroupLimit finds the memory limit of the cgroup described by
// procCgroup (the contents of /proc/self/cgroup) under the cgroup file
// system mounted at root: the smallest limit of the cgroup and its
// ancestors, 0 if none.
func cgroupLimit(procCgroup, root string) int64 {
	var limit int64
	consider := func(file string) {
		b, err := os.ReadFile(file)
		if err != nil {
			return
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v <= 0 || v >= 1<<60 { // "max", or v1's "unlimited"
			return
		}
		if limit == 0 || v < limit {
			limit = v
		}
	}
	for _, line := range strings.Split(procCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		dir, file := "", ""
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			dir, file = root, "memory.max"
		case slices.Contains(strings.Split(parts[1], ","), "memory"): // v1
			dir, file = filepath.Join(root, "memory"), "memory.limit_in_bytes"
		default:
			continue
		}
		// In a container the path may not be visible: the root is then
		// the container's cgroup.
		for p := filepath.Clean("/" + parts[2]); ; p = filepath.Dir(p) {
			consider(filepath.Join(dir, p, file))
			if p == "/" {
				break
			}
		}
	}
	return limit
}

// withPprof serves net/http/pprof under /debug/pprof/ in front of h.
func withPprof(h http.Handler, guard func(http.Handler) http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return withRoute("/debug/pprof/", guard(mux), h)
}

// withRoute serves requests for path (a prefix when it ends in "/") with
// route and every other request with h. Unlike a ServeMux in front of h,
// it leaves every other request to h as it came: a ServeMux would answer
// some itself (redirecting paths it cleans, such as keys with empty
// segments that h refuses, in plain text).
func withRoute(path string, route, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path || strings.HasSuffix(path, "/") && strings.HasPrefix(r.URL.Path, path) {
			route.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// deployWait maps --fn-deploy-wait to server.Config.DeployCompileWait
// (where 0 selects the default and a negative value answers at once).
func deployWait(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
