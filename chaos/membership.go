package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"lambdadb/internal/loopback"
	"lambdadb/shard"
)

// Membership changes the harness makes through the nodes' HTTP API:
// nodes join (a new process with an empty data directory and --join),
// are decommissioned (POST /v1/cluster/nodes/{id}/decommission, the
// process stopped once the cluster marks it decommissioned) or removed
// (kill -9, then DELETE /v1/cluster/nodes/{id}). The cluster moves
// replicas by itself after each; MoveWatcher records the moves.

// gone reports whether a membership state means the node left the
// cluster (its process is stopped for good).
func gone(state string) bool {
	return state == shard.StateRemoved || state == shard.StateDecommissioned
}

// errRefused is a membership change the cluster refused (409 conflict).
var errRefused = errors.New("refused")

// Join starts a new node (the next unused id, a free address, an empty
// data directory) that joins the cluster through member through, waits up
// to wait until it answers, gives it the fault rules in force and makes
// it a running member. A node that does not come up is stopped and
// returned with the error.
func (c *Cluster) Join(ctx context.Context, through *Proc, wait time.Duration) (*Proc, error) {
	c.mu.Lock()
	id := fmt.Sprintf("n%d", c.nextID)
	c.nextID++
	c.mu.Unlock()
	addrs, err := loopback.FreeAddrs(1)
	if err != nil {
		return nil, err
	}
	p, err := c.newProc(id, addrs[0], "--join", through.Addr)
	if err != nil {
		return nil, err
	}
	if err := p.start(); err != nil {
		p.logf.Close()
		return nil, err
	}
	p.mu.Lock()
	p.state = Starting
	p.mu.Unlock()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()

	deadline := time.Now().Add(wait)
	var last error
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(sctx, p)
		cancel()
		if err == nil && st.Node == id {
			break
		}
		if err == nil {
			err = fmt.Errorf("answered as %q", st.Node)
		}
		last = err
		if p.exited() {
			p.retire("its join failed", true)
			return p, fmt.Errorf("chaos: %s exited while joining through %s (%v); log: %s", id, through.ID, last, logTail(c.dir, id))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.retire("its join timed out", true)
			return p, fmt.Errorf("chaos: %s did not answer within %v of joining through %s: %v", id, wait, through.ID, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.mu.Lock()
	if p.state == Starting {
		p.state = Running
	}
	p.mu.Unlock()
	return p, c.giveRules(ctx, p)
}

// logTail returns the last lines of node id's log, on one line.
func logTail(dir, id string) string {
	b, err := os.ReadFile(filepath.Join(dir, id+".log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " | ")
}

// Decommission asks the cluster, through a running member, to
// decommission node id: nil once it accepted (202), errRefused when it
// answered 409 (the others could not hold every replica). Other failures
// are retried for up to wait.
func (c *Cluster) Decommission(ctx context.Context, id string, wait time.Duration) error {
	return c.membershipCall(ctx, http.MethodPost, "/v1/cluster/nodes/"+id+"/decommission", "", http.StatusAccepted, false, wait)
}

// Remove asks the cluster, through a running member other than id, to
// forget node id, which must be down. A 409 (the cluster still sees it
// up) is retried like any failure for up to wait.
func (c *Cluster) Remove(ctx context.Context, id string, wait time.Duration) error {
	return c.membershipCall(ctx, http.MethodDelete, "/v1/cluster/nodes/"+id, id, http.StatusOK, true, wait)
}

func (c *Cluster) membershipCall(ctx context.Context, method, path, avoid string, want int, retryConflict bool, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	var last error
	for attempt := 0; ; attempt++ {
		var via []*Proc
		for _, p := range c.Running() {
			if p.ID != avoid {
				via = append(via, p)
			}
		}
		if len(via) > 0 {
			p := via[attempt%len(via)]
			status, body, err := c.do(ctx, method, p, path)
			switch {
			case err != nil:
				last = fmt.Errorf("via %s: %w", p.ID, err)
			case status == want:
				return nil
			case status == http.StatusConflict && !retryConflict:
				return fmt.Errorf("%w: %s", errRefused, apiMessage(body))
			default:
				last = fmt.Errorf("via %s: status %d: %s", p.ID, status, apiMessage(body))
			}
		} else {
			last = errors.New("no running member to ask")
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: %s %s: %w", method, path, last)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (c *Cluster) do(ctx context.Context, method string, p *Proc, path string) (int, []byte, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := c.newRequest(rctx, method, p, path, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// apiMessage extracts "code: error" from a JSON error answer.
func apiMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return e.Code + ": " + e.Error
	}
	return string(bytes.TrimSpace(body))
}

// View returns /v1/cluster as the first running member that answers
// sees it.
func (c *Cluster) View(ctx context.Context) (shard.ClusterStatus, *Proc, error) {
	last := errors.New("no running member")
	for _, p := range c.Running() {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(sctx, p)
		cancel()
		if err == nil {
			return st, p, nil
		}
		last = err
	}
	return shard.ClusterStatus{}, nil, last
}

// nodeState returns node id's membership state in st ("" if absent).
func nodeState(st shard.ClusterStatus, id string) string {
	for _, n := range st.Nodes {
		if n.ID == id {
			return n.State
		}
	}
	return ""
}

// MoveRecord is one replica move the watcher saw in flight.
type MoveRecord struct {
	Shard     string
	From, To  string
	Phases    []string // in the order seen
	FirstSeen int64    // history clock
	LastSeen  int64
	Done      bool // no longer in flight
}

func (m MoveRecord) String() string {
	from := m.From
	if from == "" {
		from = "(new)"
	}
	state := "in flight"
	if m.Done {
		state = "done"
	}
	return fmt.Sprintf("shard %s %s→%s, %s, seen %.1fs–%.1fs (%s)", m.Shard, from, m.To, strings.Join(m.Phases, "→"),
		float64(m.FirstSeen)/1e9, float64(m.LastSeen)/1e9, state)
}

// MoveWatcher polls GET /v1/cluster/moves through running members and
// records every move it sees, from its first sighting to when it is no
// longer in flight.
type MoveWatcher struct {
	Cluster *Cluster
	History *History
	// Every is the polling interval. Default 500ms.
	Every time.Duration

	mu    sync.Mutex
	moves map[string]*MoveRecord // by shard, from, to and start
	order []string
	polls int
	fails int
}

// Run polls until ctx ends.
func (w *MoveWatcher) Run(ctx context.Context) {
	if w.Every <= 0 {
		w.Every = 500 * time.Millisecond
	}
	for ctx.Err() == nil {
		w.Poll(ctx)
		sleepCtx(ctx, w.Every)
	}
}

// Poll asks once; it reports whether an answer came.
func (w *MoveWatcher) Poll(ctx context.Context) ([]shard.MoveStatus, bool) {
	var resp struct {
		Moves []shard.MoveStatus `json:"moves"`
	}
	var err error = errors.New("no running member")
	for _, p := range w.Cluster.Running() {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = w.Cluster.getJSON(sctx, p, "/v1/cluster/moves", &resp)
		cancel()
		if err == nil {
			break
		}
	}
	now := w.History.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.moves == nil {
		w.moves = map[string]*MoveRecord{}
	}
	w.polls++
	if err != nil {
		w.fails++
		return nil, false
	}
	seen := map[string]bool{}
	for _, mv := range resp.Moves {
		k := fmt.Sprintf("%s %s %s %d", mv.Shard, mv.From, mv.To, mv.Started.UnixNano())
		seen[k] = true
		r := w.moves[k]
		if r == nil {
			r = &MoveRecord{Shard: mv.Shard, From: mv.From, To: mv.To, FirstSeen: now}
			w.moves[k] = r
			w.order = append(w.order, k)
		}
		r.LastSeen, r.Done = now, false
		if len(r.Phases) == 0 || r.Phases[len(r.Phases)-1] != mv.Phase {
			r.Phases = append(r.Phases, mv.Phase)
		}
	}
	for k, r := range w.moves {
		if !seen[k] {
			r.Done = true
		}
	}
	return resp.Moves, true
}

// Moves returns the moves seen, in the order first seen.
func (w *MoveWatcher) Moves() []MoveRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]MoveRecord, 0, len(w.order))
	for _, k := range w.order {
		r := *w.moves[k]
		r.Phases = slices.Clone(r.Phases)
		out = append(out, r)
	}
	return out
}

// overlapsMove reports whether a move was seen in flight during [start, end].
func overlapsMove(moves []MoveRecord, start, end int64) bool {
	for _, m := range moves {
		if m.FirstSeen <= end && m.LastSeen >= start {
			return true
		}
	}
	return false
}

// MembershipResult is the verdict on the cluster's membership at the end.
type MembershipResult struct {
	// Settled: no move in flight and no node joining or decommissioning
	// (SettleTime after healing).
	Settled    bool
	SettleTime time.Duration
	// Members are the final members; Left the nodes decommissioned or
	// removed during the run.
	Members, Left []string
	// Replicas is how many replicas the map places on each member (the
	// metadata group's included).
	Replicas map[string]int
	// Problems lists every violation: a shard without exactly R replicas,
	// a replica on a node that left, a member that is not active, a node
	// that left still counted as a member, members whose maps disagree,
	// replicas not balanced to within one, moves that never finished.
	Problems []string
}

// settle waits up to d until every member answers /v1/cluster with no
// move in flight and no node joining or decommissioning, three times in a
// row a second apart.
func settle(ctx context.Context, c *Cluster, d time.Duration) (bool, string) {
	deadline := time.Now().Add(d)
	calm := 0
	var why string
	for {
		why = unsettled(ctx, c)
		if why == "" {
			calm++
			if calm == 3 {
				return true, ""
			}
		} else {
			calm = 0
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if why == "" {
				why = "settled only just before the deadline"
			}
			return false, why
		}
		time.Sleep(time.Second)
	}
}

// unsettled describes why the membership is not settled ("" when it is).
func unsettled(ctx context.Context, c *Cluster) string {
	for _, p := range c.Members() {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := c.Status(sctx, p)
		cancel()
		if err != nil {
			return err.Error()
		}
		if len(st.Moves) > 0 {
			var mv []string
			for _, m := range st.Moves {
				s := fmt.Sprintf("shard %s %s→%s %s", m.Shard, m.From, m.To, m.Phase)
				if m.Waiting != "" {
					s += " (" + m.Waiting + ")"
				}
				mv = append(mv, s)
			}
			return fmt.Sprintf("%s sees %d move(s) in flight: %s", p.ID, len(st.Moves), strings.Join(mv, "; "))
		}
		for _, n := range st.Nodes {
			if n.State == shard.StateJoining || n.State == shard.StateDecommissioning {
				return fmt.Sprintf("%s sees %s %s", p.ID, n.ID, n.State)
			}
		}
	}
	return ""
}

// checkMembership checks the settled cluster through every member: each
// shard has exactly replicas replicas, all on members, every member is
// active, every node that left is decommissioned or removed, the members'
// maps agree, and replicas are spread to within one per node. It retries
// for up to d while the members' maps differ (a map reaches every member
// within a probe or two).
func checkMembership(ctx context.Context, c *Cluster, replicas int, d time.Duration) MembershipResult {
	deadline := time.Now().Add(d)
	for {
		res, agree := checkMembershipOnce(ctx, c, replicas)
		if (agree && len(res.Problems) == 0) || time.Now().After(deadline) {
			return res
		}
		time.Sleep(time.Second)
	}
}

func checkMembershipOnce(ctx context.Context, c *Cluster, replicas int) (MembershipResult, bool) {
	var res MembershipResult
	members := map[string]bool{}
	for _, p := range c.Members() {
		res.Members = append(res.Members, p.ID)
		members[p.ID] = true
	}
	for _, p := range c.Retired() {
		res.Left = append(res.Left, p.ID)
	}
	problem := func(format string, args ...any) { res.Problems = append(res.Problems, fmt.Sprintf(format, args...)) }
	versions := map[uint64][]string{}
	var placements string
	agree := true
	for i, p := range c.Members() {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := c.Status(sctx, p)
		cancel()
		if err != nil {
			problem("%s: %v", p.ID, err)
			agree = false
			continue
		}
		versions[st.MapVersion] = append(versions[st.MapVersion], p.ID)
		var pl []string
		for _, s := range st.Shards {
			var on []string
			for _, r := range s.Replicas {
				on = append(on, r.Node)
			}
			sort.Strings(on)
			pl = append(pl, fmt.Sprintf("%d:%s", s.ID, strings.Join(on, ",")))
		}
		if i == 0 {
			placements = strings.Join(pl, " ")
		} else if strings.Join(pl, " ") != placements {
			agree = false
		}
		if i > 0 {
			continue // the rest is checked on the first member's view
		}
		if len(st.Shards) != c.Shards {
			problem("%s lists %d shards, want %d", p.ID, len(st.Shards), c.Shards)
		}
		for _, s := range st.Shards {
			if len(s.Replicas) != replicas {
				problem("shard %d has %d replicas (want %d): %s", s.ID, len(s.Replicas), replicas, pl[s.ID%len(pl)])
			}
			for _, r := range s.Replicas {
				if !members[r.Node] {
					problem("shard %d has a replica on %s, which is not a member (state %s)", s.ID, r.Node, nodeState(st, r.Node))
				}
			}
		}
		res.Replicas = map[string]int{}
		lo, hi := -1, -1
		for _, n := range st.Nodes {
			switch {
			case members[n.ID] && n.State != shard.StateActive:
				problem("member %s is %s, want active", n.ID, n.State)
			case !members[n.ID] && !gone(n.State):
				problem("%s left the cluster (its process is stopped) but is %s, with %d replicas", n.ID, n.State, n.Replicas)
			case !members[n.ID] && n.Replicas > 0:
				problem("%s is %s but the map places %d replicas on it", n.ID, n.State, n.Replicas)
			}
			if members[n.ID] {
				res.Replicas[n.ID] = n.Replicas
				if lo < 0 || n.Replicas < lo {
					lo = n.Replicas
				}
				hi = max(hi, n.Replicas)
			}
		}
		for id := range members {
			if nodeState(st, id) == "" {
				problem("member %s is not in the cluster map", id)
			}
		}
		if hi-lo > 1 {
			problem("replicas per node not balanced to within one: %v", res.Replicas)
		}
	}
	if len(versions) > 1 {
		agree = false
		var vs []string
		for v, ids := range versions {
			vs = append(vs, fmt.Sprintf("%s at %d", strings.Join(ids, ","), v))
		}
		sort.Strings(vs)
		problem("members' cluster maps differ: %s", strings.Join(vs, "; "))
	}
	if !agree && len(versions) <= 1 {
		problem("members' placements differ")
	}
	sort.Strings(res.Members)
	sort.Strings(res.Left)
	return res, agree
}

// dumpStatus writes every member's /v1/cluster and /v1/cluster/moves
// answers to dir/cluster-<id>.json, for the report of a run whose
// membership did not settle; it returns the files written.
func dumpStatus(ctx context.Context, c *Cluster, dir string) []string {
	var files []string
	for _, p := range c.Members() {
		out := map[string]json.RawMessage{}
		for _, path := range []string{"/v1/cluster", "/v1/cluster/moves"} {
			var raw json.RawMessage
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if err := c.getJSON(sctx, p, path, &raw); err != nil {
				raw, _ = json.Marshal(err.Error())
			}
			cancel()
			out[path] = raw
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			continue
		}
		name := filepath.Join(dir, "cluster-"+p.ID+".json")
		if os.WriteFile(name, b, 0o644) == nil {
			files = append(files, name)
		}
	}
	return files
}

// pickOne returns a random element of ps (nil when empty).
func pickOne(rng *rand.Rand, ps []*Proc) *Proc {
	if len(ps) == 0 {
		return nil
	}
	return ps[rng.IntN(len(ps))]
}
