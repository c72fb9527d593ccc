package lambda

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/sys"
	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/shard"
)

// Start kinds, as reported in X-Start.
const (
	StartWarm    = "warm"    // a paused sandbox resumed
	StartRestart = "restart" // a compiled module instantiated
	StartCold    = "cold"    // the module compiled, then instantiated
)

// Invocation kinds (sdk/fn fn.go).
const (
	kindHandle  = 1
	kindChanges = 2
	kindLeaf    = 3
	kindCombine = 4
)

// ldb_invoke statuses.
const (
	statusOK         = 0
	statusError      = 1
	statusNoEntry    = 2
	statusBadRequest = 3
)

// allocator supplies sandboxes' linear memory (nil: wazero's default);
// benchmarks swap it to compare.
var allocator = memoryAllocator

// Engine is one node's function runtime. Create it with New.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	cache wazero.CompilationCache
	m     *metrics
	pre   *precompiler // background compiles after deploys

	rtMu     sync.Mutex
	runtimes map[int]*wasmRuntime

	mu        sync.Mutex
	closed    bool
	modules   map[string]*compiled // by sha256/memoryMB
	fnCache   map[string]*Function
	pools     map[string]*pool // current version's pool per function
	lruHead   *instance        // most recently parked
	lruTail   *instance        // least recently parked
	liveBytes int64            // memory of every live instance
	stats     map[string]*fnStats
	// metersDirty is set when stats changed since they were last saved.
	metersDirty bool
	logs        map[string]*logRing
	series      map[string]*sampled // series.go

	stop chan struct{}
	wg   sync.WaitGroup

	// Running calls and deploy validations; Close cancels them through
	// life and waits, since closing a runtime frees sandbox memory.
	life     context.Context
	kill     context.CancelFunc
	inflight sync.WaitGroup
}

// pool holds one function version's sandboxes on this node.
type pool struct {
	fn       *Function
	sem      chan struct{} // one token per running instance
	inflight atomic.Int64  // queued + running calls

	// Guarded by Engine.mu.
	idle    []*instance // paused, most recent last
	running int
	stopped int
	retired bool
}

// New validates cfg, applies defaults and returns an Engine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:      cfg,
		log:      cfg.Logger,
		runtimes: map[int]*wasmRuntime{},
		modules:  map[string]*compiled{},
		fnCache:  map[string]*Function{},
		pools:    map[string]*pool{},
		stats:    map[string]*fnStats{},
		logs:     map[string]*logRing{},
		series:   map[string]*sampled{},
		stop:     make(chan struct{}),
	}
	e.life, e.kill = context.WithCancel(context.Background())
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("lambda: compilation cache %s: %w", cfg.CacheDir, err)
		}
		e.cache = c
	} else {
		e.cache = wazero.NewCompilationCache()
	}
	m, err := newMetrics(e, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	e.m = m
	if e.pre, err = newPrecompiler(e, cfg.Registerer); err != nil {
		return nil, err
	}
	if err := e.loadMeters(); err != nil {
		_ = e.cache.Close(context.Background())
		return nil, fmt.Errorf("lambda: load meters: %w", err)
	}
	e.wg.Add(1)
	go e.reapLoop()
	e.primeSeries()
	e.wg.Add(1)
	go e.sampleLoop()
	if cfg.Meters != nil {
		e.wg.Add(1)
		go e.meterLoop()
	}
	return e, nil
}

// Close aborts running calls and releases every sandbox and runtime.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.kill()
	e.inflight.Wait()
	close(e.stop)
	e.wg.Wait()
	// Every call has been metered: save the meters for the next start.
	saveErr := e.saveMeters()
	ctx := context.Background()
	e.rtMu.Lock()
	for _, rt := range e.runtimes {
		_ = rt.r.Close(ctx)
	}
	e.rtMu.Unlock()
	e.mu.Lock()
	for _, c := range e.modules {
		e.liveBytes -= c.snap.release()
	}
	e.mu.Unlock()
	return errors.Join(saveErr, e.cache.Close(ctx))
}

