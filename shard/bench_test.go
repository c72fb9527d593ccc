package shard_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"lambdadb/internal/clustertest"
	"lambdadb/shard"
)

// BenchmarkClusterPut measures puts through random members of an in-process
// 3-node cluster on loopback, 64 concurrent writers, 256-byte values.
func BenchmarkClusterPut(b *testing.B) {
	c := clustertest.Start(b, clustertest.Options{Shards: 16})
	c.WaitLeaders(30 * time.Second)
	val := make([]byte, 256)
	var next atomic.Int64
	b.SetParallelism(32) // 64 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := next.Add(1)
		m := c.Members[int(w)%len(c.Members)]
		for pb.Next() {
			k := fmt.Sprintf("k%d", rand.IntN(10000))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := m.Node().Put(ctx, k, val, shard.Cond{}, nil)
			cancel()
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkClusterGet measures reads at each consistency level.
func BenchmarkClusterGet(b *testing.B) {
	c := clustertest.Start(b, clustertest.Options{Shards: 16})
	c.WaitLeaders(30 * time.Second)
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		if _, err := c.Members[i%3].Node().Put(ctx, fmt.Sprintf("k%d", i), make([]byte, 256), shard.Cond{}, nil); err != nil {
			b.Fatal(err)
		}
	}
	for _, cons := range []shard.Consistency{shard.Linearizable, shard.Session, shard.Stale} {
		b.Run(cons.String(), func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				w := next.Add(1)
				m := c.Members[int(w)%len(c.Members)]
				for pb.Next() {
					_, err := m.Node().Get(ctx, fmt.Sprintf("k%d", rand.IntN(1000)), shard.ReadOptions{Consistency: cons})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
