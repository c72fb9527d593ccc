package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"lambdadb/client"
	"lambdadb/internal/testnode"
)

// shortWatch makes "node moves --watch" ask every 50 ms and end after
// 300 ms without moves, for the rest of the test.
func shortWatch(t *testing.T) {
	interval, quiet := movesWatchInterval, movesQuietTime
	movesWatchInterval, movesQuietTime = 50*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { movesWatchInterval, movesQuietTime = interval, quiet })
}

// TestNodeCommandsOneNode drives the node commands against a one-node
// cluster: its listing, and the refusals of what it cannot do.
func TestNodeCommandsOneNode(t *testing.T) {
	shortWatch(t)
	env := map[string]string{"LAMBDADB_SERVER": testnodeServer(t)}
	steps := []struct {
		args   []string
		code   int
		stdout string // regexp
		stderr string // substring
	}{
		{args: []string{"node", "list"},
			stdout: `^NODE +NUMBER +ADDR +UP +STATE +REPLICAS +LEADERS +MOVES\n` +
				fmt.Sprintf(`n1\* +1 +127\.0\.0\.1:\d+ +yes +active +%d +%d +0\n\nno replica moves in flight\n$`,
					testnode.DefaultShards+1, testnode.DefaultShards+1)},
		{args: []string{"node", "moves"}, stdout: `^no replica moves in flight\n$`},
		{args: []string{"node", "moves", "--watch"}, stdout: `^no replica moves in flight\n$`},
		{args: []string{"node", "decommission", "n1"}, code: 1, stderr: "(status 409, conflict)"},
		{args: []string{"node", "decommission", "n9"}, code: 1, stderr: "lambdadb: shard: no such node: n9 (status 404, unknown_node)"},
		{args: []string{"node", "remove", "n1"}, code: 1, stderr: "decommission it (lambdadb node decommission n1), or stop it first (status 409, conflict)"},
		{args: []string{"node", "remove", "n9"}, code: 1, stderr: "unknown_node"},
		{args: []string{"node", "rebalance", "--pause"}, stdout: `^rebalancing paused`},
		{args: []string{"node", "list"}, stdout: `\n\nrebalancing is paused: .*\nno replica moves in flight\n$`},
		{args: []string{"node", "moves", "--watch"}, stdout: `^no replica moves in flight; rebalancing is paused`},
		{args: []string{"node", "rebalance", "--resume"}, stdout: `^rebalancing resumed\n$`},
		{args: []string{"node", "rebalance"}, stdout: `^rebalancing: `},
		{args: []string{"node", "list"}, stdout: `active.*\n\nno replica moves in flight\n$`},
		{args: []string{"status"}, stdout: `^NODE +ADDR +UP +STATE\nn1\* +127\.0\.0\.1:\d+ +yes +active\n\nSHARD`},
		{args: []string{"node"}, code: 2, stderr: "node needs a subcommand: list, decommission, remove, moves, rebalance"},
		{args: []string{"node", "frob"}, code: 2, stderr: `unknown command "node frob"`},
		{args: []string{"help", "node"}, stdout: `node decommission +move every replica off a node\n`},
		{args: []string{"help", "node", "moves"}, stdout: `usage: lambdadb node moves \[--server URL\] \[--watch\]`},
	}
	for _, s := range steps {
		r := runCLI(env, "", s.args...)
		if r.code != s.code || !regexp.MustCompile(s.stdout).MatchString(r.stdout) || !strings.Contains(r.stderr, s.stderr) {
			t.Fatalf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout ~ %q, stderr ~ %q",
				s.args, r.code, s.code, r.stdout, r.stderr, s.stdout, s.stderr)
		}
	}
}

func TestNodeUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"node", "list", "extra"},
		{"node", "decommission"},
		{"node", "decommission", "n1", "n2"},
		{"node", "remove"},
		{"node", "remove", "--bogus", "n1"},
		{"node", "moves", "extra"},
		{"node", "rebalance", "extra"},
		{"node", "rebalance", "--pause", "--resume"},
		{"node", "list", "--server", "ftp://h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(nil, "", args...)
			cmd := args[0] + " " + args[1]
			if r.code != 2 || !strings.HasPrefix(r.stderr, "lambdadb "+cmd+": ") || !strings.Contains(r.stderr, "usage: lambdadb "+cmd) {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if r.stdout != "" {
				t.Fatalf("stdout = %q, want empty", r.stdout)
			}
		})
	}
}

