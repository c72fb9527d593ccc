package lambda

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lambdadb/internal/session"
)

// Compile reasons, as the compile metrics label them.
const (
	// CompileDeploy is a background compile of a deploy this node was told
	// of (Precompile).
	CompileDeploy = "deploy"
	// CompileCall is a call that found no compiled module (and no compile
	// in progress) and compiled it itself.
	CompileCall = "call"
	// CompileValidate is the compile of a deploy's validation, on the node
	// that received the deploy.
	CompileValidate = "validate"
)

// Metric names of compiles.
const (
	MetricCompiles     = "lambdadb_function_compiles_total"
	MetricCompileWaits = "lambdadb_function_compile_waits_total"
	MetricCompileTime  = "lambdadb_function_compile_seconds"
)

// DefaultPrecompileConcurrency is Config.PrecompileConcurrency's default.
const DefaultPrecompileConcurrency = 2

// precompileTimeout bounds one background compile, registry reads
// included.
const precompileTimeout = 5 * time.Minute

// precompiler runs background compiles of deployed functions with bounded
// concurrency, one job per function name at a time: a newer deploy
// announced while a job waits for its turn replaces the version it
// compiles.
type precompiler struct {
	slots chan struct{}

	mu      sync.Mutex
	pending map[string]*precompileJob // by function name, not yet started
	// active holds every job not finished, by function name: the newest
	// one announced (calls of its version wait for it).
	active map[string]*precompileJob

	compiles *prometheus.CounterVec
	waits    prometheus.Counter
	seconds  *prometheus.HistogramVec
}

// precompileJob is one function's background compile.
type precompileJob struct {
	name    string
	version uint64
	tok     session.Token
	done    chan struct{} // closed when compiled, err set
	err     error
}

