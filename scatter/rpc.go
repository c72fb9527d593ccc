package scatter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/lambda"
	"lambdadb/shard"
)

// RPCPath is the internal RPC route of sub-queries (register
// Executor.InternalHandler there).
const RPCPath = shard.ExtPrefix + "scatter"

// maxRPCBody bounds a sub-query request.
const maxRPCBody = 1 << 20

// wireQuery is a Query on the internal wire.
type wireQuery struct {
	Prefix      string `msgpack:"p"`
	Start       string `msgpack:"s"`
	End         string `msgpack:"e"`
	Aggregate   *Spec  `msgpack:"a"`
	Function    string `msgpack:"f"`
	Version     uint64 `msgpack:"v"`
	Consistency int    `msgpack:"c"`
	Session     string `msgpack:"t"`
	Namespace   string `msgpack:"ns,omitempty"`
}

func toWire(q Query) wireQuery {
	w := wireQuery{Prefix: q.Prefix, Start: q.Start, End: q.End, Aggregate: q.Aggregate,
		Function: q.Function, Version: q.FunctionVersion, Consistency: int(q.Consistency), Namespace: q.Namespace}
	if q.Session != nil {
		w.Session = q.Session.Encode()
	}
	return w
}

func (w wireQuery) query() (Query, error) {
	q := Query{Prefix: w.Prefix, Start: w.Start, End: w.End, Aggregate: w.Aggregate,
		Function: w.Function, FunctionVersion: w.Version, Consistency: shard.Consistency(w.Consistency), Namespace: w.Namespace}
	if w.Session != "" {
		t, err := session.Decode(w.Session)
		if err != nil {
			return q, fmt.Errorf("%w: %w", ErrInvalidQuery, err)
		}
		q.Session = t
	}
	return q, q.Validate()
}

// subReq asks a node to execute a sub-tree.
type subReq struct {
	Query     wireQuery `msgpack:"q"`
	Plan      planNode  `msgpack:"plan"`
	TimeoutMS int64     `msgpack:"timeout_ms"`
}

// subResp is a sub-tree's outcome.
type subResp struct {
	Code     string             `msgpack:"code"` // a fatal error's code ("" = none)
	Msg      string             `msgpack:"msg"`
	Part     []byte             `msgpack:"part"`
	Covered  []int              `msgpack:"covered"`
	Failed   map[int]failure    `msgpack:"failed"`
	Leaves   []LeafStat         `msgpack:"leaves"`
	Levels   map[int]*LevelStat `msgpack:"levels"`
	Gathered uint64             `msgpack:"gathered"`
	Nodes    []string           `msgpack:"nodes"`
	Height   int                `msgpack:"height"`
	Retries  int                `msgpack:"retries"`
	Hedges   int                `msgpack:"hedges"`
}

// Codes of fatal errors on the wire, mapped back to their sentinels.
var fatalCodes = []struct {
	code string
	err  error
}{
	{"stack_overflow", lambda.ErrStackOverflow}, // before handler_error, which it matches too
	{"handler_error", lambda.ErrHandler},
	{"memory_limit", lambda.ErrMemoryLimit},
	{"timeout", lambda.ErrTimeout},
	{"not_found", lambda.ErrNotFound},
	{"conflict", lambda.ErrConflict},
	{"no_entrypoint", lambda.ErrNoEntrypoint},
	{"request_too_large", lambda.ErrRequestTooLarge},
	{"too_many_groups", ErrTooManyGroups}, // before invalid_query, which it matches too
	{"invalid_query", ErrInvalidQuery},
	{"no_functions", ErrNoFunctions},
}

func fatalCode(err error) string {
	for _, c := range fatalCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

func fatalError(code, msg string) error {
	for _, c := range fatalCodes {
		if c.code == code {
			return fmt.Errorf("%w (remote: %s)", c.err, msg)
		}
	}
	return fmt.Errorf("scatter: remote: %s", msg)
}

// remote executes plan on node p and returns its outcome; err reports an
// attempt that failed as a whole.
func (x *Executor) remote(ctx context.Context, q Query, p shard.Peer, plan planNode) (outcome, error) {
	req := subReq{Query: toWire(q), Plan: plan}
	if d, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(time.Until(d).Milliseconds(), 1)
	}
	addr := x.addrOf(p.ID)
	if addr == "" {
		return outcome{}, fmt.Errorf("scatter: %s is not a member", p.ID)
	}
	var raw msgpack.RawMessage
	if err := x.cfg.Cluster.CallInternal(ctx, addr, RPCPath, req, &raw); err != nil {
		return outcome{}, err
	}
	var resp subResp
	if err := msgpack.Unmarshal(raw, &resp); err != nil {
		return outcome{}, fmt.Errorf("scatter: bad sub-query response from %s: %w", p.ID, err)
	}
	o := outcome{
		part: resp.Part, covered: map[int]struct{}{}, failed: resp.Failed, leaves: resp.Leaves,
		levels: resp.Levels, gathered: resp.Gathered + uint64(len(raw)), nodes: map[string]struct{}{},
		height: resp.Height, retries: resp.Retries, hedges: resp.Hedges,
	}
	if resp.Code == codeBusy {
		return outcome{}, fmt.Errorf("%w: %s: %s", ErrOverloaded, p.ID, resp.Msg)
	}
	if resp.Code != "" {
		o.fatal = fatalError(resp.Code, resp.Msg)
		return o, nil
	}
	if o.failed == nil {
		o.failed = map[int]failure{}
	}
	if o.levels == nil {
		o.levels = map[int]*LevelStat{}
	}
	want := map[int]bool{}
	for _, s := range plan.allShards() {
		want[s] = true
	}
	for _, s := range resp.Covered {
		if !want[s] {
			return outcome{}, fmt.Errorf("scatter: %s answered for shard %d it was not asked", p.ID, s)
		}
		o.covered[s] = struct{}{}
	}
	for _, id := range resp.Nodes {
		o.nodes[id] = struct{}{}
	}
	return o, nil
}

