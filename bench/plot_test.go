package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func checkSVG(t *testing.T, path string, texts ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.HasPrefix(strings.TrimSpace(s), "<?xml") || !strings.Contains(s, "<svg") {
		t.Fatalf("%s is not an SVG", path)
	}
	if strings.Contains(s, "NaN") || strings.Contains(s, "Inf") {
		t.Fatalf("%s has non-finite coordinates", path)
	}
	for _, want := range texts {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
}

func TestWriteBars(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bars.svg")
	err := WriteBars(p, Bars{Title: "kv-put: throughput", YLabel: "ops/s", Categories: []string{"put", "get"},
		Series: []Series{{Name: "lambdadb", Values: []float64{2041, 5378}}, {Name: "etcd", Values: []float64{2357, math.NaN()}}}})
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, p, "kv-put: throughput", "lambdadb", "etcd", "2041")

	lp := filepath.Join(dir, "log.svg")
	err = WriteBars(lp, Bars{Title: "starts", Categories: []string{"warm", "restart", "first"}, Log: true, Format: fmtMicros,
		Series: []Series{{Name: "start", Values: []float64{0, 2500, 930000}}, {Name: "call", Values: []float64{95, 2600, 931000}}}})
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, lp, "starts", "10 µs", "1 s", "95 µs")

	if err := WriteBars(filepath.Join(dir, "x.svg"), Bars{Categories: []string{"a"}, Series: []Series{{Values: []float64{1, 2}}}}); err == nil {
		t.Error("a series longer than the categories was accepted")
	}
	if err := WriteBars(filepath.Join(dir, "y.svg"), Bars{Log: true, Categories: []string{"a"}, Series: []Series{{Values: []float64{0}}}}); err == nil {
		t.Error("a log chart without a positive value was accepted")
	}
}

func TestWriteLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cdf.svg")
	x, y := CDF([]float64{200, 201, 205, 230, 400}, 0)
	err := WriteLines(p, Lines{Title: "burst CDF", XLabel: "ms", YLabel: "fraction", YMax: 1,
		Curves: []Curve{{Name: "lambdadb", X: x, Y: y}}, VLines: []Mark{{Name: "median 205 ms", X: 205}}})
	if err != nil {
		t.Fatal(err)
	}
	checkSVG(t, p, "burst CDF", "median 205 ms")
	if err := WriteLines(p, Lines{}); err == nil {
		t.Error("a chart without curves was accepted")
	}
}
