package lambda

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors returned by an Engine. The HTTP layer maps them to status codes.
var (
	ErrNotFound        = errors.New("lambda: function not found")
	ErrInvalidName     = errors.New("lambda: invalid function name")
	ErrInvalidConfig   = errors.New("lambda: invalid function config")
	ErrInvalidModule   = errors.New("lambda: invalid module")
	ErrModuleTooLarge  = errors.New("lambda: module too large")
	ErrNoEntrypoint    = errors.New("lambda: function lacks the entry point")
	ErrRequestTooLarge = errors.New("lambda: request too large")
	ErrHandler         = errors.New("lambda: handler error")
	ErrMemoryLimit     = errors.New("lambda: memory limit exceeded")
	ErrTimeout         = errors.New("lambda: timeout")
	ErrOverloaded      = errors.New("lambda: too many concurrent calls")
	ErrClosed          = errors.New("lambda: engine closed")
	ErrConflict        = errors.New("lambda: concurrent change to the function")
	// ErrTooManyFunctions is a deploy of a new name into a registry that
	// holds Config.MaxFunctions functions already.
	ErrTooManyFunctions = errors.New("lambda: too many functions")
	// ErrStackOverflow is a handler whose goroutine stack outgrew what the
	// sandbox allows (deep or infinite recursion). It is a handler fault:
	// errors.Is(err, ErrHandler) holds for it too.
	ErrStackOverflow error = stackOverflowError{}
)

type stackOverflowError struct{}

func (stackOverflowError) Error() string { return "lambda: stack overflow" }

// Is makes a stack overflow match ErrHandler as well.
func (stackOverflowError) Is(target error) bool { return target == ErrHandler }

// Defaults and limits.
const (
	DefaultMemoryMB     = 64
	DefaultTimeout      = time.Second
	DefaultMaxInstances = 100
	MaxModuleBytes      = 32 << 20
	DefaultMaxFunctions = 1000
	DefaultLogLines     = 500
	DefaultLogLineBytes = 4 << 10
	// MaxLogLineBytes bounds Config.LogLineBytes.
	MaxLogLineBytes = 1 << 20
	// MaxMessageBytes bounds an invocation's request and response and a
	// host call's message.
	MaxMessageBytes = 6 << 20
)

