package planner

import (
	"cmp"
	"slices"
)

// State is a node's membership state.
type State string

// Node states. Only active nodes receive replicas; decommissioning and
// removed nodes are drained; a removed node's replicas are rebuilt
// elsewhere (it is gone), a decommissioning node's are moved off while it
// still serves them. Replicas on a joining node count as serving (they
// are being filled) but it receives no new ones until it is active.
const (
	Active          State = "active"
	Joining         State = "joining"
	Decommissioning State = "decommissioning"
	Decommissioned  State = "decommissioned"
	Removed         State = "removed"
)

// Node is one member of the cluster.
type Node struct {
	ID    string
	State State
}

// Shard is one shard's replicas (node ids) and leader ("" when none).
type Shard struct {
	ID       int
	Replicas []string
	Leader   string
}

// Move adds a replica of Shard on To and, when From is not "", removes the
// one on From once To has caught up.
type Move struct {
	Shard    int
	From, To string
}

// Transfer moves Shard's leadership to To.
type Transfer struct {
	Shard int
	To    string
}

// Input is what Compute plans from.
type Input struct {
	Nodes  []Node
	Shards []Shard
	// InFlight are moves already under way; they count as done.
	InFlight []Move
	// Replicas is the replication factor R.
	Replicas int
	// MaxMoves bounds the new moves returned (0: no bound).
	MaxMoves int
}

// Plan is what Compute returns.
type Plan struct {
	Moves     []Move
	Transfers []Transfer
	// Short lists the shards that cannot have Replicas replicas on the
	// active nodes (too few of them): they keep what they have.
	Short []int
}

