// Command wordcount is a lambdadb scatter/gather function: its Leaf counts
// the words in the values under a prefix on one shard, its Combine adds the
// leaves' counts. Results are JSON objects {"word": count}.
package main

import (
	"encoding/json"
	"strings"

	"lambdadb/sdk/fn"
)

func init() {
	fn.Leaf(func(c *fn.Ctx, prefix string) ([]byte, error) {
		counts := map[string]int{}
		err := c.Scan(prefix, func(key string, value []byte) bool {
			for _, w := range strings.Fields(string(value)) {
				counts[strings.ToLower(w)]++
			}
			return true
		})
		if err != nil {
			return nil, err
		}
		return json.Marshal(counts)
	})
	fn.Combine(func(parts [][]byte) ([]byte, error) {
		total := map[string]int{}
		for _, p := range parts {
			var m map[string]int
			if err := json.Unmarshal(p, &m); err != nil {
				return nil, err
			}
			for w, n := range m {
				total[w] += n
			}
		}
		return json.Marshal(total)
	})
	// Invoked directly, it counts the words of its request.
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		counts := map[string]int{}
		for _, w := range strings.Fields(string(req)) {
			counts[strings.ToLower(w)]++
		}
		return json.Marshal(counts)
	})
}

func main() {}
