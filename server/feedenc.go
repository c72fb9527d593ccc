package server

import (
	"encoding/json"
	"sync"
	"time"

	"lambdadb/changefeed"
	"lambdadb/shard"
)

// Feed answers are assembled from per-change JSON kept in a small cache:
// when a change reaches many subscribers — a hundred WebSocket consumers
// of one prefix — it is encoded (its value base64'd) once, not once per
// subscriber. A change is identified by (shard, index, seq), which names
// the same change on every replica for the life of the cluster.

type changeKey struct {
	shard int
	index uint64
	seq   uint16
}

// encCacheBytes bounds the encoded changes kept; a change larger than a
// sixteenth of it is encoded for each answer instead.
const encCacheBytes = 8 << 20

// encCache is a FIFO-bounded cache of encoded changes.
type encCache struct {
	mu    sync.Mutex
	m     map[changeKey][]byte
	order []changeKey // insertion order; order[head:] are live
	head  int
	bytes int
}

func newEncCache() *encCache { return &encCache{m: map[changeKey][]byte{}} }

// encode returns c as the feed API shows it, as JSON.
func (ec *encCache) encode(c shard.Change) []byte {
	k := changeKey{c.Shard, c.Index, c.Seq}
	ec.mu.Lock()
	b, ok := ec.m[k]
	ec.mu.Unlock()
	if ok {
		return b
	}
	b = encodeChange(c)
	if len(b) > encCacheBytes/16 {
		return b
	}
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if _, ok := ec.m[k]; ok {
		return b
	}
	ec.m[k] = b
	ec.order = append(ec.order, k)
	ec.bytes += len(b)
	for ec.bytes > encCacheBytes && ec.head < len(ec.order) {
		old := ec.order[ec.head]
		ec.head++
		ec.bytes -= len(ec.m[old])
		delete(ec.m, old)
	}
	if ec.head > 1024 && ec.head > len(ec.order)/2 {
		ec.order = append([]changeKey(nil), ec.order[ec.head:]...)
		ec.head = 0
	}
	return b
}

func encodeChange(c shard.Change) []byte {
	fc := feedChange{Key: c.Key, Value: c.Value, Op: "put", Version: c.Version, Shard: c.Shard}
	if c.Delete {
		fc.Op, fc.Value = "delete", nil
	}
	if !c.Time.IsZero() {
		fc.Time = c.Time.UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(fc)
	if err != nil { // strings and bytes always marshal
		panic(err)
	}
	return b
}

// feedMessage returns res as a feed answer ({"changes":[…],"cursor":…}),
// plus extra spare bytes of capacity, allocated at its exact size: the
// changes come from the cache, so what a subscriber holds is its message
// alone.
func (ec *encCache) feedMessage(res changefeed.Result, extra int) []byte {
	encs := make([][]byte, len(res.Changes))
	cur, _ := json.Marshal(res.Cursor.Encode())
	n := len(`{"changes":[],"cursor":}`) + len(cur) + max(len(encs)-1, 0) + extra
	for i, c := range res.Changes {
		encs[i] = ec.encode(c)
		n += len(encs[i])
	}
	buf := make([]byte, 0, n)
	buf = append(buf, `{"changes":[`...)
	for i, e := range encs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, e...)
	}
	buf = append(buf, `],"cursor":`...)
	buf = append(buf, cur...)
	return append(buf, '}')
}
