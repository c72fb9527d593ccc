package scatter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"lambdadb/internal/session"
	"lambdadb/namespace"
	"lambdadb/shard"
)

// Errors of a query.
var (
	// ErrInvalidQuery is a query that cannot run as written.
	ErrInvalidQuery = errors.New("scatter: invalid query")
	// ErrIncomplete is a query some shards of which no replica could
	// answer; the error names them (see IncompleteError).
	ErrIncomplete = errors.New("scatter: query incomplete")
	// ErrOverloaded is a node running as many queries as it admits.
	ErrOverloaded = errors.New("scatter: too many queries")
	// ErrNoFunctions is a function query on a node without a function
	// engine.
	ErrNoFunctions = errors.New("scatter: functions are not enabled on this node")
	// ErrTooManyGroups is a built-in aggregate whose group_by makes more
	// groups than an answer may hold (Config.MaxGroups). It is an
	// ErrInvalidQuery too.
	ErrTooManyGroups = fmt.Errorf("%w: too many groups", ErrInvalidQuery)
)

// IncompleteError names the shards a query could not read. It wraps
// ErrIncomplete, and context.DeadlineExceeded when the query ran out of
// time.
type IncompleteError struct {
	// Missing lists the shards no replica could answer; when the query
	// ran out of time instead, every shard not read by then.
	Missing []int
	Errors  map[int]string   // why, per shard (the last replica's error)
	Tried   map[int][]string // nodes tried, per shard
	// TimedOut reports that the query's deadline passed first.
	TimedOut bool
}

func (e *IncompleteError) Error() string {
	msg := fmt.Sprintf("scatter: query incomplete: no replica answered for shards %v", e.Missing)
	if e.TimedOut {
		msg = fmt.Sprintf("scatter: query incomplete: shards %v not read before the query's deadline", e.Missing)
	}
	if len(e.Missing) > 0 {
		s := e.Missing[0]
		msg += fmt.Sprintf(" (shard %d, tried %v: %s)", s, e.Tried[s], e.Errors[s])
	}
	return msg
}

func (e *IncompleteError) Unwrap() []error {
	if e.TimedOut {
		return []error{ErrIncomplete, context.DeadlineExceeded}
	}
	return []error{ErrIncomplete}
}

// Query is one scatter/gather query: either a built-in Aggregate or a
// Function exporting Leaf and Combine, over the user records whose keys
// begin with Prefix and lie in [Start, End) (empty bounds are unbounded).
//
// Prefix, Start and End are user keys of Namespace ("" is
// namespace.Default): the query reads that namespace's records only and
// shows their user keys (to an aggregate, and to a function's Leaf, whose
// scans are kept to the namespace by the handler's confinement). Function
// is the function's stored name (namespace.Name).
type Query struct {
	Prefix    string
	Start     string
	End       string
	Namespace string

	Aggregate *Spec
	Function  string
	// FunctionVersion pins the deploy of Function every leaf and combine
	// runs (0: the version current when the query starts, read
	// linearizably). A function redeployed while the query runs fails it
	// with lambda.ErrConflict rather than mixing two versions.
	FunctionVersion uint64

	// Consistency of the leaves' reads: Stale and Session may read
	// followers, Linearizable reads leaders (the zero value).
	Consistency shard.Consistency
	// Session is the caller's token (Session consistency).
	Session session.Token

	// Timeout bounds the whole query (0: Config.QueryTimeout).
	Timeout time.Duration
}

// Validate checks the query.
func (q Query) Validate() error {
	switch {
	case q.Aggregate == nil && q.Function == "":
		return fmt.Errorf("%w: give an aggregate or a function", ErrInvalidQuery)
	case q.Aggregate != nil && q.Function != "":
		return fmt.Errorf("%w: give an aggregate or a function, not both", ErrInvalidQuery)
	case q.FunctionVersion != 0 && q.Function == "":
		return fmt.Errorf("%w: a function version without a function", ErrInvalidQuery)
	case q.End != "" && q.Start >= q.End:
		return fmt.Errorf("%w: start %q is not before end %q", ErrInvalidQuery, q.Start, q.End)
	case q.Namespace != "" && namespace.Validate(q.Namespace) != nil:
		return fmt.Errorf("%w: namespace %q", ErrInvalidQuery, q.Namespace)
	case namespace.ValidatePrefix(q.Prefix) != nil || namespace.ValidatePrefix(q.Start) != nil || namespace.ValidatePrefix(q.End) != nil:
		return fmt.Errorf("%w: prefix, start and end must be valid UTF-8", ErrInvalidQuery)
	case q.Timeout < 0 || q.Timeout > MaxQueryTimeout:
		return fmt.Errorf("%w: timeout %v outside 0..%v", ErrInvalidQuery, q.Timeout, MaxQueryTimeout)
	}
	if q.Aggregate != nil {
		if err := q.Aggregate.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidQuery, err)
		}
	}
	switch q.Consistency {
	case shard.Linearizable, shard.Session, shard.Stale:
	default:
		return fmt.Errorf("%w: consistency %d", ErrInvalidQuery, q.Consistency)
	}
	return nil
}

// bounds returns the query's stored key range [lo, hi) in bytes, inside
// its namespace.
func (q Query) bounds() (lo, hi []byte) {
	l, h := namespace.Range(q.Namespace, q.Prefix, q.Start, q.End)
	return []byte(l), []byte(h)
}

// prefixEnd is the first key after every key beginning with p (nil: none).
func prefixEnd(p string) []byte {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}
