package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"lambdadb/changefeed"
	"lambdadb/internal/session"
	"lambdadb/internal/wasmtest"
	"lambdadb/server"
	"lambdadb/shard"
)

// errMessage returns the message of a JSON error body.
func errMessage(body string) string {
	var e struct{ Error string }
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error
}

// manyParams returns a query string of n parameters after first.
func manyParams(first string, n int) string {
	return first + strings.Repeat("&x=1", n)
}

// TestStrictQueryKV: on the data routes a query string Go's r.URL.Query()
// would drop whole (a bad %-escape, a ';', more than 10,000 parameters) —
// turning "prefix=P" into "every key" — and unknown or repeated parameters
// are 400 bad_parameter, with the session header still set.
func TestStrictQueryKV(t *testing.T) {
	h := newServer(t, server.Config{})
	for _, k := range []string{"a/1", "a/2", "b/1"} {
		mustStatus(t, put(t, h, k, "v", nil), http.StatusOK)
	}
	for _, tt := range []struct {
		name, method, target string
		status               int
		code, msg            string
	}{
		{"scan bad escape", "GET", "/v1/kv?prefix=%zz", 400, "bad_parameter", "invalid URL escape"},
		{"scan bad escape elsewhere", "GET", "/v1/kv?prefix=b/&limit=%zz", 400, "bad_parameter", "malformed query string"},
		{"scan semicolon", "GET", "/v1/kv?prefix=b/;limit=1", 400, "bad_parameter", "semicolon"},
		{"scan repeated limit", "GET", "/v1/kv?prefix=a/&limit=1&limit=2", 400, "bad_parameter", `"limit" given 2 times`},
		{"scan repeated prefix", "GET", "/v1/kv?prefix=a/&prefix=b/", 400, "bad_parameter", `"prefix" given 2 times`},
		{"scan repeated start", "GET", "/v1/kv?start=a&start=b", 400, "bad_parameter", `"start"`},
		{"scan repeated end", "GET", "/v1/kv?end=a&end=b", 400, "bad_parameter", `"end"`},
		{"scan unknown", "GET", "/v1/kv?prefix=b/&colour=blue", 400, "bad_parameter", `unknown parameter "colour"`},
		{"scan 65 params", "GET", "/v1/kv?" + manyParams("prefix=b/", 64), 400, "bad_parameter", "at most 64"},
		{"scan 10001 params", "GET", "/v1/kv?" + manyParams("prefix=b/", 10000), 400, "bad_parameter", "at most 64"},
		{"scan repeated consistency", "GET", "/v1/kv?consistency=stale&consistency=stale", 400, "bad_consistency", ""},
		{"scan ok", "GET", "/v1/kv?prefix=b/&start=b/&end=b/z&limit=5&consistency=stale", 200, "", ""},
		{"scan empty values ok", "GET", "/v1/kv?prefix=b/&start=&end=", 200, "", ""},
		{"get bad escape", "GET", "/v1/kv/a/1?consistency=%zz", 400, "bad_parameter", "invalid URL escape"},
		{"get unknown", "GET", "/v1/kv/a/1?version=3", 400, "bad_parameter", `unknown parameter "version"`},
		{"get repeated consistency", "GET", "/v1/kv/a/1?consistency=stale&consistency=stale", 400, "bad_consistency", ""},
		{"get ok", "GET", "/v1/kv/a/1?consistency=stale", 200, "", ""},
		{"put unknown", "PUT", "/v1/kv/a/3?ttl=5", 400, "bad_parameter", "takes no query parameters"},
		{"put bad escape", "PUT", "/v1/kv/a/3?%zz", 400, "bad_parameter", "invalid URL escape"},
		{"delete unknown", "DELETE", "/v1/kv/a/1?force=1", 400, "bad_parameter", `unknown parameter "force"`},
		{"feed bad escape", "GET", "/v1/feed?prefix=%zz", 400, "bad_parameter", "invalid URL escape"},
		{"feed bad cursor escape", "GET", "/v1/feed?cursor=%zz", 400, "bad_parameter", "invalid URL escape"},
		{"feed repeated cursor", "GET", "/v1/feed?cursor=now&cursor=beginning", 400, "bad_parameter", `"cursor" given 2 times`},
		{"feed repeated limit", "GET", "/v1/feed?limit=1&limit=2", 400, "bad_parameter", `"limit"`},
		{"feed repeated wait", "GET", "/v1/feed?wait=1ms&wait=2ms", 400, "bad_parameter", `"wait"`},
		{"feed unknown", "GET", "/v1/feed?since=now", 400, "bad_parameter", `unknown parameter "since"`},
		{"feed wait over max", "GET", "/v1/feed?wait=61s", 400, "bad_parameter", "maximum 1m0s"},
		{"feed 65 params", "GET", "/v1/feed?" + manyParams("prefix=b/", 64), 400, "bad_parameter", "at most 64"},
		{"feed ok", "GET", "/v1/feed?prefix=b/&cursor=beginning&wait=0s&limit=10", 200, "", ""},
		{"query bad escape", "POST", "/v1/query?consistency=%zz", 400, "bad_parameter", "invalid URL escape"},
		{"query unknown", "POST", "/v1/query?timeout_ms=5", 400, "bad_parameter", `unknown parameter "timeout_ms"`},
		{"query ok", "POST", "/v1/query?consistency=stale", 200, "", ""},
		// /v1/cluster is an API route like the others; /healthz and
		// /metrics are for probes and scrapers, which may add their own
		// parameters, and ignore any.
		{"cluster unknown", "GET", "/v1/cluster?scope=node", 400, "bad_parameter", "takes no query parameters"},
		{"cluster bad escape", "GET", "/v1/cluster?%zz", 400, "bad_parameter", "invalid URL escape"},
		{"cluster ok", "GET", "/v1/cluster", 200, "", ""},
		{"healthz lenient", "GET", "/healthz?probe=1&%zz", 200, "", ""},
		{"metrics lenient", "GET", "/metrics?name[]=go_goroutines", 200, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body *strings.Reader
			switch tt.method {
			case "PUT":
				body = strings.NewReader("v")
			case "POST":
				body = strings.NewReader(`{"prefix":"a/","aggregate":{"op":"count"}}`)
			}
			rq := request{tt.method, tt.target, nil, nil}
			if body != nil {
				rq.body = body
			}
			resp := rq.do(t, h)
			b := mustStatus(t, resp, tt.status)
			if tt.status < 400 {
				return
			}
			if code := errCode(t, resp, b); code != tt.code {
				t.Fatalf("code %q, want %q: %s", code, tt.code, b)
			}
			if !strings.Contains(errMessage(b), tt.msg) {
				t.Fatalf("message %s does not say %q", b, tt.msg)
			}
			if strings.HasPrefix(tt.target, "/v1/kv") && len(resp.Header.Values(session.Header)) == 0 {
				t.Fatalf("no %s header", session.Header)
			}
		})
	}
	// The malformed requests changed nothing.
	if r := get(t, h, "/v1/kv/a/3", nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("a/3 written by a refused PUT: %d", r.StatusCode)
	}
	mustStatus(t, get(t, h, "/v1/kv/a/1", nil), http.StatusOK)
}

