package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/changefeed"
	"lambdadb/lambda"
	"lambdadb/server"
	"lambdadb/shard"
)

// HTTP server timeouts for serve.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 10 * time.Second
)

var serveCommand = &command{
	name:  "serve",
	args:  "[--id n1] [--addr 127.0.0.1:7070] [--data ./data] [--peers id=host:port,...] [--shards 16] [--replicas 3] [--fn-memory-mb 1024] [--fn-keep-alive 5m] [--billing-granularity 1ms] [--pprof] [--unsafe-fault-injection]",
	short: "run a node",
	summary: "Run a node. Without --peers the node is a one-node cluster. One address carries\n" +
		"client HTTP, internal RPC and Raft. SIGINT or SIGTERM shuts it down gracefully.",
	flags: func(c *cli, fs *flag.FlagSet) func(context.Context, []string) error {
		var o serveOptions
		fs.StringVar(&o.id, "id", "n1", "this node's `id`")
		fs.StringVar(&o.addr, "addr", "127.0.0.1:7070", "`host:port` to listen on and advertise; with --peers, defaults to this node's address there")
		fs.StringVar(&o.data, "data", "./data", "data `directory`")
		fs.StringVar(&o.peers, "peers", "", "initial cluster as `id=host:port,...` (etcd's --initial-cluster)")
		fs.IntVar(&o.shards, "shards", 16, "number of shards, fixed when the data directory is created")
		fs.IntVar(&o.replicas, "replicas", 3, "replicas per shard, capped at the number of nodes")
		fs.DurationVar(&o.raftTick, "raft-tick", shard.DefaultTickInterval, "Raft `tick`: leaders send heartbeats every tick; the election timeout is counted in ticks")
		fs.DurationVar(&o.electionTimeout, "election-timeout", shard.DefaultElectionTimeout, "Raft election `timeout`: a follower that hears nothing from its leader for a random time between one and two of these starts an election; at least twice --raft-tick")
		fs.Int64Var(&o.fnMemoryMB, "fn-memory-mb", 1024, "memory budget of this node's live function sandboxes, in `MiB`; beyond it paused sandboxes are stopped, LRU")
		fs.DurationVar(&o.fnKeepAlive, "fn-keep-alive", 5*time.Minute, "stop a paused sandbox idle this `long`")
		fs.DurationVar(&o.billing, "billing-granularity", time.Millisecond, "billing granularity (`duration`) invocations are rounded up to")
		fs.BoolVar(&o.pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ (for operators; off by default)")
		fs.BoolVar(&o.faults, "unsafe-fault-injection", false, "TESTS ONLY: serve /debug/faults to drop, delay and partition this node's traffic")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			o.addrSet = isSet(fs, "addr")
			if o.raftTick <= 0 || o.electionTimeout < 2*o.raftTick {
				return usagef("--election-timeout (%v) must be at least twice --raft-tick (%v), and both positive", o.electionTimeout, o.raftTick)
			}
			return c.serve(ctx, o)
		}
	},
}

type serveOptions struct {
	id, addr, data, peers  string
	addrSet, pprof, faults bool
	shards, replicas       int
	fnMemoryMB             int64
	fnKeepAlive, billing   time.Duration
	raftTick               time.Duration
	electionTimeout        time.Duration
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
	if o.faults && len(peers) < 2 {
		return usagef("--unsafe-fault-injection needs a multi-node --peers list")
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	advertised := o.addr
	if _, port, _ := net.SplitHostPort(o.addr); port == "0" {
		advertised = ln.Addr().String()
	}

	// Several nodes share the one address through the mux: client HTTP,
	// internal RPC and Raft. A lone node needs none of that.
	var mux *shard.Mux
	public := ln
	if len(peers) > 1 {
		mc := shard.MuxConfig{NodeID: o.id}
		if o.faults {
			mc.Faults = &shard.Faults{}
			log.Warn("fault injection is enabled: /debug/faults can cut this node off; never use this in production")
		}
		if mux, err = shard.NewMux(ln, mc); err != nil {
			ln.Close()
			return fmt.Errorf("serve: %w", err)
		}
		go func() { _ = mux.Serve() }()
		public = mux.PublicListener()
	}
	closeListener := func() {
		if mux != nil {
			_ = mux.Close()
		} else {
			_ = ln.Close()
		}
	}

	if o.fnMemoryMB <= 0 || o.fnKeepAlive <= 0 || o.billing <= 0 {
		closeListener()
		return usagef("--fn-memory-mb, --fn-keep-alive and --billing-granularity must be positive")
	}
	// The function engine needs the node and the node gossips the engine's
	// placement hints: the hook reads the engine once it exists.
	var engine atomic.Pointer[lambda.Engine]
	var triggers atomic.Pointer[changefeed.Triggers]
	reg := prometheus.NewRegistry()
	node, err := shard.Open(shard.Config{
		StatusInfo: func() []byte {
			if e := engine.Load(); e != nil {
				return e.StatusInfo()
			}
			return nil
		},
		// Never trim a shard's feed past a trigger's checkpoint (nothing is
		// trimmed until the triggers are known).
		FeedTrimLimit: func(s int) uint64 {
			if t := triggers.Load(); t != nil {
				return t.TrimLimit(s)
			}
			return 0
		},
		ID:              o.id,
		Addr:            advertised,
		Dir:             o.data,
		Shards:          o.shards,
		Replicas:        o.replicas,
		Peers:           peers,
		TickInterval:    o.raftTick,
		ElectionTimeout: o.electionTimeout,
		Mux:             mux,
		Registerer:      reg,
		Logger:          log,
	})
	if err != nil {
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	fns, err := lambda.New(lambda.Config{
		Store:              node,
		NodeID:             o.id,
		CacheDir:           filepath.Join(o.data, "wasm-cache"),
		MemoryBudget:       o.fnMemoryMB << 20,
		KeepAlive:          o.fnKeepAlive,
		BillingGranularity: o.billing,
		Meters:             node,
		Registerer:         reg,
		Logger:             log,
	})
	if err != nil {
		_ = node.Close()
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	engine.Store(fns)
	trg, err := changefeed.NewTriggers(changefeed.TriggersConfig{Node: node, Functions: fns, Logger: log})
	if err != nil {
		_ = fns.Close()
		_ = node.Close()
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	trg.Start()
	triggers.Store(trg)
	handler, err := server.New(server.Config{Node: node, Functions: fns, Triggers: trg, Registry: reg, Logger: log})
	if err != nil {
		trg.Close()
		_ = fns.Close()
		_ = node.Close()
		closeListener()
		return fmt.Errorf("serve: %w", err)
	}
	var h http.Handler = handler
	if o.pprof {
		h = withPprof(h)
	}
	if mux != nil && mux.Faults() != nil {
		dm := http.NewServeMux()
		dm.Handle("/debug/faults", mux.Faults().Handler())
		dm.Handle("/", h)
		h = dm
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("lambdadb serving", "id", o.id, "addr", advertised, "data", o.data,
		"shards", o.shards, "peers", max(len(peers), 1))
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

// withPprof serves net/http/pprof under /debug/pprof/ in front of h.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}
