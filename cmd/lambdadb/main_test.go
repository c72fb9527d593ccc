package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/testnode"
)

// result is one CLI invocation's outcome.
type result struct {
	code           int
	stdout, stderr string
}

// testCLI returns a cli with in-memory I/O, no signal handling and env as
// its environment.
func testCLI(env map[string]string, stdin string) (*cli, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &cli{
		stdin:         strings.NewReader(stdin),
		stdout:        &stdout,
		stderr:        &stderr,
		getenv:        func(k string) string { return env[k] },
		notifyContext: context.WithCancel,
	}, &stdout, &stderr
}

func runCLI(env map[string]string, stdin string, args ...string) result {
	c, stdout, stderr := testCLI(env, stdin)
	code := c.run(args)
	return result{code, stdout.String(), stderr.String()}
}

func TestRunHelp(t *testing.T) {
	cases := []struct {
		args       []string
		code       int
		stdout     string // substring
		stderr     string // substring
		wantStdout bool
	}{
		{args: []string{"help"}, code: 0, stdout: "Commands:"},
		{args: []string{"-h"}, code: 0, stdout: "Commands:"},
		{args: []string{"--help"}, code: 0, stdout: "Commands:"},
		{args: []string{"help", "put"}, code: 0, stdout: "usage: lambdadb put"},
		{args: []string{"help", "serve"}, code: 0, stdout: "--peers id=host:port,..."},
		{args: []string{"scan", "-h"}, code: 0, stdout: "usage: lambdadb scan"},
		{args: []string{"get", "--help"}, code: 0, stdout: "--consistency level"},
		{args: nil, code: 2, stderr: "Commands:"},
		{args: []string{"frobnicate"}, code: 2, stderr: `lambdadb: unknown command "frobnicate"`},
		{args: []string{"help", "frobnicate"}, code: 2, stderr: "unknown command"},
		{args: []string{"help", "put", "get"}, code: 2, stderr: "usage: lambdadb help"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("run(%q) = %d\nstdout: %s\nstderr: %s", tc.args, code, stdout.String(), stderr.String())
			}
		})
	}
	// Every command has help.
	for _, cmd := range commands {
		var stdout bytes.Buffer
		if code := run([]string{"help", cmd.name}, &stdout, &bytes.Buffer{}); code != 0 || !strings.Contains(stdout.String(), cmd.summary) {
			t.Errorf("help %s = %d: %s", cmd.name, code, stdout.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := [][]string{
		{"put"},
		{"put", "k"},
		{"put", "k", "v", "extra"},
		{"put", "k", "v", "--file", "f"},
		{"put", "k", "v", "--if-match", "0"},
		{"put", "k", "v", "--if-match", "x"},
		{"put", "k", "v", "--if-match", "1", "--if-absent"},
		{"put", "--bogus", "k", "v"},
		{"get"},
		{"get", "a", "b"},
		{"get", "k", "--consistency"},
		{"del"},
		{"del", "k", "--if-match", "0"},
		{"scan", "extra"},
		{"scan", "--limit", "0"},
		{"scan", "--limit", "-5"},
		{"status", "extra"},
		{"status", "--server", "ftp://h"},
		{"serve", "extra"},
		{"serve", "--peers", "n1"},
		{"serve", "--peers", "n1=nope"},
		{"serve", "--shards", "many"},
		{"serve", "--peers", "n1=127.0.0.1:1,n2=127.0.0.1:2", "--join", "127.0.0.1:3"},
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(nil, "", args...)
			if r.code != 2 || !strings.HasPrefix(r.stderr, "lambdadb "+args[0]+": ") || !strings.Contains(r.stderr, "usage: lambdadb "+args[0]) {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if r.stdout != "" {
				t.Fatalf("stdout = %q, want empty", r.stdout)
			}
		})
	}
}

func TestUnreachableServer(t *testing.T) {
	// Port 1 on loopback: nothing listens there.
	r := runCLI(map[string]string{"LAMBDADB_SERVER": "127.0.0.1:1"}, "", "get", "k")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "lambdadb: ") || !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestClientCommands(t *testing.T) {
	ts := testnode.Serve(t, testnode.New(t))
	env := map[string]string{"LAMBDADB_SERVER": ts.URL}
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := scanPageSize
	scanPageSize = 2 // make "scan" page
	t.Cleanup(func() { scanPageSize = old })

	vars := map[string]string{}
	expand := func(s string) string {
		for k, v := range vars {
			s = strings.ReplaceAll(s, "{"+k+"}", v)
		}
		return s
	}
	steps := []struct {
		args   []string
		stdin  string
		code   int
		stdout string // exact, after expansion; "*" = anything
		stderr string // substring
		save   string // save trimmed stdout as this variable
	}{
		{args: []string{"put", "greeting", "hello"}, stdout: "*", save: "v1"},
		{args: []string{"get", "greeting"}, stdout: "hello"},
		{args: []string{"get", "greeting", "--consistency", "stale"}, stdout: "hello"},
		{args: []string{"get", "--consistency=linearizable", "greeting"}, stdout: "hello"},
		{args: []string{"get", "greeting", "--consistency", "session"}, stdout: "hello"},
		{args: []string{"get", "greeting", "--consistency", "strong"}, code: 1, stderr: "bad_consistency"},
		{args: []string{"put", "greeting", "bye", "--if-match", "999999"}, code: 1, stderr: "precondition_failed"},
		{args: []string{"put", "--if-match", "{v1}", "greeting", "bye"}, stdout: "*", save: "v2"},
		{args: []string{"get", "greeting"}, stdout: "bye"},
		{args: []string{"put", "greeting", "again", "--if-match", "{v1}"}, code: 1, stderr: "lambdadb: "},
		{args: []string{"put", "lock", "a", "--if-absent"}, stdout: "*"},
		{args: []string{"put", "lock", "b", "--if-absent"}, code: 1, stderr: "precondition_failed"},
		{args: []string{"put", "piped", "-"}, stdin: "line 1\nline 2\n", stdout: "*"},
		{args: []string{"get", "piped"}, stdout: "line 1\nline 2\n"},
		{args: []string{"put", "--file", file, "filed"}, stdout: "*"},
		{args: []string{"get", "filed"}, stdout: "from a file"},
		{args: []string{"put", "--file", filepath.Join(t.TempDir(), "nope"), "filed"}, code: 1, stderr: "no such file"},
		{args: []string{"put", "--", "-dash", "-5"}, stdout: "*"},
		{args: []string{"get", "--", "-dash"}, stdout: "-5"},
		{args: []string{"put", "a/b//c", "slashes"}, stdout: "*"},
		{args: []string{"get", "a/b//c"}, stdout: "slashes"},
		{args: []string{"get", "missing"}, code: 1, stderr: `lambdadb: "missing" not found`},
		{args: []string{"get", strings.Repeat("k", 1025)}, code: 1, stderr: "invalid_key"},
		{args: []string{"del", "lock"}, stdout: "deleted\n"},
		{args: []string{"del", "lock"}, stdout: "not found\n"},
		{args: []string{"del", "greeting", "--if-match", "{v1}"}, code: 1, stderr: "precondition_failed"},
		{args: []string{"del", "greeting", "--if-match", "{v2}"}, stdout: "deleted\n"},
		{args: []string{"put", "s/1", "one"}, stdout: "*"},
		{args: []string{"put", "s/2", "two"}, stdout: "*"},
		{args: []string{"put", "s/3", "three"}, stdout: "*"},
		{args: []string{"put", "s/4", "four"}, stdout: "*"},
		{args: []string{"put", "t/1", "other"}, stdout: "*"},
		{args: []string{"scan", "--prefix", "s/"}, stdout: "s/1\tone\ns/2\ttwo\ns/3\tthree\ns/4\tfour\n"},
		{args: []string{"scan", "--prefix", "s/", "--start", "s/2", "--end", "s/4"}, stdout: "s/2\ttwo\ns/3\tthree\n"},
		{args: []string{"scan", "--prefix", "s/", "--limit", "3"}, stdout: "s/1\tone\ns/2\ttwo\ns/3\tthree\n", stderr: `--start "s/4"`},
		{args: []string{"scan", "--prefix", "s/", "--limit", "20000"}, code: 1, stderr: "invalid_scan"},
		{args: []string{"scan", "--prefix", "t/", "--json"}, stdout: `{"key":"t/1","value":"b3RoZXI=","version":{t1}}` + "\n"},
		{args: []string{"scan", "--prefix", "nothing/"}, stdout: ""},
		{args: []string{"status"}, stdout: "*"},
	}
	for i, st := range steps {
		args := make([]string, len(st.args))
		for j, a := range st.args {
			args[j] = expand(a)
		}
		if strings.Contains(st.stdout, "{t1}") {
			// The version of t/1 is the one its put printed.
			vars["t1"] = vars["last"]
		}
		r := runCLI(env, st.stdin, args...)
		want := expand(st.stdout)
		if r.code != st.code || (st.stdout != "*" && r.stdout != want) || !strings.Contains(r.stderr, st.stderr) {
			t.Fatalf("step %d: lambdadb %q = %d\nstdout: %q (want %q)\nstderr: %q (want %q)",
				i, args, r.code, r.stdout, want, r.stderr, st.stderr)
		}
		if st.code == 0 && st.args[0] == "put" {
			v := strings.TrimSpace(r.stdout)
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				t.Fatalf("step %d: put printed %q, want a version", i, r.stdout)
			}
			vars["last"] = v
			if st.save != "" {
				vars[st.save] = v
			}
		}
	}

	// --server overrides $LAMBDADB_SERVER.
	r := runCLI(map[string]string{"LAMBDADB_SERVER": "http://127.0.0.1:1"}, "", "get", "--server", ts.URL, "s/1")
	if r.code != 0 || r.stdout != "one" {
		t.Fatalf("get --server = %d %q %q", r.code, r.stdout, r.stderr)
	}
}