// Config configures an Engine. The zero value of each optional field
// selects its default.
type Config struct {
	// Store holds the registry and serves handlers' KV calls. Required.
	Store Store

	// NodeID names this node in results (X-Node). Required.
	NodeID string

	// CacheDir holds wazero's compilation cache, so that a restarted node
	// compiles each module only once. Default: "" = in memory only.
	CacheDir string

	// MemoryBudget bounds the memory of this node's live sandboxes
	// (running and paused); beyond it, paused sandboxes are stopped,
	// least recently used first. Default: 1 GiB.
	MemoryBudget int64

	// KeepAlive stops a paused sandbox idle this long. Default: 5 minutes.
	KeepAlive time.Duration

	// ModuleKeepAlive drops a compiled module whose function had no
	// instance for this long, making the function cold. Default: 30 minutes.
	ModuleKeepAlive time.Duration

	// BillingGranularity is what billed time is rounded up to.
	// Default: 1 ms.
	BillingGranularity time.Duration

	// QueueLength bounds the calls of one function waiting for an
	// instance on this node; more fail with ErrOverloaded. Default: 1000.
	QueueLength int

	// MaxMemoryMB and MaxTimeout bound what a deploy may ask for.
	// Defaults: 1024 MB and 5 minutes.
	MaxMemoryMB int
	MaxTimeout  time.Duration

	// MaxInstancesLimit bounds a function's max_instances. Default: 1000.
	MaxInstancesLimit int

	// MaxFunctions bounds the functions in the cluster's registry: a
	// deploy of a new name into a registry that holds this many fails
	// with ErrTooManyFunctions (redeploying a name always works). The
	// registry's count is replicated with it and checked in the deploy's
	// Raft entry, so concurrent deploys through any nodes cannot exceed
	// it; each node checks against its own value. Default: 1000.
	MaxFunctions int

	// LogLines is how many recent log lines each function keeps on each
	// node. Default: DefaultLogLines (500).
	LogLines int

	// LogLineBytes bounds one log line (Ctx.Log, or a line the handler
	// writes to stdout or stderr); the rest of a longer line is dropped.
	// At most MaxLogLineBytes. Default: DefaultLogLineBytes (4 KiB).
	LogLineBytes int

	// Meters keeps this node's function meters across restarts (they are
	// saved every MeterFlushInterval and on Close); *shard.Node satisfies
	// it. Default: nil, meters live in memory only.
	Meters LocalStore

	// MeterFlushInterval is how often changed meters are saved to Meters;
	// a crash loses at most this much metering. Default: 1 s.
	MeterFlushInterval time.Duration

	// PrecompileConcurrency bounds the background compiles (Precompile:
	// deploys announced to this node) running at once; more wait their
	// turn. Default: DefaultPrecompileConcurrency (2).
	PrecompileConcurrency int

	// DisablePrecompile turns background compiles off: Precompile does
	// nothing, and a function compiles on this node at its first call
	// here (or when deployed through this node).
	DisablePrecompile bool

	// DisableSnapshots starts every sandbox by running its module's init
	// (for a Go handler, the Go runtime's start and package inits). By
	// default a module's init runs once per node: its memory and globals
	// are kept as a snapshot that later sandboxes start from, sharing its
	// pages copy-on-write (ADR 0016).
	DisableSnapshots bool

	// SampleInterval is how often the engine samples each function's
	// meters into its series (Series), and SampleCount how many samples
	// each function keeps on this node. Defaults: DefaultSampleInterval
	// (5 s) and DefaultSampleCount (360): 30 minutes.
	SampleInterval time.Duration
	SampleCount    int

	// DeployHistory is how many deploys of each function the registry
	// keeps (Deploys). Default: DefaultDeployHistory (20).
	DeployHistory int

	// Registerer receives the engine's metrics. Default: none.
	Registerer prometheus.Registerer

	// Logger receives engine events. Default: discard.
	Logger *slog.Logger

	// Now is the clock for keep-alives and deploy times. Default: time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.Store == nil {
		return errors.New("lambda: Config.Store is required")
	}
	if c.NodeID == "" {
		return errors.New("lambda: Config.NodeID is required")
	}
	for _, v := range []struct {
		name string
		neg  bool
	}{
		{"MemoryBudget", c.MemoryBudget < 0}, {"KeepAlive", c.KeepAlive < 0},
		{"ModuleKeepAlive", c.ModuleKeepAlive < 0}, {"BillingGranularity", c.BillingGranularity < 0},
		{"QueueLength", c.QueueLength < 0}, {"MaxMemoryMB", c.MaxMemoryMB < 0},
		{"MaxTimeout", c.MaxTimeout < 0}, {"MaxInstancesLimit", c.MaxInstancesLimit < 0},
		{"LogLines", c.LogLines < 0}, {"MeterFlushInterval", c.MeterFlushInterval < 0},
		{"MaxFunctions", c.MaxFunctions < 0}, {"LogLineBytes", c.LogLineBytes < 0},
		{"PrecompileConcurrency", c.PrecompileConcurrency < 0},
		{"SampleInterval", c.SampleInterval < 0}, {"SampleCount", c.SampleCount < 0},
		{"DeployHistory", c.DeployHistory < 0},
	} {
		if v.neg {
			return fmt.Errorf("lambda: negative Config.%s", v.name)
		}
	}
	setDefault(&c.MemoryBudget, 1<<30)
	setDefault(&c.KeepAlive, 5*time.Minute)
	setDefault(&c.ModuleKeepAlive, 30*time.Minute)
	setDefault(&c.BillingGranularity, time.Millisecond)
	setDefault(&c.QueueLength, 1000)
	setDefault(&c.MaxMemoryMB, 1024)
	setDefault(&c.MaxTimeout, 5*time.Minute)
	setDefault(&c.MaxInstancesLimit, 1000)
	setDefault(&c.LogLines, DefaultLogLines)
	setDefault(&c.LogLineBytes, DefaultLogLineBytes)
	setDefault(&c.MaxFunctions, DefaultMaxFunctions)
	setDefault(&c.PrecompileConcurrency, DefaultPrecompileConcurrency)
	if c.LogLineBytes > MaxLogLineBytes {
		return fmt.Errorf("lambda: Config.LogLineBytes %d exceeds %d", c.LogLineBytes, MaxLogLineBytes)
	}
	setDefault(&c.MeterFlushInterval, time.Second)
	setDefault(&c.SampleInterval, DefaultSampleInterval)
	setDefault(&c.SampleCount, DefaultSampleCount)
	setDefault(&c.DeployHistory, DefaultDeployHistory)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

func setDefault[T int | int64 | time.Duration](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}
