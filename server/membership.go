package server

import (
	"fmt"
	"net/http"
	"strconv"

	"lambdadb/shard"
)

// decommissionNode starts moving every replica off a node: 202, the node
// keeps serving until it holds none and becomes decommissioned.
func (s *Server) decommissionNode(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := s.node.Decommission(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	state := shard.StateDecommissioning
	for _, nd := range s.node.Cluster().Nodes {
		if nd.ID == id {
			state = nd.State // decommissioned already, when asked again
		}
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"node": id, "state": state})
}

// removeNode forgets a dead or decommissioned node.
func (s *Server) removeNode(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := s.node.RemoveNode(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"node": id, "state": shard.StateRemoved})
}

// clusterMoves lists the replica moves in flight.
func (s *Server) clusterMoves(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"moves": s.node.Moves()})
}

// rebalance runs the planner now (and resumes it); ?pause=true pauses it
// instead (moves under way finish), ?pause=false only resumes it.
func (s *Server) rebalance(w http.ResponseWriter, r *http.Request) {
	q, err := queryParams(r, "pause")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	paused := false
	if v := q.Get("pause"); v != "" {
		p, perr := strconv.ParseBool(v)
		if perr != nil {
			s.writeError(w, r, fmt.Errorf("%w: pause=%q: want true or false", errBadParameter, v))
			return
		}
		paused = p
		err = s.node.PauseRebalance(r.Context(), p)
	} else {
		err = s.node.Rebalance(r.Context())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]bool{"paused": paused})
}
