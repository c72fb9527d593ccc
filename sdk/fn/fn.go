package fn

import (
	"errors"
	"fmt"
	"time"
)

// Change is one committed change delivered to an OnChanges handler.
type Change struct {
	Key     string
	Value   []byte // nil for a delete
	Op      string // "put" or "delete"
	Version uint64 // Raft index of the change
}

// Entry points registered by a module.
var (
	handleFn   func(*Ctx, []byte) ([]byte, error)
	changesFn  func(*Ctx, []Change) error
	leafFn     func(*Ctx, string) ([]byte, error)
	combineFn  func([][]byte) ([]byte, error)
	registered uint32
)

// Entry point bits reported by ldb_entrypoints.
const (
	entryHandle  = 1 << 0
	entryChanges = 1 << 1
	entryLeaf    = 1 << 2
	entryCombine = 1 << 3
)

// Invocation kinds passed to ldb_invoke.
const (
	kindHandle  = 1
	kindChanges = 2
	kindLeaf    = 3
	kindCombine = 4
)

// ldb_invoke results.
const (
	statusOK         = 0
	statusError      = 1 // the entry point returned an error or panicked
	statusNoEntry    = 2 // no entry point of that kind is registered
	statusBadRequest = 3 // the host sent a message that does not decode
)

// Handle registers the function invoked by POST /v1/functions/{name}/invoke.
// req is the request body; the returned bytes are the response body. A
// returned error (or a panic) answers 500 with its message.
func Handle(h func(c *Ctx, req []byte) ([]byte, error)) { handleFn = h; registered |= entryHandle }

// OnChanges registers the trigger entry point: batch holds committed
// changes of one shard in commit order. A returned error makes the trigger
// retry the batch.
func OnChanges(h func(c *Ctx, batch []Change) error) { changesFn = h; registered |= entryChanges }

// Leaf registers a scatter/gather leaf, run once per shard; inside it,
// Ctx.Scan reads that shard only.
func Leaf(h func(c *Ctx, prefix string) ([]byte, error)) { leafFn = h; registered |= entryLeaf }

// Combine registers a scatter/gather combine, which merges leaf outputs (or
// other combines' outputs) into one.
func Combine(h func(parts [][]byte) ([]byte, error)) { combineFn = h; registered |= entryCombine }

// Sleep blocks the calling handler for d. The sandbox waits in the host and
// uses no CPU; the time counts towards the function's timeout.
func Sleep(d time.Duration) {
	if d > 0 {
		hostSleep(uint64(d))
	}
}

// ErrNotFound is never returned by Get (it reports absence with found ==
// false); it is what a handler may return to mean "no such thing".
var ErrNotFound = errors.New("fn: not found")

// invoke runs the entry point of kind on a msgpack request and returns the
// status and msgpack response ([error string, payload]).
func invoke(kind uint32, req []byte) (status uint32, resp []byte) {
	d := &decoder{b: req}
	c := &Ctx{}
	var (
		out []byte
		err error
	)
	switch kind {
	case kindHandle:
		if handleFn == nil {
			return statusNoEntry, encodeResult(nil, "the module registers no Handle")
		}
		n := d.array()
		body := d.bin()
		if n > 1 {
			c.key = d.str()
		}
		d.rest(n, 2)
		if d.err != nil {
			return statusBadRequest, encodeResult(nil, d.err.Error())
		}
		out, err = run(func() ([]byte, error) { return handleFn(c, body) })
	case kindChanges:
		if changesFn == nil {
			return statusNoEntry, encodeResult(nil, "the module registers no OnChanges")
		}
		batch := decodeChanges(d)
		if d.err != nil {
			return statusBadRequest, encodeResult(nil, d.err.Error())
		}
		_, err = run(func() ([]byte, error) { return nil, changesFn(c, batch) })
	case kindLeaf:
		if leafFn == nil {
			return statusNoEntry, encodeResult(nil, "the module registers no Leaf")
		}
		n := d.array()
		prefix := d.str()
		d.rest(n, 1)
		if d.err != nil {
			return statusBadRequest, encodeResult(nil, d.err.Error())
		}
		out, err = run(func() ([]byte, error) { return leafFn(c, prefix) })
	case kindCombine:
		if combineFn == nil {
			return statusNoEntry, encodeResult(nil, "the module registers no Combine")
		}
		n := d.array()
		parts := make([][]byte, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			parts = append(parts, d.bin())
		}
		if d.err != nil {
			return statusBadRequest, encodeResult(nil, d.err.Error())
		}
		out, err = run(func() ([]byte, error) { return combineFn(parts) })
	default:
		return statusNoEntry, encodeResult(nil, fmt.Sprintf("unknown invocation kind %d", kind))
	}
	if err != nil {
		return statusError, encodeResult(nil, err.Error())
	}
	if out == nil {
		out = []byte{}
	}
	return statusOK, encodeResult(out, "")
}

// run calls f and turns a panic into an error.
func run(f func() ([]byte, error)) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

func encodeResult(payload []byte, msg string) []byte {
	e := encoder{b: make([]byte, 0, len(payload)+len(msg)+16)}
	e.array(2)
	e.str(msg)
	e.bin(payload)
	return e.b
}

func decodeChanges(d *decoder) []Change {
	n := d.array()
	batch := make([]Change, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		m := d.array()
		var ch Change
		ch.Key = d.str()
		ch.Value = d.bin()
		ch.Op = d.str()
		ch.Version = d.uint()
		d.rest(m, 4)
		batch = append(batch, ch)
	}
	return batch
}
