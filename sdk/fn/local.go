//go:build !wasip1

package fn

import (
	"errors"
	"sort"
	"strings"
	"sync"
	"time"
)

// Local is an in-memory stand-in for the database, available outside a
// wasip1 build so that handler logic can be unit-tested with go test:
//
//	l := fn.NewLocal()
//	out, err := l.Invoke([]byte("hello"))
//
// It speaks the same msgpack messages as the real host. Only one Local is
// in use at a time (entry points are package-level); calls are serialized.
type Local struct {
	mu      sync.Mutex
	data    map[string]localRecord
	version uint64
	logs    []string
	slept   time.Duration
}

type localRecord struct {
	value   []byte
	version uint64
}

var (
	localMu  sync.Mutex // serializes calls, as a sandbox does
	localCur *Local
)

// NewLocal returns an empty store.
func NewLocal() *Local { return &Local{data: map[string]localRecord{}} }

// Put stores a value directly (for test setup).
func (l *Local) Put(key string, value []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.version++
	l.data[key] = localRecord{append([]byte{}, value...), l.version}
}

// Get reads a value directly (for test assertions).
func (l *Local) Get(key string) ([]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.data[key]
	return r.value, ok
}

// Entrypoints lists the registered entry points ("handle", "changes",
// "leaf", "combine"), as a deploy reports them.
func (l *Local) Entrypoints() []string {
	var out []string
	for _, e := range []struct {
		bit  uint32
		name string
	}{{entryHandle, "handle"}, {entryChanges, "changes"}, {entryLeaf, "leaf"}, {entryCombine, "combine"}} {
		if registered&e.bit != 0 {
			out = append(out, e.name)
		}
	}
	return out
}

// Logs returns the lines handlers logged so far.
func (l *Local) Logs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string{}, l.logs...)
}

// Slept returns the total time handlers asked to Sleep (Local does not
// actually sleep).
func (l *Local) Slept() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.slept
}

// Invoke calls the Handle entry point as POST .../invoke would.
func (l *Local) Invoke(req []byte) ([]byte, error) { return l.InvokeKey("", req) }

// InvokeKey calls the Handle entry point as POST .../invoke?key=K would.
func (l *Local) InvokeKey(key string, req []byte) ([]byte, error) {
	e := encoder{}
	e.array(2)
	e.bin(append([]byte{}, req...))
	e.str(key)
	return l.call(kindHandle, e.b)
}

// Changes calls the OnChanges entry point.
func (l *Local) Changes(batch []Change) error {
	e := encoder{}
	e.array(len(batch))
	for _, c := range batch {
		e.array(4)
		e.str(c.Key)
		e.bin(c.Value)
		e.str(c.Op)
		e.uint(c.Version)
	}
	_, err := l.call(kindChanges, e.b)
	return err
}

// Leaf calls the Leaf entry point over the whole store.
func (l *Local) Leaf(prefix string) ([]byte, error) {
	e := encoder{}
	e.array(1)
	e.str(prefix)
	return l.call(kindLeaf, e.b)
}

// Combine calls the Combine entry point.
func (l *Local) Combine(parts [][]byte) ([]byte, error) {
	e := encoder{}
	e.array(len(parts))
	for _, p := range parts {
		e.bin(p)
	}
	return l.call(kindCombine, e.b)
}

func (l *Local) call(kind uint32, req []byte) ([]byte, error) {
	localMu.Lock()
	defer localMu.Unlock()
	localCur = l
	defer func() { localCur = nil }()
	status, resp := invoke(kind, req)
	d := &decoder{b: resp}
	d.array()
	msg := d.str()
	out := d.bin()
	if d.err != nil {
		return nil, d.err
	}
	if status != statusOK {
		return nil, errors.New(msg)
	}
	return out, nil
}

func current() *Local {
	if localCur == nil {
		panic("fn: Ctx used outside an entry point (outside a wasip1 build, call entry points through a Local)")
	}
	return localCur
}

func hostSleep(ns uint64) {
	l := current()
	l.mu.Lock()
	l.slept += time.Duration(ns)
	l.mu.Unlock()
}

func hostLog(s string) {
	l := current()
	l.mu.Lock()
	l.logs = append(l.logs, s)
	l.mu.Unlock()
}

// localScanPage is the page size of Local scans, small so that tests
// exercise paging.
const localScanPage = 3

// hostCall serves a host call from the in-memory store, decoding and
// encoding the same messages as the real host.
func hostCall(op uint32, req []byte) []byte {
	l := current()
	l.mu.Lock()
	defer l.mu.Unlock()
	d := &decoder{b: req}
	n := d.array()
	key := d.str()
	out := encoder{}
	fail := func(code, msg string) []byte {
		out.b = out.b[:0]
		out.array(2)
		out.str(code)
		out.str(msg)
		return out.b
	}
	if op != opScan && (key == "" || len(key) > 1024) {
		return fail("invalid_key", "keys are 1-1024 bytes")
	}
	switch op {
	case opGet:
		d.rest(n, 1)
		r, ok := l.data[key]
		out.array(5)
		out.str("")
		out.str("")
		out.bool(ok)
		out.bin(r.value)
		out.uint(r.version)
	case opPut, opCAS:
		v := d.bin()
		var want uint64
		if op == opCAS {
			want = d.uint()
			d.rest(n, 3)
		} else {
			d.rest(n, 2)
		}
		if d.err != nil {
			return fail("invalid", d.err.Error())
		}
		r, exists := l.data[key]
		ok := op == opPut || (want == 0 && !exists) || (exists && r.version == want)
		if ok {
			l.version++
			l.data[key] = localRecord{v, l.version}
		}
		out.array(4)
		out.str("")
		out.str("")
		out.bool(ok)
		out.uint(l.version)
	case opDelete:
		d.rest(n, 1)
		_, ok := l.data[key]
		delete(l.data, key)
		out.array(3)
		out.str("")
		out.str("")
		out.bool(ok)
	case opScan:
		start := d.str()
		d.rest(n, 2)
		var keys []string
		for k := range l.data {
			if strings.HasPrefix(k, key) && k >= start {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		more := len(keys) > localScanPage
		next := ""
		if more {
			next = keys[localScanPage]
			keys = keys[:localScanPage]
		}
		out.array(5)
		out.str("")
		out.str("")
		out.array(len(keys))
		for _, k := range keys {
			out.array(2)
			out.str(k)
			out.bin(l.data[k].value)
		}
		out.str(next)
		out.bool(more)
	default:
		return fail("invalid", "unknown host call")
	}
	return out.b
}
