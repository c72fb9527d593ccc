package bench

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testReport() *Report {
	sc := &ScenarioReport{Name: "kv-put", Title: "puts", Measures: "what", Method: "how", Rerun: "go run x -scenarios kv-put",
		Seconds: 12.3, Plots: []string{"kv-put-throughput.svg"}, Paper: "paper says", Data: []Result{{System: "etcd", Op: "put"}}}
	sc.Param("clients", 64)
	sc.Param("a|b", "x|y")
	sc.Metric("put ops/s ratio lambdadb/etcd", 0.87, "×")
	sc.Metric("missing", math.NaN(), "ms")
	sc.Note("note %d", 1)
	sc.Tables = append(sc.Tables, Table{Title: "rows", Columns: []string{"a", "b"}, Rows: [][]string{{"1", "2"}}})
	failed := &ScenarioReport{Name: "burst", Error: "bench: boom\nsecond line", Rerun: "r"}
	return &Report{Suite: "LambdaBench", Started: time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC),
		Finished: time.Date(2026, 11, 26, 1, 5, 3, 0, time.UTC), Quick: true, Command: "go run ./bench/cmd/lambdabench -quick",
		Machine:   Machine{CPU: "cpu", Cores: 2, RAMBytes: 4 << 30, OS: "Debian", Kernel: "6.1", GoVersion: "go1.26", Commit: "abc"},
		Scenarios: []*ScenarioReport{sc, failed}}
}

func TestReportWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	r := testReport()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Quick     bool `json:"quick"`
		Machine   Machine
		Scenarios []struct {
			Name    string `json:"name"`
			Error   string `json:"error"`
			Metrics []struct {
				Name  string   `json:"name"`
				Value *float64 `json:"value"`
				Unit  string   `json:"unit"`
			} `json:"metrics"`
			Params []Param `json:"params"`
			Rerun  string  `json:"rerun"`
		} `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	if !back.Quick || back.Machine.Cores != 2 || len(back.Scenarios) != 2 {
		t.Fatalf("round trip: %+v", back)
	}
	m := back.Scenarios[0].Metrics
	if m[0].Value == nil || *m[0].Value != 0.87 || m[0].Unit != "×" {
		t.Fatalf("metric: %+v", m[0])
	}
	if m[1].Value != nil {
		t.Fatalf("NaN metric encoded as %v, want null", *m[1].Value)
	}
	if back.Scenarios[1].Error == "" || back.Scenarios[0].Rerun == "" {
		t.Fatalf("error or rerun lost: %+v", back.Scenarios)
	}

	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# LambdaBench report, 2026-11-26 01:02 UTC (quick sizes)",
		"| [`kv-put`](#kv-put) | put ops/s ratio lambdadb/etcd: 0.87 × | 12 s |",
		"| [`burst`](#burst) | **failed**: bench: boom | 0 s |",
		"| missing | n/a |",
		`| a\|b | x\|y |`,
		"![kv-put-throughput.svg](kv-put-throughput.svg)",
		"**The paper.** paper says",
		"- note 1",
		"Rerun: `go run x -scenarios kv-put`",
		"**Machine.** cpu, 2 cores, 4.0 GiB RAM",
		"| a | b |\n|---|---|\n| 1 | 2 |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q\n%s", want, md)
		}
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{2041, "ops/s", "2041 ops/s"}, {0.8712, "×", "0.871 ×"}, {12.345, "ms", "12.3 ms"}, {153.7, "", "154"},
		{0.01234, "", "0.0123"}, {math.NaN(), "ms", "n/a"}, {math.Inf(1), "", "n/a"}, {3, "", "3"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
	for _, c := range []struct {
		us   float64
		want string
	}{{850, "850 µs"}, {1200, "1.20 ms"}, {3.4e6, "3.40 s"}} {
		if got := fmtMicros(c.us); got != c.want {
			t.Errorf("fmtMicros(%v) = %q, want %q", c.us, got, c.want)
		}
	}
}

func TestCollectMachine(t *testing.T) {
	m := CollectMachine(context.Background(), "", "")
	if m.Cores < 1 || m.GoVersion == "" || m.CPU == "" || m.Commit == "" {
		t.Fatalf("CollectMachine = %+v", m)
	}
	if m.EtcdVersion != "" || m.Python != "" {
		t.Fatalf("versions of binaries not asked for: %+v", m)
	}
}

func TestFmtCounts(t *testing.T) {
	if got := fmtCounts(map[string]int{"restart": 4, "warm": 396, "cold": 4}); got != "warm 396, cold 4, restart 4" {
		t.Fatalf("fmtCounts = %q", got)
	}
	if got := fmtCounts(map[string]uint64{}); got != "none" {
		t.Fatalf("fmtCounts of nothing = %q", got)
	}
}