// TestStrictQueryFunctions: the function routes refuse malformed query
// strings (a deploy's memory_mb=%zz used to deploy with the default),
// repeated and unknown parameters.
func TestStrictQueryFunctions(t *testing.T) {
	ts := fnServer(t)
	fn := ts.URL + "/v1/functions"
	echo := wasmtest.Example(t, "echo")
	if r := do(t, "PUT", fn+"/echo", echo); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	for _, tt := range []struct {
		name, method, path string
		body               []byte
		status             int
		code, msg          string
	}{
		{"deploy bad escape", "PUT", "/g?memory_mb=%zz", echo, 400, "bad_parameter", "invalid URL escape"},
		{"deploy repeated memory", "PUT", "/g?memory_mb=32&memory_mb=64", echo, 400, "bad_parameter", `"memory_mb" given 2 times`},
		{"deploy unknown", "PUT", "/g?memory=32", echo, 400, "bad_parameter", `unknown parameter "memory"`},
		{"deploy 65 params", "PUT", "/g?" + manyParams("memory_mb=32", 64), echo, 400, "bad_parameter", "at most 64"},
		{"list bad scope", "GET", "?scope=cluster", nil, 400, "bad_parameter", "scope"},
		{"list unknown", "GET", "?verbose=1", nil, 400, "bad_parameter", `unknown parameter "verbose"`},
		{"list node", "GET", "?scope=node", nil, 200, "", ""},
		{"get unknown", "GET", "/echo?stats=1", nil, 400, "bad_parameter", `unknown parameter "stats"`},
		{"get bad escape", "GET", "/echo?scope=%zz", nil, 400, "bad_parameter", "invalid URL escape"},
		{"get repeated scope", "GET", "/echo?scope=node&scope=node", nil, 400, "bad_parameter", `"scope" given 2 times`},
		{"get node", "GET", "/echo?scope=node", nil, 200, "", ""},
		{"logs unknown", "GET", "/echo/logs?tail=5", nil, 400, "bad_parameter", `unknown parameter "tail"`},
		{"logs node", "GET", "/echo/logs?scope=node", nil, 200, "", ""},
		{"invoke bad escape", "POST", "/echo/invoke?key=%zz", []byte("hi"), 400, "bad_parameter", "invalid URL escape"},
		{"invoke repeated key", "POST", "/echo/invoke?key=a&key=b", []byte("hi"), 400, "bad_parameter", `"key" given 2 times`},
		{"invoke bad placement", "POST", "/echo/invoke?key=a&placement=anywhere", []byte("hi"), 400, "bad_parameter", "placement"},
		{"invoke unknown", "POST", "/echo/invoke?async=1", []byte("hi"), 400, "bad_parameter", `unknown parameter "async"`},
		{"invoke ok", "POST", "/echo/invoke?key=a&placement=replica&consistency=session", []byte("hi"), 200, "", ""},
		{"delete unknown", "DELETE", "/echo?force=1", nil, 400, "bad_parameter", `unknown parameter "force"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, fn+tt.path, tt.body)
			if r.status != tt.status || r.code() != tt.code || !strings.Contains(errMessage(string(r.body)), tt.msg) {
				t.Fatalf("%d %s, want %d %s %q", r.status, r.body, tt.status, tt.code, tt.msg)
			}
		})
	}
	// Nothing was deployed or removed by a refused request.
	if r := do(t, "GET", fn+"/g", nil); r.status != 404 {
		t.Fatalf("g deployed by a refused request: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", fn+"/echo", nil); r.status != 200 {
		t.Fatalf("echo after refused delete: %d %s", r.status, r.body)
	}
}

// TestFeedCursorAhead: a well-formed cursor whose position for some shard
// is past what the shard has committed (kept across a rebuilt cluster,
// say) is 400 bad_cursor — it used to be read as an empty page whose
// cursor then skipped every change up to that position.
func TestFeedCursorAhead(t *testing.T) {
	base := feedServer(t, shard.Config{})
	do(t, "PUT", base+"/v1/kv/k/1", []byte("v"))
	st, f, r := feedGet(t, base, "cursor=beginning")
	if st != 200 {
		t.Fatalf("feed: %d %s", st, r.body)
	}
	cur, err := changefeed.DecodeCursor(f.Cursor, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	ahead := func(s int, by uint64) string {
		c := changefeed.Cursor{}
		for k, v := range cur {
			c[k] = v
		}
		c[s] += by
		return c.Encode()
	}
	for _, tt := range []struct {
		name, cursor string
		status       int
		code         string
	}{
		{"current", f.Cursor, 200, ""},
		{"shard 0 ahead by 1000", ahead(0, 1000), 400, "bad_cursor"},
		{"last shard far ahead", ahead(len(cur)-1, 1<<40), 400, "bad_cursor"},
		{"another cluster's", changefeed.Cursor{0: 5_000_000, 1: 7}.Encode(), 400, "bad_cursor"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, _, r := feedGet(t, base, "cursor="+url.QueryEscape(tt.cursor))
			if st != tt.status || r.code() != tt.code {
				t.Fatalf("%d %s, want %d %s", st, r.body, tt.status, tt.code)
			}
			if tt.code != "" && !strings.Contains(errMessage(string(r.body)), "ahead of this cluster's log") {
				t.Fatalf("message %s does not say the cursor is ahead", r.body)
			}
		})
	}
	// A WebSocket feed refuses it before upgrading.
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/feed?cursor=" + url.QueryEscape(ahead(0, 1000))
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil {
		conn.Close()
		t.Fatal("WebSocket upgrade with a cursor ahead of the log")
	}
	if resp == nil || resp.StatusCode != 400 {
		t.Fatalf("WebSocket dial: %v %v", resp, err)
	}
	var e struct{ Code string }
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Code != "bad_cursor" {
		t.Fatalf("WebSocket refusal body: %+v %v", e, err)
	}
	// The last cursor still works and sees later changes.
	do(t, "PUT", base+"/v1/kv/k/2", []byte("v"))
	st, f2, r := feedGet(t, base, "wait=5s&cursor="+url.QueryEscape(f.Cursor))
	if st != 200 || len(f2.Changes) != 1 || f2.Changes[0].Key != "k/2" {
		t.Fatalf("after: %d %s", st, r.body)
	}
}

// TestTriggerFieldsAsGiven: a trigger's numeric fields are taken as
// given — max_retries 0 is no retries and max_wait_ms 0 no wait (they used
// to be stored as 5 and 200), batch_size 0 is out of range (it used to be
// taken as 100) — and only absent ones take their defaults.
func TestTriggerFieldsAsGiven(t *testing.T) {
	base := trigServer(t)
	if r := do(t, "PUT", base+"/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	type fields struct {
		BatchSize  int      `json:"batch_size"`
		MaxWaitMS  int      `json:"max_wait_ms"`
		MaxRetries int      `json:"max_retries"`
		Events     []string `json:"events"`
		PauseAfter int      `json:"pause_after"`
	}
	for _, tt := range []struct {
		name, body string
		status     int
		want       fields // for 201
		msg        string // for 400
	}{
		{"defaults", `{"function":"rec"}`, 201, fields{100, 200, 5, []string{"put", "delete"}, 100}, ""},
		{"nulls are absent", `{"function":"rec","batch_size":null,"max_wait_ms":null,"max_retries":null,"events":null}`, 201, fields{100, 200, 5, []string{"put", "delete"}, 100}, ""},
		{"max_retries 0", `{"function":"rec","max_retries":0}`, 201, fields{100, 200, 0, []string{"put", "delete"}, 100}, ""},
		{"max_wait_ms 0", `{"function":"rec","max_wait_ms":0}`, 201, fields{100, 0, 5, []string{"put", "delete"}, 100}, ""},
		{"bounds", `{"function":"rec","batch_size":1000,"max_wait_ms":60000,"max_retries":100,"events":["delete"]}`, 201, fields{1000, 60000, 100, []string{"delete"}, 100}, ""},
		{"batch_size 0", `{"function":"rec","batch_size":0}`, 400, fields{}, "batch_size 0 outside 1..1000"},
		{"batch_size 1001", `{"function":"rec","batch_size":1001}`, 400, fields{}, "batch_size 1001 outside 1..1000"},
		{"batch_size negative", `{"function":"rec","batch_size":-1}`, 400, fields{}, "outside 1..1000"},
		{"max_wait_ms 60001", `{"function":"rec","max_wait_ms":60001}`, 400, fields{}, "max_wait_ms 60001 outside 0..60000"},
		{"max_retries -1", `{"function":"rec","max_retries":-1}`, 400, fields{}, "max_retries -1 outside 0..100"},
		{"max_retries 101", `{"function":"rec","max_retries":101}`, 400, fields{}, "max_retries 101 outside 0..100"},
		{"max_retries fraction", `{"function":"rec","max_retries":1.5}`, 400, fields{}, "max_retries"},
		{"events empty", `{"function":"rec","events":[]}`, 400, fields{}, "events is empty"},
		{"pause_after 0", `{"function":"rec","pause_after":0}`, 201, fields{100, 200, 5, []string{"put", "delete"}, 0}, ""},
		{"pause_after max", `{"function":"rec","pause_after":1000000}`, 201, fields{100, 200, 5, []string{"put", "delete"}, 1000000}, ""},
		{"pause_after -1", `{"function":"rec","pause_after":-1}`, 400, fields{}, "pause_after -1 outside 0..1000000"},
		{"pause_after 1000001", `{"function":"rec","pause_after":1000001}`, 400, fields{}, "pause_after 1000001 outside 0..1000000"},
		{"trailing data", `{"function":"rec"} {}`, 400, fields{}, "trailing data"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, "PUT", base+"/v1/triggers/t", []byte(tt.body))
			if r.status != tt.status {
				t.Fatalf("%d %s, want %d", r.status, r.body, tt.status)
			}
			if tt.status != 201 {
				if r.code() != "invalid_trigger" || !strings.Contains(errMessage(string(r.body)), tt.msg) {
					t.Fatalf("%s, want invalid_trigger saying %q", r.body, tt.msg)
				}
				return
			}
			// As answered, and as stored.
			for _, r := range []reply{r, do(t, "GET", base+"/v1/triggers/t", nil)} {
				var got fields
				if err := json.Unmarshal(r.body, &got); err != nil {
					t.Fatal(err)
				}
				if got.BatchSize != tt.want.BatchSize || got.MaxWaitMS != tt.want.MaxWaitMS || got.MaxRetries != tt.want.MaxRetries || got.PauseAfter != tt.want.PauseAfter ||
					strings.Join(got.Events, ",") != strings.Join(tt.want.Events, ",") {
					t.Fatalf("trigger %s, want %+v", r.body, tt.want)
				}
			}
		})
	}
	for _, tt := range []struct{ method, path string }{
		{"PUT", "/v1/triggers/t?start=now"},
		{"GET", "/v1/triggers?scope=%zz"},
		{"GET", "/v1/triggers?scope=all"},
		{"GET", "/v1/triggers/t?scope=node&scope=node"},
		{"GET", "/v1/triggers/t/dead?limit=5"},
		{"DELETE", "/v1/triggers/t?force=1"},
		{"POST", "/v1/triggers/t/pause?now=1"},
		{"POST", "/v1/triggers/t/resume?from=yesterday"},
		{"POST", "/v1/triggers/t/resume?from=now&from=now"},
		{"POST", "/v1/triggers/t/resume?start=now"},
	} {
		if r := do(t, tt.method, base+tt.path, []byte(`{"function":"rec"}`)); r.status != 400 || r.code() != "bad_parameter" {
			t.Errorf("%s %s: %d %s, want 400 bad_parameter", tt.method, tt.path, r.status, r.body)
		}
	}
	if r := do(t, "GET", base+"/v1/triggers/t?scope=node", nil); r.status != 200 {
		t.Fatalf("scope=node: %d %s", r.status, r.body)
	}
}