func TestStatus(t *testing.T) {
	ts := testnode.Serve(t, testnode.New(t))
	r := runCLI(nil, "", "status", "--server", ts.URL)
	if r.code != 0 {
		t.Fatalf("status = %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	want := []string{
		"NODE  ADDR",
		"n1*  ",
		"",
		"SHARD  LEADER  REPLICAS  APPLIED",
	}
	if len(lines) != len(want)+testnode.DefaultShards {
		t.Fatalf("status printed %d lines:\n%s", len(lines), r.stdout)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Fatalf("line %d = %q, want prefix %q\n%s", i, lines[i], w, r.stdout)
		}
	}
	for s := range testnode.DefaultShards {
		f := strings.Fields(lines[len(want)+s])
		if len(f) != 4 || f[0] != strconv.Itoa(s) || f[1] != "n1" || f[2] != "n1" {
			t.Fatalf("shard line %q", lines[len(want)+s])
		}
	}
}

// TestServe runs "lambdadb serve" on a loopback port and a temporary
// directory, uses it, and stops it as SIGINT would.
func TestServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	c, _, stderr := testCLI(nil, "")
	c.notifyContext = func(context.Context) (context.Context, context.CancelFunc) {
		return context.WithCancel(ctx)
	}
	addrs := make(chan string, 1)
	c.ready = func(addr string) { addrs <- addr }
	done := make(chan int, 1)
	go func() { done <- c.run([]string{"serve", "--addr", "127.0.0.1:0", "--data", dir, "--shards", "2"}) }()

	var addr string
	select {
	case addr = <-addrs:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr)
	case <-time.After(time.Minute):
		t.Fatal("serve did not start")
	}
	env := map[string]string{"LAMBDADB_SERVER": "http://" + addr}
	if r := runCLI(env, "", "put", "k", "v"); r.code != 0 {
		t.Fatalf("put: %d %s", r.code, r.stderr)
	}
	if r := runCLI(env, "", "get", "k"); r.code != 0 || r.stdout != "v" {
		t.Fatalf("get: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r := runCLI(env, "", "status")
	if r.code != 0 || !strings.Contains(r.stdout, addr) {
		t.Fatalf("status does not show %s: %d %s %s", addr, r.code, r.stdout, r.stderr)
	}

	stop() // as SIGINT would
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, stderr)
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not stop")
	}
	logs := stderr.String()
	for _, want := range []string{"lambdadb serving", "addr=" + addr, "data=" + dir, "shutting down", "stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data directory: %v", err)
	}
}

