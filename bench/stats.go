package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the q-quantile (0 ≤ q ≤ 1) of sorted by the
// nearest-rank method: the smallest value with at least q of the values at
// or below it. It returns NaN for no values.
func Percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Summary is the distribution of a set of samples.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// Summarize returns the distribution of xs (which it does not modify);
// the zero Summary for no samples.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Summary{
		N: len(s), Min: s[0], Max: s[len(s)-1], Mean: sum / float64(len(s)),
		P50: Percentile(s, 0.50), P90: Percentile(s, 0.90), P99: Percentile(s, 0.99),
	}
}

// CDF returns the empirical cumulative distribution of xs as points
// (x, fraction of samples ≤ x), sorted by x, with at most maxPoints points
// (0: all). The last point is always (max, 1).
func CDF(xs []float64, maxPoints int) (x, y []float64) {
	if len(xs) == 0 {
		return nil, nil
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	step := 1
	if maxPoints > 0 && n > maxPoints {
		step = (n + maxPoints - 1) / maxPoints
	}
	for i := step - 1; i < n; i += step {
		// Of equal values keep only the last (its fraction counts them all).
		for i+1 < n && s[i+1] == s[i] {
			i++
		}
		x = append(x, s[i])
		y = append(y, float64(i+1)/float64(n))
	}
	if x[len(x)-1] != s[n-1] || y[len(y)-1] != 1 {
		x, y = append(x, s[n-1]), append(y, 1)
	}
	return x, y
}

// Millis converts durations to float milliseconds.
func Millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// Micros converts durations to float microseconds.
func Micros(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Microsecond)
	}
	return out
}

// ratio returns a/b, NaN when b is 0 or either is NaN.
func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}
