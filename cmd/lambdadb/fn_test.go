package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
)

// TestFnCommands drives `fn deploy|invoke|list|stats|logs|rm` against a
// real `serve`.
func TestFnCommands(t *testing.T) {
	dir := t.TempDir()
	addr := serveInProcess(t, dir)
	env := map[string]string{"LAMBDADB_SERVER": addr}
	counter := filepath.Join(dir, "counter.wasm")
	if err := os.WriteFile(counter, wasmtest.Example(t, "counter"), 0o644); err != nil {
		t.Fatal(err)
	}
	faulty := filepath.Join(dir, "faulty.wasm")
	if err := os.WriteFile(faulty, wasmtest.Guest(t, "faulty"), 0o644); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		args           []string
		stdin          string
		code           int
		stdout, stderr string // substrings
	}{
		{args: []string{"fn", "deploy", "--memory-mb", "32", "counter", counter}, stdout: "deployed counter version", stderr: "deploying counter"},
		{args: []string{"fn", "invoke", "--key", "hits", "counter"}, stdout: "1"},
		{args: []string{"fn", "invoke", "-v", "--key", "hits", "counter"}, stdout: "2", stderr: "start warm on n1"},
		{args: []string{"get", "hits"}, stdout: "2"},
		{args: []string{"fn", "invoke", "counter", "-"}, stdin: "other", stdout: "1"},
		{args: []string{"fn", "deploy", "--timeout-ms", "300", "faulty", faulty}, stdout: "deployed faulty"},
		{args: []string{"fn", "invoke", "faulty", "stdout"}},
		{args: []string{"fn", "invoke", "faulty", "loop"}, code: 1, stderr: "timeout"},
		{args: []string{"fn", "invoke", "faulty", "error"}, code: 1, stderr: "handler said no (status 500, handler_error)"},
		{args: []string{"fn", "logs", "faulty"}, stdout: "n1 via Log 42"},
		{args: []string{"fn", "list"}, stdout: "counter  "},
		{args: []string{"fn", "stats", "counter"}, stdout: "total"},
		{args: []string{"fn", "stats", "counter"}, stdout: ", created 20"},
		{args: []string{"fn", "stats", "faulty"}, stdout: "errors: handler_error 1, timeout 1"},
		{args: []string{"fn", "rm", "counter"}, stdout: "deleted counter"},
		{args: []string{"fn", "invoke", "counter"}, code: 1, stderr: "not_found"},
		{args: []string{"fn", "deploy", "bad", counter + ".missing"}, code: 1, stderr: "no such file"},
		{args: []string{"fn", "deploy", "x"}, code: 2, stderr: "want NAME FILE.wasm"},
		{args: []string{"fn"}, code: 2, stderr: "fn needs a subcommand"},
		{args: []string{"fn", "frob"}, code: 2, stderr: `unknown command "fn frob"`},
		{args: []string{"help", "fn"}, stdout: "fn deploy"},
		{args: []string{"help", "fn", "invoke"}, stdout: "usage: lambdadb fn invoke"},
	}
	for _, s := range steps {
		c, stdout, stderr := testCLI(env, s.stdin)
		code := c.run(s.args)
		if code != s.code || !strings.Contains(stdout.String(), s.stdout) || !strings.Contains(stderr.String(), s.stderr) {
			t.Fatalf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout ~ %q, stderr ~ %q",
				s.args, code, s.code, stdout, stderr, s.stdout, s.stderr)
		}
	}
}