func TestPrintMoves(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var b strings.Builder
	err := printMoves(&b, []client.MoveStatus{
		{Shard: "3", From: "n1", To: "n4", Phase: client.MoveLearner, Applied: 1200, Target: 1500,
			BytesSent: 12<<20 + 1<<19, Started: now.Add(-65 * time.Second), Waiting: "n4 is down\tfor now\n"},
		{Shard: "meta", To: "n2", Phase: client.MovePromote, Started: now.Add(-400 * time.Millisecond)},
		{Shard: "12", From: "n3", To: "n2", Phase: client.MoveRemove, Applied: 7, Target: 7, BytesSent: 512},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"SHARD  MOVE     PHASE    PROGRESS   SENT      AGE\n" +
		"3      n1 → n4  learner  1200/1500  12.5 MiB  1m5s  waiting: n4 is down for now\n" +
		"meta   - → n2   promote  -          0 B       0s\n" +
		"12     n3 → n2  remove   7/7        512 B     -\n"
	if b.String() != want {
		t.Fatalf("printMoves:\n%s\nwant:\n%s", b.String(), want)
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 30: "3.0 GiB", 5 << 40: "5.0 TiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestServeJoin starts a one-node cluster with "lambdadb serve", adds a
// second node with --join, then decommissions and removes it with the
// node commands; the data written meanwhile stays readable.
func TestServeJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nodes")
	}
	shortWatch(t)
	addr1, _ := startServe(t, "--replicas", "1")
	env := map[string]string{"LAMBDADB_SERVER": addr1}
	for i := range 20 {
		if r := runCLI(env, "", "put", fmt.Sprintf("k%02d", i), fmt.Sprint(i)); r.code != 0 {
			t.Fatalf("put: %s", r.stderr)
		}
	}
	addr2, stop2 := startServe(t, "--id", "n2", "--join", addr1, "--move-concurrency", "1", "--snapshot-rate-mb", "0")

	// Moves to n2 start once it is active; watch them until done.
	var r result
	deadline := time.Now().Add(90 * time.Second)
	for {
		r = runCLI(env, "", "node", "list")
		if r.code != 0 {
			t.Fatalf("node list: %s", r.stderr)
		}
		if regexp.MustCompile(`\nn2 +2 +` + regexp.QuoteMeta(addr2) + ` +yes +active +[1-9]`).MatchString(r.stdout) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 took no replica:\n%s", r.stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r = runCLI(env, "", "node", "moves", "--watch"); r.code != 0 || !strings.HasSuffix(r.stdout, "no replica moves in flight\n") {
		t.Fatalf("node moves --watch: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if r = runCLI(env, "", "node", "decommission", "n2"); r.code != 0 || !strings.HasPrefix(r.stdout, "n2 decommissioning") {
		t.Fatalf("node decommission: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(env, "", "node", "moves", "--watch")
	if r.code != 0 || !strings.Contains(r.stdout, "n2 → n1") || !strings.HasSuffix(r.stdout, "\nno replica moves in flight\n") {
		t.Fatalf("node moves --watch while decommissioning: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(env, "", "node", "list")
	if !regexp.MustCompile(`\nn2 +2 +\S+ +yes +decommissioned +0 +0 +0\n`).MatchString(r.stdout) {
		t.Fatalf("n2 not decommissioned:\n%s", r.stdout)
	}
	if r = runCLI(env, "", "node", "remove", "n2"); r.code != 0 || r.stdout != "n2 removed\n" {
		t.Fatalf("node remove: %d %s %s", r.code, r.stdout, r.stderr)
	}
	stop2()
	r = runCLI(env, "", "node", "list")
	if !regexp.MustCompile(`\nn2 +2 +\S+ +no +removed +0 +0 +0\n`).MatchString(r.stdout) {
		t.Fatalf("n2 not removed:\n%s", r.stdout)
	}
	r = runCLI(env, "", "scan")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 20 {
		t.Fatalf("scan after n2 left: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
