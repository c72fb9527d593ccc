package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"lambdadb/client"
	"lambdadb/internal/session"
)

// putQueryRecords stores the records the query tests read under prefix.
func putQueryRecords(t *testing.T, c *client.Client, prefix string) {
	t.Helper()
	for k, v := range map[string]string{
		"1": `{"region":"eu","amount":10}`,
		"2": `{"region":"eu","amount":20.5}`,
		"3": `{"region":"us","amount":5}`,
		"4": `{"region":"us","amount":"n/a"}`, // not a number
		"5": `{"amount":7}`,                   // no region
		"6": `not json`,
		"7": `{"region":1,"amount":1}`,
	} {
		if _, err := c.Put(t.Context(), prefix+k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestQueryAggregates(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	putQueryRecords(t, c, "qagg/")
	if _, err := c.Put(ctx, "qaggx", []byte(`{"amount":1000}`)); err != nil { // outside the prefix
		t.Fatal(err)
	}
	agg := func(op, field, groupBy string, k int) *client.Aggregate {
		return &client.Aggregate{Op: op, Field: field, GroupBy: groupBy, K: k}
	}
	cases := []struct {
		name string
		q    client.QueryRequest
		want string // the result's JSON
	}{
		{"count", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpCount, "", "", 0)}, `6`},
		{"count field", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpCount, "amount", "", 0)}, `5`},
		{"sum", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpSum, "amount", "", 0)}, `43.5`},
		{"min", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpMin, "amount", "", 0)}, `1`},
		{"max", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpMax, "amount", "", 0)}, `20.5`},
		{"avg", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpAvg, "amount", "", 0)}, `8.7`},
		{"max of nothing", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpMax, "nope", "", 0)}, `null`},
		{"topk", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpTopK, "amount", "", 2)},
			`[{"key":"qagg/2","value":20.5},{"key":"qagg/1","value":10}]`},
		{"sum by region", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpSum, "amount", "region", 0)},
			`[{"group":1,"value":1},{"group":"eu","value":30.5},{"group":"us","value":5},{"group":null,"value":7}]`},
		{"topk by region", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpTopK, "amount", "region", 1)},
			`[{"group":1,"value":[{"key":"qagg/7","value":1}]},{"group":"eu","value":[{"key":"qagg/2","value":20.5}]},` +
				`{"group":"us","value":[{"key":"qagg/3","value":5}]},{"group":null,"value":[{"key":"qagg/5","value":7}]}]`},
		{"range", client.QueryRequest{Prefix: "qagg/", Start: "qagg/2", End: "qagg/4", Aggregate: agg(client.OpSum, "amount", "", 0)}, `25.5`},
		{"no records", client.QueryRequest{Prefix: "qagg/none/", Aggregate: agg(client.OpCount, "", "region", 0)}, `[]`},
		{"stale", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpCount, "", "", 0), Consistency: client.Stale}, `6`},
		{"linearizable, timeout", client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpCount, "", "", 0),
			Consistency: client.Linearizable, Timeout: 30 * time.Second}, `6`},
	}
	for _, tc := range cases {
		res, err := c.Query(ctx, tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := string(res.Result); got != tc.want {
			t.Errorf("%s: result %s, want %s", tc.name, got, tc.want)
		}
	}

	res, err := c.Query(ctx, client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpSum, "amount", "", 0),
		Consistency: client.Session})
	if err != nil {
		t.Fatal(err)
	}
	st := res.Stats
	if st.Shards != 4 || st.Nodes != 1 || st.Levels < 2 || st.RecordsScanned != 7 || st.RecordsSkipped != 1 ||
		st.RecordsWithoutField != 1 || st.BytesScanned == 0 || st.ElapsedMS <= 0 || st.Elapsed() <= 0 {
		t.Fatalf("stats %+v", st)
	}
	if len(st.PerShard) != 4 || len(st.PerLevel) != st.Levels {
		t.Fatalf("per shard %+v, per level %+v", st.PerShard, st.PerLevel)
	}
	var records uint64
	for i, s := range st.PerShard {
		if s.Shard != i || s.Node != "n1" {
			t.Fatalf("per shard %d: %+v", i, s)
		}
		records += s.Records
	}
	if records != st.RecordsScanned || st.PerLevel[0].Kind != "leaf" || st.PerLevel[len(st.PerLevel)-1].Kind != "root" {
		t.Fatalf("stats %+v", st)
	}
	var top []client.TopItem
	res, err = c.Query(ctx, client.QueryRequest{Prefix: "qagg/", Aggregate: agg(client.OpTopK, "amount", "", 10)})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(res.Result, &top); err != nil || len(top) != 5 || top[4] != (client.TopItem{Key: "qagg/7", Value: 1}) {
		t.Fatalf("topk %s: %v %+v", res.Result, err, top)
	}
}

