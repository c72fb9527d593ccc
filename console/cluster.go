package console

import (
	"fmt"
	"net/http"
	"time"

	"lambdadb/namespace"
	"lambdadb/shard"
)

// clusterView is the cluster page's data, from the node's own view.
type clusterView struct {
	Node       string
	MapVersion uint64
	Settled    bool
	Paused     bool
	R          int // replicas a shard should have up
	Nodes      []shard.NodeStatus
	Shards     []shardView
	Moves      []moveView
	Flags      []string
	Time       string
}

type shardView struct {
	ID       int
	Leader   string
	Up       int // voting replicas on nodes that are up
	Replicas []replicaView
	Flagged  bool
}

type replicaView struct {
	Node    string
	State   string
	Applied uint64
	Lag     string // behind the leader's applied index; "" when unknown
	Leader  bool
	Down    bool
}

type moveView struct {
	shard.MoveStatus
	Progress string
	Age      string
}

// clusterData builds the view: nodes and shards from Cluster, moves with
// their progress from Moves, and the red flags.
func (c *Console) clusterData() clusterView {
	st := c.node.Cluster()
	v := clusterView{Node: st.Node, MapVersion: st.MapVersion, Settled: st.Settled, Paused: st.Paused,
		Nodes: st.Nodes, Time: time.Now().UTC().Format("15:04:05 UTC")}
	up := map[string]bool{}
	active := 0
	for _, n := range st.Nodes {
		up[n.ID] = n.Up
		switch n.State {
		case "decommissioned", "removed":
			continue
		}
		if n.State == "active" {
			active++
		}
		if !n.Up {
			v.Flags = append(v.Flags, fmt.Sprintf("node %s (%s) is down", n.ID, n.Addr))
		}
	}
	// R is capped by the nodes that can hold a replica.
	v.R = c.node.ReplicationFactor()
	if active > 0 && active < v.R {
		v.R = active
	}
	for _, s := range st.Shards {
		sv := shardView{ID: s.ID, Leader: s.Leader}
		var leaderApplied uint64
		known := false
		for _, r := range s.Replicas {
			if r.Node == s.Leader && r.State != "unknown" {
				leaderApplied, known = r.Applied, true
			}
		}
		for _, r := range s.Replicas {
			rv := replicaView{Node: r.Node, State: r.State, Applied: r.Applied, Leader: r.Node == s.Leader, Down: !up[r.Node]}
			if known && r.State != "unknown" {
				if r.Applied >= leaderApplied {
					rv.Lag = "0"
				} else {
					rv.Lag = fmt.Sprint(leaderApplied - r.Applied)
				}
			}
			if up[r.Node] && r.State != "learner" && r.State != "unknown" {
				sv.Up++
			}
			sv.Replicas = append(sv.Replicas, rv)
		}
		if s.Leader == "" {
			v.Flags = append(v.Flags, fmt.Sprintf("shard %d has no leader", s.ID))
			sv.Flagged = true
		}
		if sv.Up < v.R {
			v.Flags = append(v.Flags, fmt.Sprintf("shard %d has %d of %d replicas up", s.ID, sv.Up, v.R))
			sv.Flagged = true
		}
		v.Shards = append(v.Shards, sv)
	}
	moves := c.node.Moves()
	if moves == nil {
		moves = st.Moves
	}
	for _, m := range moves {
		mv := moveView{MoveStatus: m}
		if m.Target > 0 {
			mv.Progress = fmt.Sprintf("%d / %d (%d%%)", m.Applied, m.Target, m.Applied*100/m.Target)
		}
		if !m.Started.IsZero() {
			mv.Age = time.Since(m.Started).Round(time.Second).String()
		}
		v.Moves = append(v.Moves, mv)
	}
	return v
}

func (c *Console) clusterPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "cluster.html", struct {
		Page    page
		Cluster clusterView
	}{c.pageOf(r, "Cluster", "cluster"), c.clusterData()})
}

// clusterFragment is the live part of the cluster page, polled by htmx.
func (c *Console) clusterFragment(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "cluster-live", c.clusterData())
}

func (c *Console) pageOf(r *http.Request, title, nav string) page {
	return page{Title: title, Nav: nav, Node: c.node.ID(), Namespace: namespace.From(r.Context()), Secure: c.secure}
}
