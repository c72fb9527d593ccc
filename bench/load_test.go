package bench

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Microsecond)
	}
	cases := []struct {
		q    float64
		want float64
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0, 1}}
	for _, c := range cases {
		if got := quantile(d, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
}

func TestRunCountsAndStops(t *testing.T) {
	boom := errors.New("boom")
	r := Run(4, time.Minute, func(ctx context.Context, w, i int) error {
		switch {
		case i >= 10:
			return ErrStop
		case i%5 == 4:
			return boom
		}
		return nil
	})
	if r.Ops != 4*8 || r.Errors != 4*2 || r.FirstError != "boom" {
		t.Fatalf("Run = %+v, want 32 ops and 8 errors", r)
	}
	if r.Seconds > 30 {
		t.Fatalf("Run did not stop when every worker returned ErrStop (%.1fs)", r.Seconds)
	}
}
