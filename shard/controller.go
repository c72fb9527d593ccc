package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/planner"
)

// Timing of the controller.
const (
	controllerInterval = 250 * time.Millisecond
	// moveTargetTimeout: a move whose target has been down this long
	// before its promotion is cancelled (the learner removed).
	moveTargetTimeout = 2 * time.Minute
	// catchUpSlack: a learner this close to the leader's last index has
	// caught up and may vote.
	catchUpSlack = 64
)

// controller runs on the metadata group's leader: it marks joined nodes
// active, advances the moves in flight one step at a time (each step is
// idempotent and checked against the shard's applied configuration, so a
// new leader picks up where the last one stopped), and plans new moves
// and preferred leaders with package planner.
type controller struct {
	n *Node

	mu       sync.Mutex
	progress map[int]moveProgress // by shard, for Moves
	seenDown map[string]time.Time // when a move target was first seen down
}

// moveProgress is what the controller last saw of a move.
type moveProgress struct {
	applied, target uint64
	waiting         string
}

func newController(n *Node) *controller {
	return &controller{n: n, progress: map[int]moveProgress{}, seenDown: map[string]time.Time{}}
}

func (c *controller) run() {
	defer c.n.bg.Done()
	tick := time.NewTicker(controllerInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.n.stop:
			return
		case <-tick.C:
		}
		g := c.n.hosted(MetaShard)
		if g == nil || !g.isLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.step(ctx); err != nil && !c.n.closed.Load() {
			c.n.cfg.Logger.Debug("controller step", "err", err)
		}
		cancel()
	}
}

func (c *controller) step(ctx context.Context) error {
	n := c.n
	m, err := n.metaGet(ctx)
	if err != nil {
		return err
	}
	if m == nil {
		// First run of a new cluster: write the genesis map.
		_, err := n.metaUpdate(ctx, func(*clusterMap) error { return errNoChange })
		return err
	}
	n.installMap(m, true)
	if changed, err := c.transitions(ctx, m); changed || err != nil {
		return err
	}
	for _, mv := range m.Moves {
		if err := c.advance(ctx, m, mv); err != nil {
			c.note(mv.Shard, err.Error())
		}
	}
	if len(m.Moves) > 0 {
		// Plan on the map as the moves left it: a move that completed
		// frees its slot now, not a pass later.
		if m, err = n.metaGet(ctx); err != nil || m == nil {
			return err
		}
		n.installMap(m, true)
	}
	c.mu.Lock()
	for s := range c.progress {
		if _, _, ok := m.moveOf(s); !ok {
			delete(c.progress, s)
		}
	}
	c.mu.Unlock()
	if m.Paused || len(m.Moves) >= n.cfg.MoveConcurrency {
		return nil
	}
	plan := planner.Compute(plannerInput(m, n.cfg.MoveConcurrency-len(m.Moves)))
	if len(plan.Moves) == 0 && len(plan.Transfers) == 0 {
		return nil
	}
	_, err = n.metaUpdate(ctx, func(x *clusterMap) error {
		if x.Version != m.Version {
			return errNoChange // planned on an older map: plan again next time
		}
		now := time.Now().UnixNano()
		for _, mv := range plan.Moves {
			x.Moves = append(x.Moves, mapMove{Shard: x.shardOfSlot(mv.Shard), From: mv.From, To: mv.To, Phase: PhaseLearner, Started: now})
		}
		for _, t := range plan.Transfers {
			x.Leaders[t.Shard] = t.To
		}
		return nil
	})
	if err == nil {
		for _, mv := range plan.Moves {
			n.cfg.Logger.Info("replica move planned", "shard", shardName(m.shardOfSlot(mv.Shard)), "from", mv.From, "to", mv.To)
		}
	}
	return err
}

// plannerInput describes m to the planner; shards are numbered by slot
// (the metadata group is slot Shards).
func plannerInput(m *clusterMap, maxMoves int) planner.Input {
	in := planner.Input{Replicas: m.Replicas, MaxMoves: maxMoves}
	for _, nd := range m.Nodes {
		in.Nodes = append(in.Nodes, planner.Node{ID: nd.ID, State: planner.State(nd.State)})
	}
	for i, p := range m.Placement {
		in.Shards = append(in.Shards, planner.Shard{ID: i, Replicas: slices.Clone(p), Leader: m.Leaders[i]})
	}
	for _, mv := range m.Moves {
		in.InFlight = append(in.InFlight, planner.Move{Shard: m.slot(mv.Shard), From: mv.From, To: mv.To})
	}
	return in
}

