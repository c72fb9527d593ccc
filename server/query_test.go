package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"lambdadb/internal/wasmtest"
)

// TestQueryAPI: POST /v1/query with built-ins and a function, and every
// way a query can be refused.
func TestQueryAPI(t *testing.T) {
	ts := fnServer(t)
	want := map[string]float64{}
	for i := 0; i < 200; i++ {
		region := []string{"eu", "us", "ap"}[i%3]
		want[region] += float64(i)
		r := do(t, http.MethodPut, fmt.Sprintf("%s/v1/kv/orders/%03d", ts.URL, i), []byte(fmt.Sprintf(`{"region":%q,"amount":%d}`, region, i)))
		if r.status != http.StatusOK {
			t.Fatalf("put: %d %s", r.status, r.body)
		}
	}
	do(t, http.MethodPut, ts.URL+"/v1/kv/orders/zz", []byte("not json"))
	do(t, http.MethodPut, ts.URL+"/v1/kv/doc/1", []byte("the fox the"))

	r := do(t, http.MethodPost, ts.URL+"/v1/query", []byte(`{"prefix":"orders/","aggregate":{"op":"sum","field":"amount","group_by":"region"}}`))
	if r.status != http.StatusOK {
		t.Fatalf("query: %d %s", r.status, r.body)
	}
	var res struct {
		Result []struct {
			Group any
			Value float64
		}
		Stats struct {
			Shards, Nodes, Levels int
			RecordsScanned        int     `json:"records_scanned"`
			ElapsedMS             float64 `json:"elapsed_ms"`
		}
	}
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatal(err)
	}
	// A list of groups, the group typed, in order of the group's value.
	if len(res.Result) != len(want) {
		t.Fatalf("result %s, want %v by region", r.body, want)
	}
	for i, g := range []string{"ap", "eu", "us"} {
		if res.Result[i].Group != g || res.Result[i].Value != want[g] {
			t.Fatalf("result %s, want %v by region", r.body, want)
		}
	}
	if res.Stats.RecordsScanned != 201 || res.Stats.Nodes != 1 || res.Stats.Levels != 2 {
		t.Fatalf("stats %+v (%s)", res.Stats, r.body)
	}
	if !strings.Contains(string(r.body), `"records_skipped":1`) || !strings.Contains(string(r.body), `"bytes_gathered":0`) {
		t.Fatalf("stats: %s", r.body)
	}

	// A function: its JSON output is embedded as JSON.
	if r := do(t, http.MethodPut, ts.URL+"/v1/functions/wc", wasmtest.Example(t, "wordcount")); r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	r = do(t, http.MethodPost, ts.URL+"/v1/query?consistency=stale", []byte(`{"prefix":"doc/","function":"wc"}`))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"result":{"fox":1,"the":2}`) {
		t.Fatalf("function query: %d %s", r.status, r.body)
	}
	// It reports the deploy it ran, and can be pinned to it.
	var fn struct{ Version uint64 }
	if r := do(t, http.MethodGet, ts.URL+"/v1/functions/wc", nil); r.status != http.StatusOK || json.Unmarshal(r.body, &fn) != nil || fn.Version == 0 {
		t.Fatalf("function info: %d %s", r.status, r.body)
	}
	if !strings.Contains(string(r.body), fmt.Sprintf(`"function_version":%d`, fn.Version)) {
		t.Fatalf("function query stats lack version %d: %s", fn.Version, r.body)
	}
	r = do(t, http.MethodPost, ts.URL+"/v1/query", []byte(fmt.Sprintf(`{"prefix":"doc/","function":"wc","function_version":%d}`, fn.Version)))
	if r.status != http.StatusOK {
		t.Fatalf("pinned function query: %d %s", r.status, r.body)
	}
	r = do(t, http.MethodPost, ts.URL+"/v1/query", []byte(fmt.Sprintf(`{"prefix":"doc/","function":"wc","function_version":%d}`, fn.Version+1000)))
	if r.status != http.StatusConflict || r.code() != "conflict" {
		t.Fatalf("query pinned to another version: %d %s", r.status, r.body)
	}

	if r := do(t, http.MethodPut, ts.URL+"/v1/functions/echo", wasmtest.Example(t, "echo")); r.status >= 300 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	for _, c := range []struct {
		body   string
		query  string
		status int
		code   string
	}{
		{`{"prefix":"orders/"}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"median","field":"a"}}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"sum"}}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"topk","field":"a","k":0}}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"count","groupby":"x"}}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"count"},"function":"wc"}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"count"},"function_version":3}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"count"},"start":"b","end":"a"}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"count"}} {}`, "", 400, "invalid_query"},
		{`not json`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"count"},"consistency":"strong"}`, "", 400, "bad_consistency"},
		{`{"aggregate":{"op":"count"}}`, "?consistency=strong", 400, "bad_consistency"},
		{`{"aggregate":{"op":"count"},"timeout_ms":-1}`, "", 400, "invalid_query"},
		{`{"aggregate":{"op":"count"},"timeout_ms":9300000000000}`, "", 400, "invalid_query"},
		{`{"function":"nope"}`, "", 404, "not_found"},
		{`{"function":"echo"}`, "", 400, "no_entrypoint"},
		{`{"prefix":"` + strings.Repeat("x", 70<<10) + `","aggregate":{"op":"count"}}`, "", 413, "request_too_large"},
	} {
		r := do(t, http.MethodPost, ts.URL+"/v1/query"+c.query, []byte(c.body))
		if r.status != c.status || r.code() != c.code {
			t.Errorf("%.60s: %d %s, want %d %s", c.body, r.status, r.body, c.status, c.code)
		}
	}
	// The body's consistency wins over the parameter.
	if r := do(t, http.MethodPost, ts.URL+"/v1/query?consistency=strong", []byte(`{"aggregate":{"op":"count"},"consistency":"stale"}`)); r.status != http.StatusOK {
		t.Errorf("body consistency: %d %s", r.status, r.body)
	}
	// A body too large without a Content-Length.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/query", io.MultiReader(strings.NewReader(`{"prefix":"`), strings.NewReader(strings.Repeat("x", 70<<10))))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "request_too_large") {
		t.Errorf("chunked large body: %d %s", resp.StatusCode, b)
	}
	// A query that runs out of time: 504, naming the shards not read.
	if r := do(t, http.MethodPut, ts.URL+"/v1/functions/probe?timeout_ms=60000", wasmtest.Guest(t, "leafprobe")); r.status >= 300 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	do(t, http.MethodPut, ts.URL+"/v1/kv/cfg/leaf_sleep_ms", []byte("30000"))
	r = do(t, http.MethodPost, ts.URL+"/v1/query", []byte(`{"function":"probe","timeout_ms":300}`))
	if r.status != http.StatusGatewayTimeout || r.code() != "timeout" {
		t.Errorf("slow query: %d %s", r.status, r.body)
	}
	m := do(t, http.MethodGet, ts.URL+"/metrics", nil)
	for _, want := range []string{`lambdadb_queries_total{outcome="ok"}`, `lambdadb_queries_total{outcome="invalid"}`,
		"lambdadb_query_duration_seconds_bucket", "lambdadb_query_leaves_total", "lambdadb_query_bytes_scanned_total"} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if r := do(t, http.MethodGet, ts.URL+"/v1/query", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/query: %d %s", r.status, r.body)
	}
}
