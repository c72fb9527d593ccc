package bench

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var xs []float64
	for i := 1; i <= 100; i++ {
		xs = append(xs, float64(i))
	}
	for _, c := range []struct{ q, want float64 }{{0, 1}, {0.01, 1}, {0.5, 50}, {0.9, 90}, {0.99, 99}, {1, 100}} {
		if got := Percentile(xs, c.q); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := Percentile([]float64{7}, 0.99); got != 7 {
		t.Errorf("one sample: %v", got)
	}
	if !math.IsNaN(Percentile(nil, 0.5)) {
		t.Error("no samples is not NaN")
	}
}

func TestSummarize(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	s := Summarize(xs)
	want := Summary{N: 5, Min: 1, Mean: 3, P50: 3, P90: 5, P99: 5, Max: 5}
	if s != want {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if xs[0] != 5 {
		t.Fatal("Summarize sorted its input")
	}
	if (Summarize(nil) != Summary{}) {
		t.Fatal("Summarize(nil) is not the zero Summary")
	}
}

func TestCDF(t *testing.T) {
	x, y := CDF([]float64{3, 1, 2, 2}, 0)
	wantX, wantY := []float64{1, 2, 3}, []float64{0.25, 0.75, 1}
	if len(x) != len(wantX) {
		t.Fatalf("CDF = %v %v, want %v %v", x, y, wantX, wantY)
	}
	for i := range x {
		if x[i] != wantX[i] || y[i] != wantY[i] {
			t.Fatalf("CDF = %v %v, want %v %v", x, y, wantX, wantY)
		}
	}
	// Downsampled: at most maxPoints (+1 for the end), monotone, ends at (max, 1).
	var many []float64
	for i := 0; i < 10007; i++ {
		many = append(many, float64((i*7919)%10007))
	}
	x, y = CDF(many, 100)
	if len(x) > 101 || len(x) < 50 {
		t.Fatalf("%d points for maxPoints 100", len(x))
	}
	for i := 1; i < len(x); i++ {
		if x[i] <= x[i-1] || y[i] <= y[i-1] {
			t.Fatalf("not increasing at %d: (%v,%v) after (%v,%v)", i, x[i], y[i], x[i-1], y[i-1])
		}
	}
	if x[len(x)-1] != 10006 || y[len(y)-1] != 1 {
		t.Fatalf("ends at (%v, %v)", x[len(x)-1], y[len(y)-1])
	}
	if x, y := CDF(nil, 10); x != nil || y != nil {
		t.Fatal("CDF of nothing")
	}
}

func TestConversions(t *testing.T) {
	ds := []time.Duration{1500 * time.Microsecond, 2 * time.Second}
	if m := Millis(ds); m[0] != 1.5 || m[1] != 2000 {
		t.Fatalf("Millis = %v", m)
	}
	if u := Micros(ds); u[0] != 1500 || u[1] != 2e6 {
		t.Fatalf("Micros = %v", u)
	}
	if !math.IsNaN(ratio(1, 0)) || !math.IsNaN(ratio(math.NaN(), 1)) || ratio(3, 2) != 1.5 {
		t.Fatal("ratio")
	}
}

func TestKVRoundSummaries(t *testing.T) {
	rs := []Result{
		{System: "lambdadb", Op: "put", Round: 1, OpsPerSec: 100},
		{System: "etcd", Op: "put", Round: 1, OpsPerSec: 200},
		{System: "etcd", Op: "put", Round: 2, OpsPerSec: 100},
		{System: "lambdadb", Op: "put", Round: 2, OpsPerSec: 90},
		{System: "lambdadb", Op: "put", Round: 3, OpsPerSec: 300},
		{System: "etcd", Op: "put", Round: 3, OpsPerSec: 300},
		{System: "lambdadb", Op: "get", Consistency: "stale", Round: 1, OpsPerSec: 5},
	}
	l, e := kvRounds(rs, "lambdadb", "put", ""), kvRounds(rs, "etcd", "put", "")
	if len(l) != 3 || len(e) != 3 {
		t.Fatalf("rounds: %d, %d", len(l), len(e))
	}
	if m := medianRound(l); m.OpsPerSec != 100 || m.Round != 1 {
		t.Fatalf("median lambdadb round: %+v", m)
	}
	if m := medianRound(e[:2]); m.OpsPerSec != 100 {
		t.Fatalf("median of two: %+v", m)
	}
	// Ratios pair rounds: 0.5, 0.9, 1.0 → 0.9 (not 100/200 from the medians).
	if got := pairedRatios(l, e); !slices.Equal(got, []float64{0.5, 0.9, 1}) {
		t.Fatalf("paired ratios %v", got)
	}
	if got := pairedRatio(l, e); got != 0.9 {
		t.Fatalf("paired ratio %v", got)
	}
	if got := pairedRatio(l[:2], e[:2]); math.Abs(got-0.7) > 1e-12 {
		t.Fatalf("paired ratio of two rounds %v", got)
	}
	if got := pairedRatio(l, nil); !math.IsNaN(got) {
		t.Fatalf("paired ratio without etcd %v", got)
	}
	if medianRound(nil) != nil {
		t.Fatal("median of nothing")
	}
}

func TestKVOneClientRounds(t *testing.T) {
	rs := []Result{
		{System: "lambdadb", Op: "put", Round: 1, Clients: 64, OpsPerSec: 2000, P50us: 30000, Ops: 1},
		{System: "lambdadb", Op: "put", Round: 1, Clients: 1, OpsPerSec: 400, P50us: 2000, Ops: 1},
		{System: "etcd", Op: "put", Round: 1, Clients: 64, OpsPerSec: 1000, P50us: 60000, Ops: 1},
		{System: "etcd", Op: "put", Round: 1, Clients: 1, OpsPerSec: 200, P50us: 5000, Ops: 1},
		{System: "etcd", Op: "put", Round: 2, Clients: 1, OpsPerSec: 250, P50us: 4000, Ops: 1},
		{System: "lambdadb", Op: "put", Round: 2, Clients: 1, OpsPerSec: 250, P50us: 3000, Ops: 1},
	}
	l1, e1 := kvRoundsN(rs, "lambdadb", "put", "", 1), kvRoundsN(rs, "etcd", "put", "", 1)
	if len(l1) != 2 || len(e1) != 2 || len(kvRoundsN(rs, "lambdadb", "put", "", 64)) != 1 || len(kvRounds(rs, "etcd", "put", "")) != 3 {
		t.Fatalf("rounds by clients: %d, %d", len(l1), len(e1))
	}
	if got := pairedRatio(l1, e1); got != 1.5 { // 2 and 1
		t.Fatalf("1-client ops ratio %v", got)
	}
	if got := pairedRatioOf(l1, e1, p50Of); math.Abs(got-0.575) > 1e-12 { // 0.4 and 0.75
		t.Fatalf("1-client p50 ratio %v", got)
	}
	if got := opLabel(*l1[0]); got != "put, 1 client" {
		t.Fatalf("label %q", got)
	}
	if got := opLabel(rs[0]); got != "put" {
		t.Fatalf("label %q", got)
	}
}
