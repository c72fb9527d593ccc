package shard_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"lambdadb/internal/clustertest"
	"lambdadb/shard"
)

// TestForwardedWritesBatched sends many concurrent writes through a node
// that does not lead their shard: they travel to the leader in shared
// RPCs (the link is slowed so that writes queue behind the first), each
// gets its own outcome (a conditional write that fails fails alone), and
// every acknowledged write reads back.
func TestForwardedWritesBatched(t *testing.T) {
	t.Parallel()
	regs := map[string]*prometheus.Registry{}
	var regMu sync.Mutex
	c := clustertest.Start(t, clustertest.Options{Shards: 1, Configure: func(id string, cfg *shard.Config) {
		regMu.Lock()
		defer regMu.Unlock()
		regs[id] = prometheus.NewRegistry()
		cfg.Registerer = regs[id]
	}})
	// The balance loop moves leadership to the preferred replica
	// (Members[0]); wait for it so the leader stays put.
	c.Eventually(30*time.Second, "the preferred leader leads", func() bool { return c.LeaderOf(0) == c.Members[0] })
	leader := c.LeaderOf(0)
	var via *clustertest.Member
	for _, m := range c.Members {
		if m != leader {
			via = m
			break
		}
	}
	c.Faults.Delay(via.ID, leader.ID, 100*time.Millisecond)

	const writes = 100
	ctx := opCtx(t, 60*time.Second)
	if _, err := via.Node().Put(ctx, "cas", []byte("0"), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	versions := make([]uint64, writes)
	errs := make([]error, writes)
	var wg sync.WaitGroup
	for i := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 0 {
				// If-Match a version that cannot be current: fails alone.
				_, errs[i] = via.Node().Put(ctx, "cas", []byte("x"), shard.Cond{IfMatch: new(uint64(1))}, nil)
				return
			}
			res, err := via.Node().Put(ctx, fmt.Sprintf("k%03d", i), fmt.Appendf(nil, "v%d", i), shard.Cond{}, nil)
			versions[i], errs[i] = res.Version, err
		}()
	}
	wg.Wait()
	if !errors.Is(errs[0], shard.ErrPrecondition) {
		t.Fatalf("failing conditional write: %v", errs[0])
	}
	seen := map[uint64]bool{}
	for i := 1; i < writes; i++ {
		if errs[i] != nil {
			t.Fatalf("write %d: %v", i, errs[i])
		}
		if seen[versions[i]] {
			t.Fatalf("version %d acknowledged twice", versions[i])
		}
		seen[versions[i]] = true
	}
	for i := 1; i < writes; i++ {
		res, err := leader.Node().Get(ctx, fmt.Sprintf("k%03d", i), shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil || !res.Found || string(res.Record.Value) != fmt.Sprintf("v%d", i) || res.Record.Version != versions[i] {
			t.Fatalf("read k%03d: %+v, %v; want v%d at version %d", i, res, err, i, versions[i])
		}
	}
	regMu.Lock()
	reg := regs[via.ID]
	regMu.Unlock()
	if n := testutil.CollectAndCount(reg, "lambdadb_forward_batch_writes"); n != 1 {
		t.Fatalf("forward batch histogram: %d series", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lambdadb_forward_batch_writes" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleSum() < writes+1 || uint64(h.GetSampleSum()) <= h.GetSampleCount() {
			t.Fatalf("%d writes forwarded in %d RPCs; want all of them in fewer RPCs", int(h.GetSampleSum()), h.GetSampleCount())
		}
		t.Logf("%d writes forwarded in %d RPCs", int(h.GetSampleSum()), h.GetSampleCount())
	}
}

// TestForwardedWriteGivenUpIsNotSent: a forwarded write whose caller gives
// up while it still waits behind the RPCs in flight to a slow leader is
// taken out of the queue — reported as not sent, and never applied later.
func TestForwardedWriteGivenUpIsNotSent(t *testing.T) {
	t.Parallel()
	c := clustertest.Start(t, clustertest.Options{Shards: 1})
	// The balance loop moves leadership to the preferred replica
	// (Members[0]); wait for it so the leader stays put.
	c.Eventually(30*time.Second, "the preferred leader leads", func() bool { return c.LeaderOf(0) == c.Members[0] })
	leader := c.LeaderOf(0)
	var via *clustertest.Member
	for _, m := range c.Members {
		if m != leader {
			via = m
			break
		}
	}
	ctx := opCtx(t, 60*time.Second)
	if _, err := via.Node().Put(ctx, "warm", []byte("up"), shard.Cond{}, nil); err != nil {
		t.Fatal(err)
	}
	c.Faults.Delay(via.ID, leader.ID, time.Second)
	// Two writes occupy both RPCs the forwarder allows in flight.
	var wg sync.WaitGroup
	for _, k := range []string{"first", "second"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := via.Node().Put(ctx, k, []byte("v"), shard.Cond{}, nil); err != nil {
				t.Errorf("put %s: %v", k, err)
			}
		}()
		time.Sleep(100 * time.Millisecond)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := via.Node().Put(short, "given-up", []byte("v"), shard.Cond{}, nil)
	if !errors.Is(err, shard.ErrUnavailable) || !strings.Contains(err.Error(), "before the write was sent") {
		t.Fatalf("write given up while queued: %v", err)
	}
	wg.Wait()
	c.Faults.Heal()
	time.Sleep(500 * time.Millisecond)
	for k, want := range map[string]bool{"first": true, "second": true, "given-up": false} {
		res, err := leader.Node().Get(ctx, k, shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil || res.Found != want {
			t.Fatalf("%s: found %v, %v; want found %v", k, res.Found, err, want)
		}
	}
}
