// Command sizes is the shop's scatter/gather function: a histogram of
// order sizes (units per order). Its Leaf counts the orders of one shard
// per bucket, its Combine adds the counts; the result is a JSON object
// {"1":n,"2":n,"3-5":n,"6-10":n,"11+":n}. Run it with
// POST /v1/query {"prefix":"orders/","function":"shop-sizes"}.
package main

import (
	"encoding/json"

	"lambdadb/examples/shop/model"
	"lambdadb/sdk/fn"
)

// Buckets are the histogram's buckets, smallest first.
var Buckets = []string{"1", "2", "3-5", "6-10", "11+"}

func bucket(qty int) string {
	switch {
	case qty <= 1:
		return "1"
	case qty == 2:
		return "2"
	case qty <= 5:
		return "3-5"
	case qty <= 10:
		return "6-10"
	}
	return "11+"
}

func init() {
	fn.Leaf(func(c *fn.Ctx, prefix string) ([]byte, error) {
		h := map[string]int{}
		for _, b := range Buckets {
			h[b] = 0
		}
		err := c.Scan(prefix, func(key string, value []byte) bool {
			var o model.Order
			if json.Unmarshal(value, &o) == nil && o.Qty > 0 {
				h[bucket(o.Qty)]++
			}
			return true
		})
		if err != nil {
			return nil, err
		}
		return json.Marshal(h)
	})
	// A Combine's parts are leaves' outputs or other Combines' outputs:
	// both are histograms, so adding them is right either way.
	fn.Combine(func(parts [][]byte) ([]byte, error) {
		total := map[string]int{}
		for _, b := range Buckets {
			total[b] = 0
		}
		for _, p := range parts {
			var h map[string]int
			if err := json.Unmarshal(p, &h); err != nil {
				return nil, err
			}
			for b, n := range h {
				total[b] += n
			}
		}
		return json.Marshal(total)
	})
}

func main() {}