// Invocation is one call of a function's Handle entry point.
type Invocation struct {
	Name string
	Body []byte
	// Key is the key the call was placed by (?key=K); the handler sees it
	// as Ctx.Key.
	Key string
	// Session is the caller's token: the handler's KV calls observe
	// everything it covers, and Result.Session adds the handler's writes.
	Session session.Token
	// Consistency of the handler's reads (the zero value is
	// Linearizable; the HTTP API defaults to Session).
	Consistency shard.Consistency
}

// Result describes a finished call — also a failed one, when the function
// ran. Durations are wall time on this node.
type Result struct {
	Body      []byte
	Function  *Function
	Start     string        // StartWarm, StartRestart or StartCold ("" if it never ran)
	StartTime time.Duration // sandbox start (instantiation, compile) within Duration
	Duration  time.Duration // from taking an instance to returning it
	BilledMS  int64
	GBSeconds float64
	KVCalls   int
	KVBytes   int64
	Node      string
	Session   session.Token
}

// Invoke runs the function's Handle entry point on this node.
func (e *Engine) Invoke(ctx context.Context, inv Invocation) (Result, error) {
	res := Result{Node: e.cfg.NodeID, Session: inv.Session}
	if len(inv.Body) > MaxMessageBytes {
		return res, fmt.Errorf("%w: %d bytes, the limit is %d", ErrRequestTooLarge, len(inv.Body), MaxMessageBytes)
	}
	f, err := e.lookup(ctx, inv.Name, inv.Session)
	if err != nil {
		return res, err
	}
	res.Function = f
	if !f.Has("handle") {
		return res, fmt.Errorf("%w: %q registers no Handle (it has %s)", ErrNoEntrypoint, f.Name, strings.Join(f.Entrypoints, ", "))
	}
	msg, err := msgpack.Marshal([]any{inv.Body, inv.Key})
	if err != nil {
		return res, fmt.Errorf("lambda: encode request: %w", err)
	}
	return e.call(ctx, f, kindHandle, msg, inv.Session, inv.Consistency, res)
}

// HasPaused reports whether this node holds a paused sandbox of the
// function's current version.
func (e *Engine) HasPaused(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pools[name]
	return p != nil && len(p.idle) > 0
}

// poolFor returns the pool of f's version, retiring an older one.
func (e *Engine) poolFor(f *Function) (*pool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	p := e.pools[f.Name]
	if p != nil && p.fn.Version >= f.Version {
		return p, nil
	}
	var drop []*instance
	if p != nil {
		drop = e.retireLocked(p)
	}
	p = &pool{fn: f, sem: make(chan struct{}, f.MaxInstances)}
	e.pools[f.Name] = p
	go closeAll(drop)
	return p, nil
}

// retire drops the function's pool after a remove.
func (e *Engine) retire(name string) {
	e.mu.Lock()
	var drop []*instance
	if p := e.pools[name]; p != nil {
		drop = e.retireLocked(p)
		delete(e.pools, name)
	}
	e.dropSnapshotLocked(name)
	delete(e.fnCache, name)
	delete(e.stats, name)
	e.metersDirty = true
	delete(e.logs, name)
	e.mu.Unlock()
	closeAll(drop)
}

// retireLocked marks p retired and unlinks its paused instances, which
// the caller closes. Running instances are closed when their calls end.
func (e *Engine) retireLocked(p *pool) []*instance {
	p.retired = true
	drop := p.idle
	p.idle = nil
	now := e.cfg.Now()
	for _, i := range drop {
		e.unlinkLocked(i)
		e.liveBytes -= i.memBytes
		i.c.users--
		i.c.lastUsed = now
	}
	return drop
}