// transitions moves nodes between states: joining → active once up,
// decommissioning → decommissioned once it holds nothing.
func (c *controller) transitions(ctx context.Context, m *clusterMap) (bool, error) {
	n := c.n
	want := map[string]string{}
	for _, nd := range m.Nodes {
		switch nd.State {
		case StateJoining:
			if nd.ID == n.cfg.ID || n.peers.isUp(nd.ID) {
				want[nd.ID] = StateActive
			}
		case StateDecommissioning:
			if reps, _ := m.replicaCount(nd.ID); reps == 0 && !m.involved(nd.ID) {
				want[nd.ID] = StateDecommissioned
			}
		}
	}
	if len(want) == 0 {
		return false, nil
	}
	_, err := n.metaUpdate(ctx, func(x *clusterMap) error {
		changed := false
		for id, st := range want {
			if nd, ok := x.node(id); ok && (nd.State == StateJoining || nd.State == StateDecommissioning) {
				x.setState(id, st)
				changed = true
			}
		}
		if !changed {
			return errNoChange
		}
		return nil
	})
	if err == nil {
		for id, st := range want {
			n.cfg.Logger.Info("node state", "node", id, "state", st)
		}
	}
	return true, err
}

// involved reports whether a move in flight adds to or removes from id.
func (m *clusterMap) involved(id string) bool {
	for _, mv := range m.Moves {
		if mv.From == id || mv.To == id {
			return true
		}
	}
	return false
}

func (c *controller) note(s int, why string) {
	c.mu.Lock()
	p := c.progress[s]
	p.waiting = why
	c.progress[s] = p
	c.mu.Unlock()
}

// advance takes move mv as many steps further as it can without
// waiting (a few at most).
func (c *controller) advance(ctx context.Context, m *clusterMap, mv mapMove) error {
	for i := 0; i < 4; i++ {
		again, err := c.advanceOnce(ctx, m, &mv)
		if err != nil || !again {
			return err
		}
	}
	return nil
}

