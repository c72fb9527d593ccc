package lambda

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/internal/tolerant"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Store is what the engine needs from the data layer; *shard.Node
// satisfies it.
type Store interface {
	GetIn(ctx context.Context, sp shard.Space, key string, ro shard.ReadOptions) (shard.GetResult, error)
	ScanIn(ctx context.Context, sp shard.Space, req shard.ScanRequest, ro shard.ReadOptions) (shard.ScanResult, error)
	Put(ctx context.Context, key string, value []byte, cond shard.Cond, tok session.Token) (shard.WriteResult, error)
	Delete(ctx context.Context, key string, cond shard.Cond, tok session.Token) (shard.WriteResult, error)
	Batch(ctx context.Context, ops []shard.Op, tok session.Token) (shard.BatchResult, error)
}

// LocalStore keeps node-local values (not replicated) durably;
// *shard.Node satisfies it.
type LocalStore interface {
	LocalMeta(name string) (value []byte, found bool, err error)
	SetLocalMeta(name string, value []byte) error
}

// Function is a deployed function's configuration.
type Function struct {
	Name         string    `json:"name"`
	SHA256       string    `json:"sha256"`
	Size         int       `json:"size"`
	MemoryMB     int       `json:"memory_mb"`
	TimeoutMS    int       `json:"timeout_ms"`
	MaxInstances int       `json:"max_instances"`
	Entrypoints  []string  `json:"entrypoints"`
	DeployedAt   time.Time `json:"deployed_at"`
	// CreatedAt is when the function was first deployed under its name
	// (redeploys keep it; a remove and deploy starts afresh, and with it
	// the function's meters). Zero for functions deployed before it was
	// recorded.
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Version is the Raft index of the deploy; a redeploy changes it.
	Version uint64 `json:"version"`
}

// Timeout returns the function's time cap.
func (f *Function) Timeout() time.Duration { return time.Duration(f.TimeoutMS) * time.Millisecond }

// Namespace returns the namespace the function belongs to (and runs in),
// from its stored name.
func (f *Function) Namespace() string {
	ns, _ := namespace.SplitName(f.Name)
	return ns
}

// Has reports whether the module registers the entry point ("handle",
// "changes", "leaf", "combine").
func (f *Function) Has(entry string) bool {
	for _, e := range f.Entrypoints {
		if e == entry {
			return true
		}
	}
	return false
}

// record is a Function as stored (msgpack).
type record struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack     struct{} `msgpack:",as_array"`
	SHA256       string
	Size         int
	MemoryMB     int
	TimeoutMS    int
	MaxInstances int
	Entrypoints  []string
	DeployedAtMS int64
	CreatedNS    int64 // 0 in records written before it existed
}

// DecodeMsgpack reads records of any length: those written before
// CreatedNS was appended lack it.
func (r *record) DecodeMsgpack(d *msgpack.Decoder) error {
	return tolerant.DecodeArray(d, &r.SHA256, &r.Size, &r.MemoryMB, &r.TimeoutMS, &r.MaxInstances,
		&r.Entrypoints, &r.DeployedAtMS, &r.CreatedNS)
}

// DeployOptions are a deploy's parameters; zero values select defaults.
type DeployOptions struct {
	MemoryMB     int
	TimeoutMS    int
	MaxInstances int
}

// Registry keys live in the system space; the {fn} hash tag places the
// whole registry in one shard, so a deploy is one atomic Raft entry.
const (
	fnKeyPrefix  = "{fn}f/"
	modKeyPrefix = "{fn}m/"
	// fnCountKey holds the number of functions in the registry (msgpack),
	// changed in the Raft entry of every deploy of a new name and every
	// remove. A registry written before it existed lacks it: the first
	// such change counts the functions and creates it.
	fnCountKey = "{fn}n"
)

// registryAttempts bounds the tries of a deploy or remove that finds the
// registry changed under it (each try reads it again).
const registryAttempts = 10

func fnKey(name string) string       { return fnKeyPrefix + name }
func modKey(sha, name string) string { return modKeyPrefix + sha + "/" + name }
func moduleKeyOf(f *Function) string { return modKey(f.SHA256, f.Name) }
func decodeRecord(b []byte) (record, error) {
	var r record
	err := msgpack.Unmarshal(b, &r)
	return r, err
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidateName checks a function name: 1-64 letters, digits, '_', '.',
// '-', starting with a letter or digit.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit)", ErrInvalidName, name)
	}
	return nil
}

// ValidateStoredName checks a function name as the registry stores it: a
// name that passes ValidateName, qualified by its namespace ("ns:name",
// namespace.Name) unless the namespace is Default.
func ValidateStoredName(stored string) error {
	name, err := namespace.ValidateStoredName(stored)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidName, stored, err)
	}
	return ValidateName(name)
}

