package kv

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Errors returned by the engine.
var (
	ErrClosed       = errors.New("kv: engine closed")
	ErrCorrupt      = errors.New("kv: corrupt record")
	ErrBadSnapshot  = errors.New("kv: bad snapshot")
	ErrInvalidShard = errors.New("kv: invalid shard")
	ErrInvalidSpace = errors.New("kv: invalid space")
)

// Config configures an Engine. The zero value of every field but Dir selects
// its default.
type Config struct {
	// Dir is the directory holding the Pebble database. Required.
	Dir string
	// FS is the filesystem. Default vfs.Default; tests pass vfs.NewMem()
	// or vfs.NewCrashableMem().
	FS vfs.FS
	// CacheBytes is Pebble's block cache size. Default 64 MiB.
	CacheBytes int64
	// Logger receives Pebble's log lines at debug level. Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		return errors.New("kv: Config.Dir is required")
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Record is a stored value with its version.
type Record struct {
	Value   []byte
	Version uint64
}

// Engine is a node's Pebble database.
type Engine struct {
	db  *pebble.DB
	cfg Config

	// dropMu orders DropShard (exclusive) against raft writes through a
	// RaftStorage (shared: RaftBatch.Commit, Bootstrap, the repair when
	// one is opened), so that no RaftStorage opened before a drop writes
	// after it.
	dropMu sync.RWMutex
	drops  map[int]uint64 // DropShard calls per shard; guarded by dropMu
}

// Open opens (creating if needed) the database in cfg.Dir.
func Open(cfg Config) (*Engine, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := mkdirAllSynced(cfg.FS, cfg.Dir); err != nil {
		return nil, fmt.Errorf("kv: create %s: %w", cfg.Dir, err)
	}
	cache := pebble.NewCache(cfg.CacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		FS:     cfg.FS,
		Cache:  cache,
		Logger: pebbleLogger{cfg.Logger},
		// Raft log appends from many shards sync concurrently; Pebble's
		// WAL group-commits them.
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("kv: open %s: %w", cfg.Dir, err)
	}
	return &Engine{db: db, cfg: cfg, drops: map[int]uint64{}}, nil
}

// Close closes the database. Pending unsynced writes are flushed by Pebble.
func (e *Engine) Close() error {
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("kv: close: %w", err)
	}
	return nil
}

// SyncWAL makes every batch committed so far durable.
func (e *Engine) SyncWAL() error {
	if err := e.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("kv: sync: %w", err)
	}
	return nil
}

func checkShard(shard int) error {
	if shard < 0 || shard >= MaxShards {
		return fmt.Errorf("%w: %d", ErrInvalidShard, shard)
	}
	return nil
}

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func getRecord(g getter, shard int, kind byte, key []byte) (Record, bool, error) {
	v, closer, err := g.Get(shardKey(shard, kind, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("kv: get: %w", err)
	}
	defer closer.Close()
	ver, val, ok := decodeRecord(v)
	if !ok {
		return Record{}, false, fmt.Errorf("%w: shard %d key %q", ErrCorrupt, shard, key)
	}
	return Record{Value: append([]byte(nil), val...), Version: ver}, true, nil
}

func getUint64(g getter, key []byte) (uint64, error) {
	v, closer, err := g.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kv: get: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: %q has %d bytes", ErrCorrupt, key, len(v))
	}
	return beUint64(v), nil
}

// Get returns the record stored under key in shard's UserData space.
func (e *Engine) Get(shard int, key []byte) (Record, bool, error) {
	if err := checkShard(shard); err != nil {
		return Record{}, false, err
	}
	return getRecord(e.db, shard, kindData, key)
}

// GetIn returns the record stored under key in space sp of shard.
func (e *Engine) GetIn(shard int, sp Space, key []byte) (Record, bool, error) {
	kind, err := checkShardSpace(shard, sp)
	if err != nil {
		return Record{}, false, err
	}
	return getRecord(e.db, shard, kind, key)
}

// Applied returns the shard's persisted applied index (0 if none).
func (e *Engine) Applied(shard int) (uint64, error) {
	if err := checkShard(shard); err != nil {
		return 0, err
	}
	return getUint64(e.db, shardKey(shard, kindMeta, appliedName))
}

// ScanFunc receives one record of a scan; returning false stops the scan.
// key and value are valid only during the call.
type ScanFunc func(key, value []byte, version uint64) bool

