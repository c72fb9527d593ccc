package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"lambdadb/internal/keyhash"
)

// leaderHeader is the response header that names a key's shard leader
// (server.LeaderHeader).
const leaderHeader = "X-Shard-Leader"

// routeRefresh is how often the router re-reads /v1/cluster while in use.
const routeRefresh = 30 * time.Second

// router sends requests for one key straight to the key's shard leader, so
// the node the Client was created for does not have to forward them. It
// learns the shard count, the nodes' addresses and each shard's leader
// from GET /v1/cluster (fetched in the background on first use and every
// routeRefresh while in use), and follows the leader each keyed response
// names. Until it knows, and whenever a leader cannot be reached, requests
// go to the Client's base URL, which serves every key, and when the base
// node cannot be reached either, to the other nodes it knows.
type router struct {
	c      *Client
	scheme string

	mu       sync.Mutex
	shards   int
	nodes    map[string]bool // addresses of the cluster's nodes
	leader   []string        // per shard: the leader's address, or ""
	fetched  time.Time
	fetching bool
}

// target returns the base URL for a request on key: its shard leader's,
// or "" for the Client's base URL.
func (r *router) target(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.fetching && time.Since(r.fetched) > routeRefresh {
		r.fetching = true
		go r.refresh()
	}
	if r.shards == 0 {
		return ""
	}
	if addr := r.leader[keyhash.For(key, r.shards)]; addr != "" {
		return r.scheme + "://" + addr
	}
	return ""
}

// observe follows the leader a response for key names.
func (r *router) observe(key string, resp *http.Response) {
	addr := resp.Header.Get(leaderHeader)
	if addr == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shards > 0 && r.nodes[addr] {
		r.leader[keyhash.For(key, r.shards)] = addr
	}
}

// others returns the base URLs of the cluster's nodes other than skip, as
// last read from /v1/cluster.
func (r *router) others(skip string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for addr := range r.nodes {
		if u := r.scheme + "://" + addr; u != skip {
			out = append(out, u)
		}
	}
	return out
}

// forget drops key's route after its leader could not be reached.
func (r *router) forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shards > 0 {
		r.leader[keyhash.For(key, r.shards)] = ""
	}
}

// refresh reads the placement from the Client's base URL, or from another
// node it knows when the base cannot be reached.
func (r *router) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st ClusterStatus
	_, err := r.c.doJSON(ctx, http.MethodGet, "/v1/cluster", nil, nil, nil, &st)
	if err != nil && notSent(err) {
		for _, base := range r.others(r.c.base) {
			var b []byte
			if _, b, err = r.c.doAt(ctx, base, http.MethodGet, "/v1/cluster", nil, nil, nil); err == nil {
				st = ClusterStatus{}
				err = json.Unmarshal(b, &st)
				break
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetching, r.fetched = false, time.Now()
	if err != nil || len(st.Shards) == 0 {
		return
	}
	addrOf := map[string]string{}
	nodes := map[string]bool{}
	for _, n := range st.Nodes {
		addrOf[n.ID] = n.Addr
		nodes[n.Addr] = true
	}
	leader := make([]string, len(st.Shards))
	for _, sh := range st.Shards {
		if sh.ID < 0 || sh.ID >= len(leader) {
			return // not a placement this client understands
		}
		leader[sh.ID] = addrOf[sh.Leader]
	}
	r.shards, r.nodes, r.leader = len(leader), nodes, leader
}

// notSent reports whether err means the request never left this process
// (the connection could not be made), so it is safe to send elsewhere.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
