package server_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
	"lambdadb/shard"
)

func trigServer(t *testing.T) string {
	t.Helper()
	return trigServerWith(t, shard.Config{}, changefeed.TriggersConfig{})
}

// trigServerWith is trigServer over a node and triggers with these base
// configurations; the node's feed is never trimmed past a trigger's
// checkpoint, as serve sets it up.
func trigServerWith(t *testing.T, scfg shard.Config, tcfg changefeed.TriggersConfig) string {
	t.Helper()
	var trp atomic.Pointer[changefeed.Triggers]
	scfg.FeedTrimLimit = func(s int) uint64 {
		if tr := trp.Load(); tr != nil {
			return tr.TrimLimit(s)
		}
		return 0
	}
	n := testnode.NewWithConfig(t, scfg)
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tcfg.Node, tcfg.Functions, tcfg.Poll = n, e, 50*time.Millisecond
	tr, err := changefeed.NewTriggers(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
	trp.Store(tr)
	t.Cleanup(tr.Close)
	h, err := server.New(server.Config{Node: n, Functions: e, Triggers: tr})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

func TestTriggerAPI(t *testing.T) {
	base := trigServer(t)
	if r := do(t, "PUT", base+"/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", base+"/v1/functions/echo", wasmtest.Example(t, "echo")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	for _, tt := range []struct {
		body, code string
		status     int
	}{
		{`{"function":"rec","prefix":"p/","events":["put"],"batch_size":10,"max_wait_ms":0,"start":"beginning"}`, "", 201},
		{`{"function":"nope"}`, "invalid_trigger", 400},
		{`{"function":"echo"}`, "invalid_trigger", 400}, // no OnChanges
		{`{"function":"rec","events":["update"]}`, "invalid_trigger", 400},
		{`{"function":"rec","batch_size":5000}`, "invalid_trigger", 400},
		{`{"function":"rec","max_wait_ms":-1}`, "invalid_trigger", 400},
		{`{"function":"rec","start":"yesterday"}`, "invalid_trigger", 400},
		{`{"function":"rec","colour":"blue"}`, "invalid_trigger", 400},
		{`not json`, "invalid_trigger", 400},
	} {
		r := do(t, "PUT", base+"/v1/triggers/t1", []byte(tt.body))
		if r.status != tt.status || (tt.code != "" && r.code() != tt.code) {
			t.Fatalf("%s: %d %s", tt.body, r.status, r.body)
		}
	}
	do(t, "PUT", base+"/v1/kv/p/1", []byte("one"))
	do(t, "DELETE", base+"/v1/kv/p/1", nil) // events: put only
	do(t, "PUT", base+"/v1/kv/p/2", []byte("poison"))
	var st struct {
		Name        string
		Delivered   int
		DeadLetters int `json:"dead_letters"`
		Shards      []struct {
			Shard      int
			Checkpoint uint64
			Running    bool
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := do(t, "GET", base+"/v1/triggers/t1", nil)
		if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 {
			t.Fatalf("get: %d %s", r.status, r.body)
		}
		if st.Delivered == 1 && st.DeadLetters == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s", r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(st.Shards) != 4 || !st.Shards[0].Running {
		t.Fatalf("shards %+v", st.Shards)
	}
	if r := do(t, "GET", base+"/v1/kv/log/p/1", nil); r.status != 200 || strings.Contains(string(r.body), "deleted") {
		t.Fatalf("log/p/1: %d %s", r.status, r.body)
	}
	r := do(t, "GET", base+"/v1/triggers/t1/dead", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"key":"p/2"`) || !strings.Contains(string(r.body), "poison change at p/2") {
		t.Fatalf("dead: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", base+"/v1/triggers", nil); r.status != 200 || !strings.Contains(string(r.body), `"name":"t1"`) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if r := do(t, "DELETE", base+"/v1/triggers/t1", nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/v1/triggers/t1", "/v1/triggers/t1/dead"} {
		if r := do(t, "GET", base+p, nil); r.status != 404 || r.code() != "not_found" {
			t.Fatalf("%s after delete: %d %s", p, r.status, r.body)
		}
	}
	if r := do(t, "DELETE", base+"/v1/triggers/t1", nil); r.status != 404 {
		t.Fatalf("second delete: %d %s", r.status, r.body)
	}
}

// trigState is the state part of GET /v1/triggers/{name}.
type trigState struct {
	State             string     `json:"state"`
	PauseAfter        int        `json:"pause_after"`
	PausedSince       *time.Time `json:"paused_since"`
	PausedReason      string     `json:"paused_reason"`
	CheckpointExpired string     `json:"checkpoint_expired"`
	DeadLetters       int        `json:"dead_letters"`
	Lag               uint64     `json:"lag"`
}

func getTrigState(t *testing.T, url string) trigState {
	t.Helper()
	r := do(t, "GET", url, nil)
	var st trigState
	if r.status != 200 || json.Unmarshal(r.body, &st) != nil {
		t.Fatalf("GET %s: %d %s", url, r.status, r.body)
	}
	return st
}

func waitTrig(t *testing.T, url, what string, cond func(trigState) bool) trigState {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := getTrigState(t, url)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTriggerPauseResumeAPI: a trigger whose handler keeps failing is
// paused after pause_after dead letters in a row and says why; pause and
// resume work over HTTP; once the feed was trimmed past the checkpoint of
// a trigger paused longer than the retention bound, resuming from the
// checkpoint is 410 cursor_expired (and GET says what was trimmed), and
// from=now goes on with later changes.
func TestTriggerPauseResumeAPI(t *testing.T) {
	const bound = 300 * time.Millisecond
	base := trigServerWith(t, shard.Config{FeedRetainEntries: 5, FeedTrimInterval: 20 * time.Millisecond},
		changefeed.TriggersConfig{PausedRetention: bound})
	if r := do(t, "PUT", base+"/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	r := do(t, "PUT", base+"/v1/triggers/p", []byte(`{"function":"rec","prefix":"{p}","max_retries":0,"batch_size":1,"max_wait_ms":0,"pause_after":2}`))
	if r.status != 201 || !strings.Contains(string(r.body), `"pause_after":2`) || !strings.Contains(string(r.body), `"state":"running"`) {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	u := base + "/v1/triggers/p"
	for i := 0; i < 4; i++ {
		do(t, "PUT", fmt.Sprintf("%s/v1/kv/{p}%d", base, i), []byte("poison"))
	}
	st := waitTrig(t, u, "paused", func(st trigState) bool { return st.State == "paused" })
	if !strings.HasPrefix(st.PausedReason, "paused after 2 consecutive dead letters on shard ") || !strings.Contains(st.PausedReason, "poison change at {p}1") ||
		st.PausedSince == nil || st.DeadLetters != 2 || st.CheckpointExpired != "" {
		t.Fatalf("paused trigger: %+v", st)
	}
	if r := do(t, "GET", base+"/v1/triggers", nil); !strings.Contains(string(r.body), `"state":"paused"`) {
		t.Fatalf("list: %s", r.body)
	}
	if r := do(t, "POST", u+"/resume?from=sideways", nil); r.status != 400 || r.code() != "bad_parameter" {
		t.Fatalf("resume from=sideways: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", base+"/v1/triggers/nope/resume", nil); r.status != 404 {
		t.Fatalf("resume an unknown trigger: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", u+"/resume?from=now", nil); r.status != 200 || !strings.Contains(string(r.body), `"state":"running"`) {
		t.Fatalf("resume from=now: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", u+"/resume?from=beginning", nil); r.status != 409 || r.code() != "not_paused" {
		t.Fatalf("resume a running trigger from=beginning: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", u+"/resume", nil); r.status != 200 {
		t.Fatalf("resume a running trigger from its checkpoint: %d %s", r.status, r.body)
	}
	do(t, "PUT", base+"/v1/kv/{p}ok", []byte("fine"))
	waitTrig(t, u, "{p}ok delivered", func(trigState) bool { return do(t, "GET", base+"/v1/kv/log/{p}ok", nil).status == 200 })

	// Paused by request past the retention bound: the feed moves on.
	r = do(t, "POST", u+"/pause", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"paused_reason":"paused by request"`) {
		t.Fatalf("pause: %d %s", r.status, r.body)
	}
	for i := 0; i < 12; i++ {
		do(t, "PUT", fmt.Sprintf("%s/v1/kv/{p}x%d", base, i), []byte("fine"))
	}
	st = waitTrig(t, u, "the checkpoint expired", func(st trigState) bool { return st.CheckpointExpired != "" })
	if !strings.HasPrefix(st.CheckpointExpired, "checkpoint expired: shard ") || !strings.Contains(st.CheckpointExpired, "were trimmed") ||
		st.State != "paused" || st.Lag == 0 {
		t.Fatalf("expired: %+v", st)
	}
	r = do(t, "POST", u+"/resume", nil)
	if r.status != 410 || r.code() != "cursor_expired" || !strings.Contains(errMessage(string(r.body)), "checkpoint expired: shard ") ||
		!strings.Contains(errMessage(string(r.body)), "from=now or from=beginning") {
		t.Fatalf("resume from the trimmed checkpoint: %d %s", r.status, r.body)
	}
	if st := getTrigState(t, u); st.State != "paused" {
		t.Fatalf("after a refused resume: %+v", st)
	}
	if r := do(t, "POST", u+"/resume?from=now", nil); r.status != 200 || !strings.Contains(string(r.body), `"state":"running"`) {
		t.Fatalf("resume from=now: %d %s", r.status, r.body)
	}
	do(t, "PUT", base+"/v1/kv/{p}later", []byte("fine"))
	waitTrig(t, u, "{p}later delivered", func(trigState) bool { return do(t, "GET", base+"/v1/kv/log/{p}later", nil).status == 200 })
	if r := do(t, "GET", base+"/v1/kv/log/{p}x11", nil); r.status != 404 {
		t.Fatalf("a change skipped by from=now was delivered: %d %s", r.status, r.body)
	}
}
