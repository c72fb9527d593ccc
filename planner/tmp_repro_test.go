package planner

import (
	"fmt"
	"slices"
	"testing"
)

func TestTmpRepro(t *testing.T) {
	ids := []string{"n1", "n2", "n3"}
	var shards []Shard
	for s := 0; s <= 64; s++ {
		start := s % 3
		if s == 64 {
			start = 0
		}
		var reps []string
		for i := 0; i < 3; i++ {
			reps = append(reps, ids[(start+i)%3])
		}
		shards = append(shards, Shard{ID: s, Replicas: reps, Leader: reps[0]})
	}
	nodes := []Node{{"n1", Active}, {"n2", Active}, {"n3", Active}, {"n4", Active}}
	moves := 0
	for round := 0; round < 200; round++ {
		p := Compute(Input{Nodes: nodes, Shards: shards, Replicas: 3, MaxMoves: 2})
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
			shards[tr.Shard].Leader = tr.To
		}
	}
	cnt := map[string]int{}
	for _, s := range shards {
		for _, r := range s.Replicas {
			cnt[r]++
		}
	}
	fmt.Println("moves", moves, cnt)
}
