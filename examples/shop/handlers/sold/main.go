// Command sold is the shop's per-product trigger handler (a trigger on
// orders/): for each new order it writes a marker
// sold/{product}/<customer>-<id> holding the order's units. The marker is
// on the product's shard, not the order's, so delivery is at least once;
// a marker is keyed by its order, so writing it again changes nothing.
// Units sold per product are the sum of its markers (a scan of one shard,
// or POST /v1/query sum qty group_by product over sold/).
package main

import (
	"encoding/json"

	"lambdadb/examples/shop/model"
	"lambdadb/sdk/fn"
)

func init() {
	fn.OnChanges(func(c *fn.Ctx, batch []fn.Change) error {
		for _, ch := range batch {
			if ch.Op != "put" {
				continue
			}
			var o model.Order
			if err := json.Unmarshal(ch.Value, &o); err != nil || o.Product == "" || o.ID == "" {
				continue
			}
			b, err := json.Marshal(model.Sold{Product: o.Product, Qty: o.Qty})
			if err != nil {
				return err
			}
			if err := c.Put(model.SoldKey(o.Product, o.Customer, o.ID), b); err != nil {
				return err
			}
		}
		return nil
	})
}

func main() {}