type iterable interface {
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func scan(src iterable, shard int, kind byte, start, end []byte, fn ScanFunc) error {
	lo := shardKey(shard, kind, start)
	var hi []byte
	if end == nil {
		_, hi = kindRange(shard, kind)
	} else {
		hi = shardKey(shard, kind, end)
	}
	it, err := src.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("kv: scan: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("kv: scan: %w", err)
		}
		ver, val, ok := decodeRecord(v)
		if !ok {
			// Format the key before Close: it belongs to the iterator.
			err := fmt.Errorf("%w: shard %d key %q", ErrCorrupt, shard, it.Key()[prefixLen:])
			it.Close()
			return err
		}
		if !fn(it.Key()[prefixLen:], val, ver) {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("kv: scan: %w", err)
	}
	return nil
}

// Scan calls fn for each record of shard's UserData space with start <= key
// < end in key order. A nil end is unbounded.
func (e *Engine) Scan(shard int, start, end []byte, fn ScanFunc) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	return scan(e.db, shard, kindData, start, end, fn)
}

// ScanIn is Scan in space sp.
func (e *Engine) ScanIn(shard int, sp Space, start, end []byte, fn ScanFunc) error {
	kind, err := checkShardSpace(shard, sp)
	if err != nil {
		return err
	}
	return scan(e.db, shard, kind, start, end, fn)
}

// checkShardSpace validates shard and sp and returns sp's key kind.
func checkShardSpace(shard int, sp Space) (byte, error) {
	if err := checkShard(shard); err != nil {
		return 0, err
	}
	return checkSpace(sp)
}

// Reader is a consistent point-in-time view of the whole engine.
type Reader struct {
	snap *pebble.Snapshot
}

// NewReader returns a point-in-time view; Close it when done.
func (e *Engine) NewReader() *Reader { return &Reader{snap: e.db.NewSnapshot()} }

// Get returns the record under key in shard's UserData space as of the view.
func (r *Reader) Get(shard int, key []byte) (Record, bool, error) {
	if err := checkShard(shard); err != nil {
		return Record{}, false, err
	}
	return getRecord(r.snap, shard, kindData, key)
}

// GetIn is Get in space sp.
func (r *Reader) GetIn(shard int, sp Space, key []byte) (Record, bool, error) {
	kind, err := checkShardSpace(shard, sp)
	if err != nil {
		return Record{}, false, err
	}
	return getRecord(r.snap, shard, kind, key)
}

// Applied returns shard's applied index as of the view.
func (r *Reader) Applied(shard int) (uint64, error) {
	if err := checkShard(shard); err != nil {
		return 0, err
	}
	return getUint64(r.snap, shardKey(shard, kindMeta, appliedName))
}

// Scan is Engine.Scan as of the view.
func (r *Reader) Scan(shard int, start, end []byte, fn ScanFunc) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	return scan(r.snap, shard, kindData, start, end, fn)
}

// ScanIn is Engine.ScanIn as of the view.
func (r *Reader) ScanIn(shard int, sp Space, start, end []byte, fn ScanFunc) error {
	kind, err := checkShardSpace(shard, sp)
	if err != nil {
		return err
	}
	return scan(r.snap, shard, kind, start, end, fn)
}

// Close releases the view.
func (r *Reader) Close() error { return r.snap.Close() }

// Apply accumulates one state-machine step of one shard: record writes and
// the applied index, committed atomically.
type Apply struct {
	b     *pebble.Batch
	shard int
	err   error // set for an invalid shard
	done  bool
}

// errApplyDone is returned by an Apply used after Commit or Close.
var errApplyDone = errors.New("kv: apply already committed or closed")

// NewApply starts a state-machine batch for shard. Reads through the Apply
// see its own writes. For an invalid shard every method of the returned
// Apply fails with ErrInvalidShard.
func (e *Engine) NewApply(shard int) *Apply {
	if err := checkShard(shard); err != nil {
		return &Apply{shard: shard, err: err, done: true}
	}
	return &Apply{b: e.db.NewIndexedBatch(), shard: shard}
}

// check reports why the Apply cannot be used, if it cannot. Touching the
// batch after Close would reuse a batch Pebble has already recycled.
func (a *Apply) check() error {
	if a.err != nil {
		return a.err
	}
	if a.done {
		return errApplyDone
	}
	return nil
}

// Get reads key of the UserData space as the batch would leave it.
func (a *Apply) Get(key []byte) (Record, bool, error) { return a.GetIn(UserData, key) }

// Put stores value under key of the UserData space at version.
func (a *Apply) Put(key, value []byte, version uint64) error {
	return a.PutIn(UserData, key, value, version)
}

// Delete removes key from the UserData space.
func (a *Apply) Delete(key []byte) error { return a.DeleteIn(UserData, key) }

// checkIn reports why the Apply cannot be used in space sp, if it cannot,
// and returns sp's key kind.
func (a *Apply) checkIn(sp Space) (byte, error) {
	if err := a.check(); err != nil {
		return 0, err
	}
	return checkSpace(sp)
}

// GetIn reads key of space sp as the batch would leave it.
func (a *Apply) GetIn(sp Space, key []byte) (Record, bool, error) {
	kind, err := a.checkIn(sp)
	if err != nil {
		return Record{}, false, err
	}
	return getRecord(a.b, a.shard, kind, key)
}