func TestFeedCommand(t *testing.T) {
	ts := testnodeServer(t)
	env := map[string]string{"LAMBDADB_SERVER": ts}
	for _, kv := range [][2]string{{"a/1", "x"}, {"b/1", "y"}, {"a/2", "z"}} {
		if r := runCLI(env, "", "put", kv[0], kv[1]); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	runCLI(env, "", "del", "a/1")
	r := runCLI(env, "", "feed", "--prefix", "a/", "--cursor", "beginning", "--once")
	if r.code != 0 || r.stdout != "put a/1 \"x\"\nput a/2 \"z\"\ndelete a/1\n" || !strings.Contains(r.stderr, "cursor: c1.") {
		t.Fatalf("feed: %d %q %q", r.code, r.stdout, r.stderr)
	}
	cur := strings.TrimSpace(strings.TrimPrefix(r.stderr, "cursor: "))
	runCLI(env, "", "put", "a/3", "w")
	r = runCLI(env, "", "feed", "--prefix", "a/", "--cursor", cur, "--once", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"key":"a/3"`) || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("resume: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(env, "", "feed", "--cursor", "bogus", "--once"); r.code != 1 || !strings.Contains(r.stderr, "bad_cursor") {
		t.Fatalf("bad cursor: %d %q", r.code, r.stderr)
	}
}

func testnodeServer(t *testing.T) string { return testnode.Serve(t, testnode.New(t)).URL }

// TestTriggerCommands drives trigger create|list|show|dead|rm against a
// real serve with the indexer example.
func TestTriggerCommands(t *testing.T) {
	dir := t.TempDir()
	addr := serveInProcess(t, dir)
	env := map[string]string{"LAMBDADB_SERVER": addr}
	indexer := filepath.Join(dir, "indexer.wasm")
	if err := os.WriteFile(indexer, wasmtest.Example(t, "indexer"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{args: []string{"fn", "deploy", "indexer", indexer}},
		{args: []string{"trigger", "create", "--function", "indexer", "--prefix", "users/", "idx"}, stdout: `trigger idx version`},
		{args: []string{"trigger", "create", "--function", "indexer", "--prefix", "zero/", "--max-retries", "0", "--max-wait-ms", "0", "zero"},
			stdout: `batches of 100, wait 0 ms, 0 retries`},
		{args: []string{"trigger", "create", "--function", "indexer", "--prefix", "zero/", "--batch-size", "0", "bad0"}, code: 1, stderr: "invalid_trigger"},
		{args: []string{"trigger", "create", "idx"}, code: 2, stderr: "--function is required"},
		{args: []string{"trigger", "create", "--function", "nope", "bad"}, code: 1, stderr: "invalid_trigger"},
		{args: []string{"put", "users/ada", "Ada Lovelace"}},
	} {
		r := runCLI(env, "", s.args...)
		if r.code != s.code || !strings.Contains(r.stdout, s.stdout) || !strings.Contains(r.stderr, s.stderr) {
			t.Fatalf("%v: %d %q %q", s.args, r.code, r.stdout, r.stderr)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for runCLI(env, "", "get", "idx/users/ada").stdout != "Ada Lovelace" {
		if time.Now().After(deadline) {
			t.Fatal("the trigger did not index users/ada")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := runCLI(env, "", "trigger", "list"); r.code != 0 || !strings.Contains(r.stdout, "idx ") || !strings.Contains(r.stdout, "indexer") {
		t.Fatalf("list: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(env, "", "trigger", "show", "idx"); r.code != 0 || !strings.Contains(r.stdout, "CHECKPOINT") {
		t.Fatalf("show: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(env, "", "trigger", "dead", "idx"); r.code != 0 || r.stdout != "" {
		t.Fatalf("dead: %d %q %q", r.code, r.stdout, r.stderr)
	}
	for _, s := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{args: []string{"trigger", "create", "--function", "indexer", "--prefix", "p/", "--pause-after", "7", "p7"}, stdout: "paused after 7 dead letters in a row"},
		{args: []string{"trigger", "create", "--function", "indexer", "--prefix", "p/", "--pause-after", "0", "p0"}, stdout: "never paused"},
		{args: []string{"trigger", "pause", "idx"}, stdout: "idx paused since "},
		{args: []string{"trigger", "show", "idx"}, stdout: "paused by request"},
		{args: []string{"trigger", "list"}, stdout: "paused"},
		{args: []string{"trigger", "resume", "--from", "sideways", "idx"}, code: 2, stderr: "--from"},
		{args: []string{"trigger", "resume", "--from", "now", "p7"}, code: 1, stderr: "not_paused"},
		{args: []string{"trigger", "resume", "idx"}, stdout: "idx running"},
	} {
		r := runCLI(env, "", s.args...)
		if r.code != s.code || !strings.Contains(r.stdout, s.stdout) || !strings.Contains(r.stderr, s.stderr) {
			t.Fatalf("%v: %d %q %q", s.args, r.code, r.stdout, r.stderr)
		}
	}
	runCLI(env, "", "put", "users/bob", "Bob")
	for runCLI(env, "", "get", "idx/users/bob").stdout != "Bob" {
		if time.Now().After(deadline) {
			t.Fatal("the resumed trigger did not index users/bob")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := runCLI(env, "", "trigger", "rm", "idx"); r.code != 0 || !strings.Contains(r.stdout, "deleted idx") {
		t.Fatalf("rm: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(env, "", "trigger", "show", "idx"); r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("show after rm: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// serveInProcess runs `serve` on a free loopback port with its data under
// dir until the test ends, and returns its address.
func serveInProcess(t *testing.T, dir string) string {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	c, _, stderr := testCLI(nil, "")
	c.notifyContext = func(context.Context) (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }
	addrs := make(chan string, 1)
	c.ready = func(addr string) { addrs <- addr }
	done := make(chan int, 1)
	go func() {
		done <- c.run([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--shards", "2"})
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	select {
	case addr := <-addrs:
		return addr
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr)
	case <-time.After(time.Minute):
		t.Fatal("serve did not start")
	}
	return ""
}