func (e *Engine) resolveOptions(o DeployOptions) (DeployOptions, error) {
	if o.MemoryMB == 0 {
		o.MemoryMB = DefaultMemoryMB
	}
	if o.TimeoutMS == 0 {
		o.TimeoutMS = int(DefaultTimeout / time.Millisecond)
	}
	if o.MaxInstances == 0 {
		o.MaxInstances = DefaultMaxInstances
	}
	switch {
	case o.MemoryMB < 1 || o.MemoryMB > e.cfg.MaxMemoryMB:
		return o, fmt.Errorf("%w: memory_mb %d is outside 1..%d", ErrInvalidConfig, o.MemoryMB, e.cfg.MaxMemoryMB)
	case o.TimeoutMS < 1 || time.Duration(o.TimeoutMS)*time.Millisecond > e.cfg.MaxTimeout:
		return o, fmt.Errorf("%w: timeout_ms %d is outside 1..%d", ErrInvalidConfig, o.TimeoutMS, e.cfg.MaxTimeout.Milliseconds())
	case o.MaxInstances < 1 || o.MaxInstances > e.cfg.MaxInstancesLimit:
		return o, fmt.Errorf("%w: max_instances %d is outside 1..%d", ErrInvalidConfig, o.MaxInstances, e.cfg.MaxInstancesLimit)
	}
	return o, nil
}

// lookup reads a function's configuration: at the caller's session
// consistency when it has a token, else from the local replica, falling
// back to a linearizable read before answering ErrNotFound (so a function
// deployed through another node a moment ago is found).
func (e *Engine) lookup(ctx context.Context, name string, tok session.Token) (*Function, error) {
	if err := ValidateStoredName(name); err != nil {
		return nil, err
	}
	ro := shard.ReadOptions{Consistency: shard.Stale}
	if len(tok) > 0 {
		ro = shard.ReadOptions{Consistency: shard.Session, Session: tok}
	}
	res, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnKey(name), ro)
	if err == nil && !res.Found {
		res, err = e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnKey(name), shard.ReadOptions{Consistency: shard.Linearizable})
	}
	if err != nil {
		return nil, fmt.Errorf("lambda: read registry: %w", err)
	}
	if !res.Found {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return e.decodeFunction(name, res.Record)
}

// decodeFunction decodes a registry record, reusing the cached copy when
// the version is unchanged.
func (e *Engine) decodeFunction(name string, rec shard.Record) (*Function, error) {
	e.mu.Lock()
	if f, ok := e.fnCache[name]; ok && f.Version == rec.Version {
		e.mu.Unlock()
		return f, nil
	}
	e.mu.Unlock()
	r, err := decodeRecord(rec.Value)
	if err != nil {
		return nil, fmt.Errorf("lambda: corrupt registry record for %q: %w", name, err)
	}
	f := &Function{
		Name: name, SHA256: r.SHA256, Size: r.Size, MemoryMB: r.MemoryMB, TimeoutMS: r.TimeoutMS,
		MaxInstances: r.MaxInstances, Entrypoints: r.Entrypoints,
		DeployedAt: time.UnixMilli(r.DeployedAtMS).UTC(), Version: rec.Version,
	}
	if r.CreatedNS != 0 {
		f.CreatedAt = time.Unix(0, r.CreatedNS).UTC()
	}
	e.mu.Lock()
	if cur, ok := e.fnCache[name]; !ok || cur.Version < f.Version {
		e.fnCache[name] = f
	}
	e.mu.Unlock()
	return f, nil
}

// Get returns a function's configuration, read linearizably.
func (e *Engine) Get(ctx context.Context, name string) (*Function, error) {
	if err := ValidateStoredName(name); err != nil {
		return nil, err
	}
	res, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnKey(name), shard.ReadOptions{Consistency: shard.Linearizable})
	if err != nil {
		return nil, fmt.Errorf("lambda: read registry: %w", err)
	}
	if !res.Found {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return e.decodeFunction(name, res.Record)
}

