package client_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"lambdadb/client"
	"lambdadb/internal/clustertest"
	"lambdadb/internal/testnode"
	"lambdadb/server"
	"lambdadb/shard"
)

// eventually polls cond every 20 ms until it holds, failing the test
// after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantAPIError checks that err is an *Error with status and code.
func wantAPIError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Status != status || e.Code != code || e.Message == "" {
		t.Fatalf("%s: %#v, want status %d code %s", what, err, status, code)
	}
	if got := errors.Is(err, client.ErrNotFound); got != (status == http.StatusNotFound) {
		t.Errorf("%s: errors.Is(err, ErrNotFound) = %v", what, got)
	}
}

// TestMembershipOneNode checks the membership fields of a one-node
// cluster and the refusals of its membership operations.
func TestMembershipOneNode(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, err := client.New(testnode.Serve(t, testnode.New(t)).URL)
	if err != nil {
		t.Fatal(err)
	}
	var st client.ClusterStatus
	// The cluster map is written by the metadata leader's first pass.
	eventually(t, 10*time.Second, "the cluster map is written", func() bool {
		st, err = c.Cluster(ctx)
		return err == nil && st.MapVersion > 0
	})
	if len(st.Nodes) != 1 || st.RebalancePaused || st.Moves == nil || len(st.Moves) != 0 {
		t.Fatalf("Cluster = %+v", st)
	}
	// Four shards and the metadata group, all led here.
	n := st.Nodes[0]
	if n.ID != "n1" || !n.Up || n.State != client.NodeActive || n.Number != 1 ||
		n.Replicas != testnode.DefaultShards+1 || n.Leaders != testnode.DefaultShards+1 || n.Moves != 0 {
		t.Fatalf("node = %+v", n)
	}
	if moves, err := c.Moves(ctx); err != nil || moves == nil || len(moves) != 0 {
		t.Fatalf("Moves = %#v, %v; want none", moves, err)
	}

	for _, id := range []string{"n9", "a/b", "%"} {
		wantAPIError(t, "Decommission("+id+")", c.Decommission(ctx, id), http.StatusNotFound, "unknown_node")
		wantAPIError(t, "RemoveNode("+id+")", c.RemoveNode(ctx, id), http.StatusNotFound, "unknown_node")
	}
	// Nowhere to move its replicas; up and holding replicas.
	wantAPIError(t, "Decommission(n1)", c.Decommission(ctx, "n1"), http.StatusConflict, "conflict")
	wantAPIError(t, "RemoveNode(n1)", c.RemoveNode(ctx, "n1"), http.StatusConflict, "conflict")

	paused := func() bool {
		t.Helper()
		st, err := c.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.RebalancePaused
	}
	for _, step := range []struct {
		name string
		run  func() error
		want bool
	}{
		{"pause", func() error { return c.PauseRebalance(ctx, true) }, true},
		{"pause again", func() error { return c.PauseRebalance(ctx, true) }, true},
		{"resume", func() error { return c.PauseRebalance(ctx, false) }, false},
		{"pause", func() error { return c.PauseRebalance(ctx, true) }, true},
		{"rebalance resumes", func() error { return c.Rebalance(ctx) }, false},
		{"rebalance", func() error { return c.Rebalance(ctx) }, false},
	} {
		if err := step.run(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := paused(); got != step.want {
			t.Fatalf("after %s: rebalance_paused = %v, want %v", step.name, got, step.want)
		}
	}
}

// TestMembershipLifecycle joins a fourth node to a three-node cluster,
// decommissions it through the client while watching its moves, and
// removes it.
func TestMembershipLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a four-node cluster")
	}
	t.Parallel()
	ctx := t.Context()
	cl := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 2,
		Handler: func(n *shard.Node) (http.Handler, error) { return server.New(server.Config{Node: n}) }})
	c, err := client.New("http://" + cl.Member("n1").Addr)
	if err != nil {
		t.Fatal(err)
	}
	node := func(id string) client.NodeStatus {
		t.Helper()
		st, err := c.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.Nodes {
			if n.ID == id {
				return n
			}
		}
		t.Fatalf("no node %s in %+v", id, st.Nodes)
		return client.NodeStatus{}
	}
	settled := func(what string) {
		t.Helper()
		eventually(t, 90*time.Second, what, func() bool {
			for _, m := range cl.Running() {
				if !m.Node().MembershipSettled() {
					return false
				}
			}
			return true
		})
	}

	cl.Join("n4")
	settled("n4 took its replicas")
	n4 := node("n4")
	if n4.State != client.NodeActive || !n4.Up || n4.Number != 4 || n4.Replicas == 0 || n4.Since.IsZero() {
		t.Fatalf("joined n4 = %+v", n4)
	}
	wantAPIError(t, "RemoveNode(n4) while it is up with replicas", c.RemoveNode(ctx, "n4"), http.StatusConflict, "conflict")

	start := time.Now()
	if err := c.Decommission(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	if err := c.Decommission(ctx, "n4"); err != nil {
		t.Fatalf("second Decommission: %v", err)
	}
	seen := false
	eventually(t, 90*time.Second, "n4 decommissioned", func() bool {
		moves, err := c.Moves(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, mv := range moves {
			if mv.From != "n4" || mv.To == "" || mv.Shard == "" || mv.Started.Before(start.Add(-time.Second)) {
				t.Fatalf("move %+v while decommissioning n4", mv)
			}
			switch mv.Phase {
			case client.MoveLearner, client.MovePromote, client.MoveRemove, client.MoveCancel:
			default:
				t.Fatalf("move %+v: unknown phase", mv)
			}
			seen = true
		}
		n := node("n4")
		return n.State == client.NodeDecommissioned && n.Replicas == 0 && n.Moves == 0
	})
	if !seen {
		t.Error("Moves never showed a move off n4")
	}
	if err := c.RemoveNode(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveNode(ctx, "n4"); err != nil {
		t.Fatalf("second RemoveNode: %v", err)
	}
	if n := node("n4"); n.State != client.NodeRemoved || n.Up {
		t.Fatalf("removed n4 = %+v", n)
	}
	wantAPIError(t, "Decommission(removed n4)", c.Decommission(ctx, "n4"), http.StatusNotFound, "unknown_node")
}
