package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/internal/wasmtest"
	"lambdadb/shard"
)

// TestTriggerAcrossLeaderKills: a trigger records every change of seven
// keys (each on its own shard via a hash tag, the handler's writes on the
// same shard) while the node leading the most shards is killed and
// restarted twice. Every acknowledged put must reach the handler, in
// order per key, and — since each batch's writes commit with its
// checkpoint in one Raft entry — exactly once.
func TestTriggerAcrossLeaderKills(t *testing.T) {
	c := fnCluster(t)
	n1 := memberURL(c.Members[0])
	if r := do(t, "PUT", n1+"/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", n1+"/v1/triggers/rec", []byte(`{"function":"rec","prefix":"{k","batch_size":20,"max_wait_ms":50}`)); r.status != 201 {
		t.Fatalf("trigger: %d %s", r.status, r.body)
	}
	keys := make([]string, 7)
	for i := range keys {
		keys[i] = fmt.Sprintf("{k%d}x", i)
	}
	var mu sync.Mutex
	acked := map[string][]uint64{} // versions acknowledged, per key
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[(w*3+i)%len(keys)]
				var via *clustertest.Member
				for _, m := range c.Members {
					if m.Node() != nil && (via == nil || (i+w)%3 == 0) {
						via = m
					}
				}
				r := doQuiet("PUT", memberURL(via)+"/v1/kv/"+k, []byte(fmt.Sprint("w", w, "-", i)))
				if r.status == 200 {
					v, _ := strconv.ParseUint(strings.Trim(r.header.Get("ETag"), `"`), 10, 64)
					mu.Lock()
					acked[k] = append(acked[k], v)
					mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	for round := 0; round < 2; round++ {
		time.Sleep(1500 * time.Millisecond)
		victim := c.MostLeader()
		c.Kill(victim.ID)
		time.Sleep(1500 * time.Millisecond)
		c.Restart(victim.ID)
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	for _, k := range keys {
		mu.Lock()
		want := append([]uint64(nil), acked[k]...)
		mu.Unlock()
		if len(want) == 0 {
			t.Fatalf("no put to %s was acknowledged", k)
		}
		var got []uint64
		c.Eventually(30*time.Second, "log/"+k+" has every acknowledged put", func() bool {
			r := doQuiet("GET", n1+"/v1/kv/log/"+k, nil)
			got = parseLog(t, r.body)
			have := map[uint64]bool{}
			for _, v := range got {
				have[v] = true
			}
			for _, v := range want {
				if !have[v] {
					return false
				}
			}
			return true
		})
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("log/%s out of order or delivered twice at %d: %v", k, i, got)
			}
		}
		s := shard.For(k, c.Members[0].Node().Shards())
		t.Logf("%s (shard %d): %d acknowledged, %d delivered", k, s, len(want), len(got))
	}
	// The counters live in the checkpoints, committed with each batch and
	// its writes: across the kills they count every delivery once.
	// (A put committed but not acknowledged may still be on its way, so
	// logs and status are read again until they agree.)
	var status struct {
		Delivered int `json:"delivered"`
	}
	var delivered int
	c.Eventually(30*time.Second, "the trigger's status counts every delivery", func() bool {
		r := doQuiet("GET", n1+"/v1/triggers/rec", nil)
		if r.status != 200 || json.Unmarshal(r.body, &status) != nil {
			return false
		}
		delivered = 0
		for _, k := range keys {
			delivered += len(parseLog(t, doQuiet("GET", n1+"/v1/kv/log/"+k, nil).body))
		}
		return status.Delivered == delivered
	})
	t.Logf("status: %d delivered, logs: %d", status.Delivered, delivered)
}

// parseLog reads "version:value;" entries.
func parseLog(t *testing.T, b []byte) []uint64 {
	var out []uint64
	for _, e := range bytes.Split(b, []byte(";")) {
		if len(e) == 0 {
			continue
		}
		v, _, _ := bytes.Cut(e, []byte(":"))
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			t.Fatalf("bad log entry %q", e)
		}
		out = append(out, n)
	}
	return out
}

