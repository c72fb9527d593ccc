package bench

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	tail := " 11419 11419 10057 0 -1 4194304 99 0 0 0 1234 567 0 0 20 0 1 0 529496 3133440 360 18446744073709551615 0 0 0 0"
	for _, c := range []struct {
		name  string
		line  string
		state byte
		ticks uint64
		bad   bool
	}{
		{name: "plain", line: "11421 (lambdadb) S" + tail + "\n", state: 'S', ticks: 1234 + 567},
		{name: "spaces in comm", line: "7 (my server) R" + tail, state: 'R', ticks: 1801},
		{name: "parentheses in comm", line: "7 (a) b (c)) S" + tail, state: 'S', ticks: 1801},
		{name: "comm looks like fields", line: "7 (x) R 1 1 1 0 -1 0 0 0 0 0 9 9 0) D" + tail, state: 'D', ticks: 1801},
		{name: "zombie", line: "7 (lambdadb) Z" + tail, state: 'Z', ticks: 1801},
		{name: "large counters", line: "7 (x) S 1 1 1 0 -1 0 0 0 0 0 4294967296 4294967296 0 0", state: 'S', ticks: 1 << 33},
		{name: "no parenthesis", line: "7 lambdadb S" + tail, bad: true},
		{name: "truncated", line: "7 (lambdadb) S 1 1 1 0 -1 0 0 0 0 0 5", bad: true},
		{name: "not a number", line: "7 (lambdadb) S 1 1 1 0 -1 0 0 0 0 0 x 5 0", bad: true},
		{name: "negative", line: "7 (lambdadb) S 1 1 1 0 -1 0 0 0 0 0 5 -5 0", bad: true},
		{name: "empty", line: "", bad: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := parseProcStat(c.line)
			if c.bad {
				if err == nil {
					t.Fatalf("parseProcStat(%q) = %+v, want an error", c.line, st)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.State != c.state || st.Ticks != c.ticks {
				t.Fatalf("parseProcStat(%q) = state %c, ticks %d; want %c, %d", c.line, st.State, st.Ticks, c.state, c.ticks)
			}
		})
	}
}

func TestProcUsageSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	for i := 0; i < 1e7; i++ { // some CPU time to count
		_ = i * i
	}
	ticks, rss, err := procUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || ticks > 1e9 {
		t.Fatalf("procUsage(self) = %d ticks, %d bytes resident", ticks, rss)
	}
}

func TestIdleStartFailureIsARow(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	sz := QuickSizes
	sz.IdleShards = []int{16, 64}
	e := &Env{Sizes: sz, LambdaBin: filepath.Join(t.TempDir(), "no-such-lambdadb"), OutDir: t.TempDir(), Progress: io.Discard}
	rep, err := runIdle(context.Background(), e)
	if err == nil || !strings.Contains(err.Error(), "no cluster started") {
		t.Fatalf("runIdle error = %v", err)
	}
	runs := *rep.Data.(*[]idleRun)
	if len(runs) != 2 || runs[0].Started || runs[1].Started || runs[0].Error == "" {
		t.Fatalf("runs: %+v", runs)
	}
	if v, ok := rep.Lookup("clusters that failed to start or to be sampled"); !ok || v != 2 {
		t.Fatalf("failed starts metric %v %v", v, ok)
	}
	if v, _ := rep.Lookup("64 shards: idle CPU per node (median of 3)"); !math.IsNaN(v) {
		t.Fatalf("CPU of a cluster that did not start: %v", v)
	}
	if len(rep.Tables) != 1 || len(rep.Tables[0].Rows) != 2 || !strings.HasPrefix(rep.Tables[0].Rows[1][1], "no: ") {
		t.Fatalf("table %+v", rep.Tables)
	}
}
