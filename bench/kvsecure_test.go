package bench

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kvSecureResults fakes RunKVSecure's results: rounds rounds, secure at
// share of insecure's ops/s (per operation), latencies inverse.
func kvSecureResults(rounds int, share map[string]float64) []Result {
	var rs []Result
	for round := 1; round <= rounds; round++ {
		for _, o := range kvSecureOps {
			base := 1000.0 * float64(round) // rounds differ; the paired ratio does not
			for _, sys := range []string{sysInsecure, sysSecure} {
				ops := base
				if sys == sysSecure {
					ops = base * share[o.label]
				}
				rs = append(rs, Result{System: sys, Op: o.op, Consistency: o.level, Round: round, Clients: 64,
					Ops: int(ops * 3), OpsPerSec: ops, P50us: 64e6 / ops, P99us: 4 * 64e6 / ops,
					NodeCPUus: 1e6 / ops, ClientCPUus: 5e5 / ops})
			}
		}
	}
	return rs
}

func TestKVSecureMetrics(t *testing.T) {
	rep := &ScenarioReport{}
	rs := kvSecureResults(3, map[string]float64{"put": 0.95, "linearizable get": 0.8, "stale get": 0.9})
	kvSecureMetrics(rep, rs)
	if rep.Metrics[0].Name != "put ops/s ratio secure/insecure" {
		t.Fatalf("first metric %q: the report's headline should be the put ratio", rep.Metrics[0].Name)
	}
	for name, want := range map[string]float64{
		"put ops/s ratio secure/insecure":                                    0.95,
		"linearizable get ops/s ratio secure/insecure":                       0.8,
		"stale get ops/s ratio secure/insecure":                              0.9,
		"put p50 ratio secure/insecure (higher: secure slower)":              1 / 0.95,
		"insecure put ops/s":                                                 2000, // the median round
		"secure stale get ops/s":                                             1800,
		"insecure linearizable get p50":                                      32, // 64e6/2000 µs
		"secure put p99":                                                     4 * 64e3 / 1900,
		"linearizable get p50 ratio secure/insecure (higher: secure slower)": 1 / 0.8,
		"stale get server CPU per op ratio secure/insecure":                  1 / 0.9,
		"put client CPU per op ratio secure/insecure":                        1 / 0.95,
		"insecure put server CPU per op (3 nodes, median of rounds)":         500, // 1e6/2000
		"secure put client CPU per op (median of rounds)":                    5e5 / 1900,
	} {
		got, ok := rep.Lookup(name)
		if !ok || math.Abs(got-want) > 1e-9*want {
			t.Errorf("%s = %v (%v), want %v", name, got, ok, want)
		}
	}
	notes := strings.Join(rep.Notes, "\n")
	for _, want := range []string{
		"met (median ratio): put 0.95, stale get 0.90.",
		"missed (median ratio): linearizable get 0.80.",
		"put ops/s ratio secure/insecure by round: 0.95, 0.95, 0.95 (median 0.95).",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	if len(rep.Tables) != 1 || len(rep.Tables[0].Rows) != len(rs) {
		t.Fatalf("table: %+v", rep.Tables)
	}
}

func TestKVSecureMetricsPartial(t *testing.T) {
	// A run that failed after the first insecure puts: no ratio, no verdict.
	rep := &ScenarioReport{}
	kvSecureMetrics(rep, []Result{{System: sysInsecure, Op: "put", Round: 1, Ops: 10, OpsPerSec: 5, P50us: 10, P99us: 20}})
	if v, ok := rep.Lookup("put ops/s ratio secure/insecure"); !ok || !math.IsNaN(v) {
		t.Fatalf("ratio without secure results = %v, %v; want NaN", v, ok)
	}
	if v, _ := rep.Lookup("insecure put ops/s"); v != 5 {
		t.Fatalf("insecure put ops/s = %v", v)
	}
	if v, _ := rep.Lookup("insecure put server CPU per op (3 nodes, median of rounds)"); !math.IsNaN(v) {
		t.Fatalf("CPU per op not measured = %v, want NaN", v)
	}
	for _, n := range rep.Notes {
		if strings.Contains(n, "Target") {
			t.Fatalf("verdict without a ratio: %q", n)
		}
	}
}

func TestKVSecurePlots(t *testing.T) {
	dir := t.TempDir()
	e := &Env{Sizes: QuickSizes, OutDir: dir, Progress: io.Discard}
	rep := &ScenarioReport{}
	if err := kvSecurePlots(e, rep, kvSecureResults(1, map[string]float64{"put": 0.5, "linearizable get": 0.5, "stale get": 0.5})); err != nil {
		t.Fatal(err)
	}
	if len(rep.Plots) != 2 {
		t.Fatalf("plots %v", rep.Plots)
	}
	for _, p := range rep.Plots {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !strings.Contains(string(b), "<svg") {
			t.Fatalf("%s: %v", p, err)
		}
	}
}

func TestWriteClusterSecret(t *testing.T) {
	dir := t.TempDir()
	p, err := writeClusterSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file %v, %v; want mode 0600", fi, err)
	}
	b, _ := os.ReadFile(p)
	if len(strings.TrimSpace(string(b))) < 32 {
		t.Fatalf("secret of %d bytes, serve wants at least 32", len(strings.TrimSpace(string(b))))
	}
	q, _ := writeClusterSecret(t.TempDir())
	c, _ := os.ReadFile(q)
	if string(b) == string(c) {
		t.Fatal("two clusters got the same secret")
	}
}

func TestSelectKVSecure(t *testing.T) {
	got, err := Select("kv-secure")
	if err != nil || len(got) != 1 || got[0].Name != "kv-secure" {
		t.Fatalf("Select(kv-secure) = %v, %v", got, err)
	}
}