// Compute plans the next moves and transfers. Priorities, in order: give
// every shard R replicas on active nodes (replacing those on removed
// nodes first), move replicas off decommissioning nodes, then even out
// replicas per active node, and leaders per active node, to within one of
// the mean. Ties go to the lowest shard id and the lowest node id, so the
// same input always gives the same plan.
func Compute(in Input) Plan {
	state := map[string]State{}
	var active []string
	for _, n := range in.Nodes {
		state[n.ID] = n.State
		if n.State == Active {
			active = append(active, n.ID)
		}
	}
	slices.Sort(active)
	// The placement once the moves in flight are done.
	place := map[int][]string{}
	leader := map[int]string{}
	var ids []int
	for _, s := range in.Shards {
		place[s.ID] = slices.Clone(s.Replicas)
		leader[s.ID] = s.Leader
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	apply := func(m Move) {
		r := place[m.Shard]
		if m.From != "" {
			r = slices.DeleteFunc(r, func(id string) bool { return id == m.From })
		}
		if m.To != "" && !slices.Contains(r, m.To) {
			r = append(r, m.To)
		}
		place[m.Shard] = r
	}
	// A shard with a move in flight gets no other until it is done: raft
	// changes one configuration at a time, and the next decision is made
	// on the placement it leaves.
	busy := map[int]bool{}
	for _, m := range in.InFlight {
		apply(m)
		busy[m.Shard] = true
	}
	load := func() map[string]int {
		l := map[string]int{}
		for _, id := range active {
			l[id] = 0
		}
		for _, s := range ids {
			for _, id := range place[s] {
				if _, ok := l[id]; ok {
					l[id]++
				}
			}
		}
		return l
	}
	// leastLoaded returns the active node with the fewest replicas that
	// does not hold shard s ("" when none).
	leastLoaded := func(s int, l map[string]int) string {
		best := ""
		for _, id := range active {
			if slices.Contains(place[s], id) {
				continue
			}
			if best == "" || l[id] < l[best] {
				best = id
			}
		}
		return best
	}
	var plan Plan
	full := func() bool { return in.MaxMoves > 0 && len(plan.Moves) >= in.MaxMoves }
	add := func(m Move) {
		plan.Moves = append(plan.Moves, m)
		apply(m)
	}

	// 1. R replicas on nodes that can serve: replace replicas on removed
	// nodes, add missing ones; 2. drain decommissioning nodes.
	for _, pass := range []State{Removed, Decommissioning} {
		for _, s := range ids {
			for !full() && !busy[s] {
				l := load()
				var from string
				serving := 0
				for _, id := range place[s] {
					switch st := state[id]; {
					case st == pass || (pass == Removed && (st == Decommissioned || st == "")):
						if from == "" {
							from = id
						}
					case st == Active || st == Decommissioning || st == Joining:
						serving++
					}
				}
				if pass == Removed && from == "" && serving >= in.Replicas {
					break
				}
				if pass == Decommissioning && from == "" {
					break
				}
				to := leastLoaded(s, l)
				if to == "" {
					if !slices.Contains(plan.Short, s) {
						plan.Short = append(plan.Short, s)
					}
					break
				}
				if pass == Removed && from == "" {
					add(Move{Shard: s, To: to}) // up-replication
				} else {
					add(Move{Shard: s, From: from, To: to})
				}
			}
		}
	}
	// 3. Even out replicas: from the most to the least loaded active nodes
	// while they differ by more than one.
	for !full() && len(active) > 1 {
		l := load()
		byLoad := slices.Clone(active)
		slices.SortStableFunc(byLoad, func(a, b string) int { return cmp.Compare(l[b], l[a]) })
		moved := false
		for _, from := range byLoad {
			for _, s := range ids {
				if busy[s] || !slices.Contains(place[s], from) {
					continue
				}
				if to := leastLoaded(s, l); to != "" && l[from]-l[to] > 1 {
					add(Move{Shard: s, From: from, To: to})
					moved = true
					break
				}
			}
			if moved {
				break
			}
		}
		if !moved {
			break
		}
	}
	// 4. Even out leaders over active nodes, among each shard's planned
	// replicas.
	leads := map[string]int{}
	for _, id := range active {
		leads[id] = 0
	}
	for _, s := range ids {
		lead := leader[s]
		if lead == "" || !slices.Contains(place[s], lead) || state[lead] != Active {
			// The leader is leaving or unknown: hand it to the active
			// replica leading least.
			to := ""
			for _, id := range place[s] {
				if state[id] == Active && (to == "" || leads[id] < leads[to] || (leads[id] == leads[to] && id < to)) {
					to = id
				}
			}
			if to != "" && to != lead {
				plan.Transfers = append(plan.Transfers, Transfer{Shard: s, To: to})
				leader[s] = to
			}
		}
		if l := leader[s]; state[l] == Active {
			leads[l]++
		}
	}
	// Then, while some node leads two more shards than another, hand one
	// of its shards on: straight to a replica on a node leading at least
	// two fewer, or along a chain of transfers (the shard of the first
	// node to a replica on a second, one of the second's to a third, …)
	// when none of its shards has a replica there. Nodes in between keep
	// their count; each round lowers the spread of the counts.
	for range len(ids) * max(len(active), 1) {
		chain := leaderChain(ids, active, place, leader, leads, state)
		if chain == nil {
			break
		}
		for _, tr := range chain {
			plan.Transfers = append(plan.Transfers, tr)
			leads[leader[tr.Shard]]--
			leads[tr.To]++
			leader[tr.Shard] = tr.To
		}
	}
	return plan
}

// leaderChain finds transfers that take one leadership from a node
// leading the most shards to one leading at least two fewer: a shortest
// chain of nodes, each step a shard the node before leads with a replica
// on the node after (active nodes only). It tries the most-loaded nodes in
// id order and returns nil when none has such a chain.
func leaderChain(ids []int, active []string, place map[int][]string, leader map[int]string,
	leads map[string]int, state map[string]State) []Transfer {
	most := 0
	for _, id := range active {
		most = max(most, leads[id])
	}
	type step struct {
		from  string
		shard int
	}
	for _, start := range active {
		if leads[start] != most {
			continue
		}
		prev := map[string]step{start: {}}
		queue := []string{start}
		for len(queue) > 0 {
			u := queue[0]
			queue = queue[1:]
			for _, s := range ids {
				if leader[s] != u {
					continue
				}
				for _, v := range place[s] {
					if _, seen := prev[v]; seen || state[v] != Active {
						continue
					}
					prev[v] = step{from: u, shard: s}
					if most-leads[v] > 1 {
						var chain []Transfer
						for n := v; n != start; n = prev[n].from {
							chain = append(chain, Transfer{Shard: prev[n].shard, To: n})
						}
						slices.Reverse(chain)
						return chain
					}
					queue = append(queue, v)
				}
			}
		}
	}
	return nil
}
