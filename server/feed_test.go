package server_test

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"lambdadb/internal/testnode"
	"lambdadb/server"
	"lambdadb/shard"
)

type feedResp struct {
	Changes []struct {
		Key     string
		Value   []byte
		Op      string
		Version uint64
	}
	Cursor string
}

func feedGet(t *testing.T, base, query string) (int, feedResp, reply) {
	t.Helper()
	r := do(t, "GET", base+"/v1/feed?"+query, nil)
	var f feedResp
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &f); err != nil {
			t.Fatal(err)
		}
	}
	return r.status, f, r
}

func feedServer(t *testing.T, cfg shard.Config) string {
	n := testnode.NewWithConfig(t, cfg)
	h, err := server.New(server.Config{Node: n})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

func TestFeedLongPoll(t *testing.T) {
	base := feedServer(t, shard.Config{})
	do(t, "PUT", base+"/v1/kv/old/1", []byte("before"))
	// From now: nothing yet; a short wait returns empty with a cursor.
	st, f, r := feedGet(t, base, "prefix=orders/&wait=50ms")
	if st != 200 || len(f.Changes) != 0 || f.Cursor == "" {
		t.Fatalf("empty poll: %d %s", st, r.body)
	}
	cur := f.Cursor
	// A waiting poll returns as soon as a matching change commits.
	done := make(chan feedResp, 1)
	go func() {
		_, f, _ := feedGet(t, base, "prefix=orders/&wait=10s&cursor="+url.QueryEscape(cur))
		done <- f
	}()
	time.Sleep(50 * time.Millisecond)
	do(t, "PUT", base+"/v1/kv/other/x", []byte("not mine"))
	do(t, "PUT", base+"/v1/kv/orders/1", []byte("one"))
	var got feedResp
	select {
	case got = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not return")
	}
	if len(got.Changes) != 1 || got.Changes[0].Key != "orders/1" || string(got.Changes[0].Value) != "one" || got.Changes[0].Op != "put" {
		t.Fatalf("changes %+v", got.Changes)
	}
	do(t, "PUT", base+"/v1/kv/orders/2", []byte("two"))
	do(t, "DELETE", base+"/v1/kv/orders/1", nil)
	_, f2, _ := feedGet(t, base, "prefix=orders/&cursor="+url.QueryEscape(got.Cursor))
	if len(f2.Changes) != 2 || f2.Changes[0].Key != "orders/2" || f2.Changes[1].Op != "delete" || f2.Changes[1].Value != nil {
		t.Fatalf("resumed changes %+v", f2.Changes)
	}
	// Resuming from the same cursor again gives the same changes.
	_, f3, _ := feedGet(t, base, "prefix=orders/&cursor="+url.QueryEscape(got.Cursor))
	if len(f3.Changes) != 2 {
		t.Fatalf("replay %+v", f3.Changes)
	}
	// From the beginning: everything retained, including the first put.
	_, fb, _ := feedGet(t, base, "cursor=beginning&limit=100")
	if len(fb.Changes) != 5 || fb.Changes[0].Key != "old/1" {
		t.Fatalf("beginning: %+v", fb.Changes)
	}
}

func TestFeedErrors(t *testing.T) {
	base := feedServer(t, shard.Config{FeedRetainEntries: 5, FeedTrimInterval: 20 * time.Millisecond})
	_, f, _ := feedGet(t, base, "")
	old := f.Cursor
	for i := 0; i < 40; i++ {
		do(t, "PUT", base+"/v1/kv/k"+strings.Repeat("x", i%5), []byte("v"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _, r := feedGet(t, base, "cursor="+url.QueryEscape(old))
		if st == 410 {
			if r.code() != "cursor_expired" {
				t.Fatalf("410 body %s", r.body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old cursor still readable: %d %s", st, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for q, code := range map[string]string{
		"cursor=garbage":    "bad_cursor",
		"cursor=c1.AAAAAAA": "bad_cursor",
		"wait=forever":      "bad_parameter",
		"limit=0":           "bad_parameter",
		"limit=100001":      "bad_parameter",
	} {
		st, _, r := feedGet(t, base, q)
		if st != 400 || r.code() != code {
			t.Errorf("%s: %d %s", q, st, r.body)
		}
	}
}

func TestFeedWebSocket(t *testing.T) {
	base := feedServer(t, shard.Config{})
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/feed?prefix=ws/"
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(50 * time.Millisecond)
	for i := 0; i < 3; i++ {
		do(t, "PUT", base+"/v1/kv/ws/"+string(rune('a'+i)), []byte("v"))
		do(t, "PUT", base+"/v1/kv/skip/"+string(rune('a'+i)), []byte("v"))
	}
	var keys []string
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(keys) < 3 {
		var f feedResp
		if err := conn.ReadJSON(&f); err != nil {
			t.Fatalf("after %v: %v", keys, err)
		}
		if f.Cursor == "" {
			t.Fatal("message without cursor")
		}
		for _, c := range f.Changes {
			keys = append(keys, c.Key)
		}
	}
	if strings.Join(keys, ",") != "ws/a,ws/b,ws/c" {
		t.Fatalf("streamed %v", keys)
	}
}
