package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"time"
)

// KVConfig configures the kv-put and kv-get scenarios.
type KVConfig struct {
	LambdaBin  string        // path to bin/lambdadb
	EtcdBin    string        // path to etcd (3.4); empty skips etcd
	Nodes      int           // default 3
	Shards     int           // default 16
	Clients    int           // default 64
	ValueBytes int           // default 256
	Keys       int           // key space, default 10000
	Duration   time.Duration // per measurement, default 10s
	// Rounds repeats the whole comparison, a fresh cluster of each system
	// per round, the order of the systems alternating (A B, B A, A B…), so
	// drift in the machine's load falls on both. Default 1.
	Rounds   int
	SkipPuts bool // measure gets only (keys are still loaded)
	SkipGets bool // measure puts only
	// SkipOneClient skips the puts by one client alone after the puts by
	// Clients clients.
	SkipOneClient bool
	// Warmup runs puts by Clients clients for this long before the
	// measured puts, unrecorded (0: none), so that the measurement finds
	// the clients' connections open (TLS handshakes done).
	Warmup time.Duration
	// CPU records the CPU time per operation of the server processes and
	// of this process in each Result (from /proc; Linux only).
	CPU bool
	// Levels are the consistency levels of lambdadb's gets in RunKVSecure;
	// default linearizable and stale.
	Levels   []string
	Progress io.Writer // progress lines; nil discards
}

