package fn

import (
	"fmt"
)

// Ctx is an entry point's handle on the database. It is valid only during
// the call it was passed to.
type Ctx struct {
	key string
}

// Key returns the key the invocation was placed by (POST
// .../invoke?key=K), or "" when it had none.
func (c *Ctx) Key() string { return c.key }

// Host call operations (the op argument of the "call" import).
const (
	opGet    = 1
	opPut    = 2
	opDelete = 3
	opScan   = 4
	opCAS    = 5
)

// Error is a failed host call: Code is the HTTP API's error code
// ("invalid_key", "value_too_large", "unavailable", ...).
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string { return "fn: " + e.Code + ": " + e.Msg }

// call performs a host call and returns a decoder positioned after the
// response's error element, which has already been checked.
func call(op uint32, e *encoder) (*decoder, int, error) {
	resp := hostCall(op, e.b)
	d := &decoder{b: resp}
	n := d.array()
	code := d.str()
	msg := d.str()
	if d.err != nil {
		return nil, 0, fmt.Errorf("fn: bad host response: %w", d.err)
	}
	if code != "" {
		return nil, 0, &Error{Code: code, Msg: msg}
	}
	return d, n - 2, nil
}

// Get returns key's value; found is false when the key is absent.
func (c *Ctx) Get(key string) (value []byte, found bool, err error) {
	value, _, found, err = c.GetVersion(key)
	return value, found, err
}

// GetVersion is Get that also returns the key's version (the Raft index
// that last wrote it), for CompareAndPut.
func (c *Ctx) GetVersion(key string) (value []byte, version uint64, found bool, err error) {
	e := encoder{}
	e.array(1)
	e.str(key)
	d, n, err := call(opGet, &e)
	if err != nil {
		return nil, 0, false, err
	}
	found = d.bool()
	value = d.bin()
	version = d.uint()
	d.rest(n, 3)
	if d.err != nil {
		return nil, 0, false, fmt.Errorf("fn: bad host response: %w", d.err)
	}
	if !found {
		value = nil
	}
	return value, version, found, nil
}

// Put stores value under key.
func (c *Ctx) Put(key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	e := encoder{}
	e.array(2)
	e.str(key)
	e.bin(value)
	_, _, err := call(opPut, &e)
	return err
}

// CompareAndPut stores value under key only if the key is at version
// (version 0: only if the key is absent). ok reports whether it did.
func (c *Ctx) CompareAndPut(key string, value []byte, version uint64) (ok bool, err error) {
	if value == nil {
		value = []byte{}
	}
	e := encoder{}
	e.array(3)
	e.str(key)
	e.bin(value)
	e.uint(version)
	d, n, err := call(opCAS, &e)
	if err != nil {
		return false, err
	}
	ok = d.bool()
	d.rest(n, 1)
	return ok, d.err
}

// Delete removes key (absent keys are not an error).
func (c *Ctx) Delete(key string) error {
	e := encoder{}
	e.array(1)
	e.str(key)
	_, _, err := call(opDelete, &e)
	return err
}

// Scan calls f for each key beginning with prefix, in key order, until f
// returns false. In a Leaf it reads the leaf's shard only; elsewhere it
// reads every shard. Pages are fetched from the host as the scan proceeds.
func (c *Ctx) Scan(prefix string, f func(key string, value []byte) bool) error {
	start := ""
	for {
		e := encoder{}
		e.array(2)
		e.str(prefix)
		e.str(start)
		d, n, err := call(opScan, &e)
		if err != nil {
			return err
		}
		items := d.array()
		stop := false
		for i := 0; i < items && d.err == nil; i++ {
			m := d.array()
			k := d.str()
			v := d.bin()
			d.rest(m, 2)
			if d.err == nil && !stop && !f(k, v) {
				stop = true
			}
		}
		next := d.str()
		more := d.bool()
		d.rest(n, 3)
		if d.err != nil {
			return fmt.Errorf("fn: bad host response: %w", d.err)
		}
		if stop || !more {
			return nil
		}
		start = next
	}
}

// Log appends a line to the function's log on the node running it
// (GET /v1/functions/{name}/logs).
func (c *Ctx) Log(format string, args ...any) {
	hostLog(fmt.Sprintf(format, args...))
}
