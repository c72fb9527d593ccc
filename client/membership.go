package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// Decommission starts moving every replica off node id to the other nodes.
// It returns once the cluster has recorded the node as decommissioning;
// the node keeps serving until it holds no replica, then becomes
// decommissioned (watch Cluster or Moves) and may be stopped and removed
// (RemoveNode). Decommissioning a node that is already decommissioning or
// decommissioned changes nothing.
//
// An unknown (or removed) id fails with status 404, code "unknown_node"
// (errors.Is(err, ErrNotFound)); a decommission the other nodes could not
// absorb (fewer active nodes than the replication factor would remain)
// fails with status 409, code "conflict": add a node first.
func (c *Client) Decommission(ctx context.Context, id string) error {
	_, _, err := c.do(ctx, http.MethodPost, nodePath(id)+"/decommission", nil, nil, nil)
	return err
}

// RemoveNode makes the cluster forget node id: a node that is down (or
// decommissioned). The replicas it held are rebuilt on the other nodes as
// capacity allows, and its Raft node number is never used again; a node
// with the same name must start with an empty data directory and join.
// Removing a removed node changes nothing.
//
// An unknown id fails with status 404, code "unknown_node"
// (errors.Is(err, ErrNotFound)); a node that is up and still holds
// replicas, or the last active node, fails with status 409, code
// "conflict": decommission it, or stop it first.
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	_, _, err := c.do(ctx, http.MethodDelete, nodePath(id), nil, nil, nil)
	return err
}

// Moves returns the replica moves in flight, oldest first, with their
// progress as the metadata group's leader sees it. An empty list means
// the cluster is not moving anything.
func (c *Client) Moves(ctx context.Context) ([]MoveStatus, error) {
	var out struct {
		Moves []MoveStatus `json:"moves"`
	}
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/cluster/moves", nil, nil, nil, &out)
	return out.Moves, err
}

// Rebalance resumes the planning of replica moves and preferred leaders
// if it was paused (PauseRebalance) and asks the cluster to plan now. The
// cluster also plans by itself, continually, while not paused.
func (c *Client) Rebalance(ctx context.Context) error {
	_, _, err := c.do(ctx, http.MethodPost, "/v1/cluster/rebalance", nil, nil, nil)
	return err
}

// PauseRebalance stops (paused true) or resumes (false) the planning of
// new replica moves, cluster-wide: moves under way finish either way, and
// decommissions and removals wait while paused. ClusterStatus
// RebalancePaused reports the setting.
func (c *Client) PauseRebalance(ctx context.Context, paused bool) error {
	q := url.Values{"pause": {strconv.FormatBool(paused)}}
	_, _, err := c.do(ctx, http.MethodPost, "/v1/cluster/rebalance", q, nil, nil)
	return err
}

// nodePath returns the URL path of member node id.
func nodePath(id string) string { return "/v1/cluster/nodes/" + url.PathEscape(id) }
