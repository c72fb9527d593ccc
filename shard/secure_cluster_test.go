package shard_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/pki"
	"lambdadb/shard"
)

var (
	secretOld = []byte("old-cluster-secret-0123456789abcdefghijkl")
	secretNew = []byte("new-cluster-secret-0123456789abcdefghijkl")
	secretBad = []byte("not-this-cluster's-secret-0123456789abcdef")
)

// TestSecureClusterWritesAndReads runs a 3-node cluster with TLS between
// the nodes: writes through any node are read through every other.
func TestSecureClusterWritesAndReads(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4, Secret: secretOld})
	acked := map[string]uint64{}
	for i, m := range c.Running() {
		if m.TLS() == nil {
			t.Fatalf("%s runs insecure", m.ID)
		}
		for j := 0; j < 20; j++ {
			k := fmt.Sprintf("secure/%d/%d", i, j)
			r, err := m.Node().Put(opCtx(t, 10*time.Second), k, valueFor(k), shard.Cond{}, nil)
			if err != nil {
				t.Fatalf("put %s through %s: %v", k, m.ID, err)
			}
			acked[k] = r.Version
		}
	}
	checkAll(t, c, acked)
}

// TestSecureClusterWrongSecret: a node started with another secret never
// takes part — its Raft and RPC streams are refused, writes through it
// fail, and it cannot join.
func TestSecureClusterWrongSecret(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4, StartLater: []string{"n3"},
		SecretOf: func(id string) []byte {
			if id == "n3" || id == "n4" {
				return secretBad
			}
			return secretOld
		},
		Configure: func(id string, cfg *shard.Config) {
			if id == "n3" || id == "n4" {
				cfg.StartTimeout = 3 * time.Second
			}
		},
	})
	c.WaitLeaders(30 * time.Second)
	// n3 is an initial member with the wrong secret: it may start (it
	// knows the peers) but must never reach them.
	n3err := c.RestartErr("n3")
	n1 := c.Member("n1")
	for i := 0; i < 10; i++ {
		k := fmt.Sprintf("quorum/%d", i)
		if _, err := n1.Node().Put(opCtx(t, 10*time.Second), k, valueFor(k), shard.Cond{}, nil); err != nil {
			t.Fatalf("put through n1 without n3: %v", err)
		}
	}
	if n3err == nil {
		n3 := c.Member("n3").Node()
		for s := 0; s < 4; s++ {
			if n3.Leads(s) {
				t.Fatalf("n3 leads shard %d", s)
			}
		}
		if _, err := n3.Put(opCtx(t, 3*time.Second), "through-n3", []byte("x"), shard.Cond{}, nil); err == nil {
			t.Fatal("a write through the node with the wrong secret succeeded")
		}
		if g, err := n3.Get(opCtx(t, 3*time.Second), "quorum/0", shard.ReadOptions{}); err == nil && g.Found {
			t.Fatal("the node with the wrong secret read the cluster's data")
		}
	} else {
		t.Logf("n3 did not start: %v", n3err)
	}

	// A new node with the wrong secret cannot join.
	_, err := c.JoinErr("n4")
	if err == nil {
		t.Fatal("a node with the wrong secret joined")
	}
	if !errors.Is(err, shard.ErrUnavailable) {
		t.Fatalf("join: %v", err)
	}
	for _, nd := range n1.Node().Cluster().Nodes {
		if nd.ID == "n4" {
			t.Fatalf("the cluster map counts n4: %+v", nd)
		}
	}
}

// TestSecureClusterRotation rotates the cluster CA as docs/security.md
// describes while writers run: every node from "old" to "new\nold", one
// at a time, then every node to "new" alone. Writes keep being committed
// at every step, and no acknowledged write is lost.
func TestSecureClusterRotation(t *testing.T) {
	var mu sync.Mutex
	secrets := map[string][]byte{"n1": secretOld, "n2": secretOld, "n3": secretOld}
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4, SecretOf: func(id string) []byte {
		mu.Lock()
		defer mu.Unlock()
		return secrets[id]
	}})
	w := &writer{acked: map[string]uint64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go w.run(c, 200+i, stop, &wg)
	}
	// progress waits until the writers have had more writes acknowledged.
	progress := func(what string) {
		t.Helper()
		before := w.count()
		c.Eventually(30*time.Second, what+": writes are committed", func() bool { return w.count() >= before+20 })
	}
	progress("start")
	both := append(append(append([]byte{}, secretNew...), '\n'), secretOld...)
	for _, phase := range []struct {
		secret []byte
		cas    int
	}{{both, 2}, {secretNew, 1}} {
		for _, id := range []string{"n1", "n2", "n3"} {
			c.Kill(id)
			progress(id + " down")
			mu.Lock()
			secrets[id] = phase.secret
			mu.Unlock()
			c.Restart(id)
			if n := len(c.Member(id).TLS().CAs); n != phase.cas {
				t.Fatalf("%s trusts %d CAs, want %d", id, n, phase.cas)
			}
			c.WaitLeaders(30 * time.Second)
			progress(id + " restarted with " + fmt.Sprint(phase.cas) + " secrets")
			// The restarted node takes part: a write through it commits.
			k := "through/" + id + fmt.Sprint(phase.cas)
			var err error
			c.Eventually(30*time.Second, "a write through "+id, func() bool {
				_, err = c.Member(id).Node().Put(opCtx(t, 3*time.Second), k, valueFor(k), shard.Cond{}, nil)
				return err == nil
			})
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d writes acknowledged, %d failed", len(w.acked), w.fails)
	newCA, _, err := pki.DeriveCA(secretNew)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Running() {
		if cas := m.TLS().CAs; len(cas) != 1 || !cas[0].Equal(newCA) {
			t.Fatalf("%s ends trusting %d CAs, not the new one alone", m.ID, len(cas))
		}
	}
	checkAll(t, c, w.acked)
}
