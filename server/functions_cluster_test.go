package server_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"lambdadb/internal/apitest"
	"lambdadb/internal/clustertest"
	"lambdadb/internal/session"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
	"lambdadb/shard"
)

// fnCluster starts three in-process nodes, each serving the HTTP API with
// its own function engine, gossiping paused sandboxes via StatusInfo.
func fnCluster(t *testing.T) *clustertest.Cluster {
	t.Helper()
	return fnClusterPoll(t, 100*time.Millisecond)
}

// fnClusterPoll is fnCluster with the triggers' reconcile poll given.
func fnClusterPoll(t *testing.T, poll time.Duration) *clustertest.Cluster {
	t.Helper()
	return apitest.Start(t, apitest.Options{Nodes: 3, TriggerPoll: poll})
}

func memberURL(m *clustertest.Member) string { return "http://" + m.Addr }

// TestInvokePlacementAndSessionAcrossNodes: an invocation with a key runs
// on the leader of the key's shard whichever node receives it, and the
// session token it returns gives read-your-writes through every node.
func TestInvokePlacementAndSessionAcrossNodes(t *testing.T) {
	c := fnCluster(t)
	if r := do(t, "PUT", memberURL(c.Members[0])+"/v1/functions/counter", wasmtest.Example(t, "counter")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	const key = "page/home"
	s := shard.For(key, c.Members[0].Node().Shards())
	tok := ""
	for i := 1; i <= 9; i++ {
		via := c.Members[i%3]
		r := do(t, "POST", memberURL(via)+"/v1/functions/counter/invoke?key="+key, nil, session.Header, tok)
		if r.status != 200 || string(r.body) != strconv.Itoa(i) {
			t.Fatalf("invoke %d via %s: %d %s", i, via.ID, r.status, r.body)
		}
		if leader := c.LeaderOf(s); leader != nil && r.header.Get("X-Node") != leader.ID {
			t.Fatalf("invoke via %s ran on %s, the leader of shard %d is %s", via.ID, r.header.Get("X-Node"), s, leader.ID)
		}
		tok = r.header.Get(session.Header)
		for _, m := range c.Members {
			g := do(t, "GET", memberURL(m)+"/v1/kv/"+key, nil, session.Header, tok)
			if g.status != 200 || string(g.body) != strconv.Itoa(i) {
				t.Fatalf("read via %s after invoke %d: %d %s", m.ID, i, g.status, g.body)
			}
		}
	}
	// Stats sum the nodes' meters.
	r := do(t, "GET", memberURL(c.Members[2])+"/v1/functions/counter", nil)
	var st lambda.Stats
	if err := jsonUnmarshal(r.body, &st); err != nil || st.Invocations != 9 {
		t.Fatalf("stats: %s", r.body)
	}
}

// TestInvokeWithoutKeyPrefersPausedSandbox: without a key, a node with no
// paused sandbox hands the call to a node that has one.
func TestInvokeWithoutKeyPrefersPausedSandbox(t *testing.T) {
	c := fnCluster(t)
	n1 := memberURL(c.Members[0])
	if r := do(t, "PUT", n1+"/v1/functions/echo", wasmtest.Example(t, "echo")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", n1+"/v1/functions/echo/invoke", []byte("x")); r.status != 200 || r.header.Get("X-Node") != "n1" {
		t.Fatalf("first call: %d %s on %s", r.status, r.body, r.header.Get("X-Node"))
	}
	// n1 now holds a paused sandbox; once n2 has heard (status probes),
	// calls received by n2 run warm on n1.
	c.Eventually(10*time.Second, "n2 hears of n1's paused sandbox", func() bool {
		for _, p := range c.Members[1].Node().Peers() {
			if p.ID == "n1" && lambda.PausedIn(p.Info, "echo") {
				return true
			}
		}
		return false
	})
	for i := 0; i < 3; i++ {
		r := do(t, "POST", memberURL(c.Members[1])+"/v1/functions/echo/invoke", []byte("y"))
		if r.status != 200 || r.header.Get("X-Node") != "n1" || r.header.Get("X-Start") != "warm" {
			t.Fatalf("call via n2: %d %s on %s, start %s", r.status, r.body, r.header.Get("X-Node"), r.header.Get("X-Start"))
		}
	}
}

// TestInvokeSurvivesLeaderKill: kill the node leading the key's shard
// while a counter is incremented through the others: calls resume on the
// new leader and no acknowledged increment is lost.
func TestInvokeSurvivesLeaderKill(t *testing.T) {
	c := fnCluster(t)
	if r := do(t, "PUT", memberURL(c.Members[0])+"/v1/functions/counter", wasmtest.Example(t, "counter")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	const key = "k{failover}"
	s := shard.For(key, c.Members[0].Node().Shards())
	acked := 0
	invoke := func(via *clustertest.Member) bool {
		r := do(t, "POST", memberURL(via)+"/v1/functions/counter/invoke?key="+key, nil)
		if r.status != 200 {
			return false
		}
		n, err := strconv.Atoi(string(r.body))
		if err != nil {
			t.Fatalf("counter answered %q", r.body)
		}
		if n <= acked {
			t.Fatalf("counter went from %d to %d", acked, n)
		}
		acked = n
		return true
	}
	for i := 0; i < 20; i++ {
		if !invoke(c.Members[i%3]) {
			t.Fatalf("invoke %d failed before any fault", i)
		}
	}
	victim := c.LeaderOf(s)
	c.Kill(victim.ID)
	var alive []*clustertest.Member
	for _, m := range c.Members {
		if m.ID != victim.ID {
			alive = append(alive, m)
		}
	}
	ok := 0
	deadline := time.Now().Add(30 * time.Second)
	for ok < 20 && time.Now().Before(deadline) {
		if invoke(alive[ok%2]) {
			ok++
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if ok < 20 {
		t.Fatalf("only %d calls succeeded after killing %s", ok, victim.ID)
	}
	c.Restart(victim.ID)
	for _, m := range c.Members {
		c.Eventually(20*time.Second, fmt.Sprintf("%s reads the counter", m.ID), func() bool {
			g := do(t, "GET", memberURL(m)+"/v1/kv/"+key, nil)
			return g.status == 200 && string(g.body) == strconv.Itoa(acked)
		})
	}
}

// TestRegistrySurvivesLeaderKill: kill the leader of the registry's shard;
// the deployed function still runs through every surviving node, a deploy
// through a survivor succeeds once a new leader is elected, and the killed
// node, restarted, runs the new version.
func TestRegistrySurvivesLeaderKill(t *testing.T) {
	c := fnCluster(t)
	if r := do(t, "PUT", memberURL(c.Members[0])+"/v1/functions/f", wasmtest.Example(t, "echo")); r.status != 201 {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	reg := shard.For("{fn}", c.Members[0].Node().Shards())
	victim := c.LeaderOf(reg)
	c.Kill(victim.ID)
	var alive []*clustertest.Member
	for _, m := range c.Members {
		if m.ID != victim.ID {
			alive = append(alive, m)
		}
	}
	for _, m := range alive {
		c.Eventually(20*time.Second, "invoke via "+m.ID, func() bool {
			r := do(t, "POST", memberURL(m)+"/v1/functions/f/invoke", []byte("still"))
			return r.status == 200 && string(r.body) == "still"
		})
	}
	var deployed bool
	c.Eventually(20*time.Second, "redeploy via a survivor", func() bool {
		r := do(t, "PUT", memberURL(alive[0])+"/v1/functions/f", wasmtest.Example(t, "sleep"))
		deployed = r.status == 201
		return deployed
	})
	c.Restart(victim.ID)
	c.Eventually(30*time.Second, "the restarted node runs the new version", func() bool {
		// The forwarded marker makes the node run the call itself.
		r := do(t, "POST", memberURL(victim)+"/v1/functions/f/invoke", []byte("1"), "X-Lambdadb-Forwarded", "test")
		return r.status == 200 && string(r.body) == "slept 1 ms" && r.header.Get("X-Node") == victim.ID
	})
}