// InternalHandler serves sub-queries from other nodes (at RPCPath).
func (x *Executor) InternalHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp := x.serveSub(r)
		switch resp.Code {
		case "":
			x.m.subs.WithLabelValues("ok").Inc()
		case codeBusy:
			x.m.subs.WithLabelValues("refused").Inc()
		case "invalid_query", "too_many_groups":
			x.m.subs.WithLabelValues("invalid").Inc()
		default:
			x.m.subs.WithLabelValues("failed").Inc()
		}
		b, err := msgpack.Marshal(resp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/msgpack")
		_, _ = w.Write(b)
	})
}

// codeBusy answers a sub-query the node has no room for (retryable).
const codeBusy = "busy"

func (x *Executor) serveSub(r *http.Request) subResp {
	select {
	case x.subs <- struct{}{}:
		defer func() { <-x.subs }()
	default:
		return subResp{Code: codeBusy, Msg: fmt.Sprintf("scatter: %s runs %d sub-queries (the limit)", x.cfg.Cluster.ID(), cap(x.subs))}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody+1))
	if err == nil && len(body) > maxRPCBody {
		err = errors.New("request too large")
	}
	var req subReq
	if err == nil {
		err = msgpack.Unmarshal(body, &req)
	}
	if err != nil {
		return subResp{Code: "invalid_query", Msg: "scatter: bad sub-query: " + err.Error()}
	}
	q, err := req.Query.query()
	if err != nil {
		return subResp{Code: fatalCode(err), Msg: err.Error()}
	}
	if req.Plan.ID != x.cfg.Cluster.ID() {
		return subResp{Code: "invalid_query", Msg: fmt.Sprintf("scatter: sub-query for %s sent to %s", req.Plan.ID, x.cfg.Cluster.ID())}
	}
	if err := x.checkPlan(req.Plan, 0, map[int]bool{}, map[string]bool{}); err != nil {
		return subResp{Code: "invalid_query", Msg: err.Error()}
	}
	ctx := r.Context()
	// The root passes its remaining time; the node's own default applies
	// only to a request without one.
	timeout := x.cfg.QueryTimeout
	if req.TimeoutMS > 0 {
		timeout = min(time.Duration(req.TimeoutMS)*time.Millisecond, MaxQueryTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	o := x.execute(ctx, q, req.Plan, false)
	if o.fatal != nil {
		return subResp{Code: fatalCode(o.fatal), Msg: o.fatal.Error()}
	}
	resp := subResp{Part: o.part, Failed: o.failed, Leaves: o.leaves, Levels: o.levels, Gathered: o.gathered,
		Height: o.height, Retries: o.retries, Hedges: o.hedges}
	for s := range o.covered {
		resp.Covered = append(resp.Covered, s)
	}
	sort.Ints(resp.Covered)
	for id := range o.nodes {
		resp.Nodes = append(resp.Nodes, id)
	}
	sort.Strings(resp.Nodes)
	return resp
}

// maxPlanDepth bounds a sub-query's tree (fan-in 2 over 2^16 nodes).
const maxPlanDepth = 16

// checkPlan validates a received sub-tree: members of this cluster only
// (a sub-query never makes a node call an address of the sender's
// choosing), each member once, each with shards (the receiver may have
// only children), at most as many children as members, shards in range
// and each once, bounded depth — so a sub-query costs at most one call per
// member.
func (x *Executor) checkPlan(p planNode, depth int, seen map[int]bool, nodes map[string]bool) error {
	if depth > maxPlanDepth {
		return fmt.Errorf("scatter: sub-query deeper than %d levels", maxPlanDepth)
	}
	if x.addrOf(p.ID) == "" && p.ID != x.cfg.Cluster.ID() {
		return fmt.Errorf("scatter: sub-query names %q, not a member", p.ID)
	}
	if nodes[p.ID] {
		return fmt.Errorf("scatter: sub-query names %s twice", p.ID)
	}
	nodes[p.ID] = true
	if depth > 0 && len(p.Shards) == 0 {
		return fmt.Errorf("scatter: sub-query gives %s no shards", p.ID)
	}
	if len(p.Children) > len(x.cfg.Cluster.Peers()) {
		return fmt.Errorf("scatter: sub-query gives %s %d children", p.ID, len(p.Children))
	}
	n := x.cfg.Cluster.Shards()
	for _, s := range p.Shards {
		if s < 0 || s >= n || seen[s] {
			return fmt.Errorf("scatter: sub-query names shard %d out of range or twice", s)
		}
		seen[s] = true
	}
	for _, c := range p.Children {
		if err := x.checkPlan(c, depth+1, seen, nodes); err != nil {
			return err
		}
	}
	return nil
}

// addrOf is member id's configured address ("" for none).
func (x *Executor) addrOf(id string) string {
	for _, p := range x.cfg.Cluster.Peers() {
		if p.ID == id {
			return p.Addr
		}
	}
	return ""
}

// encodePartial and decodePartial carry built-in partials between nodes.
func encodePartial(p *Partial) ([]byte, error) {
	b, err := msgpack.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("scatter: encode partial: %w", err)
	}
	return b, nil
}

func decodePartial(b []byte) (*Partial, error) {
	p := NewPartial()
	if err := msgpack.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("scatter: decode partial: %w", err)
	}
	if p.Groups == nil {
		p.Groups = map[string]*Acc{}
	}
	for g, a := range p.Groups {
		if a == nil {
			delete(p.Groups, g)
		}
	}
	return p, nil
}
