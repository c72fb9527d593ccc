package lambda

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Host call operations (sdk/fn ctx.go).
const (
	opGet    = 1
	opPut    = 2
	opDelete = 3
	opScan   = 4
	opCAS    = 5
)

// Limits of the host API.
const (
	hostScanLimit = 1000
	// maxResponseFraming is what the response envelope [error str,
	// payload bin] adds around its payload (or its error) at most: a
	// fixarray byte and str32 and bin32 headers. MaxMessageBytes bounds
	// the payload itself.
	maxResponseFraming = 1 + 5 + 5
)

// callState is one invocation as the host functions see it. It travels in
// the call's context.
type callState struct {
	e  *Engine
	fn *Function

	req       []byte // the msgpack request message
	resp      []byte // the msgpack response message (unread when too large)
	respLen   uint32 // its length
	responded bool
	pending   []byte // a host call result awaiting the "result" import

	tok session.Token
	ro  shard.Consistency

	kvCalls int
	kvBytes int64
	fault   string // why the host aborted the call

	tx   *txBuffer    // OnChanges with buffered writes (changes.go)
	leaf LeafScanFunc // a Leaf's scan, restricted to its shard (scatter.go)

	infra error // a host call that failed for the cluster's reasons (no leader, closing)

	line []byte // partial output line
}

type callKey struct{}

func stateOf(ctx context.Context) *callState {
	cs, _ := ctx.Value(callKey{}).(*callState)
	return cs
}

// hostFault aborts the guest: the call fails and the instance is dropped.
func (cs *callState) hostFault(format string, args ...any) {
	cs.fault = fmt.Sprintf(format, args...)
	panic(errors.New("lambda: " + cs.fault))
}

// read copies n bytes at ptr out of the guest's memory.
func (cs *callState) read(m api.Module, ptr, n uint32, what string) []byte {
	return cs.readUpTo(m, ptr, n, MaxMessageBytes, what)
}

// readUpTo is read of a message of at most limit bytes.
func (cs *callState) readUpTo(m api.Module, ptr, n, limit uint32, what string) []byte {
	if n > limit {
		cs.hostFault("%s of %d bytes exceeds %d", what, n, limit)
	}
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		cs.hostFault("%s: out-of-bounds buffer [%d, +%d)", what, ptr, n)
	}
	return append([]byte(nil), b...)
}

func (cs *callState) write(m api.Module, ptr uint32, b []byte, what string) {
	if !m.Memory().Write(ptr, b) {
		cs.hostFault("%s: out-of-bounds buffer [%d, +%d)", what, ptr, len(b))
	}
}

// output receives the guest's stdout and stderr, line by line.
func (cs *callState) output(p []byte) {
	for len(p) > 0 {
		i := indexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		// Lines are cut at LogLineBytes; the rest of a long line is dropped.
		if room := cs.e.cfg.LogLineBytes - len(cs.line); room > 0 {
			cs.line = append(cs.line, chunk[:min(len(chunk), room)]...)
		}
		if i < 0 {
			return
		}
		cs.e.appendLog(cs.fn.Name, string(cs.line))
		cs.line = cs.line[:0]
		p = p[i+1:]
	}
}

func (cs *callState) flushOutput() {
	if len(cs.line) > 0 {
		cs.e.appendLog(cs.fn.Name, string(cs.line))
		cs.line = cs.line[:0]
	}
}

func indexByte(p []byte, c byte) int {
	for i, b := range p {
		if b == c {
			return i
		}
	}
	return -1
}

