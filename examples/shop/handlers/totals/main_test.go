//go:build !wasip1

package main

import (
	"encoding/json"
	"testing"

	"lambdadb/examples/shop/model"
	"lambdadb/sdk/fn"
)

func order(t *testing.T, c, id string, amount float64) []byte {
	b, err := json.Marshal(model.Order{ID: id, Customer: c, Region: "eu", Product: "w", Qty: 1, Amount: amount})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTotals: orders add up per customer, and a change delivered again
// (at least once) is not counted twice.
func TestTotals(t *testing.T) {
	l := fn.NewLocal()
	batch := []fn.Change{
		{Key: "orders/{a}/1", Value: order(t, "a", "1", 10.10), Op: "put", Version: 5},
		{Key: "orders/{b}/2", Value: order(t, "b", "2", 1), Op: "put", Version: 6},
		{Key: "orders/{a}/3", Value: order(t, "a", "3", 0.2), Op: "put", Version: 7},
	}
	if err := l.Changes(batch); err != nil {
		t.Fatal(err)
	}
	if err := l.Changes(batch[1:]); err != nil { // redelivered
		t.Fatal(err)
	}
	v, _ := l.Get("customers/{a}")
	var a model.Customer
	if err := json.Unmarshal(v, &a); err != nil || a.Orders != 2 || a.TotalCents != 1030 || a.Total != 10.3 || a.Last != 7 {
		t.Fatalf("customer a: %s %v", v, err)
	}
	v, _ = l.Get("customers/{b}")
	if err := json.Unmarshal(v, &a); err != nil || a.Orders != 1 || a.TotalCents != 100 {
		t.Fatalf("customer b: %s %v", v, err)
	}
	// An order whose customer is not its key's tag is skipped.
	if err := l.Changes([]fn.Change{{Key: "orders/{x}/9", Value: order(t, "y", "9", 1), Op: "put", Version: 9}}); err != nil {
		t.Fatal(err)
	}
	if _, found := l.Get("customers/{y}"); found {
		t.Fatal("counted an order under another customer's tag")
	}
}