func newPrecompiler(e *Engine, reg prometheus.Registerer) (*precompiler, error) {
	p := &precompiler{
		slots:   make(chan struct{}, e.cfg.PrecompileConcurrency),
		pending: map[string]*precompileJob{},
		active:  map[string]*precompileJob{},
		compiles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCompiles,
			Help: "Modules compiled on this node, by reason: deploy (in the background, after a deploy), " +
				"call (a call found none compiled) and validate (a deploy received by this node)."}, []string{"reason"}),
		waits: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricCompileWaits,
			Help: "Calls that waited for a compile already in progress on this node instead of compiling."}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricCompileTime,
			Help:    "Wall time of module compiles on this node (registry read included), by reason.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, []string{"reason"}),
	}
	for _, r := range []string{CompileDeploy, CompileCall, CompileValidate} {
		p.compiles.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{p.compiles, p.waits, p.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// Precompile compiles, in the background, the function name as deployed
// at version (the Raft index of the deploy) or later, unless this node
// holds it compiled already; tok is a session token covering the deploy,
// so that this node's registry read sees it. Calls that arrive during the
// compile wait for it instead of compiling themselves. It returns at once;
// the channel is closed when the compile has finished (or failed, or was
// not needed). With Config.DisablePrecompile it does nothing and returns
// nil.
func (e *Engine) Precompile(name string, version uint64, tok session.Token) <-chan struct{} {
	if e.cfg.DisablePrecompile {
		return nil
	}
	p := e.pre
	p.mu.Lock()
	if j := p.pending[name]; j != nil {
		// Not started yet: compile the newer version for both.
		if version > j.version {
			j.version = version
		}
		j.tok = j.tok.Merge(tok)
		p.mu.Unlock()
		return j.done
	}
	j := &precompileJob{name: name, version: version, tok: tok.Merge(nil), done: make(chan struct{})}
	p.pending[name] = j
	p.active[name] = j
	p.mu.Unlock()
	go e.runPrecompile(j)
	return j.done
}

// PrecompileWait is Precompile waiting for the compile, up to ctx's end.
// It reports whether this node holds the function's module compiled (false
// with DisablePrecompile, unless a call or deploy compiled it).
func (e *Engine) PrecompileWait(ctx context.Context, name string, version uint64, tok session.Token) (bool, error) {
	if done := e.Precompile(name, version, tok); done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return e.CompiledVersion(name, version), nil
}

func (e *Engine) runPrecompile(j *precompileJob) {
	p := e.pre
	defer func() {
		p.mu.Lock()
		if p.active[j.name] == j {
			delete(p.active, j.name)
		}
		p.mu.Unlock()
		close(j.done)
	}()
	select {
	case p.slots <- struct{}{}:
	case <-e.life.Done():
		p.mu.Lock()
		if p.pending[j.name] == j {
			delete(p.pending, j.name)
		}
		p.mu.Unlock()
		j.err = ErrClosed
		return
	}
	defer func() { <-p.slots }()
	p.mu.Lock()
	if p.pending[j.name] == j {
		delete(p.pending, j.name)
	}
	version, tok := j.version, j.tok
	p.mu.Unlock()
	j.err = e.precompile(j.name, version, tok)
	if j.err != nil && !errors.Is(j.err, ErrClosed) {
		e.log.Warn("background compile failed; calls will compile on first use", "name", j.name, "version", version, "err", j.err)
	}
}

// precompile reads the function's registry record (at least version) and
// compiles its module unless compiled.
func (e *Engine) precompile(name string, version uint64, tok session.Token) error {
	ctx, end, err := e.begin(context.Background())
	if err != nil {
		return err
	}
	defer end()
	ctx, cancel := context.WithTimeout(ctx, precompileTimeout)
	defer cancel()
	f, err := e.lookup(ctx, name, tok)
	if err == nil && f.Version < version {
		f, err = e.Get(ctx, name) // this replica lags: read from the leader
	}
	if errors.Is(err, ErrNotFound) {
		return nil // removed since
	}
	if err != nil {
		return err
	}
	if e.compiledState(f) != compileNone {
		return nil // compiled, or a call is compiling it
	}
	rt, err := e.runtimeFor(ctx, f.MemoryMB)
	if err != nil {
		return err
	}
	began := time.Now()
	c, fresh, err := e.compile(ctx, rt, f.SHA256, func() ([]byte, error) { return e.moduleBytes(ctx, f, tok) })
	if err != nil {
		return err
	}
	e.unuse(c)
	if fresh {
		e.pre.compiles.WithLabelValues(CompileDeploy).Inc()
		e.pre.seconds.WithLabelValues(CompileDeploy).Observe(time.Since(began).Seconds())
		e.log.Info("function compiled after its deploy", "name", name, "version", f.Version, "seconds", time.Since(began).Seconds())
	}
	return nil
}

// compileForCall is compile for a call's sandbox start, counted: a call
// that compiled, or that waited for a compile in progress. A call of a
// version whose background compile was announced but has not reached the
// compile yet (it reads the registry first) waits for that compile too.
func (e *Engine) compileForCall(ctx context.Context, rt *wasmRuntime, f *Function, fetch func() ([]byte, error)) (*compiled, bool, error) {
	waiting := false
	switch e.compiledStateLocking(f.SHA256, rt.memoryMB) {
	case compileRunning:
		waiting = true
	case compileNone:
		e.pre.mu.Lock()
		j := e.pre.active[f.Name]
		covers := j != nil && j.version >= f.Version
		e.pre.mu.Unlock()
		if covers {
			waiting = true
			select {
			case <-j.done:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
	}
	began := time.Now()
	c, fresh, err := e.compile(ctx, rt, f.SHA256, fetch)
	switch {
	case fresh:
		e.pre.compiles.WithLabelValues(CompileCall).Inc()
		e.pre.seconds.WithLabelValues(CompileCall).Observe(time.Since(began).Seconds())
	case waiting:
		e.pre.waits.Inc()
	}
	return c, fresh, err
}

// noteValidateCompile counts a deploy's validation compile when it
// compiled (wasCompiled: the module was compiled, or being compiled,
// before).
func (e *Engine) noteValidateCompile(wasCompiled bool, took time.Duration) {
	if wasCompiled {
		return
	}
	e.pre.compiles.WithLabelValues(CompileValidate).Inc()
	e.pre.seconds.WithLabelValues(CompileValidate).Observe(took.Seconds())
}

// Compile states of a function's version on this node.
const (
	compileNone     = iota // no compiled module, no compile running
	compileRunning         // a compile is in progress
	compileCompiled        // compiled
)

// compiledState reports f's compile state on this node.
func (e *Engine) compiledState(f *Function) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.compiledStateLocked(f.SHA256, f.MemoryMB)
}

func (e *Engine) compiledStateLocking(sha string, memoryMB int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.compiledStateLocked(sha, memoryMB)
}

func (e *Engine) compiledStateLocked(sha string, memoryMB int) int {
	c, ok := e.modules[fmt.Sprintf("%s/%d", sha, memoryMB)]
	if !ok {
		return compileNone
	}
	select {
	case <-c.done:
		if c.err != nil {
			return compileNone
		}
		return compileCompiled
	default:
		return compileRunning
	}
}

// Compiled reports whether this node holds f's module compiled (for f's
// memory cap), so that a call starts a sandbox without compiling.
func (e *Engine) Compiled(f *Function) bool { return e.compiledState(f) == compileCompiled }

// CompiledVersion reports whether this node holds the module of the
// function name compiled, as deployed at version or later (as far as this
// node knows the function).
func (e *Engine) CompiledVersion(name string, version uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.fnCache[name]
	if p := e.pools[name]; p != nil && (f == nil || p.fn.Version > f.Version) {
		f = p.fn
	}
	if f == nil || f.Version < version {
		return false
	}
	return e.compiledStateLocked(f.SHA256, f.MemoryMB) == compileCompiled
}

// compileCountsLocked are the Cold and Compiling sandbox counts of the
// newest version of name this node knows.
func (e *Engine) compileCountsLocked(name string) (cold, compiling int, known bool) {
	f := e.fnCache[name]
	if p := e.pools[name]; p != nil && (f == nil || p.fn.Version > f.Version) {
		f = p.fn
	}
	if f == nil {
		return 1, 0, false
	}
	switch e.compiledStateLocked(f.SHA256, f.MemoryMB) {
	case compileCompiled:
		return 0, 0, true
	case compileRunning:
		return 1, 1, true
	default:
		return 1, 0, true
	}
}

// PrecompileEnabled reports whether this node compiles deploys in the
// background (Config.DisablePrecompile is not set).
func (e *Engine) PrecompileEnabled() bool { return !e.cfg.DisablePrecompile }

// PrecompileAll compiles, in the background, every function deployed in
// the cluster that this node does not hold compiled: what a node that
// starts — a new node joining, a node restarted (its disk cache makes
// that quick) — runs so that calls routed to it later find their modules
// ready. It reads the registry until it can (the node may not have a
// quorum yet), retrying until ctx ends, and returns once every compile it
// started has finished. With Config.DisablePrecompile it does nothing.
func (e *Engine) PrecompileAll(ctx context.Context) error {
	if e.cfg.DisablePrecompile {
		return nil
	}
	var fns []*Function
	for {
		var err error
		if fns, err = e.List(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	var dones []<-chan struct{}
	for _, f := range fns {
		if e.Compiled(f) {
			continue
		}
		if d := e.Precompile(f.Name, f.Version, nil); d != nil {
			dones = append(dones, d)
		}
	}
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
