package bench

import (
	"math"
	"math/rand/v2"
	"time"
)

// GmailMix is a distribution of RPC durations shaped like the Gmail trace
// the OpenLambda paper describes: most RPCs are shorter than 100 ms, and
// those average 27 ms. The paper gives no more of the trace, so the rest
// is this package's assumption, stated in the report:
//
//   - a fraction ShortFraction (90 %) of RPCs is short: an integer number of
//     milliseconds k in 1..99 with P(k) ∝ exp(-k/θ), θ chosen so that
//     their mean is ShortMeanMS (27 ms);
//   - the rest is long: log-uniform between LongMinMS (100) and LongMaxMS
//     (1000 ms), rounded to whole milliseconds.
//
// Durations are whole milliseconds because the sleep handler takes them.
type GmailMix struct {
	ShortFraction float64 // default 0.9
	ShortMeanMS   float64 // default 27
	LongMinMS     float64 // default 100
	LongMaxMS     float64 // default 1000

	cdf []float64 // cumulative P(k) of short RPCs, k = 1..99
}

// shortMaxMS is the longest short RPC.
const shortMaxMS = 99

// NewGmailMix returns the default mix with its short-RPC table built.
func NewGmailMix() *GmailMix {
	g := &GmailMix{ShortFraction: 0.9, ShortMeanMS: 27, LongMinMS: 100, LongMaxMS: 1000}
	g.build()
	return g
}

// Theta returns θ of the short RPCs' distribution.
func (g *GmailMix) Theta() float64 {
	// The mean of P(k) ∝ exp(-k/θ) on 1..99 grows with θ: bisect.
	lo, hi := 0.01, 1e6
	for i := 0; i < 200; i++ {
		mid := (lo + hi) / 2
		if shortMean(mid) < g.ShortMeanMS {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

func shortMean(theta float64) float64 {
	var sum, wsum float64
	for k := 1; k <= shortMaxMS; k++ {
		w := math.Exp(-float64(k) / theta)
		sum += w
		wsum += w * float64(k)
	}
	return wsum / sum
}

func (g *GmailMix) build() {
	theta := g.Theta()
	g.cdf = make([]float64, shortMaxMS)
	var total float64
	for k := 1; k <= shortMaxMS; k++ {
		total += math.Exp(-float64(k) / theta)
		g.cdf[k-1] = total
	}
	for i := range g.cdf {
		g.cdf[i] /= total
	}
}

// Sample draws one RPC duration in milliseconds and whether it is short.
func (g *GmailMix) Sample(r *rand.Rand) (ms int, short bool) {
	if g.cdf == nil {
		g.build()
	}
	if r.Float64() < g.ShortFraction {
		u := r.Float64()
		for i, c := range g.cdf {
			if u < c {
				return i + 1, true
			}
		}
		return shortMaxMS, true
	}
	lr := math.Log(g.LongMinMS) + r.Float64()*(math.Log(g.LongMaxMS)-math.Log(g.LongMinMS))
	return int(math.Round(math.Exp(lr))), false
}

// Trace draws n durations from g with a generator seeded by seed: the same
// seed gives the same trace.
func (g *GmailMix) Trace(n int, seed int64) (ms []int, short []bool) {
	r := rand.New(rand.NewPCG(uint64(seed), 0x6c616d6264616462)) // "lambdadb"
	ms, short = make([]int, n), make([]bool, n)
	for i := range ms {
		ms[i], short[i] = g.Sample(r)
	}
	return ms, short
}

// Billed rounds a metered duration up to the billing granularity, as the
// node's meter does.
func Billed(d, granularity time.Duration) time.Duration {
	if granularity <= 0 {
		return d
	}
	return (d + granularity - 1) / granularity * granularity
}