// advanceOnce takes move mv one step further; again says another step
// may follow at once (mv is then the move as recorded now).
func (c *controller) advanceOnce(ctx context.Context, m *clusterMap, mv *mapMove) (again bool, err error) {
	n := c.n
	leader := n.leaderOf(mv.Shard)
	if leader == "" {
		return false, fmt.Errorf("shard %s has no leader", shardName(mv.Shard))
	}
	to, _ := m.node(mv.To)
	from, hasFrom := m.node(mv.From)
	pr, err := n.reconf(ctx, leader, reconfReq{Shard: mv.Shard, Op: "progress"})
	if err != nil {
		return false, fmt.Errorf("asking the leader of shard %s: %v", shardName(mv.Shard), err)
	}
	isVoter := slices.Contains(pr.Voters, to.Num) || slices.Contains(pr.Outgoing, to.Num)
	isLearner := slices.Contains(pr.Learners, to.Num)
	c.mu.Lock()
	c.progress[mv.Shard] = moveProgress{applied: pr.Match[to.Num], target: pr.Last}
	c.mu.Unlock()
	setPhase := func(phase string) (bool, error) {
		changed := false
		_, err := n.metaUpdate(ctx, func(x *clusterMap) error {
			cur, i, ok := x.moveOf(mv.Shard)
			if !ok || cur != *mv {
				return errNoChange
			}
			x.Moves[i].Phase = phase
			changed = true
			return nil
		})
		if changed && err == nil {
			mv.Phase = phase
		}
		return changed, err
	}
	switch mv.Phase {
	case PhaseLearner, PhasePromote:
		if isVoter {
			return setPhase(PhaseRemove)
		}
		if to.State != StateActive && to.State != StateJoining {
			return setPhase(PhaseCancel)
		}
		if mv.To != n.cfg.ID && !n.peers.isUp(mv.To) {
			c.mu.Lock()
			first, ok := c.seenDown[mv.To]
			if !ok {
				first = time.Now()
				c.seenDown[mv.To] = first
			}
			c.mu.Unlock()
			if time.Since(first) > moveTargetTimeout {
				return setPhase(PhaseCancel)
			}
			return false, fmt.Errorf("waiting for the target %s, which is down", mv.To)
		}
		c.mu.Lock()
		delete(c.seenDown, mv.To)
		c.mu.Unlock()
		if !isLearner {
			_, err := n.reconf(ctx, leader, reconfReq{Shard: mv.Shard, Op: "learner", Node: to.Num})
			if err != nil {
				return false, fmt.Errorf("adding %s as a learner: %v", mv.To, err)
			}
			return false, errors.New("target added as a learner; waiting for its snapshot")
		}
		if match := pr.Match[to.Num]; match == 0 || match+catchUpSlack < pr.Last {
			return false, fmt.Errorf("target catching up: at %d of %d", match, pr.Last)
		}
		if mv.Phase != PhasePromote {
			if _, err := setPhase(PhasePromote); err != nil {
				return false, err
			}
		}
		if _, err := n.reconf(ctx, leader, reconfReq{Shard: mv.Shard, Op: "promote", Node: to.Num}); err != nil {
			return false, fmt.Errorf("promoting %s: %v", mv.To, err)
		}
		return setPhase(PhaseRemove)
	case PhaseRemove:
		if !isVoter {
			// Its promotion was lost (a leader change): promote again.
			return setPhase(PhaseLearner)
		}
		if len(pr.Outgoing) > 0 {
			return false, errors.New("waiting for the shard to leave its joint configuration")
		}
		fromIn := hasFrom && (slices.Contains(pr.Voters, from.Num) || slices.Contains(pr.Learners, from.Num))
		if !fromIn {
			return false, c.complete(ctx, *mv)
		}
		if n.peerIDOf(leader) == mv.From || (leader == n.cfg.Addr && mv.From == n.cfg.ID) {
			if _, err := n.reconf(ctx, leader, reconfReq{Shard: mv.Shard, Op: "transfer", Node: to.Num}); err != nil {
				return false, fmt.Errorf("handing leadership off %s: %v", mv.From, err)
			}
			return false, fmt.Errorf("handing leadership from %s to %s", mv.From, mv.To)
		}
		if _, err := n.reconf(ctx, leader, reconfReq{Shard: mv.Shard, Op: "remove", Node: from.Num}); err != nil {
			return false, fmt.Errorf("removing %s: %v", mv.From, err)
		}
		return true, nil
	case PhaseCancel:
		if isVoter {
			return setPhase(PhaseRemove)
		}
		if isLearner {
			if _, err := n.reconf(ctx, leader, reconfReq{Shard: mv.Shard, Op: "remove", Node: to.Num}); err != nil {
				return false, fmt.Errorf("removing the learner %s: %v", mv.To, err)
			}
		}
		_, err := n.metaUpdate(ctx, func(x *clusterMap) error {
			cur, i, ok := x.moveOf(mv.Shard)
			if !ok || cur != *mv {
				return errNoChange
			}
			x.Moves = slices.Delete(x.Moves, i, i+1)
			return nil
		})
		if err == nil {
			n.cfg.Logger.Warn("replica move cancelled", "shard", shardName(mv.Shard), "from", mv.From, "to", mv.To)
		}
		return false, err
	}
	return false, nil
}

// complete records a finished move: the target replaces the source in the
// placement (and as preferred leader).
func (c *controller) complete(ctx context.Context, mv mapMove) error {
	_, err := c.n.metaUpdate(ctx, func(x *clusterMap) error {
		cur, i, ok := x.moveOf(mv.Shard)
		if !ok || cur != mv {
			return errNoChange
		}
		slot := x.slot(mv.Shard)
		p := slices.DeleteFunc(x.Placement[slot], func(id string) bool { return id == mv.From })
		if !slices.Contains(p, mv.To) {
			p = append(p, mv.To)
		}
		x.Placement[slot] = p
		if x.Leaders[slot] == mv.From || x.Leaders[slot] == "" {
			x.Leaders[slot] = mv.To
		}
		x.Moves = slices.Delete(x.Moves, i, i+1)
		return nil
	})
	if err == nil {
		c.n.cfg.Logger.Info("replica moved", "shard", shardName(mv.Shard), "from", mv.From, "to", mv.To,
			"took", time.Since(time.Unix(0, mv.Started)).Round(time.Millisecond))
	}
	return err
}

// shardName names shard s in messages.
func shardName(s int) string {
	if s == MetaShard {
		return "meta"
	}
	return strconv.Itoa(s)
}

// reconfReq asks a shard's leader to report or change its configuration.
type reconfReq struct {
	Shard int    `msgpack:"shard"`
	Op    string `msgpack:"op"` // progress, learner, promote, remove, transfer
	Node  uint64 `msgpack:"node"`
}

type reconfResp struct {
	rpcError
	Voters   []uint64          `msgpack:"voters"`
	Learners []uint64          `msgpack:"learners"`
	Outgoing []uint64          `msgpack:"outgoing"`
	Match    map[uint64]uint64 `msgpack:"match"`
	Last     uint64            `msgpack:"last"`
}

