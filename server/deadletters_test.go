package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"lambdadb/internal/wasmtest"
)

type deadLetter struct {
	ID      string
	Key     string
	Error   string
	Replays int
}

// deadOf lists trigger name's dead letters through the API.
func deadOf(t *testing.T, base, name string) []deadLetter {
	t.Helper()
	r := do(t, "GET", base+"/v1/triggers/"+name+"/dead", nil)
	if r.status != 200 {
		t.Fatalf("dead: %d %s", r.status, r.body)
	}
	var out struct{ Dead []deadLetter }
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Dead
}

// waitDead waits until trigger name has want dead letters.
func waitDead(t *testing.T, base, name string, want int) []deadLetter {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		dl := deadOf(t, base, name)
		if len(dl) == want {
			return dl
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters %+v, want %d", dl, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeadLetterReplayDrop: a replay whose handler fails again keeps the
// letter with the new error and a replay counted; once the handler takes
// the change, a replay delivers it (the handler's write shows) and the
// letter is gone; a drop removes a letter without delivering it; unknown
// letters and triggers are 404.
func TestDeadLetterReplayDrop(t *testing.T) {
	base := trigServer(t)
	if r := do(t, "PUT", base+"/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", base+"/v1/triggers/t1", []byte(`{"function":"rec","prefix":"p/","max_retries":0,"max_wait_ms":0}`)); r.status != 201 {
		t.Fatalf("trigger: %d %s", r.status, r.body)
	}
	for _, k := range []string{"p/a", "p/b", "p/c"} {
		if r := do(t, "PUT", base+"/v1/kv/"+k, []byte("poison")); r.status != 200 {
			t.Fatalf("put: %d %s", r.status, r.body)
		}
	}
	dl := waitDead(t, base, "t1", 3)
	byKey := map[string]deadLetter{}
	for _, l := range dl {
		if l.ID == "" || !strings.Contains(l.Error, "poison change at p/") {
			t.Fatalf("letter %+v", l)
		}
		byKey[l.Key] = l
	}
	a := byKey["p/a"]

	// Still poisonous: the letter stays, with the new error.
	r := do(t, "POST", base+"/v1/triggers/t1/dead/"+a.ID+"/replay", nil)
	var res struct {
		ID        string
		Delivered bool
		Error     string
		Dead      *deadLetter
	}
	if err := json.Unmarshal(r.body, &res); r.status != 200 || err != nil || res.Delivered || res.ID != a.ID ||
		!strings.Contains(res.Error, "poison change at p/a") || res.Dead == nil || res.Dead.Replays != 1 || res.Dead.Key != "p/a" {
		t.Fatalf("failing replay: %d %s", r.status, r.body)
	}
	if dl := deadOf(t, base, "t1"); len(dl) != 3 {
		t.Fatalf("after a failed replay: %+v", dl)
	}

	// Cured: the replay delivers and the letter goes.
	do(t, "PUT", base+"/v1/kv/cure/p/a", []byte("1"))
	r = do(t, "POST", base+"/v1/triggers/t1/dead/"+a.ID+"/replay", nil)
	res.Error, res.Dead = "", nil
	if err := json.Unmarshal(r.body, &res); r.status != 200 || err != nil || !res.Delivered || res.Error != "" {
		t.Fatalf("replay: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", base+"/v1/kv/log/p/a", nil); r.status != 200 || !strings.HasSuffix(string(r.body), ":poison;") {
		t.Fatalf("the handler did not see the change: %d %s", r.status, r.body)
	}
	for _, l := range deadOf(t, base, "t1") {
		if l.ID == a.ID {
			t.Fatalf("replayed letter still listed")
		}
	}
	if r := do(t, "POST", base+"/v1/triggers/t1/dead/"+a.ID+"/replay", nil); r.status != 404 || r.code() != "not_found" {
		t.Fatalf("second replay: %d %s", r.status, r.body)
	}

	// Drop: gone, never delivered.
	b := byKey["p/b"]
	if r := do(t, "DELETE", base+"/v1/triggers/t1/dead/"+b.ID, nil); r.status != 200 {
		t.Fatalf("drop: %d %s", r.status, r.body)
	}
	if dl := deadOf(t, base, "t1"); len(dl) != 1 || dl[0].Key != "p/c" {
		t.Fatalf("after drop: %+v", dl)
	}
	if r := do(t, "GET", base+"/v1/kv/log/p/b", nil); r.status != 404 {
		t.Fatalf("dropped letter delivered: %d %s", r.status, r.body)
	}
	if r := do(t, "DELETE", base+"/v1/triggers/t1/dead/"+b.ID, nil); r.status != 404 {
		t.Fatalf("second drop: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/v1/triggers/t1/dead/nonsense", "/v1/triggers/t1/dead/99-1-0", "/v1/triggers/nope/dead/" + b.ID} {
		if r := do(t, "DELETE", base+p, nil); r.status != 404 {
			t.Fatalf("DELETE %s: %d %s", p, r.status, r.body)
		}
	}

	// Replay all: c still fails, then is cured.
	r = do(t, "POST", base+"/v1/triggers/t1/dead/replay", nil)
	var all struct {
		Delivered, Failed int
		Replayed          []struct{ ID string }
	}
	if err := json.Unmarshal(r.body, &all); r.status != 200 || err != nil || all.Failed != 1 || all.Delivered != 0 || len(all.Replayed) != 1 {
		t.Fatalf("replay all: %d %s", r.status, r.body)
	}
	do(t, "PUT", base+"/v1/kv/cure/p/c", []byte("1"))
	r = do(t, "POST", base+"/v1/triggers/t1/dead/replay", nil)
	if err := json.Unmarshal(r.body, &all); r.status != 200 || err != nil || all.Failed != 0 || all.Delivered != 1 {
		t.Fatalf("replay all, cured: %d %s", r.status, r.body)
	}
	if dl := deadOf(t, base, "t1"); len(dl) != 0 {
		t.Fatalf("after replaying all: %+v", dl)
	}
	if r := do(t, "POST", base+"/v1/triggers/nope/dead/replay", nil); r.status != 404 {
		t.Fatalf("replay all of no trigger: %d %s", r.status, r.body)
	}
}

// TestDeadLetterReplayAnyNode: dead letters are replicated records, so a
// node that does not lead a letter's shard lists, replays and drops it.
func TestDeadLetterReplayAnyNode(t *testing.T) {
	c := fnCluster(t)
	n1 := memberURL(c.Members[0])
	if r := do(t, "PUT", n1+"/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", n1+"/v1/triggers/t1", []byte(`{"function":"rec","prefix":"p/","max_retries":0,"max_wait_ms":0}`)); r.status != 201 {
		t.Fatalf("trigger: %d %s", r.status, r.body)
	}
	keys := []string{"p/a", "p/b", "p/c", "p/d", "p/e", "p/f"}
	for _, k := range keys {
		if r := do(t, "PUT", n1+"/v1/kv/"+k, []byte("poison")); r.status != 200 {
			t.Fatalf("put: %d %s", r.status, r.body)
		}
	}
	var dl []struct {
		ID    string
		Key   string
		Shard int
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(dl) < len(keys) {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v", dl)
		}
		time.Sleep(100 * time.Millisecond)
		r := do(t, "GET", n1+"/v1/triggers/t1/dead", nil)
		var out struct {
			Dead []struct {
				ID    string
				Key   string
				Shard int
			}
		}
		_ = json.Unmarshal(r.body, &out)
		dl = out.Dead
	}
	var cl struct {
		Shards []struct {
			ID     int
			Leader string
		}
	}
	if err := json.Unmarshal(do(t, "GET", n1+"/v1/cluster", nil).body, &cl); err != nil {
		t.Fatal(err)
	}
	leader := map[int]string{}
	for _, s := range cl.Shards {
		leader[s.ID] = s.Leader
	}
	for i, l := range dl {
		// Through a node that does not lead the letter's shard.
		var via string
		for _, m := range c.Members {
			if m.ID != leader[l.Shard] {
				via = memberURL(m)
				break
			}
		}
		if i%2 == 1 {
			if r := do(t, "DELETE", via+"/v1/triggers/t1/dead/"+l.ID, nil); r.status != 200 {
				t.Fatalf("drop %s via a follower: %d %s", l.ID, r.status, r.body)
			}
			continue
		}
		do(t, "PUT", via+"/v1/kv/cure/"+l.Key, []byte("1"))
		r := do(t, "POST", via+"/v1/triggers/t1/dead/"+l.ID+"/replay", nil)
		if r.status != 200 || !strings.Contains(string(r.body), `"delivered":true`) {
			t.Fatalf("replay %s via a follower: %d %s", l.ID, r.status, r.body)
		}
		if r := do(t, "GET", via+"/v1/kv/log/"+l.Key, nil); r.status != 200 || !strings.HasSuffix(string(r.body), ":poison;") {
			t.Fatalf("log/%s: %d %s", l.Key, r.status, r.body)
		}
	}
	for _, m := range c.Members {
		if r := do(t, "GET", memberURL(m)+"/v1/triggers/t1/dead", nil); r.status != 200 || !strings.Contains(string(r.body), `"dead":[]`) {
			t.Fatalf("dead letters left on %s: %d %s", m.ID, r.status, r.body)
		}
	}
}
