package lambda

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// ABI constants shared with sdk/fn (docs/handlers.md).
const (
	abiVersion     = 1
	hostModuleName = "lambdadb"

	exportInitialize  = "_initialize"
	exportABIVersion  = "ldb_abi_version"
	exportEntrypoints = "ldb_entrypoints"
	exportInvoke      = "ldb_invoke"
	exportMemory      = "memory"
)

// Entry point bits (ldb_entrypoints) and their API names.
var entryNames = []struct {
	bit  uint32
	name string
}{{1, "handle"}, {2, "changes"}, {4, "leaf"}, {8, "combine"}}

// wasmRuntime is one wazero runtime: modules compiled in it share its
// memory cap, so there is one per distinct memory_mb.
type wasmRuntime struct {
	r        wazero.Runtime
	memoryMB int
}

func (e *Engine) runtimeFor(ctx context.Context, memoryMB int) (*wasmRuntime, error) {
	e.rtMu.Lock()
	defer e.rtMu.Unlock()
	if rt, ok := e.runtimes[memoryMB]; ok {
		return rt, nil
	}
	cfg := wazero.NewRuntimeConfigCompiler().
		WithMemoryLimitPages(uint32(memoryMB) * 16). // 64 KiB pages
		WithCloseOnContextDone(true)
	if e.cache != nil {
		cfg = cfg.WithCompilationCache(e.cache)
	}
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("lambda: wasi: %w", err)
	}
	if err := e.instantiateHost(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, err
	}
	rt := &wasmRuntime{r: r, memoryMB: memoryMB}
	e.runtimes[memoryMB] = rt
	return rt, nil
}

// compiled is a module compiled in one runtime, shared by every function
// (version) with the same code and memory cap.
type compiled struct {
	key  string // sha256 + "/" + memory MB
	rt   *wasmRuntime
	done chan struct{} // closed when cm or err is set
	cm   wazero.CompiledModule
	err  error
	dur  time.Duration // compile time

	// sm is set when the module was prepared for snapshot restarts
	// (ADR 0016); snap is its snapshot once a sandbox took it.
	sm   *snapModule
	snap snapState

	// Guarded by Engine.mu.
	users    int       // live instances and in-progress starts
	lastUsed time.Time // last instance start or release
}

// compile returns the compiled module for sha in rt, compiling it (once,
// however many callers ask) with bytes from fetch.
func (e *Engine) compile(ctx context.Context, rt *wasmRuntime, sha string, fetch func() ([]byte, error)) (*compiled, bool, error) {
	key := fmt.Sprintf("%s/%d", sha, rt.memoryMB)
	e.mu.Lock()
	c, ok := e.modules[key]
	if !ok {
		c = &compiled{key: key, rt: rt, done: make(chan struct{})}
		e.modules[key] = c
	}
	c.users++
	c.lastUsed = e.cfg.Now()
	e.mu.Unlock()
	if ok {
		select {
		case <-c.done:
		case <-ctx.Done():
			e.unuse(c)
			return nil, false, ctx.Err()
		}
		if c.err != nil {
			e.unuse(c)
			return nil, false, c.err
		}
		return c, false, nil
	}
	start := time.Now()
	wasm, err := fetch() // fetch bounds itself: waiters share its outcome
	if err == nil {
		if !e.cfg.DisableSnapshots {
			if prepared, sm, perr := prepareSnapshot(wasm); perr == nil {
				wasm, c.sm = prepared, sm
			} else {
				e.log.Debug("lambda: module starts without a snapshot", "sha256", sha, "reason", perr)
			}
		}
		c.cm, err = rt.r.CompileModule(context.WithoutCancel(ctx), wasm)
		if err != nil {
			err = fmt.Errorf("%w: %v", ErrInvalidModule, err)
		}
	}
	c.dur = time.Since(start)
	c.err = err
	close(c.done)
	if err != nil {
		e.mu.Lock()
		if e.modules[key] == c {
			delete(e.modules, key)
		}
		c.users--
		e.mu.Unlock()
		return nil, false, err
	}
	return c, true, nil
}

