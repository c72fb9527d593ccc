package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"lambdadb/client"
)

// procNode is one `lambdadb serve` process.
type procNode struct {
	id, addr string
	args     []string
	cmd      *exec.Cmd
	log      *os.File
}

func (p *procNode) start(t *testing.T, bin string) {
	t.Helper()
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// kill sends SIGKILL: no shutdown code runs.
func (p *procNode) kill() {
	_ = p.cmd.Process.Kill()
	_, _ = p.cmd.Process.Wait()
}

// TestKillNineLeaderProcess runs three `lambdadb serve` processes from the
// README's cluster example, kill -9s the one leading the most shards in the
// middle of a write load, restarts it with the same flags, and checks that
// the cluster kept accepting writes, that the restarted node caught up, and
// that no acknowledged write was lost, reading through every node.
func TestKillNineLeaderProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three processes")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "lambdadb")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var nodes []*procNode
	var peers []string
	for i := 1; i <= 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		id := fmt.Sprintf("n%d", i)
		peers = append(peers, id+"="+addr)
		logf, err := os.Create(filepath.Join(dir, id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { logf.Close() })
		nodes = append(nodes, &procNode{id: id, addr: addr, log: logf})
	}
	for _, n := range nodes {
		n.args = []string{"serve", "--id", n.id, "--addr", n.addr, "--data", filepath.Join(dir, n.id),
			"--peers", strings.Join(peers, ","), "--shards", "8"}
		n.start(t, bin)
		t.Cleanup(n.kill)
	}
	clients := map[string]*client.Client{}
	for _, n := range nodes {
		c, err := client.New("http://" + n.addr)
		if err != nil {
			t.Fatal(err)
		}
		clients[n.id] = c
	}
	waitFor(t, 60*time.Second, "every shard has a leader and every node is up", func() bool {
		st, err := clients["n1"].Cluster(context.Background())
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if !n.Up {
				return false
			}
		}
		for _, s := range st.Shards {
			if s.Leader == "" {
				return false
			}
		}
		return true
	})

	var (
		mu    sync.Mutex
		acked = map[string]uint64{}
		alive = map[string]bool{"n1": true, "n2": true, "n3": true}
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("n%d", 1+rng.IntN(3))
				mu.Lock()
				up := alive[id]
				mu.Unlock()
				if !up {
					continue
				}
				k := fmt.Sprintf("w%d/%06d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				v, err := clients[id].Put(ctx, k, []byte(k))
				cancel()
				if err == nil {
					mu.Lock()
					acked[k] = v
					mu.Unlock()
				}
			}
		}()
	}
	waitFor(t, 30*time.Second, "writes flow", func() bool { return count() > 300 })

	// kill -9 the node leading the most shards.
	st, err := clients["n1"].Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	led := map[string]int{}
	for _, s := range st.Shards {
		led[s.Leader]++
	}
	victim := nodes[0]
	for _, n := range nodes {
		if led[n.id] > led[victim.id] {
			victim = n
		}
	}
	mu.Lock()
	alive[victim.id] = false
	mu.Unlock()
	victim.kill()
	killedAt, before := time.Now(), count()
	waitFor(t, 30*time.Second, "writes resume on the survivors", func() bool { return count() > before+300 })
	t.Logf("killed %s (leading %d of %d shards); 300 more writes acknowledged %v later",
		victim.id, led[victim.id], len(st.Shards), time.Since(killedAt).Round(time.Millisecond))

	victim.start(t, bin)
	mu.Lock()
	alive[victim.id] = true
	mu.Unlock()
	before = count()
	waitFor(t, 30*time.Second, "writes continue after the restart", func() bool { return count() > before+300 })
	close(stop)
	wg.Wait()

	// The restarted node catches up: every replica reaches its leader's
	// applied index.
	waitFor(t, 60*time.Second, "the restarted node catches up", func() bool {
		st, err := clients[victim.id].Cluster(context.Background())
		if err != nil {
			return false
		}
		for _, s := range st.Shards {
			var max uint64
			for _, r := range s.Replicas {
				max = maxU(max, r.Applied)
			}
			for _, r := range s.Replicas {
				if r.Node == victim.id && r.Applied < max {
					return false
				}
			}
		}
		return true
	})
	for id, c := range clients {
		for k, v := range acked {
			item, found, err := c.Get(context.Background(), k, client.WithConsistency(client.Linearizable))
			if err != nil || !found || item.Version != v || string(item.Value) != k {
				t.Fatalf("via %s: acknowledged %s at version %d: found=%v version=%d err=%v", id, k, v, found, item.Version, err)
			}
		}
	}
	t.Logf("%d acknowledged writes all present on every node", len(acked))
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