// instantiateHost defines the "lambdadb" host module in r.
func (e *Engine) instantiateHost(ctx context.Context, r wazero.Runtime) error {
	i32 := api.ValueTypeI32
	i64 := api.ValueTypeI64
	b := r.NewHostModuleBuilder(hostModuleName)
	def := func(name string, f api.GoModuleFunc, params, results []api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(f, params, results).Export(name)
	}
	def("request", func(ctx context.Context, m api.Module, stack []uint64) {
		cs := stateOf(ctx)
		ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
		if int(n) != len(cs.req) {
			cs.hostFault("request: asked for %d bytes, the request has %d", n, len(cs.req))
		}
		cs.write(m, ptr, cs.req, "request")
	}, []api.ValueType{i32, i32}, nil)
	def("respond", func(ctx context.Context, m api.Module, stack []uint64) {
		cs := stateOf(ctx)
		ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
		cs.responded, cs.respLen = true, n
		if n > MaxMessageBytes+maxResponseFraming {
			return // too large to hold a payload within the limit; run says so
		}
		cs.resp = cs.readUpTo(m, ptr, n, MaxMessageBytes+maxResponseFraming, "response")
	}, []api.ValueType{i32, i32}, nil)
	def("call", func(ctx context.Context, m api.Module, stack []uint64) {
		cs := stateOf(ctx)
		op := api.DecodeU32(stack[0])
		req := cs.read(m, api.DecodeU32(stack[1]), api.DecodeU32(stack[2]), "host call")
		out, outCap := api.DecodeU32(stack[3]), api.DecodeU32(stack[4])
		resp := e.hostCall(ctx, cs, op, req)
		cs.kvCalls++
		cs.kvBytes += int64(len(req) + len(resp))
		if uint32(len(resp)) <= outCap {
			cs.write(m, out, resp, "host call result")
			cs.pending = nil
		} else {
			cs.pending = resp
		}
		stack[0] = api.EncodeU32(uint32(len(resp)))
	}, []api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32})
	def("result", func(ctx context.Context, m api.Module, stack []uint64) {
		cs := stateOf(ctx)
		ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
		if cs.pending == nil || int(n) != len(cs.pending) {
			cs.hostFault("result: no pending result of %d bytes", n)
		}
		cs.write(m, ptr, cs.pending, "result")
		cs.pending = nil
	}, []api.ValueType{i32, i32}, nil)
	def("log", func(ctx context.Context, m api.Module, stack []uint64) {
		cs := stateOf(ctx)
		ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
		if n > uint32(e.cfg.LogLineBytes) {
			n = uint32(e.cfg.LogLineBytes)
		}
		line := cs.read(m, ptr, n, "log")
		e.appendLog(cs.fn.Name, string(line))
	}, []api.ValueType{i32, i32}, nil)
	def("sleep", func(ctx context.Context, m api.Module, stack []uint64) {
		d := time.Duration(int64(stack[0]))
		if d <= 0 {
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			// Return: the guest is closed at its next function call or
			// loop (WithCloseOnContextDone), which also frees its memory —
			// a panic here would skip that.
		}
	}, []api.ValueType{i64}, nil)
	_, err := b.Instantiate(ctx)
	if err != nil {
		return fmt.Errorf("lambda: host module: %w", err)
	}
	return nil
}

// Host call messages (msgpack arrays; see docs/handlers.md).
type keyReq struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Key      string
}

type putReq struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Key      string
	Value    []byte
}

type casReq struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Key      string
	Value    []byte
	Version  uint64 // 0 = only if absent
}

type scanReq struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Prefix   string
	Start    string
}

