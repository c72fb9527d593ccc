package planner_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"lambdadb/planner"
)

// TestFourthNodeJoins: 65 groups placed round robin on three nodes, each
// led by its first replica; a fourth node joins. Applying the plans round
// after round (two moves at a time, as the controller does) moves exactly
// a quarter of the replicas (48 of 195) and leaves replicas and leaders
// within one of even — leaders too, although no shard the most-loaded
// node leads may have a replica on the least-loaded one, so evening them
// out takes transfers along a chain of nodes.
func TestFourthNodeJoins(t *testing.T) {
	ids := []string{"n1", "n2", "n3"}
	var shards []planner.Shard
	for s := range 65 {
		var reps []string
		for i := range 3 {
			reps = append(reps, ids[(s+i)%3])
		}
		shards = append(shards, planner.Shard{ID: s, Replicas: reps, Leader: reps[0]})
	}
	nodes := []planner.Node{{ID: "n1", State: planner.Active}, {ID: "n2", State: planner.Active},
		{ID: "n3", State: planner.Active}, {ID: "n4", State: planner.Active}}
	moves, rounds := 0, 0
	for ; rounds < 500; rounds++ {
		p := planner.Compute(planner.Input{Nodes: nodes, Shards: shards, Replicas: 3, MaxMoves: 2})
		if len(p.Moves) == 0 && len(p.Transfers) == 0 {
			break
		}
		for _, m := range p.Moves {
			sh := &shards[m.Shard]
			sh.Replicas = slices.DeleteFunc(sh.Replicas, func(id string) bool { return id == m.From })
			sh.Replicas = append(sh.Replicas, m.To)
			if sh.Leader == m.From {
				sh.Leader = m.To
			}
			moves++
		}
		for _, tr := range p.Transfers {
			if !slices.Contains(shards[tr.Shard].Replicas, tr.To) {
				t.Fatalf("transfer of shard %d to %s, which holds no replica of it (%v)", tr.Shard, tr.To, shards[tr.Shard].Replicas)
			}
			shards[tr.Shard].Leader = tr.To
		}
	}
	if rounds == 500 {
		t.Fatal("the plans did not converge")
	}
	reps, leads := map[string]int{}, map[string]int{}
	for _, s := range shards {
		for _, r := range s.Replicas {
			reps[r]++
		}
		leads[s.Leader]++
	}
	if moves != 48 {
		t.Errorf("%d replicas moved; want 48 (a quarter of 195)", moves)
	}
	for _, c := range []struct {
		what string
		n    map[string]int
	}{{"replicas", reps}, {"leaders", leads}} {
		lo, hi := 1<<30, 0
		for _, id := range []string{"n1", "n2", "n3", "n4"} {
			lo, hi = min(lo, c.n[id]), max(hi, c.n[id])
		}
		if hi-lo > 1 {
			t.Errorf("%s per node %v: not within one of even", c.what, c.n)
		}
	}
}

// TestLeadersEvenWhenTheFirstMostLoadedIsStuck: n1 and n3 lead two shards
// each, n4 none; neither of n1's shards has a replica on n4, but n3's do:
// the planner hands one of n3's to n4 rather than give up on n1.
func TestLeadersEvenWhenTheFirstMostLoadedIsStuck(t *testing.T) {
	shards := []planner.Shard{
		{ID: 0, Replicas: []string{"n1", "n2", "n4"}, Leader: "n2"},
		{ID: 1, Replicas: []string{"n1", "n3", "n4"}, Leader: "n3"},
		{ID: 2, Replicas: []string{"n2", "n3", "n4"}, Leader: "n3"},
		{ID: 3, Replicas: []string{"n1", "n2", "n3"}, Leader: "n1"},
		{ID: 4, Replicas: []string{"n1", "n2", "n3"}, Leader: "n1"},
	}
	if leads := leadersAfter(t, shards); spreadOf(leads) > 1 {
		t.Fatalf("leaders per node %v after the plan; want within one", leads)
	}
}

// TestLeadersEvenOnFourNodes: random placements of 5–12 shards of three
// replicas on four nodes, replicas already within one of even; the plan
// moves no replica and leaves leaders within one of even.
func TestLeadersEvenOnFourNodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ids := []string{"n1", "n2", "n3", "n4"}
	tried := 0
	for tried < 3000 {
		var shards []planner.Shard
		reps := map[string]int{}
		for s := range 5 + rng.IntN(8) {
			perm := rng.Perm(4)
			r := []string{ids[perm[0]], ids[perm[1]], ids[perm[2]]}
			for _, id := range r {
				reps[id]++
			}
			shards = append(shards, planner.Shard{ID: s, Replicas: r, Leader: r[rng.IntN(3)]})
		}
		if spreadOf(reps) > 1 {
			continue
		}
		tried++
		if leads := leadersAfter(t, shards); spreadOf(leads) > 1 {
			t.Fatalf("shards %+v: leaders per node %v after the plan; want within one", shards, leads)
		}
	}
}

var fourNodes = []planner.Node{{ID: "n1", State: planner.Active}, {ID: "n2", State: planner.Active},
	{ID: "n3", State: planner.Active}, {ID: "n4", State: planner.Active}}

// leadersAfter plans for shards on fourNodes (R=3), checks the plan moves
// no replica and transfers only to replicas, and returns the leaders per
// node once its transfers are done.
func leadersAfter(t *testing.T, shards []planner.Shard) map[string]int {
	t.Helper()
	p := planner.Compute(planner.Input{Nodes: fourNodes, Shards: shards, Replicas: 3})
	if len(p.Moves) != 0 {
		t.Fatalf("moves %v; the replicas are within one of even", p.Moves)
	}
	leader := map[int]string{}
	for _, s := range shards {
		leader[s.ID] = s.Leader
	}
	for _, tr := range p.Transfers {
		if !slices.Contains(shards[tr.Shard].Replicas, tr.To) {
			t.Fatalf("transfer %+v to a node without a replica", tr)
		}
		leader[tr.Shard] = tr.To
	}
	leads := map[string]int{"n1": 0, "n2": 0, "n3": 0, "n4": 0}
	for _, l := range leader {
		leads[l]++
	}
	return leads
}

func spreadOf(n map[string]int) int {
	lo, hi := 1<<30, 0
	for _, id := range []string{"n1", "n2", "n3", "n4"} {
		lo, hi = min(lo, n[id]), max(hi, n[id])
	}
	return hi - lo
}
