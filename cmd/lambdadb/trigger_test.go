package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
)

// TestTriggerDeadLetterCommands: trigger dead lists ids; trigger replay
// of a letter the handler still fails on exits 1 and keeps it; once the
// handler takes it, replay delivers it; trigger drop deletes one; replay
// --all with none left succeeds.
func TestTriggerDeadLetterCommands(t *testing.T) {
	dir := t.TempDir()
	addr := serveInProcess(t, dir)
	env := map[string]string{"LAMBDADB_SERVER": addr}
	faulty := filepath.Join(dir, "faulty.wasm")
	if err := os.WriteFile(faulty, wasmtest.Guest(t, "faulty"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"fn", "deploy", "rec", faulty},
		{"trigger", "create", "--function", "rec", "--prefix", "p/", "--max-retries", "0", "--max-wait-ms", "0", "t1"},
		{"put", "p/a", "poison"},
		{"put", "p/b", "poison"},
	} {
		if r := runCLI(env, "", args...); r.code != 0 {
			t.Fatalf("%v: %d %q %q", args, r.code, r.stdout, r.stderr)
		}
	}
	ids := map[string]string{} // key → id
	deadline := time.Now().Add(30 * time.Second)
	for len(ids) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %v", ids)
		}
		time.Sleep(50 * time.Millisecond)
		r := runCLI(env, "", "trigger", "dead", "t1")
		if r.code != 0 {
			t.Fatalf("dead: %d %q %q", r.code, r.stdout, r.stderr)
		}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			f := strings.Fields(line)
			if len(f) >= 5 && strings.Contains(line, "poison change at") {
				ids[strings.Split(f[4], "@")[0]] = f[0]
			}
		}
	}
	for _, s := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{args: []string{"trigger", "replay", "t1", ids["p/a"]}, code: 1, stdout: ids["p/a"] + " failed again: ", stderr: "1 of 1 dead letters failed again"},
		{args: []string{"trigger", "dead", "t1"}, stdout: "(1 replays failed)"},
		{args: []string{"put", "cure/p/a", "1"}},
		{args: []string{"trigger", "replay", "t1", ids["p/a"]}, stdout: ids["p/a"] + " delivered"},
		{args: []string{"get", "log/p/a"}, stdout: ":poison;"},
		{args: []string{"trigger", "replay", "t1", ids["p/a"]}, code: 1, stderr: "not_found"},
		{args: []string{"trigger", "drop", "t1", ids["p/b"]}, stdout: ids["p/b"] + " dropped"},
		{args: []string{"trigger", "drop", "t1", ids["p/b"]}, code: 1, stderr: "not_found"},
		{args: []string{"trigger", "replay", "--all", "t1"}},
		{args: []string{"trigger", "replay", "t1"}, code: 2, stderr: "want NAME ID"},
		{args: []string{"trigger", "drop", "t1"}, code: 2, stderr: "want NAME ID"},
	} {
		r := runCLI(env, "", s.args...)
		if r.code != s.code || !strings.Contains(r.stdout, s.stdout) || !strings.Contains(r.stderr, s.stderr) {
			t.Fatalf("%v: %d %q %q", s.args, r.code, r.stdout, r.stderr)
		}
	}
	if r := runCLI(env, "", "trigger", "dead", "t1"); r.code != 0 || r.stdout != "" {
		t.Fatalf("dead at the end: %d %q %q", r.code, r.stdout, r.stderr)
	}
}