func TestParsePeers(t *testing.T) {
	peers, err := parsePeers("n1=127.0.0.1:7001, n2=127.0.0.1:7002")
	if err != nil || fmt.Sprint(peers) != "[{n1 127.0.0.1:7001} {n2 127.0.0.1:7002}]" {
		t.Fatalf("parsePeers = %v, %v", peers, err)
	}
	for _, bad := range []string{"n1", "=a:1", "n1=", "n1=host", "n1=a:1,"} {
		if _, err := parsePeers(bad); err == nil {
			t.Errorf("parsePeers(%q) succeeded", bad)
		}
	}
}

// TestServeCluster runs three "lambdadb serve" nodes with --peers on
// loopback ports, writes through one and reads through another.
func TestServeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	// Reserve three free ports (another process could take one in between;
	// the test then fails to listen and says so).
	var peers []string
	addrs := map[string]string{}
	for i := 1; i <= 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("n%d", i)
		addrs[id] = ln.Addr().String()
		peers = append(peers, id+"="+ln.Addr().String())
		ln.Close()
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	type node struct {
		stderr *bytes.Buffer
		done   chan int
	}
	nodes := map[string]node{}
	ready := make(chan string, 3)
	for id := range addrs {
		c, _, stderr := testCLI(nil, "")
		c.notifyContext = func(context.Context) (context.Context, context.CancelFunc) {
			return context.WithCancel(ctx)
		}
		c.ready = func(addr string) { ready <- addr }
		n := node{stderr, make(chan int, 1)}
		nodes[id] = n
		args := []string{"serve", "--id", id, "--peers", strings.Join(peers, ","),
			"--data", filepath.Join(t.TempDir(), id), "--shards", "2"}
		go func() { n.done <- c.run(args) }()
	}
	for range 3 {
		select {
		case <-ready:
		case <-time.After(time.Minute):
			t.Fatal("nodes did not start")
		}
	}
	// The cluster elects leaders after Open returns; retry the first write.
	server := func(id string) map[string]string { return map[string]string{"LAMBDADB_SERVER": addrs[id]} }
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := runCLI(server("n1"), "", "put", "k", "shared")
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put via n1: %d %s", r.code, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := runCLI(server("n3"), "", "get", "k"); r.code != 0 || r.stdout != "shared" {
		t.Fatalf("get via n3 = %d %q %s", r.code, r.stdout, r.stderr)
	}
	r := runCLI(server("n2"), "", "status")
	for id, addr := range addrs {
		if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, addr) {
			t.Fatalf("status lacks %s %s:\n%s", id, addr, r.stdout)
		}
	}
	stop()
	for id, n := range nodes {
		select {
		case code := <-n.done:
			if code != 0 {
				t.Errorf("%s exited %d: %s", id, code, n.stderr)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s did not stop", id)
		}
	}
}
