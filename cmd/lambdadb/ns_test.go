package main

import (
	"context"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"lambdadb/auth"
	"lambdadb/client"
	"lambdadb/internal/testnode"
	"lambdadb/server"
)

// secureServer serves a one-node secure-mode cluster and returns its URL
// and admin token.
func secureServer(t *testing.T) (url, admin string) {
	t.Helper()
	n := testnode.New(t)
	store, err := auth.New(auth.Config{Node: n})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Node: n, Auth: store})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	cl, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	is, err := cl.Bootstrap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ts.URL, is.Token
}

func TestNamespaceCommands(t *testing.T) {
	url, admin := secureServer(t)
	env := map[string]string{"LAMBDADB_SERVER": url, "LAMBDADB_TOKEN": admin}
	for _, s := range []struct {
		args   []string
		code   int
		stdout string // regexp
		stderr string // substring
	}{
		{args: []string{"ns", "list"}, stdout: `^no namespace has a quota or data\n$`},
		{args: []string{"ns", "quota", "acme"},
			stdout: `^NAMESPACE +OPS/S +INVOCATIONS/S +CONCURRENCY +STORED BYTES +QUOTA BYTES\nacme +- +- +- +0 +-\n$`},
		{args: []string{"ns", "quota", "acme", "--ops-per-s", "100", "--stored-bytes", "1000000"},
			stdout: `\nacme +100 +- +- +0 +1000000\n$`},
		{args: []string{"ns", "quota", "--concurrency", "4", "acme"}, stdout: `\nacme +100 +- +4 +0 +1000000\n$`},
		{args: []string{"ns", "quota", "beta", "--invocations-per-s", "7"}, stdout: `\nbeta +- +7 +- +0 +-\n$`},
		{args: []string{"ns", "list"}, stdout: `\nacme +100 +- +4 +0 +1000000\nbeta +- +7 +- +0 +-\n$`},
		{args: []string{"ns", "quota", "acme", "--json"}, stdout: `"quota":\{"ops_per_s":100,"invocations_per_s":0,"concurrency":4,"stored_bytes":1000000\}`},
		{args: []string{"ns", "quota", "Bad.Name"}, code: 1, stderr: "bad_parameter"},
		{args: []string{"ns", "quota", "acme", "--ops-per-s", "-1"}, code: 2, stderr: "must not be negative"},
		{args: []string{"ns", "quota"}, code: 2, stderr: "want exactly one NS"},
		{args: []string{"ns", "list", "extra"}, code: 2, stderr: "unexpected argument"},
		{args: []string{"ns"}, code: 2, stderr: "ns needs a subcommand: quota, list"},
	} {
		r := runCLI(env, "", s.args...)
		if r.code != s.code || !regexp.MustCompile(s.stdout).MatchString(r.stdout) || !strings.Contains(r.stderr, s.stderr) {
			t.Fatalf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout ~ %q, stderr ~ %q",
				s.args, r.code, s.code, r.stdout, r.stderr, s.stdout, s.stderr)
		}
	}
	// Without an admin token.
	r := runCLI(map[string]string{"LAMBDADB_SERVER": url}, "", "ns", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "401") {
		t.Fatalf("without a token: exit %d, %s", r.code, r.stderr)
	}
}
