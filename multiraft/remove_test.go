package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/multiraft"
	"lambdadb/multiraft/rafttest"
)

// TestRemoveGroupUnderLoad removes a replica — its group's leader, or a
// follower — while its own node hammers it with proposals, reads,
// progress requests, log truncations and unreachable reports, the other
// nodes keep sending it messages, and ticks come every 2ms. Every call
// returns (nothing hangs) with an answer or an expected error, and the
// node's other group and the group's other replicas go on. Run it with
// -race and -count.
func TestRemoveGroupUnderLoad(t *testing.T) {
	for _, role := range []string{"leader", "follower"} {
		t.Run(role, func(t *testing.T) {
			cfg := multiraft.Config{TickInterval: 2 * time.Millisecond, LogRetainEntries: 20}
			c := rafttest.NewCluster(t, rafttest.Options{Nodes: 3, Groups: 2, Config: cfg})
			ctx := ctxT(t, 90*time.Second)
			const g = 0
			for i := range 20 {
				if _, err := c.Put(ctx, g, fmt.Sprintf("a%03d", i), "v"); err != nil {
					t.Fatal(err)
				}
			}
			lead := c.Leader(g)
			id := lead
			if role == "follower" {
				id = lead%3 + 1
			}
			n := c.Node(id)

			var (
				calls, removed atomic.Int64
				wg             sync.WaitGroup
				errs           = make(chan error, 16)
			)
			// hammer calls call until the group is gone from the node.
			hammer := func(what string, call func(ctx context.Context) error) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
						err := call(cctx)
						cancel()
						calls.Add(1)
						switch {
						case errors.Is(err, multiraft.ErrNoGroup):
							return
						case errors.Is(err, multiraft.ErrRemoved):
							removed.Add(1)
						case err == nil, errors.Is(err, multiraft.ErrNotLeader),
							errors.Is(err, multiraft.ErrDropped):
						default:
							errs <- fmt.Errorf("%s: %w", what, err)
							return
						}
						time.Sleep(100 * time.Microsecond)
					}
				}()
			}
			for i := range 4 {
				hammer("propose", func(ctx context.Context) error {
					_, _, err := n.Engine.Propose(ctx, g, rafttest.Put(fmt.Sprintf("h%d", i), "v"))
					return err
				})
			}
			hammer("read index", func(ctx context.Context) error {
				_, err := n.Engine.ReadIndex(ctx, g)
				return err
			})
			hammer("progress", func(ctx context.Context) error {
				_, _, _, err := n.Engine.Progress(ctx, g)
				return err
			})
			hammer("truncate", func(ctx context.Context) error {
				first, err := n.Engine.FirstIndex(g)
				if err != nil {
					return err
				}
				return n.Engine.TruncateLog(ctx, g, first+5)
			})
			hammer("unreachable", func(context.Context) error {
				n.Engine.ReportUnreachable(id%3 + 1)
				_, err := n.Engine.Status(g)
				return err
			})
			// Writes through the cluster keep messages flowing to the node.
			stop := make(chan struct{})
			wdone := make(chan error, 1)
			go func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						wdone <- nil
						return
					default:
					}
					if _, err := c.Put(ctx, uint64(i%2), fmt.Sprintf("w%05d", i), "v"); err != nil {
						wdone <- err
						return
					}
				}
			}()
			waitFor(t, "calls to be under way", func() bool { return calls.Load() >= 200 })

			if err := n.Engine.RemoveGroup(g); err != nil {
				t.Fatal(err)
			}
			hammered := make(chan struct{})
			go func() { wg.Wait(); close(hammered) }()
			select {
			case <-hammered:
			case <-time.After(30 * time.Second):
				t.Fatal("calls on the removed replica did not return")
			}
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d calls, %d failed with ErrRemoved", calls.Load(), removed.Load())
			if _, err := n.Engine.Status(g); !errors.Is(err, multiraft.ErrNoGroup) {
				t.Fatalf("Status after RemoveGroup: %v", err)
			}
			close(stop)
			if err := <-wdone; err != nil {
				t.Fatal(err)
			}
			// The node's other group, and the group on the other nodes, go on.
			for _, grp := range []uint64{0, 1} {
				if _, err := c.Put(ctx, grp, "z000", "0"); err != nil {
					t.Fatal(err)
				}
			}
			waitHas(t, c, id, 1, "z", 1)
			for _, other := range c.IDs() {
				if other != id {
					waitHas(t, c, other, 0, "z", 1)
				}
			}
		})
	}
}

// waitFor polls cond until it holds; the deadline only turns a hang into
// a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRemoveGroupErrors: RemoveGroup of a group the node does not hold,
// or on a closed engine.
func TestRemoveGroupErrors(t *testing.T) {
	c := rafttest.NewCluster(t, rafttest.Options{Nodes: 1, Groups: 2})
	e := c.Node(1).Engine
	for _, tc := range []struct {
		name  string
		setup func()
		id    uint64
		want  error
	}{
		{"unknown group", nil, 7, multiraft.ErrNoGroup},
		{"held group", nil, 1, nil},
		{"removed twice", nil, 1, multiraft.ErrNoGroup},
		{"closed engine", func() { e.Close() }, 0, multiraft.ErrClosed},
	} {
		if tc.setup != nil {
			tc.setup()
		}
		err := e.RemoveGroup(tc.id)
		if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: RemoveGroup(%d) = %v, want %v", tc.name, tc.id, err, tc.want)
		}
	}
}
