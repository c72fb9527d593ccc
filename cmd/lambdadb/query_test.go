package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lambdadb/client"
	"lambdadb/internal/wasmtest"
)

// TestQueryCommand drives `query` against a real `serve` (2 shards).
func TestQueryCommand(t *testing.T) {
	dir := t.TempDir()
	addr := serveInProcess(t, dir)
	env := map[string]string{"LAMBDADB_SERVER": addr}
	for _, kv := range [][2]string{
		{"orders/1", `{"region":"eu","amount":10}`},
		{"orders/2", `{"region":"eu","amount":20.5}`},
		{"orders/3", `{"region":"us","amount":5}`},
		{"orders/4", `{"region":"us","amount":"n/a"}`},
		{"orders/5", `{"amount":7}`},
		{"orders/6", `not json`},
		{"orders/7", `{"region":1,"amount":1}`},
		{"orders/8", `{"region":"1","amount":2}`},
		{"ordersx", `{"amount":1000}`},
		{"docs/a", "the quick brown fox"},
		{"docs/b", "The lazy dog"},
	} {
		if r := runCLI(env, "", "put", kv[0], kv[1]); r.code != 0 {
			t.Fatalf("put %s: %s", kv[0], r.stderr)
		}
	}

	exact := []struct {
		args   []string
		stdout string
	}{
		{[]string{"--prefix", "orders/", "--count"}, "7\n"},
		{[]string{"--prefix", "orders/", "--sum", "amount"}, "45.5\n"},
		{[]string{"--prefix", "orders/", "--avg", "amount"}, "7.583333333333333\n"},
		{[]string{"--prefix", "orders/", "--min", "amount", "--consistency", "stale"}, "1\n"},
		{[]string{"--prefix", "orders/", "--max", "amount", "--timeout", "30s"}, "20.5\n"},
		{[]string{"--prefix", "orders/", "--max", "nope"}, "null\n"},
		{[]string{"--prefix", "orders/", "--start", "orders/2", "--end", "orders/4", "--sum", "amount"}, "25.5\n"},
		{[]string{"--prefix", "orders/", "--sum", "amount", "--group-by", "region"},
			"GROUP  VALUE\n" +
				"1      1\n" +
				`"1"    2` + "\n" +
				"eu     30.5\n" +
				"us     5\n" +
				"null   7\n"},
		{[]string{"--prefix", "orders/", "--count", "--group-by", "region"},
			"GROUP  VALUE\n1      1\n\"1\"    1\neu     2\nus     2\nnull   1\n"},
		{[]string{"--prefix", "orders/", "--topk", "amount", "--k", "2"},
			"KEY       VALUE\norders/2  20.5\norders/1  10\n"},
		{[]string{"--prefix", "orders/", "--topk", "amount"}, // k defaults to 10
			"KEY       VALUE\norders/2  20.5\norders/1  10\norders/5  7\norders/3  5\norders/8  2\norders/7  1\n"},
		{[]string{"--prefix", "orders/", "--topk", "amount", "--k", "1", "--group-by", "region"},
			"GROUP  KEY       VALUE\n" +
				"1      orders/7  1\n" +
				`"1"    orders/8  2` + "\n" +
				"eu     orders/2  20.5\n" +
				"us     orders/3  5\n" +
				"null   orders/5  7\n"},
		{[]string{"--prefix", "nothing/", "--sum", "amount", "--group-by", "region"}, "GROUP  VALUE\n"},
		{[]string{"--prefix", "nothing/", "--topk", "amount"}, "KEY  VALUE\n"},
	}
	for _, s := range exact {
		r := runCLI(env, "", append([]string{"query"}, s.args...)...)
		if r.code != 0 || r.stdout != s.stdout {
			t.Fatalf("query %v: exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", s.args, r.code, r.stdout, s.stdout, r.stderr)
		}
		if !strings.HasPrefix(r.stderr, "2 shards on 1 node, 2 levels: ") || strings.Count(r.stderr, "\n") != 1 {
			t.Fatalf("query %v: stats line %q", s.args, r.stderr)
		}
	}

	r := runCLI(env, "", "query", "--prefix", "orders/", "--sum", "amount")
	if !strings.HasPrefix(r.stderr, "2 shards on 1 node, 2 levels: 8 records (1 skipped, 1 without amount), ") ||
		!strings.Contains(r.stderr, " B scanned, ") || !strings.HasSuffix(r.stderr, " ms\n") {
		t.Fatalf("stats line %q", r.stderr)
	}

	// --json: the response as the server sent it.
	r = runCLI(env, "", "query", "--prefix", "orders/", "--count", "--group-by", "region", "--json")
	var resp client.QueryResponse
	if err := json.Unmarshal([]byte(r.stdout), &resp); r.code != 0 || err != nil || r.stderr != "" {
		t.Fatalf("--json: %d %q %q %v", r.code, r.stdout, r.stderr, err)
	}
	if string(resp.Result) != `[{"group":1,"value":1},{"group":"1","value":1},{"group":"eu","value":2},{"group":"us","value":2},{"group":null,"value":1}]` || resp.Stats.Shards != 2 ||
		resp.Stats.RecordsScanned != 8 || len(resp.Stats.PerShard) != 2 || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("--json: %s", r.stdout)
	}

	// Functions: the Combine's JSON, indented.
	wc := filepath.Join(dir, "wordcount.wasm")
	if err := os.WriteFile(wc, wasmtest.Example(t, "wordcount"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(env, "", "fn", "deploy", "wordcount", wc); r.code != 0 {
		t.Fatal(r.stderr)
	}
	r = runCLI(env, "", "query", "--prefix", "docs/", "--fn", "wordcount")
	want := "{\n  \"brown\": 1,\n  \"dog\": 1,\n  \"fox\": 1,\n  \"lazy\": 1,\n  \"quick\": 1,\n  \"the\": 2\n}\n"
	if r.code != 0 || r.stdout != want || !strings.HasPrefix(r.stderr, "2 shards on 1 node, 2 levels: 2 records, ") {
		t.Fatalf("--fn: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(env, "", "query", "--prefix", "docs/", "--end", "docs/b", "--fn", "wordcount", "--json")
	if r.code != 0 || !strings.HasPrefix(r.stdout, `{"result":{"brown":1,"fox":1,"quick":1,"the":1},"stats":{"shards":2,`) {
		t.Fatalf("--fn --json: %d %s %s", r.code, r.stdout, r.stderr)
	}

	for _, s := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--fn", "nope"}, "(status 404, not_found)"},
		{[]string{"--count", "--consistency", "strong"}, "(status 400, bad_consistency)"},
		{[]string{"--topk", "amount", "--k", "10001"}, "(status 400, invalid_query)"},
		{[]string{"--count", "--start", "b", "--end", "a"}, "(status 400, invalid_query)"},
	} {
		r := runCLI(env, "", append([]string{"query"}, s.args...)...)
		if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, "lambdadb: ") || !strings.Contains(r.stderr, s.stderr) {
			t.Fatalf("query %v: %d %q %q", s.args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestQueryUsageErrors(t *testing.T) {
	for _, s := range []struct {
		args []string
		msg  string
	}{
		{nil, "give one of --count, --sum F"},
		{[]string{"--prefix", "x/"}, "give one of"},
		{[]string{"--count", "--sum", "x"}, "give only one of --count, --sum"},
		{[]string{"--min", "x", "--fn", "f"}, "give only one of --min, --fn"},
		{[]string{"--sum", ""}, "--sum needs a field name"},
		{[]string{"--topk", ""}, "--topk needs a field name"},
		{[]string{"--fn", ""}, "--fn needs a function name"},
		{[]string{"--count", "--k", "5"}, "--k goes with --topk"},
		{[]string{"--topk", "x", "--k", "0"}, "--k must be positive"},
		{[]string{"--fn", "f", "--group-by", "g"}, "--group-by goes with an aggregate"},
		{[]string{"--count", "--group-by", ""}, "--group-by needs a field name"},
		{[]string{"--count", "--timeout", "soon"}, "--timeout: want a positive duration"},
		{[]string{"--count", "--timeout", "-1s"}, "--timeout: want a positive duration"},
		{[]string{"--count", "extra"}, `unexpected argument "extra"`},
		{[]string{"--sum"}, "flag needs an argument"},
		{[]string{"--count", "--server", "ftp://h"}, "--server"},
	} {
		r := runCLI(nil, "", append([]string{"query"}, s.args...)...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "lambdadb query: ") || !strings.Contains(r.stderr, s.msg) ||
			!strings.Contains(r.stderr, "usage: lambdadb query") || r.stdout != "" {
			t.Errorf("query %q: exit %d, stdout %q, stderr:\n%s", s.args, r.code, r.stdout, r.stderr)
		}
	}
	if r := runCLI(nil, "", "help", "query"); r.code != 0 || !strings.Contains(r.stdout, "--group-by field") {
		t.Errorf("help query: %d %q", r.code, r.stdout)
	}
}

func TestQueryFormatting(t *testing.T) {
	st := client.QueryStats{Shards: 16, Nodes: 3, Levels: 3, RecordsScanned: 1_000_000, RecordsSkipped: 12,
		BytesScanned: 210_300_000, BytesGathered: 4_100, ElapsedMS: 812.4}
	if got, want := statsLine(st, "amount"), "16 shards on 3 nodes, 3 levels: 1,000,000 records (12 skipped), 210.3 MB scanned, 4.1 KB gathered, 812 ms"; got != want {
		t.Errorf("statsLine = %q, want %q", got, want)
	}
	st = client.QueryStats{Shards: 1, Nodes: 1, Levels: 2, RecordsScanned: 1, RecordsWithoutField: 1, BytesScanned: 999,
		BytesGathered: 999_960, ElapsedMS: 0.25, Retries: 1, Hedges: 2}
	if got, want := statsLine(st, "amount"), "1 shard on 1 node, 2 levels: 1 record (1 without amount), 999 B scanned, 1.0 MB gathered, 0.2 ms, 1 retry, 2 hedges"; got != want {
		t.Errorf("statsLine = %q, want %q", got, want)
	}
	if got := fmtMS(12_345); got != "12.3 s" {
		t.Errorf("fmtMS = %q", got)
	}
	for raw, want := range map[string]string{`"eu"`: "eu", `"1"`: `"1"`, `"null"`: `"null"`, `""`: `""`, `" x"`: `" x"`,
		`"a\tb"`: `"a\tb"`, `"ünï cödé"`: "ünï cödé", `1.5`: "1.5", `null`: "null", `{"a":1}`: `{"a":1}`, `true`: "true"} {
		if got := groupText(raw); got != want {
			t.Errorf("groupText(%s) = %s, want %s", raw, got, want)
		}
	}
}