// unuse releases one use of c.
func (e *Engine) unuse(c *compiled) {
	e.mu.Lock()
	c.users--
	c.lastUsed = e.cfg.Now()
	e.mu.Unlock()
}

// validate compiles module, checks the SDK's exports and instantiates it
// once to learn its entry points. The compiled module stays cached.
func (e *Engine) validate(ctx context.Context, module []byte, o DeployOptions) (sha string, entries []string, err error) {
	ctx, end, err := e.begin(ctx)
	if err != nil {
		return "", nil, err
	}
	defer end()
	sum := sha256.Sum256(module)
	sha = hex.EncodeToString(sum[:])
	rt, err := e.runtimeFor(ctx, o.MemoryMB)
	if err != nil {
		return "", nil, err
	}
	c, _, err := e.compile(ctx, rt, sha, func() ([]byte, error) { return module, nil })
	if err != nil {
		return "", nil, err
	}
	defer e.unuse(c)
	if err := checkExports(c.cm); err != nil {
		return "", nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, time.Duration(o.TimeoutMS)*time.Millisecond+time.Second)
	defer cancel()
	inst, err := e.instantiate(tctx, c)
	if err != nil {
		return "", nil, fmt.Errorf("%w: instantiating: %v", ErrInvalidModule, err)
	}
	defer inst.close()
	out, err := inst.mod.ExportedFunction(exportABIVersion).Call(tctx)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %v", ErrInvalidModule, exportABIVersion, err)
	}
	if out[0] != abiVersion {
		return "", nil, fmt.Errorf("%w: SDK ABI version %d, this node speaks %d (rebuild with this release's sdk/fn)", ErrInvalidModule, out[0], abiVersion)
	}
	out, err = inst.mod.ExportedFunction(exportEntrypoints).Call(tctx)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %v", ErrInvalidModule, exportEntrypoints, err)
	}
	for _, en := range entryNames {
		if uint32(out[0])&en.bit != 0 {
			entries = append(entries, en.name)
		}
	}
	if len(entries) == 0 {
		return "", nil, fmt.Errorf("%w: the module registers no entry point (call fn.Handle, fn.OnChanges, fn.Leaf or fn.Combine in init)", ErrInvalidModule)
	}
	return sha, entries, nil
}

// checkExports names every SDK export the module lacks.
func checkExports(cm wazero.CompiledModule) error {
	fns := cm.ExportedFunctions()
	var missing []string
	for _, name := range []string{exportInitialize, exportABIVersion, exportEntrypoints, exportInvoke} {
		if _, ok := fns[name]; !ok {
			missing = append(missing, name)
		}
	}
	if _, ok := cm.ExportedMemories()[exportMemory]; !ok {
		missing = append(missing, exportMemory+" (memory)")
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%w: missing the SDK's exports: %s (import lambdadb/sdk/fn and build with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared)",
			ErrInvalidModule, strings.Join(missing, ", "))
	}
	return nil
}

// instance is one sandbox: an instantiated module.
type instance struct {
	c      *compiled
	mod    api.Module
	invoke api.Function
	out    *outputSink
	lm     experimental.LinearMemory // nil: wazero's own
	snap   *snapshot                 // the snapshot it was restored from

	// The last pagemap measure (pausedBytes); touched only by the call
	// that holds the sandbox.
	measured     bool
	measuredAt   time.Time
	measuredSize uint64
	private      int64

	// Guarded by Engine.mu.
	pool     *pool
	lastUsed time.Time
	memBytes int64
	lruPrev  *instance
	lruNext  *instance
	parked   bool
}

