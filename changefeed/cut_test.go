package changefeed

import (
	"reflect"
	"testing"
	"time"

	"lambdadb/shard"
)

// TestCutBytes: a read keeps about MaxBytes of changes in time order,
// never splits an entry, and moves a cut shard's cursor only past what it
// kept.
func TestCutBytes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ch := func(s int, idx uint64, seq uint16, at int, size int) shard.Change {
		return shard.Change{Shard: s, Index: idx, Seq: seq, Key: "k", Value: make([]byte, size-1), Time: t0.Add(time.Duration(at) * time.Second)}
	}
	type kept struct {
		s   int
		idx uint64
		seq uint16
	}
	tests := []struct {
		name     string
		per      [][]shard.Change
		max      int
		wantKept []kept
		wantNext []uint64
	}{
		{"under budget", [][]shard.Change{{ch(0, 5, 0, 1, 10)}, {ch(1, 7, 0, 2, 10)}}, 100,
			[]kept{{0, 5, 0}, {1, 7, 0}}, []uint64{9, 9}},
		{"cut after the first by time", [][]shard.Change{{ch(0, 5, 0, 2, 10)}, {ch(1, 7, 0, 1, 10)}}, 10,
			[]kept{{1, 7, 0}}, []uint64{3, 9}},
		{"one entry is never split", [][]shard.Change{{ch(0, 5, 0, 1, 10), ch(0, 5, 1, 1, 10), ch(0, 6, 0, 2, 10)}, nil}, 5,
			[]kept{{0, 5, 0}, {0, 5, 1}}, []uint64{5, 9}},
		{"at least one change", [][]shard.Change{{ch(0, 5, 0, 1, 1000)}, nil}, 1,
			[]kept{{0, 5, 0}}, []uint64{9, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := []uint64{9, 9}
			got, next := cutBytes(tt.per, next, Cursor{0: 3, 1: 4}, tt.max)
			var k []kept
			for _, c := range got {
				k = append(k, kept{c.Shard, c.Index, c.Seq})
			}
			if !reflect.DeepEqual(k, tt.wantKept) || !reflect.DeepEqual(next, tt.wantNext) {
				t.Fatalf("kept %v next %v, want %v %v", k, next, tt.wantKept, tt.wantNext)
			}
		})
	}
}
