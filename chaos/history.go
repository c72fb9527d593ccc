package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Kind is a register operation.
type Kind uint8

// Register operations. Each write carries a value that is unique in the run,
// so a read names the write it observed.
const (
	Get    Kind = iota // linearizable read
	Put                // unconditional write
	CAS                // write with If-Match: "Expect"
	Create             // write with If-None-Match: *
	Delete             // delete; with Expect > 0, If-Match: "Expect"
	Scan               // one key's part of a linearizable scan: a read
)

var kindNames = [...]string{Get: "get", Put: "put", CAS: "cas", Create: "create", Delete: "delete", Scan: "scan"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// MarshalText writes the kind's name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// writes reports whether k changes the register (when it takes effect).
func (k Kind) writes() bool { return k >= Put && k <= Delete }

// reads reports whether k only reads the register.
func (k Kind) reads() bool { return k == Get || k == Scan }

// Outcome is what the client learned about an operation.
type Outcome uint8

// Outcomes, after Jepsen's ok / fail / info.
const (
	// OK: the operation took effect (or, for a read, returned a value).
	OK Outcome = iota
	// Fail: the operation certainly did not take effect and says nothing
	// about the register — a request that never left the client
	// (connection refused) or that the server refused before proposing it
	// (400). A failed read is a Fail too: it is left out of the check.
	Fail
	// Unknown: the operation may or may not have taken effect — a timeout,
	// a 503/504/500, a connection lost after the request was sent. Its
	// return time is open-ended in the linearizability check.
	Unknown
)

var outcomeNames = [...]string{OK: "ok", Fail: "fail", Unknown: "unknown"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// MarshalText writes the outcome's name.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Op is one register operation from invocation to completion.
type Op struct {
	Client int    `json:"client"` // worker that issued it
	Kind   Kind   `json:"kind"`
	Key    string `json:"key"`
	Node   string `json:"node"`            // node the request was sent to
	Value  string `json:"value,omitempty"` // written value (Put, CAS, Create)
	Expect uint64 `json:"expect,omitempty"`

	Call   int64 `json:"call"`   // nanoseconds since the run started
	Return int64 `json:"return"` // nanoseconds since the run started (Unknown: when the client gave up)

	Outcome Outcome `json:"outcome"`
	Found   bool    `json:"found,omitempty"`   // Get: key present
	Got     string  `json:"got,omitempty"`     // Get: value read
	Version uint64  `json:"version,omitempty"` // Get: version read; writes: version written
	Deleted bool    `json:"deleted,omitempty"` // Delete: whether a key was removed
	// Rejected: with OK, a conditional write whose precondition did not
	// hold (412): it was applied in order and changed nothing.
	Rejected bool   `json:"rejected,omitempty"`
	Final    bool   `json:"final,omitempty"` // a read of the final check
	Err      string `json:"err,omitempty"`
	// ErrClass names the error briefly: "503 unavailable", "client
	// timeout", "connection refused", ...
	ErrClass string `json:"err_class,omitempty"`
}

func (o Op) String() string {
	var in string
	switch o.Kind {
	case Get:
		in = fmt.Sprintf("get(%s)", o.Key)
	case Scan:
		in = fmt.Sprintf("scan(%s)", o.Key)
	case Put:
		in = fmt.Sprintf("put(%s, %s)", o.Key, o.Value)
	case CAS:
		in = fmt.Sprintf("cas(%s, @%d, %s)", o.Key, o.Expect, o.Value)
	case Create:
		in = fmt.Sprintf("create(%s, %s)", o.Key, o.Value)
	case Delete:
		in = fmt.Sprintf("delete(%s)", o.Key)
		if o.Expect > 0 {
			in = fmt.Sprintf("delete(%s, @%d)", o.Key, o.Expect)
		}
	}
	var out string
	switch {
	case o.Outcome != OK:
		out = o.Outcome.String()
	case o.Rejected:
		out = "412"
	case o.Kind.reads() && !o.Found:
		out = "absent"
	case o.Kind.reads():
		out = fmt.Sprintf("%s@%d", o.Got, o.Version)
	case o.Kind == Delete:
		out = fmt.Sprintf("deleted=%v", o.Deleted)
	default:
		out = fmt.Sprintf("@%d", o.Version)
	}
	return fmt.Sprintf("c%d %s via %s -> %s", o.Client, in, o.Node, out)
}

// History records operations from many goroutines. Timestamps come from
// one monotonic clock started by NewHistory.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewHistory starts a history's clock.
func NewHistory() *History { return &History{start: time.Now()} }

// Now returns the history's clock: nanoseconds since it started.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records a completed (or abandoned) operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of every operation recorded so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// WriteJSONL writes ops as one JSON object per line.
func WriteJSONL(w io.Writer, ops []Op) error {
	enc := json.NewEncoder(w)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			return err
		}
	}
	return nil
}