// instantiate starts a sandbox: no filesystem, network, environment or
// wall clock (wazero's defaults); real randomness; stdout and stderr go to
// the function's log. A module prepared for snapshots starts from its
// snapshot, or runs its init and — the first sandbox to — takes it.
func (e *Engine) instantiate(ctx context.Context, c *compiled) (*instance, error) {
	sink := &outputSink{}
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(exportInitialize).
		WithRandSource(rand.Reader).
		WithStdout(sink).
		WithStderr(sink)
	var (
		snap *snapshot
		take bool
		clk  *guestClock
	)
	if c.sm != nil {
		snap, take = c.snap.claim()
		clk = newGuestClock(snap)
		cfg = cfg.WithStartFunctions().
			WithNanotime(clk.nanotime, 1).
			WithWalltime(clk.walltime, 1000)
	}
	var track *trackingAllocator
	if a := allocator(); a != nil {
		track = &trackingAllocator{inner: a}
		ctx = experimental.WithMemoryAllocator(ctx, track)
	}
	mod, err := c.rt.r.InstantiateModule(ctx, c.cm, cfg)
	if err != nil {
		if take {
			c.snap.done(nil, false)
		}
		// wazero does not free the memory of a module that failed to
		// instantiate (a trapping start function, a bad data segment).
		track.freeAll()
		if msg := sink.tail(); msg != "" {
			err = fmt.Errorf("%w (output: %s)", err, msg)
		}
		return nil, err
	}
	inst := &instance{c: c, mod: mod, invoke: mod.ExportedFunction(exportInvoke), out: sink, lm: track.first(), snap: snap}
	if c.sm != nil {
		if snap != nil {
			err = restoreSnapshot(mod, inst.lm, c.sm, snap)
		} else {
			err = initModule(ctx, mod, c.sm)
		}
		if err == nil && take {
			s, serr := takeSnapshot(mod, c.sm, clk)
			if serr != nil {
				e.log.Warn("lambda: cannot take a snapshot; the module's sandboxes run its init", "sha256", c.key, "err", serr)
			} else {
				e.mu.Lock()
				e.liveBytes += s.resident
				e.mu.Unlock()
			}
			c.snap.done(s, serr != nil)
		} else if take {
			c.snap.done(nil, false)
		}
		if err != nil {
			inst.close()
			if msg := sink.tail(); msg != "" {
				err = fmt.Errorf("%w (output: %s)", err, msg)
			}
			return nil, err
		}
	}
	inst.memBytes = int64(mod.Memory().Size())
	if snap != nil {
		inst.memBytes = snap.estimate()
	}
	return inst, nil
}

// pausedBytes is what a sandbox about to pause is accounted in the memory
// budget: the pages it dirtied when it was restored from a snapshot (its
// clean pages are the snapshot's, accounted once), else its whole linear
// memory.
//
// Reading the pagemap costs tens of µs on a call's path, so a sandbox
// measured less than remeasureAfter ago with its memory the same size
// keeps its last figure: a sandbox called again and again (warm) is
// measured about once a second, and what it dirtied since is counted at
// the next measure. Call it only while no call runs in i, without
// Engine.mu held.
func (i *instance) pausedBytes(now time.Time) int64 {
	size := uint64(i.mod.Memory().Size())
	if i.snap != nil {
		if i.measured && size == i.measuredSize && now.Sub(i.measuredAt) < remeasureAfter {
			return i.private
		}
		if n, ok := privateBytes(i.lm, size); ok {
			i.snap.dirty.Store(n)
			i.measured, i.measuredAt, i.measuredSize, i.private = true, now, size, n
			return n
		}
	}
	return int64(size)
}

// remeasureAfter is how long a paused sandbox's measured private bytes
// stand before pausedBytes reads its pagemap again.
const remeasureAfter = time.Second

func (i *instance) close() {
	_ = i.mod.Close(context.Background())
	// A module closed by its context during a call (WithCloseOnContextDone)
	// may have had its resources' release deferred to its next call, which
	// Close does not do: make that call, with a done context, so wazero
	// frees the sandbox's memory now.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	_, _ = i.invoke.Call(done, 0, 0)
}

