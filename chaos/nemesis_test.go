package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// fakeCluster returns a cluster of n running members and retired ones
// (no processes: pick and possible only look at states).
func fakeCluster(n, retired int) *Cluster {
	c := &Cluster{}
	for i := 1; i <= n+retired; i++ {
		p := &Proc{ID: fmt.Sprintf("n%d", i)}
		if i > n {
			p.state = Retired
		}
		c.procs = append(c.procs, p)
	}
	return c
}

func newTestNemesis(c *Cluster, kinds ...string) *Nemesis {
	return &Nemesis{Cluster: c, Kinds: kinds, MaxNodes: 5, Replicas: 3, leaving: map[string]bool{},
		rebuiltHook: func() bool { return true }}
}

func TestPickJoinFirst(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := newTestNemesis(fakeCluster(3, 0), AllFaults...)
	for range 20 {
		if k := n.pick(context.Background(), rng); k != FaultJoin {
			t.Fatalf("first fault = %s, want join", k)
		}
	}
	n.joins = 1
	seen := map[string]bool{}
	for range 500 {
		seen[n.pick(context.Background(), rng)] = true
	}
	// Three members: nothing can leave, so only joins and the others.
	if seen[FaultDecommission] || seen[FaultRemove] || !seen[FaultJoin] || !seen[FaultKill] {
		t.Fatalf("with 3 members picked %v", seen)
	}
}

func TestPickMembershipLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ctx := context.Background()
	cases := []struct {
		members, retired int
		leaving          []string
		kinds            []string
		want             []string // every kind pick may return
	}{
		// Too few to lose one: a remove becomes a join, else another kind.
		{3, 0, nil, []string{FaultRemove, FaultJoin}, []string{FaultJoin}},
		{3, 0, nil, []string{FaultRemove, FaultKill}, []string{FaultKill}},
		{3, 0, nil, []string{FaultDecommission}, []string{""}},
		// Four active: either may leave.
		{4, 1, nil, []string{FaultRemove, FaultDecommission}, []string{FaultRemove, FaultDecommission}},
		// A decommissioning node does not count as active.
		{4, 0, []string{"n2"}, []string{FaultRemove, FaultPause}, []string{FaultPause}},
		// At MaxNodes, a join becomes a departure.
		{5, 0, nil, []string{FaultJoin}, []string{""}},
		{5, 0, nil, []string{FaultJoin, FaultRemove}, []string{FaultRemove}},
		// No remove while a removed node's replicas are being rebuilt.
		{5, 0, nil, []string{FaultRemove, FaultDecommission}, []string{FaultDecommission}},
	}
	for i, tc := range cases {
		n := newTestNemesis(fakeCluster(tc.members, tc.retired), tc.kinds...)
		if i == len(cases)-1 {
			n.rebuiltHook = func() bool { return false }
		}
		n.joins = 1
		for _, id := range tc.leaving {
			n.leaving[id] = true
		}
		got := map[string]bool{}
		for range 200 {
			got[n.pick(ctx, rng)] = true
		}
		for k := range got {
			if !slices.Contains(tc.want, k) {
				t.Errorf("case %d: picked %q, want one of %q", i, k, tc.want)
			}
		}
	}
}

func TestPickMembershipCutoff(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := newTestNemesis(fakeCluster(4, 0), FaultJoin, FaultRemove, FaultKill)
	n.MembershipCutoff = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 200 {
		if k := n.pick(ctx, rng); k != FaultKill {
			t.Fatalf("picked %s within the cutoff", k)
		}
	}
}

func TestOtherFamily(t *testing.T) {
	kinds := []string{FaultKill, FaultPause, FaultPartition, FaultDelay, FaultJoin, FaultRemove}
	cases := map[string][]string{
		FaultKill:      {FaultPartition, FaultDelay},
		FaultPartition: {FaultKill, FaultPause},
		FaultJoin:      {FaultKill, FaultPause, FaultPartition, FaultDelay},
		FaultRemove:    {FaultKill, FaultPause, FaultPartition, FaultDelay},
	}
	for kind, want := range cases {
		if got := otherFamily(kinds, kind); !slices.Equal(got, want) {
			t.Errorf("otherFamily(%s) = %v, want %v", kind, got, want)
		}
	}
}

func TestOverlapsMove(t *testing.T) {
	moves := []MoveRecord{{FirstSeen: 10, LastSeen: 20}, {FirstSeen: 40, LastSeen: 50}}
	for _, tc := range []struct {
		start, end int64
		want       bool
	}{{0, 9, false}, {0, 10, true}, {15, 16, true}, {21, 39, false}, {50, 60, true}, {51, 60, false}} {
		if got := overlapsMove(moves, tc.start, tc.end); got != tc.want {
			t.Errorf("overlapsMove(%d, %d) = %v", tc.start, tc.end, got)
		}
	}
}
