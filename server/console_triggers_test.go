package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
)

// TestConsoleTriggersAndQuery (secure mode): the triggers page shows a
// trigger's status and dead letters only to a token with trigger:admin;
// its Drop button, posted with the sign-in cookie, drops the letter (a
// token without fn:invoke may not press Replay); the query page answers
// what POST /v1/query answers, and refuses what the API refuses, with
// its message.
func TestConsoleTriggersAndQuery(t *testing.T) {
	ss := newSecureServer(t)
	if r := ss.do(t, ss.root, "PUT", "/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "PUT", "/v1/triggers/t1", []byte(`{"function":"rec","prefix":"p/","max_retries":0,"max_wait_ms":0}`)); r.status != 201 {
		t.Fatalf("trigger: %d %s", r.status, r.body)
	}
	for _, k := range []string{"p/a", "p/b"} {
		if r := ss.do(t, ss.root, "PUT", "/v1/kv/"+k, []byte("poison")); r.status != 200 {
			t.Fatalf("put: %d %s", r.status, r.body)
		}
	}
	ss.do(t, ss.root, "PUT", "/v1/kv/p/ok", []byte(`{"n":3}`))
	var dead struct{ Dead []struct{ ID, Key string } }
	deadline := time.Now().Add(30 * time.Second)
	for len(dead.Dead) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v", dead)
		}
		time.Sleep(50 * time.Millisecond)
		r := ss.do(t, ss.root, "GET", "/v1/triggers/t1/dead", nil)
		_ = json.Unmarshal([]byte(r.body), &dead)
	}
	page := ss.do(t, ss.root, "GET", "/ui/triggers", nil)
	if page.status != 200 || !strings.Contains(page.body, "poison change at p/a") || !strings.Contains(page.body, `hx-get="/ui/triggers/live"`) {
		t.Fatalf("triggers page: %d %s", page.status, page.body)
	}
	for _, l := range dead.Dead {
		if !strings.Contains(page.body, `action="/ui/triggers/t1/dead/`+l.ID+`/replay"`) {
			t.Fatalf("no Replay button for %s", l.ID)
		}
	}
	if r := ss.do(t, ss.root, "GET", "/ui/triggers/live", nil); r.status != 200 || !strings.Contains(r.body, "poison change at p/b") || strings.Contains(r.body, "<html") {
		t.Fatalf("live fragment: %d %s", r.status, r.body)
	}
	reader, _ := ss.token(t, "default", 0, "kv:read:*", "query")
	if r := ss.do(t, reader, "GET", "/ui/triggers", nil); r.status != 403 || strings.Contains(r.body, "poison") || !strings.Contains(r.body, "trigger:admin") {
		t.Fatalf("triggers page without trigger:admin: %d %s", r.status, r.body)
	}

	// The buttons take the sign-in cookie; Replay needs fn:invoke too.
	admin, _ := ss.token(t, "default", 0, "trigger:admin")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	login, err := noRedirect.PostForm(ss.url+"/ui/login", url.Values{"token": {admin}})
	if err != nil {
		t.Fatal(err)
	}
	login.Body.Close()
	if len(login.Cookies()) != 1 {
		t.Fatalf("sign-in: %d %v", login.StatusCode, login.Cookies())
	}
	cookie := login.Cookies()[0]
	press := func(path string) answer {
		t.Helper()
		req, _ := http.NewRequest("POST", ss.url+path, nil)
		req.AddCookie(cookie)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return answer{status: resp.StatusCode, body: string(body)}
	}
	a := dead.Dead[0]
	if r := press("/ui/triggers/t1/dead/" + a.ID + "/replay"); r.status != 403 {
		t.Fatalf("replay without fn:invoke: %d %s", r.status, r.body)
	}
	if r := press("/ui/triggers/t1/dead/" + a.ID + "/drop"); r.status != 200 || !strings.Contains(r.body, "Dead letter "+a.ID+" of trigger t1 dropped.") {
		t.Fatalf("drop: %d %s", r.status, r.body)
	}
	if r := press("/ui/triggers/t1/dead/" + a.ID + "/drop"); r.status != 404 {
		t.Fatalf("second drop: %d %s", r.status, r.body)
	}
	if r := ss.do(t, ss.root, "GET", "/v1/triggers/t1/dead", nil); strings.Contains(r.body, a.ID) {
		t.Fatalf("dropped letter still listed: %s", r.body)
	}
	// Replay with the admin token: fails again, the letter stays.
	b := dead.Dead[1]
	if r := ss.do(t, ss.root, "POST", "/ui/triggers/t1/dead/"+b.ID+"/replay", nil); r.status != 200 || !strings.Contains(r.body, "failed again") {
		t.Fatalf("replay: %d %s", r.status, r.body)
	}

	// Query: the page's count is the API's.
	r := ss.do(t, ss.root, "POST", "/v1/query", []byte(`{"prefix":"p/","aggregate":{"op":"count"}}`))
	var api struct{ Result json.RawMessage }
	if r.status != 200 || json.Unmarshal([]byte(r.body), &api) != nil {
		t.Fatalf("API query: %d %s", r.status, r.body)
	}
	q := ss.do(t, reader, "GET", "/ui/query?op=count&prefix=p/", nil)
	m := regexp.MustCompile(`<output id="result-value">([^<]*)</output>`).FindStringSubmatch(q.body)
	if q.status != 200 || m == nil || m[1] != string(api.Result) || !strings.Contains(q.body, `id="per-shard"`) {
		t.Fatalf("query page (API %s): %d %s", api.Result, q.status, q.body)
	}
	if q := ss.do(t, reader, "GET", "/ui/query?op=topk&prefix=p/", nil); q.status != 400 || !strings.Contains(q.body, "topk needs a field") {
		t.Fatalf("bad query: %d %s", q.status, q.body)
	}
	narrow, _ := ss.token(t, "default", 0, "kv:read:elsewhere/", "query")
	if q := ss.do(t, narrow, "GET", "/ui/query?op=count&prefix=p/", nil); q.status != 403 || !strings.Contains(q.body, "needs scope kv:read covering prefix") {
		t.Fatalf("query without kv:read: %d %s", q.status, q.body)
	}
	if q := ss.do(t, narrow, "GET", "/ui/query", nil); q.status != 200 || !strings.Contains(q.body, `id="query-form"`) {
		t.Fatalf("query form: %d %s", q.status, q.body)
	}
}