// reconf calls serveReconf on the leader at addr (locally when it is
// this node).
func (n *Node) reconf(ctx context.Context, addr string, req reconfReq) (reconfResp, error) {
	if addr == n.cfg.Addr {
		resp := n.serveReconf(ctx, req)
		return resp, resp.rpcError.err()
	}
	if n.rpc == nil {
		return reconfResp{}, errorf(ErrUnavailable, "no transport")
	}
	var resp reconfResp
	if err := n.rpc.call(ctx, "POST", addr, rpcReconf, req, &resp); err != nil {
		return resp, err
	}
	return resp, resp.rpcError.err()
}

// serveReconf reports (progress) or changes the configuration of a shard
// this node leads. Promotion is refused until the learner has caught up;
// removing a voter is refused while that would leave fewer than two (one
// in a cluster of one replica per shard), or while the shard is in a
// joint configuration.
func (n *Node) serveReconf(ctx context.Context, req reconfReq) reconfResp {
	g := n.hosted(req.Shard)
	if g == nil {
		return reconfResp{rpcError: leaderError(nil, req.Shard, nil)}
	}
	if !g.isLeader() {
		return reconfResp{rpcError: leaderError(g, req.Shard, g.notLeader())}
	}
	match, last, ok, err := n.mr.Progress(ctx, uint64(req.Shard))
	if err == nil && !ok {
		err = g.notLeader()
	}
	if err != nil {
		return reconfResp{rpcError: leaderError(g, req.Shard, err)}
	}
	cs := g.fsm.conf.Load()
	if cs == nil {
		cs = &pb.ConfState{}
	}
	resp := reconfResp{Voters: cs.GetVoters(), Learners: cs.GetLearners(), Outgoing: cs.GetVotersOutgoing(), Match: match, Last: last}
	var cc pb.ConfChangeType
	switch req.Op {
	case "progress":
		return resp
	case "learner":
		if slices.Contains(resp.Learners, req.Node) || slices.Contains(resp.Voters, req.Node) {
			return resp
		}
		cc = pb.ConfChangeAddLearnerNode
	case "promote":
		if slices.Contains(resp.Voters, req.Node) {
			return resp
		}
		if m := match[req.Node]; !slices.Contains(resp.Learners, req.Node) || m == 0 || m+catchUpSlack < last {
			return reconfResp{rpcError: toRPCError(errorf(ErrMembership, "shard %s: node %d has not caught up (%d of %d)",
				shardName(req.Shard), req.Node, m, last))}
		}
		cc = pb.ConfChangeAddNode
	case "remove":
		if !slices.Contains(resp.Voters, req.Node) && !slices.Contains(resp.Learners, req.Node) {
			return resp
		}
		if len(resp.Outgoing) > 0 {
			return reconfResp{rpcError: toRPCError(errorf(ErrMembership, "shard %s is in a joint configuration", shardName(req.Shard)))}
		}
		// A move ends by removing its source: from 3 voters to 2 at R = 2,
		// from 2 to 1 at R = 1.
		if minVoters := min(2, max(n.curMap().Replicas, 1)); slices.Contains(resp.Voters, req.Node) && len(resp.Voters)-1 < minVoters {
			return reconfResp{rpcError: toRPCError(errorf(ErrMembership, "shard %s: removing node %d would leave %d voter(s)",
				shardName(req.Shard), req.Node, len(resp.Voters)-1))}
		}
		cc = pb.ConfChangeRemoveNode
	case "transfer":
		if err := n.mr.TransferLeader(uint64(req.Shard), req.Node); err != nil {
			return reconfResp{rpcError: toRPCError(err)}
		}
		return resp
	default:
		return reconfResp{rpcError: rpcError{Code: codeInvalid, Msg: "shard: unknown reconf op " + req.Op}}
	}
	_, ncs, err := n.mr.ChangeMembership(ctx, uint64(req.Shard), &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: cc.Enum(), NodeId: new(req.Node)}},
	})
	if err != nil {
		return reconfResp{rpcError: leaderError(g, req.Shard, g.consensus.(*mraft).mapErr(err, "changing the configuration"))}
	}
	if ncs != nil {
		resp.Voters, resp.Learners, resp.Outgoing = ncs.GetVoters(), ncs.GetLearners(), ncs.GetVotersOutgoing()
	}
	n.cfg.Logger.Info("shard configuration changed", "shard", shardName(req.Shard), "op", req.Op, "node", req.Node,
		"voters", resp.Voters, "learners", resp.Learners)
	return resp
}