func (c *KVConfig) defaults() {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.Clients == 0 {
		c.Clients = 64
	}
	if c.ValueBytes == 0 {
		c.ValueBytes = 256
	}
	if c.Keys == 0 {
		c.Keys = 10000
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Rounds == 0 {
		c.Rounds = 1
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

type kvSystem interface {
	Put(ctx context.Context, w int, key string, val []byte) error
	Get(ctx context.Context, w int, key, consistency string) error
}

// kvSys is one system under comparison.
type kvSys struct {
	name  string
	start func() (*Cluster, kvSystem, func(), error)
	// one returns a single client of the cluster, for the one-client puts.
	one    func(c *Cluster) (kvSystem, func(), error)
	levels []string // consistency levels of its gets
}

// RunKV measures puts and gets on lambdadb and, when EtcdBin is set, on
// etcd, one system at a time on the same machine with the same load, in
// cfg.Rounds rounds; each Result names its round.
func RunKV(cfg KVConfig) ([]Result, error) {
	cfg.defaults()
	systems := []kvSys{{
		name: "lambdadb",
		start: func() (*Cluster, kvSystem, func(), error) {
			c, err := StartLambdaDB(cfg.LambdaBin, cfg.Nodes, cfg.Shards)
			if err != nil {
				return nil, nil, nil, err
			}
			return c, NewLambdaKV(c.Addrs(), cfg.Clients), func() {}, nil
		},
		one: func(c *Cluster) (kvSystem, func(), error) {
			return NewLambdaKV(c.Addrs(), 1), func() {}, nil
		},
		levels: []string{"linearizable", "session", "stale"},
	}}
	if cfg.EtcdBin != "" {
		systems = append(systems, kvSys{
			name: "etcd",
			start: func() (*Cluster, kvSystem, func(), error) {
				c, err := StartEtcd(cfg.EtcdBin, cfg.Nodes)
				if err != nil {
					return nil, nil, nil, err
				}
				e, err := NewEtcdKV(c.Addrs(), 16)
				if err != nil {
					c.Stop()
					return nil, nil, nil, err
				}
				return c, e, e.Close, nil
			},
			one: func(c *Cluster) (kvSystem, func(), error) {
				e, err := NewEtcdKV(c.Addrs(), 1)
				if err != nil {
					return nil, nil, err
				}
				return e, e.Close, nil
			},
			levels: []string{"linearizable", "serializable"},
		})
	}
	return runKVRounds(cfg, systems)
}

// Systems of the kv-secure comparison: the same lambdadb cluster in
// insecure and in secure mode.
const (
	sysInsecure = "insecure"
	sysSecure   = "secure"
)

// RunKVSecure measures puts and gets on a lambdadb cluster in insecure
// mode (plain HTTP, no tokens) and one in secure mode (TLS 1.3 on every
// connection, node to node too; a bearer token checked on every request),
// one at a time with the same load, in cfg.Rounds rounds, a fresh cluster
// of each per round, the order alternating. Results are named
// "insecure" and "secure".
func RunKVSecure(cfg KVConfig) ([]Result, error) {
	cfg.defaults()
	levels := cfg.Levels
	if len(levels) == 0 {
		levels = []string{"linearizable", "stale"}
	}
	mk := func(name string, secure bool) kvSys {
		return kvSys{
			name: name,
			start: func() (*Cluster, kvSystem, func(), error) {
				c, err := StartLambdaDBWith(LambdaOptions{Bin: cfg.LambdaBin, Nodes: cfg.Nodes, Shards: cfg.Shards, Secure: secure})
				if err != nil {
					return nil, nil, nil, err
				}
				return c, NewClusterKV(c, cfg.Clients), func() {}, nil
			},
			one: func(c *Cluster) (kvSystem, func(), error) {
				return NewClusterKV(c, 1), func() {}, nil
			},
			levels: levels,
		}
	}
	return runKVRounds(cfg, []kvSys{mk(sysInsecure, false), mk(sysSecure, true)})
}

// runKVRounds measures systems in cfg.Rounds rounds, the order of the
// systems alternating from round to round.
func runKVRounds(cfg KVConfig, systems []kvSys) ([]Result, error) {
	var out []Result
	for round := 1; round <= cfg.Rounds; round++ {
		order := slices.Clone(systems)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, s := range order {
			rs, err := runKVSystem(cfg, s, round)
			out = append(out, rs...)
			if err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// runKVSystem measures one system in one round on a fresh cluster: puts by
// cfg.Clients clients, puts by one client, then loading every key, then
// gets at each consistency level.
func runKVSystem(cfg KVConfig, s kvSys, round int) ([]Result, error) {
	val := make([]byte, cfg.ValueBytes)
	for i := range val {
		val[i] = 'a' + byte(i%26)
	}
	key := func(i int) string { return fmt.Sprintf("bench/%08d", i) }
	fmt.Fprintf(cfg.Progress, "round %d of %d: starting %d-node %s cluster\n", round, cfg.Rounds, cfg.Nodes, s.name)
	c, kv, closeFn, err := s.start()
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	defer closeFn()
	var out []Result
	put := func(kv kvSystem, clients int) error {
		fmt.Fprintf(cfg.Progress, "%s: put, %s, %d-byte values, %v\n", s.name, plural(clients, "client"), cfg.ValueBytes, cfg.Duration)
		r := measureCPU(cfg.CPU, c, func() Result {
			return Run(clients, cfg.Duration, func(ctx context.Context, w, i int) error {
				return kv.Put(ctx, w, key(rand.IntN(cfg.Keys)), val)
			})
		})
		r.System, r.Op, r.ValueBytes, r.Round = s.name, "put", cfg.ValueBytes, round
		fmt.Fprintln(cfg.Progress, "  ", r)
		out = append(out, r)
		return failedRun(r)
	}
	if cfg.Warmup > 0 {
		fmt.Fprintf(cfg.Progress, "%s: warm-up puts, %v, not recorded\n", s.name, cfg.Warmup)
		w := Run(cfg.Clients, cfg.Warmup, func(ctx context.Context, w, i int) error {
			return kv.Put(ctx, w, key(rand.IntN(cfg.Keys)), val)
		})
		if w.Ops == 0 {
			return out, fmt.Errorf("bench: %s: warm-up: no put succeeded (first error: %s)", s.name, w.FirstError)
		}
	}
	if !cfg.SkipPuts {
		if err := put(kv, cfg.Clients); err != nil {
			return out, err
		}
		// Latency without queueing: one closed-loop client on the same
		// cluster, right after (with cfg.Clients 1 that was the run above).
		if cfg.Clients > 1 && !cfg.SkipOneClient {
			one, closeOne, err := s.one(c)
			if err != nil {
				return out, err
			}
			err = put(one, 1)
			closeOne()
			if err != nil {
				return out, err
			}
		}
	}
	if cfg.SkipGets {
		return out, nil
	}
	// Make every key exist before the reads.
	fmt.Fprintf(cfg.Progress, "%s: loading %d keys\n", s.name, cfg.Keys)
	load := Run(cfg.Clients, time.Hour, func(ctx context.Context, w, i int) error {
		k := w + i*cfg.Clients
		if k >= cfg.Keys {
			return ErrStop
		}
		return kv.Put(ctx, w, key(k), val)
	})
	if load.Errors > 0 {
		return out, fmt.Errorf("bench: %s: loading keys: %d errors, first: %s", s.name, load.Errors, load.FirstError)
	}
	for _, level := range s.levels {
		fmt.Fprintf(cfg.Progress, "%s: get %s\n", s.name, level)
		r := measureCPU(cfg.CPU, c, func() Result {
			return Run(cfg.Clients, cfg.Duration, func(ctx context.Context, w, i int) error {
				return kv.Get(ctx, w, key(rand.IntN(cfg.Keys)), level)
			})
		})
		r.System, r.Op, r.Consistency, r.ValueBytes, r.Round = s.name, "get", level, cfg.ValueBytes, round
		fmt.Fprintln(cfg.Progress, "  ", r)
		out = append(out, r)
		if err := failedRun(r); err != nil {
			return out, err
		}
	}
	return out, nil
}

// measureCPU runs run and, when on, sets the result's CPU time per
// operation of c's processes (summed) and of this process, from the
// utime+stime ticks in /proc before and after. A process whose usage
// cannot be read leaves the figures at 0 (not reported).
func measureCPU(on bool, c *Cluster, run func() Result) Result {
	if !on {
		return run()
	}
	ticks := func() (nodes, self uint64, ok bool) {
		for _, p := range c.Procs {
			t, _, err := procUsage(p.Pid())
			if err != nil {
				return 0, 0, false
			}
			nodes += t
		}
		self, _, err := procUsage(os.Getpid())
		return nodes, self, err == nil
	}
	n0, s0, ok0 := ticks()
	r := run()
	n1, s1, ok1 := ticks()
	if ok0 && ok1 && r.Ops > 0 {
		perTick := 1e6 / clockTicks / float64(r.Ops)
		r.NodeCPUus = float64(n1-n0) * perTick
		r.ClientCPUus = float64(s1-s0) * perTick
	}
	return r
}

// maxErrorShare is the share of failed requests beyond which a measurement
// is not reported as a throughput: failures cost little, so counting only
// successes would flatter a failing system.
const maxErrorShare = 0.01

// failedRun rejects a measurement with no successes or too many failures.
func failedRun(r Result) error {
	total := r.Ops + r.Errors
	if r.Ops == 0 || float64(r.Errors) > maxErrorShare*float64(total) {
		return fmt.Errorf("bench: %s %s %s: %d of %d requests failed (first: %s); not reported as a measurement",
			r.System, opLabel(r), r.Consistency, r.Errors, total, r.FirstError)
	}
	return nil
}

// opLabel names a result's operation, saying when one client ran it.
func opLabel(r Result) string {
	if r.Clients == 1 {
		return r.Op + ", 1 client"
	}
	return r.Op
}

// plural renders "1 client", "64 clients".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