// dropSnapshotLocked releases the snapshot of the removed function's
// module when nothing else uses it: the compiled module stays for its
// keep-alive, but its snapshot is memory the budget counts.
func (e *Engine) dropSnapshotLocked(name string) {
	f := e.fnCache[name]
	if f == nil {
		return
	}
	key := compiledKey(f)
	c := e.modules[key]
	if c == nil || c.users > 0 {
		return
	}
	for other, p := range e.pools {
		if other != name && compiledKey(p.fn) == key {
			return
		}
	}
	e.liveBytes -= c.snap.release()
}

func closeAll(insts []*instance) {
	for _, i := range insts {
		i.close()
	}
}

// begin registers a call or validation that Close must wait for and
// returns its context, which Close cancels.
func (e *Engine) begin(ctx context.Context) (context.Context, func(), error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, ErrClosed
	}
	e.inflight.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.life, cancel)
	return ctx, func() {
		stop()
		cancel()
		e.inflight.Done()
	}, nil
}

// call runs one entry point of f.
func (e *Engine) call(ctx context.Context, f *Function, kind uint32, msg []byte, tok session.Token, ro shard.Consistency, res Result) (Result, error) {
	return e.callWith(ctx, f, kind, msg, tok, ro, res, callExt{})
}

// callExt is what some kinds of call add: a write buffer (CallChanges) or
// a leaf's shard-restricted scan (CallLeaf).
type callExt struct {
	tx   *txBuffer
	leaf LeafScanFunc
	// version, when not 0, is the only deploy the call may run.
	version uint64
}

// callWith is call with a kind's extras.
func (e *Engine) callWith(ctx context.Context, f *Function, kind uint32, msg []byte, tok session.Token, ro shard.Consistency, res Result, ext callExt) (Result, error) {
	ctx, end, err := e.begin(ctx)
	if err != nil {
		return res, err
	}
	defer end()
	p, err := e.poolFor(f)
	if err != nil {
		return res, err
	}
	f = p.fn // the newest version this node knows
	res.Function = f
	if ext.version != 0 && f.Version != ext.version {
		return res, redeployed(f.Name, ext.version, f.Version)
	}
	if n := p.inflight.Add(1); n > int64(f.MaxInstances+e.cfg.QueueLength) {
		p.inflight.Add(-1)
		e.m.rejected.WithLabelValues(f.Name).Inc()
		e.throttle(f)
		return res, fmt.Errorf("%w: %q has %d calls running or queued on node %s (max_instances %d, queue %d)",
			ErrOverloaded, f.Name, n-1, e.cfg.NodeID, f.MaxInstances, e.cfg.QueueLength)
	}
	defer p.inflight.Add(-1)
	// Waiting for an instance is bounded by the function's timeout too.
	qctx, qcancel := context.WithTimeout(ctx, f.Timeout())
	select {
	case p.sem <- struct{}{}:
		qcancel()
	case <-qctx.Done():
		qcancel()
		if ctx.Err() != nil {
			return res, fmt.Errorf("lambda: waiting for an instance of %q: %w", f.Name, ctx.Err())
		}
		e.m.rejected.WithLabelValues(f.Name).Inc()
		e.throttle(f)
		return res, fmt.Errorf("%w: no instance of %q freed up within its timeout of %v (max_instances %d)",
			ErrOverloaded, f.Name, f.Timeout(), f.MaxInstances)
	}
	defer func() { <-p.sem }()

	began := time.Now()
	inst, start, err := e.acquire(ctx, p, tok)
	res.Start = start
	res.StartTime = time.Since(began)
	if err != nil {
		res.Duration = time.Since(began)
		e.record(f, &res, err)
		return res, err
	}
	cs := &callState{e: e, fn: f, req: msg, tok: tok, ro: ro, tx: ext.tx, leaf: ext.leaf}
	out, healthy, err := e.run(ctx, inst, cs, kind)
	res.Duration = time.Since(began)
	e.release(p, inst, healthy)
	res.Body = out
	res.Session = cs.tok
	res.KVCalls, res.KVBytes = cs.kvCalls, cs.kvBytes
	e.record(f, &res, err)
	return res, err
}

