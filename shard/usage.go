package shard

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"lambdadb/kv"
	"lambdadb/namespace"
)

// Stored bytes per namespace.
//
// Every shard's state machine counts what each namespace's user keys and
// values occupy — len(stored key) + len(value) per record, the stored key
// including the namespace's prefix — and keeps the totals in its own
// SystemSpace, one record per namespace it holds data of, written in the
// same apply batch as the change that moved them. Replicas apply the same
// entries, so they hold the same totals, and snapshots carry them. A
// shard's first apply by a version that counts (no init record yet) sums
// the data already there, so data older than the accounting counts too
// (as namespace default, where it lives).
//
// The records are keyed per shard (UsagePrefix + ns + "/" + shard), so a
// SystemSpace scan of UsagePrefix, which reads every shard, returns each
// shard's total once; NamespaceBytes sums them.

// UsagePrefix starts the SystemSpace keys of the per-shard stored-byte
// totals (and of nothing else).
const UsagePrefix = "quota/usage/"

// usageInitPrefix starts the key of a shard's record saying its totals
// cover all its data.
const usageInitPrefix = "quota/usage-init/"

func usageKey(ns string, shard int) []byte {
	return fmt.Appendf(nil, "%s%s/%05d", UsagePrefix, ns, shard)
}

func usageInitKey(shard int) []byte { return fmt.Appendf(nil, "%s%05d", usageInitPrefix, shard) }

// nsUsage is one namespace's total on a shard while a batch is applied.
type nsUsage struct {
	total int64
	index uint64 // the last entry that wrote the namespace's data
}

// initUsage makes sure the shard's totals cover its data: the first time
// (no init record), it sums the shard's committed data — the state before
// the batch being applied — per namespace. idx is the batch's first fresh
// entry.
func (f *fsm) initUsage(a *kv.Apply, idx uint64) {
	f.usage = nil
	if f.usageInit {
		return
	}
	if _, found := f.read(a, &entry{Index: idx}, kv.System, usageInitKey(f.shard)); found {
		f.usageInit = true
		return
	}
	tot := map[string]int64{}
	err := f.eng.ScanIn(f.shard, kv.UserData, nil, nil, func(k, v []byte, _ uint64) bool {
		tot[namespace.Of(string(k))] += int64(len(k) + len(v))
		return true
	})
	if err != nil {
		panic(fmt.Sprintf("shard %d: count stored bytes at %d: %v", f.shard, idx, err))
	}
	f.usage = make(map[string]*nsUsage, len(tot))
	for ns, t := range tot {
		f.usage[ns] = &nsUsage{total: t, index: idx}
	}
	if err := a.PutIn(kv.System, usageInitKey(f.shard), nil, idx); err != nil {
		panic(fmt.Sprintf("shard %d: usage init at %d: %v", f.shard, idx, err))
	}
	f.usageInit = true
}

// account adds delta bytes to the namespace of stored key key.
func (f *fsm) account(a *kv.Apply, l *entry, key []byte, delta int64) {
	ns := namespace.Of(string(key))
	if f.usage == nil {
		f.usage = map[string]*nsUsage{}
	}
	u, ok := f.usage[ns]
	if !ok {
		u = &nsUsage{}
		if rec, found := f.read(a, l, kv.System, usageKey(ns, f.shard)); found {
			u.total, _ = strconv.ParseInt(string(rec.Value), 10, 64)
		}
		f.usage[ns] = u
	}
	u.total += delta
	u.index = l.Index
}

// flushUsage writes the totals the batch changed, each at the index of
// the last entry that changed it (so every replica writes the same
// records whatever its batching).
func (f *fsm) flushUsage(a *kv.Apply) {
	for ns, u := range f.usage {
		k := usageKey(ns, f.shard)
		var err error
		if u.total <= 0 {
			err = a.DeleteIn(kv.System, k)
		} else {
			err = a.PutIn(kv.System, k, strconv.AppendInt(nil, u.total, 10), u.index)
		}
		if err != nil {
			panic(fmt.Sprintf("shard %d: write stored bytes of %q: %v", f.shard, ns, err))
		}
	}
	f.usage = nil
}

// NamespaceBytes returns the bytes each namespace's keys and values
// occupy (one replica's worth), summed over the shards' totals. A
// namespace without data is absent.
func (n *Node) NamespaceBytes(ctx context.Context, ro ReadOptions) (map[string]int64, error) {
	out := map[string]int64{}
	req := ScanRequest{Prefix: UsagePrefix, Limit: MaxScanLimit}
	for {
		res, err := n.ScanIn(ctx, SystemSpace, req, ro)
		if err != nil {
			return nil, err
		}
		for _, it := range res.Items {
			rest := strings.TrimPrefix(it.Key, UsagePrefix)
			i := strings.LastIndexByte(rest, '/')
			if i <= 0 {
				continue
			}
			v, err := strconv.ParseInt(string(it.Value), 10, 64)
			if err != nil {
				continue
			}
			out[rest[:i]] += v
		}
		if !res.More {
			return out, nil
		}
		req.Start = res.Next
	}
}