// List returns every deployed function in name order, read linearizably.
func (e *Engine) List(ctx context.Context) ([]*Function, error) {
	var out []*Function
	req := shard.ScanRequest{Prefix: fnKeyPrefix, Limit: shard.MaxScanLimit}
	for {
		res, err := e.cfg.Store.ScanIn(ctx, shard.SystemSpace, req, shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil {
			return nil, fmt.Errorf("lambda: list registry: %w", err)
		}
		for _, rec := range res.Items {
			f, err := e.decodeFunction(strings.TrimPrefix(rec.Key, fnKeyPrefix), rec)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
		if !res.More {
			return out, nil
		}
		req.Start = res.Next
	}
}

// DeployResult is the outcome of Deploy.
type DeployResult struct {
	Function *Function
	Session  session.Token
}

// Deploy validates module (compiling it, checking the SDK's exports and
// instantiating it once) and registers it as name, replacing any earlier
// version: calls already running finish on the old version, later calls
// use the new one.
func (e *Engine) Deploy(ctx context.Context, name string, module []byte, o DeployOptions, tok session.Token) (DeployResult, error) {
	res := DeployResult{Session: tok}
	if err := ValidateStoredName(name); err != nil {
		return res, err
	}
	if len(module) > MaxModuleBytes {
		return res, fmt.Errorf("%w: %d bytes, the limit is %d", ErrModuleTooLarge, len(module), MaxModuleBytes)
	}
	o, err := e.resolveOptions(o)
	if err != nil {
		return res, err
	}
	if err := e.checkRoom(ctx, name); err != nil {
		return res, err // before compiling a module that cannot be registered
	}
	sum := sha256.Sum256(module)
	e.mu.Lock()
	wasCompiled := e.compiledStateLocked(hex.EncodeToString(sum[:]), o.MemoryMB) != compileNone
	e.mu.Unlock()
	began := time.Now()
	sha, entries, err := e.validate(ctx, module, o)
	if err != nil {
		return res, err
	}
	e.noteValidateCompile(wasCompiled, time.Since(began))
	now := e.cfg.Now()
	rec := record{
		SHA256: sha, Size: len(module), MemoryMB: o.MemoryMB, TimeoutMS: o.TimeoutMS,
		MaxInstances: o.MaxInstances, Entrypoints: entries, DeployedAtMS: now.UnixMilli(),
	}
	// Read-modify-write under a precondition, so two concurrent deploys of
	// one name cannot leave an orphaned module behind.
	for attempt := 0; ; attempt++ {
		cur, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnKey(name), shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil {
			return res, fmt.Errorf("lambda: read registry: %w", err)
		}
		rec.CreatedNS = now.UnixNano()
		var oldSHA string
		if cur.Found {
			if old, err := decodeRecord(cur.Record.Value); err == nil {
				rec.CreatedNS, oldSHA = old.CreatedNS, old.SHA256
			}
		}
		val, err := msgpack.Marshal(&rec)
		if err != nil {
			return res, fmt.Errorf("lambda: encode record: %w", err)
		}
		ops := []shard.Op{{Space: shard.SystemSpace, Key: fnKey(name), Value: val}}
		if cur.Found {
			v := cur.Record.Version
			ops[0].Cond.IfMatch = &v
			if oldSHA != "" && oldSHA != sha {
				ops = append(ops, shard.Op{Space: shard.SystemSpace, Key: modKey(oldSHA, name), Delete: true})
			}
		} else {
			// A new name: one more function, if the registry has room.
			ops[0].Cond.IfNoneMatch = true
			count, err := e.countOp(ctx, 1)
			if err != nil {
				return res, err
			}
			ops = append(ops, count)
		}
		ops = append(ops, shard.Op{Space: shard.SystemSpace, Key: modKey(sha, name), Value: module})
		hist, err := e.historyOps(ctx, name, rec, now)
		if err != nil {
			return res, err
		}
		ops = append(ops, hist...)
		br, err := e.cfg.Store.Batch(ctx, ops, tok)
		res.Session = br.Session
		if errors.Is(err, shard.ErrPrecondition) && attempt < registryAttempts-1 {
			continue
		}
		if errors.Is(err, shard.ErrPrecondition) {
			return res, fmt.Errorf("%w: deploying %q: the registry changed concurrently %d times, try again", ErrConflict, name, registryAttempts)
		}
		if err != nil {
			return res, fmt.Errorf("lambda: register %q: %w", name, err)
		}
		f, err := e.decodeFunction(name, shard.Record{Key: fnKey(name), Value: val, Version: br.Index})
		if err != nil {
			return res, err
		}
		res.Function = f
		e.log.Info("function deployed", "name", name, "sha256", sha, "version", br.Index, "size", len(module))
		return res, nil
	}
}

// Remove deletes a function. Calls already running finish.
func (e *Engine) Remove(ctx context.Context, name string, tok session.Token) (session.Token, error) {
	if err := ValidateStoredName(name); err != nil {
		return tok, err
	}
	for attempt := 0; ; attempt++ {
		cur, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnKey(name), shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil {
			return tok, fmt.Errorf("lambda: read registry: %w", err)
		}
		if !cur.Found {
			return tok, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		v := cur.Record.Version
		ops := []shard.Op{{Space: shard.SystemSpace, Key: fnKey(name), Delete: true, Cond: shard.Cond{IfMatch: &v}}}
		if old, err := decodeRecord(cur.Record.Value); err == nil {
			ops = append(ops, shard.Op{Space: shard.SystemSpace, Key: modKey(old.SHA256, name), Delete: true})
		}
		count, err := e.countOp(ctx, -1)
		if err != nil {
			return tok, err
		}
		ops = append(ops, count)
		hist, err := e.historyKeys(ctx, name)
		if err != nil {
			return tok, err
		}
		for _, k := range hist {
			ops = append(ops, shard.Op{Space: shard.SystemSpace, Key: k, Delete: true})
		}
		br, err := e.cfg.Store.Batch(ctx, ops, tok)
		tok = br.Session
		if errors.Is(err, shard.ErrPrecondition) && attempt < registryAttempts-1 {
			continue
		}
		if errors.Is(err, shard.ErrPrecondition) {
			return tok, fmt.Errorf("%w: removing %q: the registry changed concurrently %d times, try again", ErrConflict, name, registryAttempts)
		}
		if err != nil {
			return tok, fmt.Errorf("lambda: remove %q: %w", name, err)
		}
		e.retire(name)
		return tok, nil
	}
}

// checkRoom refuses a deploy of name, if it is a new one, into a registry
// without room for it (the deploy checks again as it registers).
func (e *Engine) checkRoom(ctx context.Context, name string) error {
	cur, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnKey(name), shard.ReadOptions{Consistency: shard.Linearizable})
	if err != nil {
		return fmt.Errorf("lambda: read registry: %w", err)
	}
	if cur.Found {
		return nil
	}
	_, err = e.countOp(ctx, 1)
	return err
}

// countOp reads the registry's function count and returns the op that
// changes it by delta, for the batch that adds or removes the function:
// conditioned on the count it read, so that concurrent changes retry
// instead of miscounting. With delta > 0, a registry that holds
// MaxFunctions already is ErrTooManyFunctions.
func (e *Engine) countOp(ctx context.Context, delta int64) (shard.Op, error) {
	op := shard.Op{Space: shard.SystemSpace, Key: fnCountKey}
	res, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, fnCountKey, shard.ReadOptions{Consistency: shard.Linearizable})
	if err != nil {
		return op, fmt.Errorf("lambda: read registry: %w", err)
	}
	var n int64
	if res.Found {
		if err := msgpack.Unmarshal(res.Record.Value, &n); err != nil {
			return op, fmt.Errorf("lambda: corrupt function count in the registry: %w", err)
		}
		v := res.Record.Version
		op.Cond.IfMatch = &v
	} else {
		if n, err = e.countFunctions(ctx); err != nil {
			return op, err
		}
		op.Cond.IfNoneMatch = true
	}
	if delta > 0 && n >= int64(e.cfg.MaxFunctions) {
		return op, fmt.Errorf("%w: the cluster has %d, the limit is %d (redeploying an existing name is allowed; remove a function to deploy another)",
			ErrTooManyFunctions, n, e.cfg.MaxFunctions)
	}
	if op.Value, err = msgpack.Marshal(max(n+delta, 0)); err != nil {
		return op, fmt.Errorf("lambda: encode function count: %w", err)
	}
	return op, nil
}

// countFunctions counts the registry's functions, read linearizably.
func (e *Engine) countFunctions(ctx context.Context) (int64, error) {
	var n int64
	req := shard.ScanRequest{Prefix: fnKeyPrefix, Limit: shard.MaxScanLimit}
	for {
		res, err := e.cfg.Store.ScanIn(ctx, shard.SystemSpace, req, shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil {
			return 0, fmt.Errorf("lambda: list registry: %w", err)
		}
		n += int64(len(res.Items))
		if !res.More {
			return n, nil
		}
		req.Start = res.Next
	}
}

// moduleBytes fetches a function's module from the registry.
func (e *Engine) moduleBytes(ctx context.Context, f *Function, tok session.Token) ([]byte, error) {
	key := moduleKeyOf(f)
	res, err := e.cfg.Store.GetIn(ctx, shard.SystemSpace, key, shard.ReadOptions{Consistency: shard.Session, Session: tok})
	if err == nil && !res.Found {
		res, err = e.cfg.Store.GetIn(ctx, shard.SystemSpace, key, shard.ReadOptions{Consistency: shard.Linearizable})
	}
	if err != nil {
		return nil, fmt.Errorf("lambda: read module of %q: %w", f.Name, err)
	}
	if !res.Found {
		// Removed or replaced since the caller looked it up.
		return nil, fmt.Errorf("%w: %q was removed or redeployed", ErrNotFound, f.Name)
	}
	return res.Record.Value, nil
}