// acquire takes a paused instance of p or starts one.
func (e *Engine) acquire(ctx context.Context, p *pool, tok session.Token) (*instance, string, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, "", ErrClosed
	}
	if n := len(p.idle); n > 0 {
		inst := p.idle[n-1]
		p.idle = p.idle[:n-1]
		e.unlinkLocked(inst)
		p.running++
		e.mu.Unlock()
		return inst, StartWarm, nil
	}
	// Admission: a new sandbox must fit the node's memory budget, paused
	// ones giving way first.
	need := int64(startEstimate)
	if c := e.modules[compiledKey(p.fn)]; c != nil {
		if snap := c.snap.snap.Load(); snap != nil {
			need = snap.estimate()
		}
	}
	evicted := e.makeRoomLocked(need)
	if e.liveBytes+need > e.cfg.MemoryBudget {
		e.mu.Unlock()
		closeAll(evicted)
		return nil, "", fmt.Errorf("%w: the node's sandbox memory budget (%d MiB) is in use by running calls",
			ErrOverloaded, e.cfg.MemoryBudget>>20)
	}
	p.running++
	e.mu.Unlock()
	closeAll(evicted)
	inst, start, err := e.startInstance(ctx, p, tok)
	if err != nil {
		e.mu.Lock()
		p.running--
		e.mu.Unlock()
		return nil, start, err
	}
	return inst, start, nil
}

// startInstance instantiates p's module, compiling it first if this node
// holds no compiled copy.
func (e *Engine) startInstance(ctx context.Context, p *pool, tok session.Token) (*instance, string, error) {
	f := p.fn
	rt, err := e.runtimeFor(ctx, f.MemoryMB)
	if err != nil {
		return nil, "", err
	}
	// The module is fetched for every caller waiting on this compile: not
	// under one caller's deadline.
	c, fresh, err := e.compileForCall(ctx, rt, f, func() ([]byte, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		return e.moduleBytes(fctx, f, tok)
	})
	start := StartRestart
	if fresh {
		start = StartCold
	}
	if err != nil {
		return nil, start, err
	}
	tctx, cancel := context.WithTimeout(ctx, f.Timeout())
	defer cancel()
	inst, err := e.instantiate(tctx, c)
	if err != nil {
		e.unuse(c)
		if tctx.Err() != nil && ctx.Err() == nil {
			return nil, start, fmt.Errorf("%w: starting %q took longer than %v", ErrTimeout, f.Name, f.Timeout())
		}
		if strings.Contains(err.Error(), "out of memory") || strings.Contains(err.Error(), "memory") && strings.Contains(err.Error(), "limit") {
			return nil, start, fmt.Errorf("%w: starting %q: %v", ErrMemoryLimit, f.Name, err)
		}
		return nil, start, fmt.Errorf("%w: starting %q: %v", ErrHandler, f.Name, err)
	}
	e.mu.Lock()
	inst.pool = p
	e.liveBytes += inst.memBytes
	if start == StartRestart && p.stopped > 0 {
		p.stopped--
	}
	e.mu.Unlock()
	return inst, start, nil
}