// TestTriggerPauseAcrossNodes: the pause is replicated state: a trigger
// paused by the runner on its shard's leader shows paused on every node,
// delivers nothing while paused, and resumed through another node goes on
// with later changes.
func TestTriggerPauseAcrossNodes(t *testing.T) {
	c := fnCluster(t)
	n1 := memberURL(c.Members[0])
	if r := do(t, "PUT", n1+"/v1/functions/rec", wasmtest.Guest(t, "faulty")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	body := `{"function":"rec","prefix":"{c}","max_retries":0,"batch_size":1,"max_wait_ms":0,"pause_after":2}`
	if r := do(t, "PUT", n1+"/v1/triggers/c", []byte(body)); r.status != 201 {
		t.Fatalf("trigger: %d %s", r.status, r.body)
	}
	for i := 0; i < 3; i++ {
		if r := do(t, "PUT", fmt.Sprintf("%s/v1/kv/{c}%d", n1, i), []byte("poison")); r.status != 200 {
			t.Fatalf("put: %d %s", r.status, r.body)
		}
	}
	for _, m := range c.Members {
		st := waitTrig(t, memberURL(m)+"/v1/triggers/c", "paused on "+m.ID, func(st trigState) bool { return st.State == "paused" })
		if !strings.HasPrefix(st.PausedReason, "paused after 2 consecutive dead letters") {
			t.Fatalf("%s: %+v", m.ID, st)
		}
	}
	n2, n3 := memberURL(c.Members[1]), memberURL(c.Members[2])
	if r := do(t, "PUT", n2+"/v1/kv/{c}ok", []byte("fine")); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	time.Sleep(500 * time.Millisecond)
	if st := getTrigState(t, n3+"/v1/triggers/c"); st.DeadLetters != 2 || st.State != "paused" {
		t.Fatalf("while paused: %+v", st)
	}
	if r := do(t, "GET", n1+"/v1/kv/log/{c}ok", nil); r.status != 404 {
		t.Fatalf("a paused trigger delivered: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", n3+"/v1/triggers/c/resume?from=now", nil); r.status != 200 || !strings.Contains(string(r.body), `"state":"running"`) {
		t.Fatalf("resume: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", n2+"/v1/kv/{c}later", []byte("fine")); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	c.Eventually(20*time.Second, "a later change is delivered", func() bool {
		return doQuiet("GET", n1+"/v1/kv/log/{c}later", nil).status == 200
	})
	for _, m := range c.Members {
		if st := getTrigState(t, memberURL(m)+"/v1/triggers/c"); st.State != "running" {
			t.Fatalf("%s after resume: %+v", m.ID, st)
		}
	}
}

// TestTriggerStartsAtOnceOnEveryNode: a trigger created through one node
// delivers the changes of every shard, whichever node leads it, right
// after its creation — with an hour's reconcile poll, only the nodes'
// watch of the trigger definitions can have started the runners.
func TestTriggerStartsAtOnceOnEveryNode(t *testing.T) {
	c := fnClusterPoll(t, time.Hour)
	n1 := memberURL(c.Members[0])
	if r := do(t, "PUT", n1+"/v1/functions/indexer", wasmtest.Example(t, "indexer")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", n1+"/v1/triggers/idx", []byte(`{"function":"indexer","prefix":"users/","max_wait_ms":1}`)); r.status != 201 {
		t.Fatalf("trigger: %d %s", r.status, r.body)
	}
	start := time.Now()
	n := c.Members[0].Node().Shards()
	keys := map[int]string{}
	for i := 0; len(keys) < n; i++ { // a key on every shard
		k := fmt.Sprintf("users/u%d", i)
		if s := shard.For(k, n); keys[s] == "" {
			keys[s] = k
			if r := do(t, "PUT", memberURL(c.Members[i%3])+"/v1/kv/"+k, []byte("v")); r.status != 200 {
				t.Fatalf("put: %d %s", r.status, r.body)
			}
		}
	}
	for s, k := range keys {
		for doQuiet("GET", n1+"/v1/kv/idx/"+k, nil).status != 200 {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("shard %s (led by %s): %s not delivered within 5s of the trigger's creation", fmt.Sprint(s), c.LeaderOf(s).ID, k)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("every shard delivered %v after the trigger's creation", time.Since(start))
}
