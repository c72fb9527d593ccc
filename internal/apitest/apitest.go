// Package apitest starts in-process clusters that serve lambdadb's whole
// HTTP API — the KV routes, functions (a lambda engine per node),
// triggers (changefeed), feeds and queries — on top of clustertest, for
// tests of the layers above the server: the console, the example shop,
// the server's multi-node tests.
//
// Each member's engine and trigger runner are replaced when the member
// restarts and closed when the test ends; a node's StatusInfo and
// FeedTrimLimit are wired to them as `lambdadb serve` wires them.
package apitest

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"lambdadb/changefeed"
	"lambdadb/internal/clustertest"
	"lambdadb/lambda"
	"lambdadb/server"
	"lambdadb/shard"
)

// Options configures Start.
type Options struct {
	Nodes  int // default 3
	Shards int // default clustertest's

	// NoTriggers leaves the triggers out (the functions stay).
	NoTriggers bool
	// TriggerPoll is the trigger runners' reconcile poll. Default:
	// changefeed's.
	TriggerPoll time.Duration
	// Lambda, when set, may change each member's lambda engine Config
	// (Store, NodeID and CacheDir are set already).
	Lambda func(id string, cfg *lambda.Config)
	// Server, when set, may change each member's server Config (Node,
	// Functions and Triggers are set already).
	Server func(id string, cfg *server.Config)
	// Configure, when set, may change member id's node Config before each
	// Open, after this package has wired it to the member's engine and
	// triggers.
	Configure func(id string, cfg *shard.Config)
}

// Start starts the cluster; it is stopped when the test ends.
func Start(t testing.TB, o Options) *clustertest.Cluster {
	t.Helper()
	var mu sync.Mutex
	engines := map[string]*lambda.Engine{}
	triggers := map[string]*changefeed.Triggers{}
	cache := t.TempDir()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, tr := range triggers {
			tr.Close()
		}
		for _, e := range engines {
			_ = e.Close()
		}
	})
	co := clustertest.Options{
		Nodes:  o.Nodes,
		Shards: o.Shards,
		Configure: func(id string, cfg *shard.Config) {
			cfg.StatusInfo = func() []byte {
				mu.Lock()
				e := engines[id]
				mu.Unlock()
				if e == nil {
					return nil
				}
				return e.StatusInfo()
			}
			cfg.FeedTrimLimit = func(s int) uint64 {
				mu.Lock()
				tr := triggers[id]
				mu.Unlock()
				if tr == nil {
					return 0
				}
				return tr.TrimLimit(s)
			}
			if o.Configure != nil {
				o.Configure(id, cfg)
			}
		},
		Handler: func(n *shard.Node) (http.Handler, error) {
			lc := lambda.Config{Store: n, NodeID: n.ID(), CacheDir: cache}
			if o.Lambda != nil {
				o.Lambda(n.ID(), &lc)
			}
			e, err := lambda.New(lc)
			if err != nil {
				return nil, err
			}
			var tr *changefeed.Triggers
			if !o.NoTriggers {
				tr, err = changefeed.NewTriggers(changefeed.TriggersConfig{Node: n, Functions: e, Poll: o.TriggerPoll})
				if err != nil {
					_ = e.Close()
					return nil, err
				}
				tr.Start()
			}
			mu.Lock()
			if old := triggers[n.ID()]; old != nil {
				old.Close()
			}
			if old := engines[n.ID()]; old != nil {
				_ = old.Close()
			}
			engines[n.ID()] = e
			if tr != nil {
				triggers[n.ID()] = tr
			} else {
				delete(triggers, n.ID())
			}
			mu.Unlock()
			sc := server.Config{Node: n, Functions: e}
			if tr != nil {
				sc.Triggers = tr
			}
			if o.Server != nil {
				o.Server(n.ID(), &sc)
			}
			return server.New(sc)
		},
	}
	return clustertest.Start(t, co)
}
