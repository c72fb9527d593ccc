// Package keyhash maps keys to shards. It is the one definition of that
// mapping, shared by the shard package (which owns placement) and the Go
// client (which routes keyed requests to a shard's leader).
package keyhash

import (
	"hash/fnv"
	"strings"
)

// For returns the shard holding key among n shards (n > 0). If key contains
// "{tag}" with a non-empty tag (the first '{' and the first '}' after it,
// as in Redis Cluster), only the tag is hashed.
func For(key string, n int) int {
	h := fnv.New64a()
	h.Write([]byte(Tag(key)))
	return int(h.Sum64() % uint64(n))
}

// Tag returns the part of key that For hashes: its hash tag if it has a
// non-empty one, else the whole key.
func Tag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}