// run calls ldb_invoke on inst under the function's time cap. healthy
// reports whether inst may serve another call.
func (e *Engine) run(ctx context.Context, inst *instance, cs *callState, kind uint32) (out []byte, healthy bool, err error) {
	f := cs.fn
	tctx, cancel := context.WithTimeout(ctx, f.Timeout())
	defer cancel()
	inst.out.setCall(cs)
	defer func() {
		cs.flushOutput()
		inst.out.setCall(nil)
	}()
	ret, err := inst.invoke.Call(context.WithValue(tctx, callKey{}, cs), uint64(kind), uint64(len(cs.req)))
	if err == nil && tctx.Err() != nil {
		err = tctx.Err() // finished, but past its deadline
	}
	if err != nil {
		return nil, false, e.classify(ctx, tctx, inst, cs, err)
	}
	if !cs.responded {
		return nil, false, fmt.Errorf("%w: %q returned without a response (SDK mismatch?)", ErrHandler, f.Name)
	}
	if cs.respLen > MaxMessageBytes+maxResponseFraming {
		// respond did not read a message that cannot hold a payload within
		// the limit.
		return nil, true, fmt.Errorf("%w: %q returned a response message of %d bytes, which exceeds the limit of %d bytes (plus %d of framing)",
			ErrHandler, f.Name, cs.respLen, MaxMessageBytes, maxResponseFraming)
	}
	var r struct {
		//lint:ignore U1000 read by msgpack through its tag
		_msgpack struct{} `msgpack:",as_array"`
		Msg      string
		Payload  []byte
	}
	if derr := msgpack.Unmarshal(cs.resp, &r); derr != nil {
		return nil, false, fmt.Errorf("%w: %q sent a response that does not decode: %v", ErrHandler, f.Name, derr)
	}
	switch ret[0] {
	case statusOK:
		// The limit applies to the payload; the framing around it never
		// makes a response too large.
		if len(r.Payload) > MaxMessageBytes {
			return nil, true, fmt.Errorf("%w: %q returned a response of %d bytes, which exceeds the limit of %d bytes",
				ErrHandler, f.Name, len(r.Payload), MaxMessageBytes)
		}
		if r.Payload == nil {
			r.Payload = []byte{}
		}
		return r.Payload, true, nil
	case statusError:
		if cs.infra != nil {
			// The handler gave up after the cluster failed one of its calls.
			return nil, true, fmt.Errorf("%w: %s (after a host call failed: %w)", ErrHandler, r.Msg, cs.infra)
		}
		return nil, true, fmt.Errorf("%w: %s", ErrHandler, r.Msg)
	case statusNoEntry:
		return nil, true, fmt.Errorf("%w: %s", ErrNoEntrypoint, r.Msg)
	default:
		return nil, true, fmt.Errorf("%w: %q could not decode its request (SDK mismatch?): %s", ErrHandler, f.Name, r.Msg)
	}
}

