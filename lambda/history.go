package lambda

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/shard"
)

// Deploy history: every deploy writes a record of itself next to the
// function's registry record, in the same Raft entry (the {fn} hash tag
// keeps the registry and its history in one shard), so the history is
// durable, the same on every node, and never records a deploy that did
// not commit. A deploy drops the records beyond Config.DeployHistory;
// removing the function drops its history.

// DefaultDeployHistory is Config.DeployHistory's default.
const DefaultDeployHistory = 20

// histKeyPrefix starts the keys of deploy records:
// {fn}h/<stored name>/<deploy time, ns, 20 digits>-<node>.
const histKeyPrefix = "{fn}h/"

func histPrefix(name string) string { return histKeyPrefix + name + "/" }

func histKey(name string, at time.Time, node string) string {
	return fmt.Sprintf("%s%020d-%s", histPrefix(name), at.UnixNano(), node)
}

// Deploy is one deploy of a function, as its history records it.
type Deploy struct {
	Time         time.Time `json:"time"`
	SHA256       string    `json:"sha256"`
	Size         int       `json:"size"`
	MemoryMB     int       `json:"memory_mb"`
	TimeoutMS    int       `json:"timeout_ms"`
	MaxInstances int       `json:"max_instances"`
	// Node is the node that took the deploy.
	Node string `json:"node"`
}

// deployRecord is a Deploy as stored (msgpack).
type deployRecord struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack     struct{} `msgpack:",as_array"`
	AtNS         int64
	SHA256       string
	Size         int
	MemoryMB     int
	TimeoutMS    int
	MaxInstances int
	Node         string
}

// historyOps returns the ops that record a deploy of rec at now and drop
// the function's oldest records beyond Config.DeployHistory.
func (e *Engine) historyOps(ctx context.Context, name string, rec record, now time.Time) ([]shard.Op, error) {
	keys, err := e.historyKeys(ctx, name)
	if err != nil {
		return nil, err
	}
	val, err := msgpack.Marshal(&deployRecord{AtNS: now.UnixNano(), SHA256: rec.SHA256, Size: rec.Size,
		MemoryMB: rec.MemoryMB, TimeoutMS: rec.TimeoutMS, MaxInstances: rec.MaxInstances, Node: e.cfg.NodeID})
	if err != nil {
		return nil, fmt.Errorf("lambda: encode deploy record: %w", err)
	}
	ops := []shard.Op{{Space: shard.SystemSpace, Key: histKey(name, now, e.cfg.NodeID), Value: val}}
	for i := 0; i < len(keys)-(e.cfg.DeployHistory-1); i++ {
		ops = append(ops, shard.Op{Space: shard.SystemSpace, Key: keys[i], Delete: true})
	}
	return ops, nil
}

// historyKeys returns the keys of the function's deploy records, oldest
// first.
func (e *Engine) historyKeys(ctx context.Context, name string) ([]string, error) {
	var keys []string
	err := e.scanHistory(ctx, name, func(rec shard.Record) { keys = append(keys, rec.Key) })
	return keys, err
}

func (e *Engine) scanHistory(ctx context.Context, name string, fn func(shard.Record)) error {
	req := shard.ScanRequest{Prefix: histPrefix(name), Limit: shard.MaxScanLimit}
	for {
		res, err := e.cfg.Store.ScanIn(ctx, shard.SystemSpace, req, shard.ReadOptions{Consistency: shard.Linearizable})
		if err != nil {
			return fmt.Errorf("lambda: read deploy history: %w", err)
		}
		for _, rec := range res.Items {
			fn(rec)
		}
		if !res.More {
			return nil
		}
		req.Start = res.Next
	}
}

// Deploys returns the function's recorded deploys, newest first (at most
// Config.DeployHistory; none for deploys made before lambdadb recorded
// them). name is its stored name.
func (e *Engine) Deploys(ctx context.Context, name string) ([]Deploy, error) {
	if err := ValidateStoredName(name); err != nil {
		return nil, err
	}
	var out []Deploy
	var bad error
	err := e.scanHistory(ctx, name, func(rec shard.Record) {
		var r deployRecord
		if err := msgpack.Unmarshal(rec.Value, &r); err != nil {
			bad = fmt.Errorf("lambda: corrupt deploy record %q: %w", strings.TrimPrefix(rec.Key, histKeyPrefix), err)
			return
		}
		out = append(out, Deploy{Time: time.Unix(0, r.AtNS).UTC(), SHA256: r.SHA256, Size: r.Size,
			MemoryMB: r.MemoryMB, TimeoutMS: r.TimeoutMS, MaxInstances: r.MaxInstances, Node: r.Node})
	})
	if err == nil {
		err = bad
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if out == nil {
		out = []Deploy{}
	}
	return out, err
}
