package bench

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestGmailMixShape(t *testing.T) {
	g := NewGmailMix()
	ms, short := g.Trace(200000, 1)
	var nShort, sumShort int
	for i, d := range ms {
		if short[i] {
			nShort++
			sumShort += d
			if d < 1 || d > 99 {
				t.Fatalf("short RPC of %d ms", d)
			}
		} else if d < 100 || d > 1000 {
			t.Fatalf("long RPC of %d ms", d)
		}
	}
	if f := float64(nShort) / float64(len(ms)); math.Abs(f-0.9) > 0.005 {
		t.Errorf("short fraction %.4f, want 0.9", f)
	}
	if m := float64(sumShort) / float64(nShort); math.Abs(m-27) > 0.3 {
		t.Errorf("short mean %.2f ms, want 27", m)
	}
	if m := shortMean(g.Theta()); math.Abs(m-27) > 1e-6 {
		t.Errorf("the short distribution's exact mean is %v, want 27", m)
	}
}

func TestGmailTraceIsSeeded(t *testing.T) {
	g := NewGmailMix()
	a, _ := g.Trace(1000, 7)
	b, _ := g.Trace(1000, 7)
	c, _ := g.Trace(1000, 8)
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave different traces")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds gave the same trace")
	}
}

func TestBilled(t *testing.T) {
	ms, us := time.Millisecond, time.Microsecond
	for _, c := range []struct {
		d, g, want time.Duration
	}{
		{27*ms + 300*us, ms, 28 * ms},
		{27*ms + 300*us, 100 * ms, 100 * ms},
		{27 * ms, ms, 27 * ms},
		{100 * ms, 100 * ms, 100 * ms},
		{100*ms + us, 100 * ms, 200 * ms},
		{0, 100 * ms, 0},
		{5 * us, ms, ms},
		{42 * us, 0, 42 * us},
	} {
		if got := Billed(c.d, c.g); got != c.want {
			t.Errorf("Billed(%v, %v) = %v, want %v", c.d, c.g, got, c.want)
		}
	}
}