// classify explains a call that trapped or exited.
func (e *Engine) classify(ctx, tctx context.Context, inst *instance, cs *callState, err error) error {
	f := cs.fn
	if ctx.Err() != nil {
		return fmt.Errorf("lambda: %q: %w", f.Name, ctx.Err())
	}
	code, exited := exitCode(err)
	timedOut := (exited && code == sys.ExitCodeDeadlineExceeded) || tctx.Err() == context.DeadlineExceeded
	rep := inst.out.report()
	if timedOut {
		// A handler whose runtime reported running out of stack or memory
		// within its time failed by that, even when printing the report (a
		// deep stack's traceback walks every frame) ran into the deadline.
		deadline, ok := tctx.Deadline()
		if !ok || rep.fatalAt.IsZero() || !rep.fatalAt.Before(deadline) || !rep.stackOverflow() && !rep.oom {
			return fmt.Errorf("%w: %q ran longer than %v", ErrTimeout, f.Name, f.Timeout())
		}
	}
	switch {
	case cs.fault != "":
		return fmt.Errorf("%w: %q broke the host API: %s", ErrHandler, f.Name, cs.fault)
	case rep.stackLimit:
		return fmt.Errorf("%w: %q: a goroutine stack reached the Go runtime's maximum size (deep or infinite recursion)", ErrStackOverflow, f.Name)
	case rep.stackOverflow():
		return fmt.Errorf("%w: %q: a goroutine stack could not grow within memory_mb=%d (deep or infinite recursion; a stack doubles as it grows)", ErrStackOverflow, f.Name, f.MemoryMB)
	case rep.oom:
		return fmt.Errorf("%w: %q exceeded memory_mb=%d", ErrMemoryLimit, f.Name, f.MemoryMB)
	}
	msg := err.Error()
	if tail := inst.out.tail(); tail != "" {
		msg += "; output: " + lastLines(tail, 5)
	}
	return fmt.Errorf("%w: %q crashed: %s", ErrHandler, f.Name, msg)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// release parks a healthy instance (paused) or closes it.
func (e *Engine) release(p *pool, inst *instance, healthy bool) {
	now := e.cfg.Now()
	var mem int64
	if healthy {
		mem = inst.pausedBytes(now) // outside e.mu: it may read the pagemap
	}
	e.mu.Lock()
	p.running--
	if !healthy || p.retired || e.closed {
		e.liveBytes -= inst.memBytes
		inst.c.users--
		inst.c.lastUsed = now
		e.mu.Unlock()
		inst.close()
		return
	}
	e.liveBytes += mem - inst.memBytes
	inst.memBytes = mem
	inst.lastUsed = now
	p.idle = append(p.idle, inst)
	e.pushLocked(inst)
	evicted := e.enforceBudgetLocked()
	e.mu.Unlock()
	closeAll(evicted)
}

// pushLocked links inst at the head of the paused LRU list.
func (e *Engine) pushLocked(i *instance) {
	i.parked = true
	i.lruPrev, i.lruNext = nil, e.lruHead
	if e.lruHead != nil {
		e.lruHead.lruPrev = i
	}
	e.lruHead = i
	if e.lruTail == nil {
		e.lruTail = i
	}
}

func (e *Engine) unlinkLocked(i *instance) {
	if !i.parked {
		return
	}
	i.parked = false
	if i.lruPrev != nil {
		i.lruPrev.lruNext = i.lruNext
	} else {
		e.lruHead = i.lruNext
	}
	if i.lruNext != nil {
		i.lruNext.lruPrev = i.lruPrev
	} else {
		e.lruTail = i.lruPrev
	}
	i.lruPrev, i.lruNext = nil, nil
}

// stopLocked evicts a paused instance: it becomes a stopped sandbox of its
// pool. The caller closes it.
func (e *Engine) stopLocked(i *instance) {
	e.unlinkLocked(i)
	p := i.pool
	for k, j := range p.idle {
		if j == i {
			p.idle = append(p.idle[:k], p.idle[k+1:]...)
			break
		}
	}
	p.stopped = min(p.stopped+1, p.fn.MaxInstances)
	e.liveBytes -= i.memBytes
	i.c.users--
	i.c.lastUsed = e.cfg.Now()
}

// startEstimate is the memory a new sandbox is assumed to need before it
// has run (a Go guest starts with 2-3 MiB).
const startEstimate = 4 << 20

// enforceBudgetLocked stops paused instances, least recently used first,
// while live sandboxes exceed the memory budget.
func (e *Engine) enforceBudgetLocked() []*instance { return e.makeRoomLocked(0) }

// makeRoomLocked stops paused instances, least recently used first, until
// need more bytes fit in the budget or none is left.
func (e *Engine) makeRoomLocked(need int64) []*instance {
	var out []*instance
	for e.liveBytes+need > e.cfg.MemoryBudget && e.lruTail != nil {
		i := e.lruTail
		e.stopLocked(i)
		out = append(out, i)
		e.m.evictions.WithLabelValues("memory_budget").Inc()
	}
	return out
}

func (e *Engine) reapLoop() {
	defer e.wg.Done()
	every := max(min(e.cfg.KeepAlive/4, time.Second), 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			e.shutdown()
			return
		case <-t.C:
			e.reap()
		}
	}
}

