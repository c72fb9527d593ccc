// Command totals is the shop's per-customer trigger handler (a trigger on
// orders/): for each new order it adds one order and its amount to the
// customer's record customers/{customer}.
//
// The record has the order's hash tag, so it is on the order's shard and
// the trigger commits the handler's writes with its checkpoint in one Raft
// entry: exactly once. The record also keeps the version of the last
// order it counted and skips any order at or below it, so even a delivery
// made twice (had the handler written elsewhere) would count once. Only
// Get and Put are used — a CompareAndPut would end the holding back of
// writes — which is safe because one shard's changes reach one runner at a
// time, in order.
package main

import (
	"encoding/json"
	"fmt"

	"lambdadb/examples/shop/model"
	"lambdadb/sdk/fn"
)

func init() {
	fn.OnChanges(func(c *fn.Ctx, batch []fn.Change) error {
		for _, ch := range batch {
			if ch.Op != "put" {
				continue // orders are never deleted by the shop
			}
			var o model.Order
			if err := json.Unmarshal(ch.Value, &o); err != nil || o.Customer == "" {
				c.Log("skipping %s: not an order", ch.Key)
				continue
			}
			key := model.CustomerKey(o.Customer)
			if model.TagOf(key) != model.TagOf(ch.Key) {
				c.Log("skipping %s: customer %q is not the key's", ch.Key, o.Customer)
				continue
			}
			var cu model.Customer
			v, found, err := c.Get(key)
			if err != nil {
				return err
			}
			if found {
				if err := json.Unmarshal(v, &cu); err != nil {
					return fmt.Errorf("totals: %s: %w", key, err)
				}
			}
			if ch.Version <= cu.Last {
				continue // counted already
			}
			cu.Customer = o.Customer
			cu.Orders++
			cu.TotalCents += o.Cents()
			cu.Total = float64(cu.TotalCents) / 100
			cu.Last = ch.Version
			b, err := json.Marshal(cu)
			if err != nil {
				return err
			}
			if err := c.Put(key, b); err != nil {
				return err
			}
		}
		return nil
	})
}

func main() {}
