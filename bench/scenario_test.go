package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
)

func TestSelect(t *testing.T) {
	all, err := Select("")
	if err != nil || len(all) != len(Scenarios) {
		t.Fatalf("Select(\"\") = %d scenarios, %v", len(all), err)
	}
	got, err := Select("billing, kv")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "kv-put,kv-get,billing" {
		t.Fatalf("Select = %v, want registry order kv-put,kv-get,billing", names)
	}
	if _, err := Select("kv-put,nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown scenario: %v", err)
	}
	seen := map[string]bool{}
	for _, s := range Scenarios {
		if s.Name == "" || s.Run == nil || seen[s.Name] {
			t.Fatalf("bad registry entry %+v", s)
		}
		seen[s.Name] = true
	}
}

func TestRunSuite(t *testing.T) {
	saved := Scenarios
	defer func() { Scenarios = saved }()
	Scenarios = []Scenario{
		{Name: "ok", Title: "works", Run: func(ctx context.Context, e *Env) (*ScenarioReport, error) {
			e.logf("hello")
			r := &ScenarioReport{}
			r.Metric("x", 1, "ms")
			return r, nil
		}},
		{Name: "bad", Title: "fails", Run: func(ctx context.Context, e *Env) (*ScenarioReport, error) {
			return nil, errors.New("bench: boom")
		}},
	}
	var progress bytes.Buffer
	dir := t.TempDir()
	env := &Env{OutDir: dir, Progress: &progress, RerunFlags: "-quick"}
	r := &Report{Suite: "LambdaBench", Started: time.Now()}
	err := RunSuite(context.Background(), env, Scenarios, r)
	if err == nil || !strings.Contains(err.Error(), "bad: bench: boom") {
		t.Fatalf("RunSuite error = %v", err)
	}
	if len(r.Scenarios) != 2 || r.Scenarios[0].Error != "" || r.Scenarios[1].Error != "bench: boom" {
		t.Fatalf("scenarios: %+v", r.Scenarios)
	}
	if want := "go run ./bench/cmd/lambdabench -quick -scenarios ok"; !strings.HasSuffix(r.Scenarios[0].Rerun, want) {
		t.Fatalf("rerun %q", r.Scenarios[0].Rerun)
	}
	if !strings.Contains(progress.String(), "1/2 ok] hello\n") {
		t.Fatalf("progress:\n%s", progress.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "report.json")); err != nil {
		t.Fatal("no report.json written:", err)
	}
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	w := &prefixWriter{w: &b, prefix: func() string { return "> " }}
	w.Write([]byte("a\nb"))
	w.Write([]byte("c\n\nd\n"))
	if got, want := b.String(), "> a\n> bc\n> \n> d\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestWithCustomSection(t *testing.T) {
	empty := []byte("\x00asm\x01\x00\x00\x00")
	big := bytes.Repeat([]byte{'p'}, 300) // a size needing two LEB128 bytes
	mod := withCustomSection(empty, "lambdabench", big)
	if bytes.Equal(mod, empty) || !bytes.HasPrefix(mod, empty) {
		t.Fatal("the module did not change, or its header did")
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	if _, err := r.CompileModule(ctx, mod); err != nil {
		t.Fatalf("the module with a custom section does not compile: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"-quick=true", "-quick=true"},
		{"-out=bench/results/x", "-out=bench/results/x"},
		{"", "''"},
		{"-bin=/tmp/my dir/lambdadb", "'-bin=/tmp/my dir/lambdadb'"},
		{"it's", `'it'\''s'`},
		{"$HOME", "'$HOME'"},
	} {
		if got := ShellQuote(c.in); got != c.want {
			t.Errorf("ShellQuote(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}