// reap stops paused instances idle longer than KeepAlive and drops
// compiled modules unused for ModuleKeepAlive.
func (e *Engine) reap() {
	now := e.cfg.Now()
	e.mu.Lock()
	var drop []*instance
	for i := e.lruTail; i != nil && now.Sub(i.lastUsed) > e.cfg.KeepAlive; i = e.lruTail {
		e.stopLocked(i)
		drop = append(drop, i)
		e.m.evictions.WithLabelValues("keep_alive").Inc()
	}
	var mods []*compiled
	for k, c := range e.modules {
		select {
		case <-c.done:
		default:
			continue // compiling
		}
		if c.users == 0 && now.Sub(c.lastUsed) > e.cfg.ModuleKeepAlive {
			delete(e.modules, k)
			e.liveBytes -= c.snap.release()
			mods = append(mods, c)
		}
	}
	for _, c := range mods {
		for _, p := range e.pools {
			if compiledKey(p.fn) == c.key {
				p.stopped = 0 // the function is cold now
			}
		}
	}
	e.mu.Unlock()
	closeAll(drop)
	for _, c := range mods {
		if c.cm != nil {
			_ = c.cm.Close(context.Background())
		}
	}
}

func compiledKey(f *Function) string { return fmt.Sprintf("%s/%d", f.SHA256, f.MemoryMB) }

// shutdown stops every paused instance (at Close, and in tests).
func (e *Engine) shutdown() {
	e.mu.Lock()
	var drop []*instance
	for i := e.lruTail; i != nil; i = e.lruTail {
		e.stopLocked(i)
		drop = append(drop, i)
	}
	e.mu.Unlock()
	closeAll(drop)
}

// SandboxCounts are a function's sandboxes on one node by state.
type SandboxCounts struct {
	Running int `json:"running"`
	Paused  int `json:"paused"`
	Stopped int `json:"stopped"`
	Cold    int `json:"cold"` // 1 when this node holds no compiled module of the current version
	// Compiling is 1 while this node compiles the current version's
	// module (Cold is 1 then too): calls wait for that compile.
	Compiling int `json:"compiling"`
}

// add adds o's counts to c.
func (c *SandboxCounts) add(o SandboxCounts) {
	c.Running += o.Running
	c.Paused += o.Paused
	c.Stopped += o.Stopped
	c.Cold += o.Cold
	c.Compiling += o.Compiling
}

// Sandboxes returns the function's sandbox counts on this node.
func (e *Engine) Sandboxes(name string) SandboxCounts {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sandboxesLocked(name)
}

func (e *Engine) sandboxesLocked(name string) SandboxCounts {
	var s SandboxCounts
	if p := e.pools[name]; p != nil {
		s = SandboxCounts{Running: p.running, Paused: len(p.idle), Stopped: p.stopped}
	}
	// The compile state is the newest version's this node knows of (a
	// redeploy announced here may not have a pool yet).
	s.Cold, s.Compiling, _ = e.compileCountsLocked(name)
	if s.Cold == 1 {
		s.Stopped = 0
	}
	return s
}

// LiveBytes returns the memory held by this node's live sandboxes.
func (e *Engine) LiveBytes() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.liveBytes
}

// StatusInfo is this node's placement hint for its peers: how many paused
// sandboxes it holds per function (msgpack map).
func (e *Engine) StatusInfo() []byte {
	e.mu.Lock()
	m := map[string]int{}
	for name, p := range e.pools {
		if n := len(p.idle); n > 0 {
			m[name] = n
		}
	}
	e.mu.Unlock()
	if len(m) == 0 {
		return nil
	}
	if len(m) > maxHinted {
		// Stay well within the status report's size bound: keep the
		// functions with the most paused sandboxes.
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		sort.Slice(names, func(i, j int) bool { return m[names[i]] > m[names[j]] })
		for _, name := range names[maxHinted:] {
			delete(m, name)
		}
	}
	b, _ := msgpack.Marshal(m)
	return b
}

// maxHinted bounds the functions named in StatusInfo (~70 bytes each at
// most, under shard.MaxStatusInfoBytes).
const maxHinted = 800

// PausedIn decodes a peer's StatusInfo and reports whether it holds a
// paused sandbox of name.
func PausedIn(info []byte, name string) bool {
	if len(info) == 0 {
		return false
	}
	var m map[string]int
	if msgpack.Unmarshal(info, &m) != nil {
		return false
	}
	return m[name] > 0
}
