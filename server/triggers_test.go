package server_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/testnode"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/server"
)

func trigServer(t *testing.T) string {
	t.Helper()
	n := testnode.New(t)
	e, err := lambda.New(lambda.Config{Store: n, NodeID: n.ID(), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	tr, err := changefeed.NewTriggers(changefeed.TriggersConfig{Node: n, Functions: e, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
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