// hostCall serves one KV call and returns its msgpack response: an array
// whose first two elements are an error code and message ("" when fine).
func (e *Engine) hostCall(ctx context.Context, cs *callState, op uint32, req []byte) []byte {
	fail := func(err error) []byte {
		if code := kvCode(err); code == "unavailable" || code == "closed" {
			cs.infra = err
		}
		return encodeHost(kvCode(err), err.Error())
	}
	ro := shard.ReadOptions{Consistency: cs.ro, Session: cs.tok}
	// A handler runs in its function's namespace: every key it names is a
	// user key of that namespace (valid UTF-8, so it cannot name another
	// namespace's stored key), and every key it is shown is one.
	ns := cs.fn.Namespace()
	stored := func(k string) (string, error) {
		if err := shard.ValidateKey(k); err != nil {
			return "", err
		}
		return namespace.Key(ns, k), nil
	}
	switch op {
	case opGet:
		var r keyReq
		if err := msgpack.Unmarshal(req, &r); err != nil {
			return fail(fmt.Errorf("%w: get: %v", errBadHostCall, err))
		}
		key, err := stored(r.Key)
		if err != nil {
			return fail(err)
		}
		if op, ok := cs.tx.lookup(key); ok {
			if op.Delete {
				return encodeHost("", "", false, nil, uint64(0))
			}
			return encodeHost("", "", true, op.Value, uint64(0))
		}
		res, err := e.cfg.Store.GetIn(ctx, shard.UserSpace, key, ro)
		cs.tok = res.Session
		if err != nil {
			return fail(err)
		}
		return encodeHost("", "", res.Found, res.Record.Value, res.Record.Version)
	case opPut, opCAS:
		var r casReq
		var err error
		if op == opCAS {
			err = msgpack.Unmarshal(req, &r)
		} else {
			var p putReq
			err = msgpack.Unmarshal(req, &p)
			r.Key, r.Value = p.Key, p.Value
		}
		if err != nil {
			return fail(fmt.Errorf("%w: put: %v", errBadHostCall, err))
		}
		key, err := stored(r.Key)
		if err != nil {
			return fail(err)
		}
		if cs.tx != nil && !cs.tx.direct {
			if op == opPut && cs.tx.add(shard.Op{Key: key, Value: r.Value}) {
				return encodeHost("", "", true, uint64(0))
			}
			if err := e.flush(ctx, cs); err != nil {
				return fail(err)
			}
		}
		var cond shard.Cond
		if op == opCAS {
			if r.Version == 0 {
				cond.IfNoneMatch = true
			} else {
				v := r.Version
				cond.IfMatch = &v
			}
		}
		res, err := e.cfg.Store.Put(ctx, key, r.Value, cond, cs.tok)
		cs.tok = res.Session
		if op == opCAS && errors.Is(err, shard.ErrPrecondition) {
			return encodeHost("", "", false, res.Version)
		}
		if err != nil {
			return fail(err)
		}
		return encodeHost("", "", true, res.Version)
	case opDelete:
		var r keyReq
		if err := msgpack.Unmarshal(req, &r); err != nil {
			return fail(fmt.Errorf("%w: delete: %v", errBadHostCall, err))
		}
		key, err := stored(r.Key)
		if err != nil {
			return fail(err)
		}
		if cs.tx != nil && !cs.tx.direct {
			if cs.tx.add(shard.Op{Key: key, Delete: true}) {
				return encodeHost("", "", true)
			}
			if err := e.flush(ctx, cs); err != nil {
				return fail(err)
			}
		}
		res, err := e.cfg.Store.Delete(ctx, key, shard.Cond{}, cs.tok)
		cs.tok = res.Session
		if err != nil {
			return fail(err)
		}
		return encodeHost("", "", res.Deleted)
	case opScan:
		var r scanReq
		if err := msgpack.Unmarshal(req, &r); err != nil {
			return fail(fmt.Errorf("%w: scan: %v", errBadHostCall, err))
		}
		for _, b := range []string{r.Prefix, r.Start} {
			if err := namespace.ValidatePrefix(b); err != nil {
				return fail(fmt.Errorf("%w: %v", shard.ErrInvalidScan, err))
			}
		}
		// The stored bounds cannot leave the namespace, whatever the
		// prefix and start.
		lo, hi := namespace.Range(ns, r.Prefix, r.Start, "")
		prefix := namespace.Prefix(ns, r.Prefix)
		var res shard.ScanResult
		var err error
		if cs.leaf != nil {
			res.Items, res.Next, res.More, err = cs.leaf(ctx, prefix, lo, hostScanLimit)
			res.Session = cs.tok
		} else {
			res, err = e.cfg.Store.ScanIn(ctx, shard.UserSpace, shard.ScanRequest{Prefix: prefix, Start: lo, End: hi, Limit: hostScanLimit}, ro)
		}
		cs.tok = res.Session
		if err != nil {
			return fail(err)
		}
		items := make([][2]any, 0, len(res.Items))
		next, more := "", res.More
		for _, it := range res.Items {
			k, ok := namespace.Strip(ns, it.Key)
			if !ok || it.Key >= hi {
				// Past the namespace (a leaf's shard scan of Default's
				// empty prefix reaches the other namespaces, which sort
				// after it): the scan ends here.
				more = false
				break
			}
			items = append(items, [2]any{k, it.Value})
		}
		if more {
			if k, ok := namespace.Strip(ns, res.Next); ok && res.Next < hi {
				next = k
			} else {
				more = false
			}
		}
		return encodeHost("", "", items, next, more)
	}
	return fail(fmt.Errorf("%w: unknown operation %d", errBadHostCall, op))
}

var errBadHostCall = errors.New("lambda: bad host call")

func encodeHost(code, msg string, fields ...any) []byte {
	b, err := msgpack.Marshal(append([]any{code, msg}, fields...))
	if err != nil {
		b, _ = msgpack.Marshal([]any{"internal", err.Error()})
	}
	return b
}

// kvCode is the error code a guest sees for a failed host call; the codes
// are the HTTP API's.
func kvCode(err error) string {
	switch {
	case errors.Is(err, errBadHostCall):
		return "invalid"
	case errors.Is(err, shard.ErrInvalidKey):
		return "invalid_key"
	case errors.Is(err, shard.ErrValueTooLarge):
		return "value_too_large"
	case errors.Is(err, shard.ErrPrecondition):
		return "precondition_failed"
	case errors.Is(err, shard.ErrInvalidScan):
		return "invalid_scan"
	case errors.Is(err, shard.ErrNotLeader), errors.Is(err, shard.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, shard.ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	}
	return "internal"
}