// outputSink receives a sandbox's stdout and stderr: lines go to the
// current call's log, the last bytes are kept to explain a crash, and what
// the Go runtime's crash report says is noted.
type outputSink struct {
	mu   sync.Mutex
	call *callState
	last []byte
	// carry is the end of the previous write: the runtime prints a report
	// piece by piece, so a phrase may straddle two writes.
	carry []byte
	rep   crashReport
}

const outputTail = 2048

// crashReport is what the guest's Go runtime reported during one call.
type crashReport struct {
	// fatalAt is when it printed "fatal error: " (zero: it did not). The
	// report that follows can take long: a deep stack's traceback walks
	// every frame.
	fatalAt time.Time
	oom     bool // "out of memory"
	// stackLimit: a goroutine stack reached the runtime's maximum size
	// ("goroutine stack exceeds N-byte limit", then "stack overflow").
	stackLimit bool
	// stackGrowth: runtime.newstack is in the fatal error's report, so
	// memory ran out while a goroutine stack was growing.
	stackGrowth bool
}

// stackOverflow reports a goroutine stack that outgrew the sandbox: its
// maximum size, or the memory left to double it.
func (r crashReport) stackOverflow() bool { return r.stackLimit || r.oom && r.stackGrowth }

// Phrases of the Go runtime's crash reports (runtime/panic.go, stack.go).
var (
	phraseFatal      = []byte("fatal error: ")
	phraseOOM        = []byte("out of memory")
	phraseStackLimit = []byte("goroutine stack exceeds ")
	phraseNewstack   = []byte("runtime.newstack(")
)

func (s *outputSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scan(p)
	s.last = append(s.last, p...)
	if len(s.last) > outputTail {
		s.last = append(s.last[:0], s.last[len(s.last)-outputTail:]...)
	}
	if s.call != nil {
		s.call.output(p)
	}
	return len(p), nil
}

// scan notes the crash report's phrases in p, and in the previous
// write's end joined to p's start.
func (s *outputSink) scan(p []byte) {
	const keep = 32 // longer than every phrase
	edge := append(s.carry, p[:min(len(p), keep)]...)
	seen := func(phrase []byte) bool { return bytes.Contains(edge, phrase) || bytes.Contains(p, phrase) }
	if s.rep.fatalAt.IsZero() && seen(phraseFatal) {
		s.rep.fatalAt = time.Now()
	}
	if seen(phraseOOM) {
		s.rep.oom = true
	}
	if seen(phraseStackLimit) {
		s.rep.stackLimit = true
	}
	if !s.rep.fatalAt.IsZero() && seen(phraseNewstack) {
		s.rep.stackGrowth = true
	}
	if len(p) >= keep {
		edge = p
	}
	s.carry = append(s.carry[:0], edge[max(len(edge)-keep, 0):]...)
}

func (s *outputSink) setCall(c *callState) {
	s.mu.Lock()
	s.call = c
	s.last = s.last[:0]
	s.carry = s.carry[:0]
	s.rep = crashReport{}
	s.mu.Unlock()
}

func (s *outputSink) report() crashReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rep
}

func (s *outputSink) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(string(s.last))
}

// exitCode returns the guest's exit code when err is a sys.ExitError.
func exitCode(err error) (uint32, bool) {
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), true
	}
	return 0, false
}

// trackingAllocator remembers the memories it handed out for one
// instantiation, so they can be freed if it fails.
type trackingAllocator struct {
	inner experimental.MemoryAllocator
	mems  []experimental.LinearMemory
}

func (t *trackingAllocator) Allocate(capacity, max uint64) experimental.LinearMemory {
	m := t.inner.Allocate(capacity, max)
	t.mems = append(t.mems, m)
	return m
}

// first returns the first memory handed out (a module has one), or nil.
func (t *trackingAllocator) first() experimental.LinearMemory {
	if t == nil || len(t.mems) == 0 {
		return nil
	}
	return t.mems[0]
}

func (t *trackingAllocator) freeAll() {
	if t == nil {
		return
	}
	for _, m := range t.mems {
		m.Free()
	}
}