// PutIn stores value under key of space sp at version.
func (a *Apply) PutIn(sp Space, key, value []byte, version uint64) error {
	kind, err := a.checkIn(sp)
	if err != nil {
		return err
	}
	if err := a.b.Set(shardKey(a.shard, kind, key), encodeRecord(version, value), nil); err != nil {
		return fmt.Errorf("kv: put: %w", err)
	}
	return nil
}

// DeleteIn removes key from space sp.
func (a *Apply) DeleteIn(sp Space, key []byte) error {
	kind, err := a.checkIn(sp)
	if err != nil {
		return err
	}
	if err := a.b.Delete(shardKey(a.shard, kind, key), nil); err != nil {
		return fmt.Errorf("kv: delete: %w", err)
	}
	return nil
}

// Commit records applied as the shard's applied index and commits the batch
// without syncing (the Raft log is the durable record). The Apply is closed
// afterwards.
func (a *Apply) Commit(applied uint64) error {
	if err := a.check(); err != nil {
		return err
	}
	defer a.Close()
	if err := a.b.Set(shardKey(a.shard, kindMeta, appliedName), beBytes(applied), nil); err != nil {
		return fmt.Errorf("kv: commit: %w", err)
	}
	if err := a.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("kv: commit: %w", err)
	}
	return nil
}

// CommitRaft is Commit for a state machine driven by etcd raft: it also
// records term, the term of the entry at applied, and, when cs is non-nil,
// the ConfState, in the same batch as the data. The Apply is closed
// afterwards.
func (a *Apply) CommitRaft(applied, term uint64, cs *pb.ConfState) error {
	if err := a.check(); err != nil {
		return err
	}
	defer a.Close()
	if cs != nil {
		v, err := proto.Marshal(cs)
		if err != nil {
			return fmt.Errorf("kv: commit: confstate: %w", err)
		}
		if err := a.b.Set(shardKey(a.shard, kindMeta, confStateName), v, nil); err != nil {
			return fmt.Errorf("kv: commit: %w", err)
		}
	}
	if err := a.b.Set(shardKey(a.shard, kindMeta, termName), beBytes(term), nil); err != nil {
		return fmt.Errorf("kv: commit: %w", err)
	}
	if err := a.b.Set(shardKey(a.shard, kindMeta, appliedName), beBytes(applied), nil); err != nil {
		return fmt.Errorf("kv: commit: %w", err)
	}
	if err := a.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("kv: commit: %w", err)
	}
	return nil
}

// Close discards an uncommitted Apply.
// Close after Commit is a no-op.
func (a *Apply) Close() {
	if !a.done {
		a.done = true
		_ = a.b.Close()
	}
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...interface{}) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...interface{}) {
	p.l.Error(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...interface{}) {
	p.l.Error(fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}

// DropShard deletes everything shard holds on this node, in one synced
// batch (one range deletion over the shard's key space): its replicated
// state — records of both spaces, metadata (applied index, term,
// ConfState), change feed, trigger checkpoints — and its replica's raft
// log, hard state and truncated state. Afterwards the shard reads as never
// written: Applied returns 0, and a RaftStorage opened now is empty
// (LastIndex 0, no hard state), ready for a new replica.
//
// A RaftStorage of shard opened before DropShard is invalid afterwards:
// its reads see stale bounds, and raft writes through it (RaftBatch,
// Bootstrap) fail with ErrStaleRaftStorage. Open a new one. The caller
// stops the shard's users first — its raft replica
// (multiraft.Engine.RemoveGroup) and state machine: an Apply committed
// after DropShard writes into the shard again. Open Readers and
// ShardSnapshots keep their point-in-time view.
func (e *Engine) DropShard(shard int) error {
	if err := checkShard(shard); err != nil {
		return err
	}
	lo, hi := shardRange(shard)
	e.dropMu.Lock()
	defer e.dropMu.Unlock()
	// Storages opened before are stale from here, whether or not the
	// commit below succeeds.
	e.drops[shard]++
	b := e.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("kv: drop shard %d: %w", shard, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kv: drop shard %d: %w", shard, err)
	}
	return nil
}

// Node-level metadata lives outside every shard's key space, under 'N'.
func nodeMetaKey(name string) []byte { return append([]byte{'N'}, name...) }

// NodeMeta returns the node-level metadata value name, or found=false.
func (e *Engine) NodeMeta(name string) (value []byte, found bool, err error) {
	v, closer, err := e.db.Get(nodeMetaKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("kv: node meta %q: %w", name, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// SetNodeMeta durably stores node-level metadata.
func (e *Engine) SetNodeMeta(name string, value []byte) error {
	if err := e.db.Set(nodeMetaKey(name), value, pebble.Sync); err != nil {
		return fmt.Errorf("kv: set node meta %q: %w", name, err)
	}
	return nil
}
