package lambda_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
)

func TestRing(t *testing.T) {
	for _, tc := range []struct {
		size   int
		pushes []int
		want   []int
	}{
		{3, nil, []int{}},
		{3, []int{1}, []int{1}},
		{3, []int{1, 2, 3}, []int{1, 2, 3}},
		{3, []int{1, 2, 3, 4}, []int{2, 3, 4}},
		{3, []int{1, 2, 3, 4, 5, 6, 7}, []int{5, 6, 7}},
		{1, []int{1, 2}, []int{2}},
		{0, []int{1, 2}, []int{2}}, // at least one
	} {
		r := lambda.NewRing[int](tc.size)
		for _, v := range tc.pushes {
			r.Push(v)
		}
		if got := r.Items(); !reflect.DeepEqual(got, tc.want) || r.Len() != len(tc.want) {
			t.Errorf("ring of %d after %v: %v (len %d), want %v", tc.size, tc.pushes, got, r.Len(), tc.want)
		}
	}
}

func TestMergeSeries(t *testing.T) {
	// Histogram bucket 40 holds calls of 2^10..2^10.25 µs, bucket 60 of
	// 2^15..2^15.25 µs.
	b40, b60 := lambda.BucketUpperUS(40), lambda.BucketUpperUS(60)
	for _, tc := range []struct {
		name   string
		series [][]lambda.Point
		want   []lambda.Point
	}{
		{"none", nil, []lambda.Point{}},
		{"one node passes through, percentiles recomputed",
			[][]lambda.Point{{{T: 5000, Invocations: 2, Histogram: map[int]uint64{40: 2}}}},
			[]lambda.Point{{T: 5000, Invocations: 2, Histogram: map[int]uint64{40: 2}, P50US: b40, P99US: b40}}},
		{"same T adds up; p99 from the merged histogram",
			[][]lambda.Point{
				{{T: 5000, Invocations: 99, Errors: 1, Throttles: 2, BilledMS: 10, GBSeconds: 0.5, KVCalls: 3, KVBytes: 30,
					Starts: map[string]uint64{"warm": 99}, Sandboxes: lambda.SandboxCounts{Paused: 1},
					Histogram: map[int]uint64{40: 99}, P50US: b40, P99US: b40}},
				{{T: 5000, Invocations: 1, Throttles: 1, BilledMS: 5, GBSeconds: 0.25, KVCalls: 1, KVBytes: 10,
					Starts: map[string]uint64{"cold": 1}, Sandboxes: lambda.SandboxCounts{Running: 1, Cold: 1},
					Histogram: map[int]uint64{60: 1}, P50US: b60, P99US: b60}},
			},
			[]lambda.Point{{T: 5000, Invocations: 100, Errors: 1, Throttles: 3, BilledMS: 15, GBSeconds: 0.75, KVCalls: 4, KVBytes: 40,
				Starts: map[string]uint64{"warm": 99, "cold": 1}, Sandboxes: lambda.SandboxCounts{Running: 1, Paused: 1, Cold: 1},
				Histogram: map[int]uint64{40: 99, 60: 1}, P50US: b40, P99US: b40}}},
		{"p99 moves to the slow bucket when it holds more than 1%",
			[][]lambda.Point{
				{{T: 5000, Invocations: 98, Histogram: map[int]uint64{40: 98}}},
				{{T: 5000, Invocations: 2, Histogram: map[int]uint64{60: 2}}},
			},
			[]lambda.Point{{T: 5000, Invocations: 100, Histogram: map[int]uint64{40: 98, 60: 2}, P50US: b40, P99US: b60}}},
		{"different T interleave in order; a node missing a point adds nothing",
			[][]lambda.Point{
				{{T: 5000, Invocations: 1}, {T: 15000, Invocations: 3}},
				{{T: 10000, Invocations: 2}, {T: 15000, Invocations: 4}},
			},
			[]lambda.Point{{T: 5000, Invocations: 1}, {T: 10000, Invocations: 2}, {T: 15000, Invocations: 7}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lambda.MergeSeries(tc.series...)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestSeriesSampling: each sample holds the interval's difference of the
// meters (not their totals), and the sandboxes at its end.
func TestSeriesSampling(t *testing.T) {
	v := newEnv(t, lambda.Config{SampleInterval: time.Hour, SampleCount: 3})
	f := v.deploy(t, "echo", wasmtest.Example(t, "echo"), lambda.DeployOptions{})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := v.e.Series(f.Name); len(got) != 0 {
		t.Fatalf("series before any call: %+v", got)
	}
	for range 3 {
		if _, err := v.invoke("echo", "x"); err != nil {
			t.Fatal(err)
		}
	}
	lambda.Sample(v.e, t0)
	if _, err := v.invoke("echo", "x"); err != nil {
		t.Fatal(err)
	}
	lambda.Sample(v.e, t0.Add(time.Hour))
	lambda.Sample(v.e, t0.Add(2*time.Hour))
	lambda.Sample(v.e, t0.Add(3*time.Hour)) // the ring holds 3: the first drops
	got := v.e.Series(f.Name)
	if len(got) != 3 {
		t.Fatalf("%d points, want 3: %+v", len(got), got)
	}
	want := []struct {
		t     time.Time
		calls uint64
	}{{t0.Add(time.Hour), 1}, {t0.Add(2 * time.Hour), 0}, {t0.Add(3 * time.Hour), 0}}
	for i, w := range want {
		p := got[i]
		if p.T != w.t.UnixMilli() || p.Invocations != w.calls {
			t.Fatalf("point %d: T %d invocations %d, want %d and %d", i, p.T, p.Invocations, w.t.UnixMilli(), w.calls)
		}
		if p.Sandboxes.Paused != 1 {
			t.Fatalf("point %d: sandboxes %+v, want one paused", i, p.Sandboxes)
		}
	}
	if p := got[0]; p.Starts[lambda.StartWarm] != 1 || p.BilledMS < 1 || p.P50US <= 0 {
		t.Fatalf("point 0: %+v", p)
	}
	// The points add up to the calls since the first sample.
	var sum uint64
	for _, p := range got {
		sum += p.Invocations
	}
	if st := v.e.Stats(f); st.Invocations != 4 || sum != 1 {
		t.Fatalf("stats %d invocations, series sum %d", st.Invocations, sum)
	}
}

// TestDeployHistory: every deploy is recorded with its config and node,
// newest first, at most Config.DeployHistory; remove drops the history.
func TestDeployHistory(t *testing.T) {
	v := newEnv(t, lambda.Config{DeployHistory: 2})
	ctx := context.Background()
	echo, counter := wasmtest.Example(t, "echo"), wasmtest.Example(t, "counter")
	a := v.deploy(t, "h", echo, lambda.DeployOptions{MemoryMB: 64})
	v.now.Advance(time.Second)
	b := v.deploy(t, "h", counter, lambda.DeployOptions{MemoryMB: 128, TimeoutMS: 2000})
	got, err := v.e.Deploys(ctx, "h")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].SHA256 != b.SHA256 || got[1].SHA256 != a.SHA256 {
		t.Fatalf("history %+v", got)
	}
	d := got[0]
	if d.MemoryMB != 128 || d.TimeoutMS != 2000 || d.Size != len(counter) || d.Node != v.node.ID() || !d.Time.Equal(b.DeployedAt) {
		t.Fatalf("newest deploy %+v, function %+v", d, b)
	}
	v.now.Advance(time.Second)
	c := v.deploy(t, "h", echo, lambda.DeployOptions{})
	if got, _ = v.e.Deploys(ctx, "h"); len(got) != 2 || got[0].SHA256 != c.SHA256 || got[1].SHA256 != b.SHA256 {
		t.Fatalf("history after a third deploy (keeps 2): %+v", got)
	}
	if _, err := v.e.Remove(ctx, "h", nil); err != nil {
		t.Fatal(err)
	}
	if got, err = v.e.Deploys(ctx, "h"); err != nil || len(got) != 0 {
		t.Fatalf("history after remove: %+v %v", got, err)
	}
}
