package changefeed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/internal/tolerant"
	"lambdadb/lambda"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Errors of trigger management.
var (
	ErrInvalidTrigger  = errors.New("changefeed: invalid trigger")
	ErrTriggerNotFound = errors.New("changefeed: trigger not found")
	// ErrNotPaused is a resume that moves the checkpoints of a trigger
	// that is running (HTTP 409): pause it first.
	ErrNotPaused = errors.New("changefeed: trigger not paused")
)

// Trigger defaults and bounds.
const (
	DefaultBatchSize  = 100
	MaxBatchSize      = 1000
	DefaultMaxWaitMS  = 200
	MaxMaxWaitMS      = 60000
	DefaultMaxRetries = 5
	MaxMaxRetries     = 100
	// DefaultPauseAfter is TriggersConfig.PauseAfter's default: a trigger
	// pauses after this many consecutive dead letters on a shard.
	DefaultPauseAfter = 100
	MaxPauseAfter     = 1000000
	// DefaultPausedRetention is TriggersConfig.PausedRetention's default.
	DefaultPausedRetention = 24 * time.Hour
)

// Trigger states (Trigger.State).
const (
	StateRunning = "running"
	StatePaused  = "paused"
)

// Trigger binds a function's OnChanges to the changes of keys under a
// prefix.
type Trigger struct {
	Name       string   `json:"name"`
	Function   string   `json:"function"`
	Prefix     string   `json:"prefix"`
	Events     []string `json:"events"` // "put", "delete"
	BatchSize  int      `json:"batch_size"`
	MaxWaitMS  int      `json:"max_wait_ms"`
	MaxRetries int      `json:"max_retries"`
	// PauseAfter pauses the trigger once a shard has dead-lettered this
	// many changes in a row (0: never).
	PauseAfter int    `json:"pause_after"`
	Start      string `json:"start"` // "now" or "beginning"
	// Version is the Raft index of the definition; re-creating a trigger
	// restarts it from its new start.
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"created_at"`

	// State is StateRunning or StatePaused; a paused trigger delivers
	// nothing until it is resumed (Triggers.Resume). PausedSince and
	// PausedReason say since when and why.
	State        string     `json:"state"`
	PausedSince  *time.Time `json:"paused_since,omitempty"`
	PausedReason string     `json:"paused_reason,omitempty"`

	startCursor Cursor
	// stateVersion is the version of the record that pauses the trigger
	// (0: running).
	stateVersion uint64
}

// Paused reports whether the trigger is paused.
func (d *Trigger) Paused() bool { return d.stateVersion != 0 }

// Node is what triggers need from the data layer; *shard.Node satisfies it.
type Node interface {
	Source
	ID() string
	Leads(s int) bool
	GetIn(ctx context.Context, sp shard.Space, key string, ro shard.ReadOptions) (shard.GetResult, error)
	ScanIn(ctx context.Context, sp shard.Space, req shard.ScanRequest, ro shard.ReadOptions) (shard.ScanResult, error)
	Put(ctx context.Context, key string, value []byte, cond shard.Cond, tok session.Token) (shard.WriteResult, error)
	Delete(ctx context.Context, key string, cond shard.Cond, tok session.Token) (shard.WriteResult, error)
	Batch(ctx context.Context, ops []shard.Op, tok session.Token) (shard.BatchResult, error)
}

// Functions runs trigger handlers; *lambda.Engine satisfies it.
type Functions interface {
	Get(ctx context.Context, name string) (*lambda.Function, error)
	CallChanges(ctx context.Context, c lambda.ChangesCall) (lambda.ChangesResult, error)
	HasPaused(name string) bool
}

// TriggersConfig configures Triggers.
type TriggersConfig struct {
	Node      Node      // required
	Functions Functions // required
	// Poll is how often the node reconciles its runners with the trigger
	// definitions and its shard leaderships. Default 500ms.
	Poll time.Duration
	// Concurrency bounds the handler calls this node's runners make at
	// once, so shards delivering together do not starve each other's calls
	// past their timeouts. Default: GOMAXPROCS.
	Concurrency int
	// Logger receives trigger events. Default: discard.
	Logger *slog.Logger
	// PauseAfter is the pause_after of a trigger defined without one (and
	// of triggers defined before pause_after existed): a trigger pauses
	// once one of its shards has dead-lettered this many changes in a row,
	// with no successful delivery between them. Default DefaultPauseAfter
	// (100), at most MaxPauseAfter; negative: never pause.
	PauseAfter int
	// PausedRetention bounds how long a paused trigger holds back the
	// trimming of the feed: past it (counted from the pause), the feed is
	// trimmed by its own retention as if the trigger did not exist, and a
	// resume from the checkpoint reports what was trimmed (ErrExpired).
	// Default DefaultPausedRetention (24h).
	PausedRetention time.Duration
}

// Triggers runs, on one node, the triggers of the shards it leads.
type Triggers struct {
	cfg  TriggersConfig
	feed *Feed
	log  *slog.Logger

	mu      sync.Mutex
	defs    map[string]*Trigger
	loaded  bool // defs have been read at least once
	runners map[runnerKey]*runner
	stats   map[runnerKey]*ShardStats
	closed  bool

	calls chan struct{} // handler call slots

	kick chan struct{} // reconcile now (a pause or resume made here)
	stop chan struct{}
	wg   sync.WaitGroup
}

type runnerKey struct {
	name  string
	shard int
}

type runner struct {
	version uint64 // of the definition
	state   uint64 // of the pause record (0: running)
	halted  bool   // it paused the trigger: the reconciler replaces it
	cancel  context.CancelFunc
	done    chan struct{}
}

// ShardStats are one trigger's counters for one shard on this node.
type ShardStats struct {
	Shard   int    `json:"shard"`
	Node    string `json:"node"`
	Running bool   `json:"running"`
	// Definition is the version of the trigger's definition counted.
	Definition  uint64 `json:"definition"`
	Position    uint64 `json:"position"` // read through this index
	Checkpoint  uint64 `json:"checkpoint"`
	Delivered   uint64 `json:"delivered"`
	Invocations uint64 `json:"invocations"`
	Retries     uint64 `json:"retries"`
	DeadLetters uint64 `json:"dead_letters"`
	Atomic      uint64 `json:"atomic_batches"` // batches committed with their writes in one entry
	// DeadStreak counts the changes dead-lettered since the last
	// successful delivery; the trigger pauses when it reaches pause_after.
	DeadStreak uint64 `json:"dead_streak"`
	LastError  string `json:"last_error,omitempty"`
	// Oldest is when the oldest change the trigger has not delivered yet
	// on this shard was committed (zero: none known); now minus Oldest is
	// the shard's iterator age.
	Oldest time.Time `json:"oldest_undelivered,omitzero"`

	// owner is the runner that updates these stats; a runner still
	// stopping after another took over does not.
	owner *runner
}

// Trigger definitions and pause records are system records under the
// {trg} hash tag (one shard, so a definition and its pause record change
// in one batch):
//
//	{trg}t/<name>   definition: msgpack record
//	{trg}s/<name>   present while the trigger is paused: msgpack pauseRec
//	{trg}g          rewritten with every change of a definition or a
//	                pause record: its version tells every node to
//	                reconcile at once (Triggers.watch)
const (
	defPrefix   = "{trg}t/"
	statePrefix = "{trg}s/"
	genKey      = "{trg}g"
)

// genOp is the write that goes with every change of the definitions and
// pause records, in the same batch.
func genOp() shard.Op { return shard.Op{Space: shard.SystemSpace, Key: genKey, Value: []byte{}} }

var triggerNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidateTriggerName checks a trigger name as a user gives it: 1-64 of
// A-Z a-z 0-9 _ . -, starting with a letter or digit.
func ValidateTriggerName(name string) error {
	if !triggerNameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q (want 1-64 of A-Z a-z 0-9 _ . -)", ErrInvalidTrigger, name)
	}
	return nil
}

// validateStored checks a trigger's stored name, function and prefix: the
// name a user name qualified by its namespace (namespace.Name), the
// function and prefix of the same namespace.
func validateStored(tr *Trigger) error {
	user, err := namespace.ValidateStoredName(tr.Name)
	if err != nil {
		return fmt.Errorf("%w: name %q: %v", ErrInvalidTrigger, tr.Name, err)
	}
	if err := ValidateTriggerName(user); err != nil {
		return err
	}
	ns, _ := namespace.SplitName(tr.Name)
	if tr.Function != "" {
		if fns, _ := namespace.SplitName(tr.Function); fns != ns {
			return fmt.Errorf("%w: function %q is not of the trigger's namespace", ErrInvalidTrigger, tr.Function)
		}
	}
	if _, ok := namespace.Strip(ns, tr.Prefix); !ok {
		return fmt.Errorf("%w: prefix %q is not of the trigger's namespace", ErrInvalidTrigger, tr.Prefix)
	}
	return nil
}

// NewTriggers returns Triggers; Start runs them.
func NewTriggers(cfg TriggersConfig) (*Triggers, error) {
	if cfg.Node == nil || cfg.Functions == nil {
		return nil, errors.New("changefeed: TriggersConfig needs Node and Functions")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = runtime.GOMAXPROCS(0)
	}
	switch {
	case cfg.PauseAfter == 0:
		cfg.PauseAfter = DefaultPauseAfter
	case cfg.PauseAfter < 0:
		cfg.PauseAfter = 0
	}
	cfg.PauseAfter = min(cfg.PauseAfter, MaxPauseAfter)
	if cfg.PausedRetention <= 0 {
		cfg.PausedRetention = DefaultPausedRetention
	}
	return &Triggers{cfg: cfg, feed: New(cfg.Node), log: cfg.Logger, defs: map[string]*Trigger{}, calls: make(chan struct{}, cfg.Concurrency),
		runners: map[runnerKey]*runner{}, stats: map[runnerKey]*ShardStats{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}, nil
}

// Start runs the reconciliation loop, and the watch that runs it as soon
// as a definition or a pause record changes.
func (t *Triggers) Start() {
	t.wg.Add(2)
	go t.loop()
	go t.watch()
}

// watchRetry is how often watch reads {trg}g when it cannot wait on a
// local replica of its shard.
const watchRetry = 200 * time.Millisecond

// watch has this node reconcile as soon as its replica of the {trg} shard
// applies a change of the trigger definitions or pause records (they are
// written with genKey, whose version then moves), so a trigger created,
// paused, resumed or deleted through any node starts or stops on every
// node within a replication round trip instead of at the next poll — the
// first change after `trigger create` is delivered at once. The poll
// stays for what the records do not show: leaderships moving.
func (t *Triggers) watch() {
	defer t.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-t.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	s := shard.For(genKey, t.cfg.Node.Shards())
	var seen uint64 // genKey's version (0: absent) as last read
	read := false
	for ctx.Err() == nil {
		applied := t.cfg.Node.AppliedIndex(s)
		res, err := t.cfg.Node.GetIn(ctx, shard.SystemSpace, genKey, shard.ReadOptions{Consistency: shard.Stale})
		if err == nil {
			v := uint64(0)
			if res.Found {
				v = res.Record.Version
			}
			if read && v != seen {
				t.reconcileSoon()
			}
			seen, read = v, true
		}
		if err != nil || applied == 0 {
			// Not readable here yet, or this node holds no replica of the
			// shard (the read went to one that does): look again shortly.
			select {
			case <-ctx.Done():
			case <-time.After(watchRetry):
			}
			continue
		}
		if err := t.cfg.Node.WaitFeed(ctx, s, applied); err != nil && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// Close stops every runner.
func (t *Triggers) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	close(t.stop)
	t.wg.Wait()
	t.mu.Lock()
	rs := t.runners
	t.runners = map[runnerKey]*runner{}
	t.mu.Unlock()
	for _, r := range rs {
		r.cancel()
		<-r.done
	}
}

// record is a Trigger as stored (msgpack).
type record struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack    struct{} `msgpack:",as_array"`
	Function    string
	Prefix      string
	Events      []string
	BatchSize   int
	MaxWaitMS   int
	MaxRetries  int
	Start       string
	StartCursor map[int]uint64
	CreatedMS   int64
	// PauseAfter is nil in definitions written before it existed: they
	// take the node's TriggersConfig.PauseAfter.
	PauseAfter *int
}

// DecodeMsgpack reads definitions of any length, so that fields can be
// appended later.
func (r *record) DecodeMsgpack(d *msgpack.Decoder) error {
	return tolerant.DecodeArray(d, &r.Function, &r.Prefix, &r.Events, &r.BatchSize, &r.MaxWaitMS, &r.MaxRetries,
		&r.Start, &r.StartCursor, &r.CreatedMS, &r.PauseAfter)
}

// pauseRec is the record of a paused trigger.
type pauseRec struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Trigger  uint64   // the definition's version it pauses
	SinceMS  int64
	Reason   string
}

// DecodeMsgpack reads pause records of any length, so that fields can be
// appended later.
func (r *pauseRec) DecodeMsgpack(d *msgpack.Decoder) error {
	return tolerant.DecodeArray(d, &r.Trigger, &r.SinceMS, &r.Reason)
}

// TriggerSpec is a trigger definition as a client gives it. A nil
// BatchSize, MaxWaitMS, MaxRetries or PauseAfter is absent and takes its
// default (PauseAfter: the node's TriggersConfig.PauseAfter); a given
// value is taken as given, 0 included, and must be in range (batch_size
// 1..MaxBatchSize, max_wait_ms 0..MaxMaxWaitMS, max_retries
// 0..MaxMaxRetries, pause_after 0..MaxPauseAfter, 0: never pause). Nil
// Events selects put and delete; an empty list is invalid. An empty Start
// is now. Name, Function and Prefix are stored forms (namespace.Name,
// namespace.Prefix) of one namespace: the trigger's changes are that
// namespace's only.
type TriggerSpec struct {
	Name       string
	Function   string
	Prefix     string
	Events     []string
	BatchSize  *int
	MaxWaitMS  *int
	MaxRetries *int
	PauseAfter *int
	Start      string
}

// Create validates and stores a trigger, replacing one of the same name.
// Zero BatchSize, MaxWaitMS, MaxRetries and PauseAfter (and empty Events)
// select their defaults; to set any of them to 0, use Define.
func (t *Triggers) Create(ctx context.Context, tr Trigger) (*Trigger, error) {
	spec := TriggerSpec{Name: tr.Name, Function: tr.Function, Prefix: tr.Prefix, Events: tr.Events, Start: tr.Start}
	if len(tr.Events) == 0 {
		spec.Events = nil
	}
	for _, f := range []struct {
		v   int
		dst **int
	}{{tr.BatchSize, &spec.BatchSize}, {tr.MaxWaitMS, &spec.MaxWaitMS}, {tr.MaxRetries, &spec.MaxRetries}, {tr.PauseAfter, &spec.PauseAfter}} {
		if f.v != 0 {
			*f.dst = &f.v
		}
	}
	return t.Define(ctx, spec)
}

// Define validates and stores a trigger, replacing one of the same name
// (a paused one is replaced by a running one); see TriggerSpec for what
// absent fields mean.
func (t *Triggers) Define(ctx context.Context, spec TriggerSpec) (*Trigger, error) {
	tr := Trigger{Name: spec.Name, Function: spec.Function, Prefix: spec.Prefix, Events: spec.Events, Start: spec.Start,
		BatchSize: valueOr(spec.BatchSize, DefaultBatchSize), MaxWaitMS: valueOr(spec.MaxWaitMS, DefaultMaxWaitMS),
		MaxRetries: valueOr(spec.MaxRetries, DefaultMaxRetries), PauseAfter: valueOr(spec.PauseAfter, t.cfg.PauseAfter)}
	if err := validateStored(&tr); err != nil {
		return nil, err
	}
	if tr.Function == "" {
		return nil, fmt.Errorf("%w: function is required", ErrInvalidTrigger)
	}
	switch {
	case tr.Events == nil:
		tr.Events = []string{"put", "delete"}
	case len(tr.Events) == 0:
		return nil, fmt.Errorf("%w: events is empty (want put, delete or both; absent: both)", ErrInvalidTrigger)
	}
	for _, e := range tr.Events {
		if e != "put" && e != "delete" {
			return nil, fmt.Errorf("%w: event %q (want put, delete)", ErrInvalidTrigger, e)
		}
	}
	switch {
	case tr.BatchSize < 1 || tr.BatchSize > MaxBatchSize:
		return nil, fmt.Errorf("%w: batch_size %d outside 1..%d", ErrInvalidTrigger, tr.BatchSize, MaxBatchSize)
	case tr.MaxWaitMS < 0 || tr.MaxWaitMS > MaxMaxWaitMS:
		return nil, fmt.Errorf("%w: max_wait_ms %d outside 0..%d", ErrInvalidTrigger, tr.MaxWaitMS, MaxMaxWaitMS)
	case tr.MaxRetries < 0 || tr.MaxRetries > MaxMaxRetries:
		return nil, fmt.Errorf("%w: max_retries %d outside 0..%d", ErrInvalidTrigger, tr.MaxRetries, MaxMaxRetries)
	case tr.PauseAfter < 0 || tr.PauseAfter > MaxPauseAfter:
		return nil, fmt.Errorf("%w: pause_after %d outside 0..%d", ErrInvalidTrigger, tr.PauseAfter, MaxPauseAfter)
	}
	f, err := t.cfg.Functions.Get(ctx, tr.Function)
	if err != nil {
		return nil, fmt.Errorf("%w: function %q: %v", ErrInvalidTrigger, tr.Function, err)
	}
	if !f.Has("changes") {
		return nil, fmt.Errorf("%w: function %q registers no OnChanges", ErrInvalidTrigger, tr.Function)
	}
	var start Cursor
	switch tr.Start {
	case "", "now":
		tr.Start = "now"
		if start, err = t.feed.Now(ctx); err != nil {
			return nil, err
		}
	case "beginning":
		if start, err = t.feed.Beginning(ctx); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: start %q (want now or beginning)", ErrInvalidTrigger, tr.Start)
	}
	rec := record{Function: tr.Function, Prefix: tr.Prefix, Events: tr.Events, BatchSize: tr.BatchSize,
		MaxWaitMS: tr.MaxWaitMS, MaxRetries: tr.MaxRetries, Start: tr.Start, StartCursor: start, CreatedMS: time.Now().UnixMilli(),
		PauseAfter: &tr.PauseAfter}
	b, err := msgpack.Marshal(&rec)
	if err != nil {
		return nil, err
	}
	// The new definition starts running: a pause record of the old one
	// goes with it.
	res, err := t.cfg.Node.Batch(ctx, []shard.Op{{Space: shard.SystemSpace, Key: defPrefix + tr.Name, Value: b},
		{Space: shard.SystemSpace, Key: statePrefix + tr.Name, Delete: true}, genOp()}, nil)
	if err != nil {
		return nil, fmt.Errorf("changefeed: store trigger %q: %w", tr.Name, err)
	}
	return t.decodeTrigger(tr.Name, b, res.Index)
}

// valueOr returns *p, or def when p is nil (absent).
func valueOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func (t *Triggers) decodeTrigger(name string, b []byte, version uint64) (*Trigger, error) {
	var r record
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("changefeed: corrupt trigger %q: %w", name, err)
	}
	return &Trigger{Name: name, Function: r.Function, Prefix: r.Prefix, Events: r.Events, BatchSize: r.BatchSize,
		MaxWaitMS: r.MaxWaitMS, MaxRetries: r.MaxRetries, PauseAfter: valueOr(r.PauseAfter, t.cfg.PauseAfter), Start: r.Start,
		Version: version, CreatedAt: time.UnixMilli(r.CreatedMS).UTC(), State: StateRunning, startCursor: r.StartCursor}, nil
}

// setState applies a pause record (value b at version) to d, unless it
// belongs to an earlier definition of the name.
func setState(d *Trigger, b []byte, version uint64) {
	var r pauseRec
	if err := msgpack.Unmarshal(b, &r); err != nil || r.Trigger != d.Version {
		return
	}
	since := time.UnixMilli(r.SinceMS).UTC()
	d.State, d.PausedSince, d.PausedReason, d.stateVersion = StatePaused, &since, r.Reason, version
}

// List returns every trigger in name order, with its state.
func (t *Triggers) List(ctx context.Context, ro shard.ReadOptions) ([]*Trigger, error) {
	var out []*Trigger
	byName := map[string]*Trigger{}
	err := t.scan(ctx, defPrefix, ro, func(name string, rec shard.Record) error {
		tr, err := t.decodeTrigger(name, rec.Value, rec.Version)
		if err != nil {
			return err
		}
		out = append(out, tr)
		byName[name] = tr
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The pause records are read after the definitions: one of a
	// definition not listed is a later definition's, or left by a
	// deleted one.
	err = t.scan(ctx, statePrefix, ro, func(name string, rec shard.Record) error {
		if tr := byName[name]; tr != nil {
			setState(tr, rec.Value, rec.Version)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scan calls f with every system record under prefix, by name.
func (t *Triggers) scan(ctx context.Context, prefix string, ro shard.ReadOptions, f func(name string, rec shard.Record) error) error {
	req := shard.ScanRequest{Prefix: prefix, Limit: shard.MaxScanLimit}
	for {
		res, err := t.cfg.Node.ScanIn(ctx, shard.SystemSpace, req, ro)
		if err != nil {
			return fmt.Errorf("changefeed: list triggers: %w", err)
		}
		for _, rec := range res.Items {
			if err := f(strings.TrimPrefix(rec.Key, prefix), rec); err != nil {
				return err
			}
		}
		if !res.More {
			return nil
		}
		req.Start = res.Next
	}
}

// Get returns one trigger, with its state.
func (t *Triggers) Get(ctx context.Context, name string) (*Trigger, error) {
	ro := shard.ReadOptions{Consistency: shard.Linearizable}
	res, err := t.cfg.Node.GetIn(ctx, shard.SystemSpace, defPrefix+name, ro)
	if err != nil {
		return nil, fmt.Errorf("changefeed: read trigger: %w", err)
	}
	if !res.Found {
		return nil, fmt.Errorf("%w: %q", ErrTriggerNotFound, name)
	}
	tr, err := t.decodeTrigger(name, res.Record.Value, res.Record.Version)
	if err != nil {
		return nil, err
	}
	st, err := t.cfg.Node.GetIn(ctx, shard.SystemSpace, statePrefix+name, ro)
	if err != nil {
		return nil, fmt.Errorf("changefeed: read trigger state: %w", err)
	}
	if st.Found {
		setState(tr, st.Record.Value, st.Record.Version)
	}
	return tr, nil
}

// Delete removes a trigger; its runners stop as soon as each node has
// applied the deletion.
func (t *Triggers) Delete(ctx context.Context, name string) error {
	if _, err := t.Get(ctx, name); err != nil {
		return err
	}
	ops := []shard.Op{{Space: shard.SystemSpace, Key: defPrefix + name, Delete: true},
		{Space: shard.SystemSpace, Key: statePrefix + name, Delete: true}, genOp()}
	if _, err := t.cfg.Node.Batch(ctx, ops, nil); err != nil {
		return fmt.Errorf("changefeed: delete trigger %q: %w", name, err)
	}
	return nil
}

// loop reconciles runners with definitions and leaderships.
func (t *Triggers) loop() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.Poll)
	defer tick.Stop()
	for {
		t.reconcile()
		select {
		case <-t.stop:
			return
		case <-tick.C:
		case <-t.kick:
		}
	}
}

func (t *Triggers) reconcile() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	defs, err := t.List(ctx, shard.ReadOptions{Consistency: shard.Stale})
	if err != nil {
		t.log.Debug("trigger reconcile: list", "err", err)
		return
	}
	want := map[runnerKey]*Trigger{}
	byName := map[string]*Trigger{}
	for _, d := range defs {
		byName[d.Name] = d
		for s := 0; s < t.cfg.Node.Shards(); s++ {
			if t.cfg.Node.Leads(s) {
				want[runnerKey{d.Name, s}] = d
			}
		}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.defs = byName
	t.loaded = true
	var stop []*runner
	for k, r := range t.runners {
		// A pause or a resume starts the shard's runner again, in the
		// other mode.
		if d, ok := want[k]; !ok || d.Version != r.version || d.stateVersion != r.state || r.halted {
			stop = append(stop, r)
			delete(t.runners, k)
			if st := t.stats[k]; st != nil {
				st.Running = false
			}
		}
	}
	for k, d := range want {
		if _, ok := t.runners[k]; ok {
			continue
		}
		rctx, rcancel := context.WithCancel(context.Background())
		r := &runner{version: d.Version, state: d.stateVersion, cancel: rcancel, done: make(chan struct{})}
		t.runners[k] = r
		st := t.stats[k]
		if st == nil || st.Node == "" {
			st = &ShardStats{Shard: k.shard, Node: t.cfg.Node.ID()}
			t.stats[k] = st
		}
		st.Running = !d.Paused()
		if st.Definition != d.Version {
			// A new definition of the name counts from its own checkpoints.
			*st = ShardStats{Shard: st.Shard, Node: st.Node, Running: !d.Paused(), Definition: d.Version}
		}
		st.owner = r
		go func() {
			defer close(r.done)
			t.run(rctx, d, k.shard, st, r)
		}()
	}
	for k := range t.stats {
		if _, ok := byName[k.name]; !ok {
			delete(t.stats, k)
		}
	}
	t.mu.Unlock()
	for _, r := range stop {
		r.cancel()
	}
}

// Status returns this node's counters for the trigger, by shard.
func (t *Triggers) Status(name string) []ShardStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []ShardStats
	for k, st := range t.stats {
		if k.name == name {
			out = append(out, *st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Shard < out[j].Shard })
	return out
}

// Local returns this node's counters of every trigger, by stored name,
// for the shards whose runner it runs (those it leads).
func (t *Triggers) Local() map[string][]ShardStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string][]ShardStats{}
	for k, st := range t.stats {
		if r := t.runners[k]; r != nil && st.owner == r {
			out[k.name] = append(out[k.name], *st)
		}
	}
	return out
}

// TrimLimit is the lowest checkpoint of any trigger on shard s, as this
// node's replica holds them: the feed must not be trimmed past it. A
// trigger paused for longer than PausedRetention no longer counts.
func (t *Triggers) TrimLimit(s int) uint64 {
	t.mu.Lock()
	if !t.loaded {
		t.mu.Unlock()
		return 0
	}
	defs := make([]*Trigger, 0, len(t.defs))
	for _, d := range t.defs {
		defs = append(defs, d)
	}
	t.mu.Unlock()
	limit := ^uint64(0)
	for _, d := range defs {
		if d.Paused() && time.Since(*d.PausedSince) > t.cfg.PausedRetention {
			continue
		}
		cp, err := t.checkpoint(context.Background(), d, s, shard.Stale)
		if err != nil {
			return 0
		}
		limit = min(limit, cp.pos)
	}
	return limit
}

func lambdaCall(d *Trigger, batch []shard.Change) lambda.ChangesCall {
	return lambda.ChangesCall{Name: d.Function, Batch: batch, Buffer: true}
}