// A query keeps the Client's session: the token goes out and comes back.
func TestQuerySession(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	if _, err := c.Put(ctx, "qsess/a", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	tok := c.Token()
	if tok == "" {
		t.Fatal("no token after a put")
	}
	// A session read right after the write sees it.
	res, err := c.Query(ctx, client.QueryRequest{Prefix: "qsess/", Aggregate: &client.Aggregate{Op: "sum", Field: "n"}})
	if err != nil || string(res.Result) != "1" {
		t.Fatalf("Query = %s, %v", res.Result, err)
	}
	if c.Token() != tok {
		t.Fatalf("token %q became %q", tok, c.Token())
	}
	// Against a stand-in server: the answer's token is kept and sent with
	// the next query.
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set(session.Header, tok)
		fmt.Fprint(w, `{"result":0,"stats":{}}`)
	}))
	defer srv.Close()
	fake, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fake.Query(ctx, client.QueryRequest{Aggregate: &client.Aggregate{Op: "count"}}); err != nil {
		t.Fatal(err)
	}
	if fake.Token() != tok {
		t.Fatalf("the response's token was not kept: %q", fake.Token())
	}
	if _, err := fake.Query(ctx, client.QueryRequest{Aggregate: &client.Aggregate{Op: "count"}}); err != nil {
		t.Fatal(err)
	}
	if got.Get(session.Header) != tok || got.Get("Content-Type") != "application/json" {
		t.Fatalf("request headers %v", got)
	}
}

// TestQueryRequestBody checks what Query sends.
func TestQueryRequestBody(t *testing.T) {
	t.Parallel()
	var method, path string
	var body map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method, path = r.Method, r.URL.Path
		b, _ := io.ReadAll(r.Body)
		body = nil
		if err := json.Unmarshal(b, &body); err != nil {
			t.Errorf("body %q: %v", b, err)
		}
		fmt.Fprint(w, `{"result":{"x":1},"stats":{"shards":2,"per_level":[{"level":1,"kind":"root","count":1,"max_ms":1.5,"combine_ms":0.5}],`+
			`"per_shard":[{"shard":0,"node":"n2","applied_index":9,"records":3,"bytes":40,"ms":0.25}]}}`)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL + "/base")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	res, err := c.Query(ctx, client.QueryRequest{Prefix: "p/", Start: "p/a", End: "p/z", Function: "wc",
		Consistency: client.Stale, Timeout: 1500*time.Millisecond + time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"prefix": "p/", "start": "p/a", "end": "p/z", "function": "wc", "consistency": "stale", "timeout_ms": 1501.0}
	if method != http.MethodPost || path != "/base/v1/query" || !reflect.DeepEqual(body, want) {
		t.Fatalf("%s %s %v", method, path, body)
	}
	wantStats := client.QueryStats{Shards: 2,
		PerLevel: []client.QueryLevel{{Level: 1, Kind: "root", Count: 1, MaxMS: 1.5, CombineMS: 0.5}},
		PerShard: []client.QueryShard{{Shard: 0, Node: "n2", AppliedIndex: 9, Records: 3, Bytes: 40, MS: 0.25}}}
	if string(res.Result) != `{"x":1}` || !reflect.DeepEqual(res.Stats, wantStats) {
		t.Fatalf("%s %+v", res.Result, res.Stats)
	}
	if _, err := c.Query(ctx, client.QueryRequest{Aggregate: &client.Aggregate{Op: "topk", Field: "f", GroupBy: "g", K: 3}}); err != nil {
		t.Fatal(err)
	}
	want = map[string]any{"aggregate": map[string]any{"op": "topk", "field": "f", "group_by": "g", "k": 3.0}}
	if !reflect.DeepEqual(body, want) {
		t.Fatalf("body %v", body)
	}
	if _, err := c.Query(ctx, client.QueryRequest{Function: "f", Timeout: -time.Second}); err == nil {
		t.Fatal("a negative timeout was sent")
	}
}

func TestQueryErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := newClient(t)
	count := &client.Aggregate{Op: "count"}
	for _, tc := range []struct {
		name   string
		q      client.QueryRequest
		status int
		code   string
	}{
		{"nothing to run", client.QueryRequest{Prefix: "q/"}, 400, "invalid_query"},
		{"both", client.QueryRequest{Aggregate: count, Function: "f"}, 400, "invalid_query"},
		{"no op", client.QueryRequest{Aggregate: &client.Aggregate{}}, 400, "invalid_query"},
		{"unknown op", client.QueryRequest{Aggregate: &client.Aggregate{Op: "median", Field: "x"}}, 400, "invalid_query"},
		{"sum without field", client.QueryRequest{Aggregate: &client.Aggregate{Op: "sum"}}, 400, "invalid_query"},
		{"topk without k", client.QueryRequest{Aggregate: &client.Aggregate{Op: "topk", Field: "x"}}, 400, "invalid_query"},
		{"topk k too large", client.QueryRequest{Aggregate: &client.Aggregate{Op: "topk", Field: "x", K: 10001}}, 400, "invalid_query"},
		{"empty range", client.QueryRequest{Start: "b", End: "a", Aggregate: count}, 400, "invalid_query"},
		{"bad consistency", client.QueryRequest{Aggregate: count, Consistency: "strong"}, 400, "bad_consistency"},
		{"no functions here", client.QueryRequest{Function: "wordcount"}, 501, "no_functions"},
		{"too large", client.QueryRequest{Prefix: strings.Repeat("p", 70<<10), Aggregate: count}, 413, "request_too_large"},
	} {
		_, err := c.Query(ctx, tc.q)
		var e *client.Error
		if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || e.MissingShards != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// An incomplete query's error names the missing shards.
func TestQueryIncomplete(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":"scatter: query incomplete: no replica answered for shards [1 3]","code":"incomplete","missing_shards":[1,3]}`)
	}))
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Query(t.Context(), client.QueryRequest{Aggregate: &client.Aggregate{Op: "count"}})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 503 || e.Code != "incomplete" || !reflect.DeepEqual(e.MissingShards, []int{1, 3}) {
		t.Fatalf("%#v", err)
	}
	if !strings.Contains(err.Error(), "shards [1 3]") {
		t.Fatal(err)
	}
}

// Sum a field per group across every shard.
func ExampleClient_Query() {
	ctx := context.Background()
	c, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	for k, v := range map[string]string{
		"orders/1": `{"region":"eu","amount":10}`,
		"orders/2": `{"region":"us","amount":4}`,
		"orders/3": `{"region":"eu","amount":5}`,
	} {
		if _, err := c.Put(ctx, k, []byte(v)); err != nil {
			log.Fatal(err)
		}
	}
	res, err := c.Query(ctx, client.QueryRequest{
		Prefix:    "orders/",
		Aggregate: &client.Aggregate{Op: client.OpSum, Field: "amount", GroupBy: "region"},
	})
	if err != nil {
		log.Fatal(err)
	}
	// One {"group","value"} per region, the group typed as in the records.
	groups, err := res.Groups()
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range groups {
		fmt.Println(g.Name(), string(g.Value))
	}
	fmt.Println(res.Stats.Shards, "shards,", res.Stats.RecordsScanned, "records")
	// Output:
	// eu 15
	// us 4
	// 4 shards, 3 records
}
