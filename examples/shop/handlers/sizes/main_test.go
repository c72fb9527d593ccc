//go:build !wasip1

package main

import (
	"testing"

	"lambdadb/sdk/fn"
)

func TestSizes(t *testing.T) {
	l := fn.NewLocal()
	for k, v := range map[string]string{"orders/{a}/1": `{"qty":1}`, "orders/{a}/2": `{"qty":4}`, "orders/{b}/3": `{"qty":12}`,
		"orders/{b}/4": `{"qty":4}`, "orders/{b}/5": `not json`} {
		l.Put(k, []byte(v))
	}
	leaf, err := l.Leaf("orders/")
	if err != nil || string(leaf) != `{"1":1,"11+":1,"2":0,"3-5":2,"6-10":0}` {
		t.Fatalf("leaf: %s %v", leaf, err)
	}
	// A Combine accepts its own output among its parts.
	once, err := l.Combine([][]byte{leaf, []byte(`{"2":3}`)})
	if err != nil {
		t.Fatal(err)
	}
	twice, err := l.Combine([][]byte{once, leaf})
	if err != nil || string(twice) != `{"1":2,"11+":2,"2":3,"3-5":4,"6-10":0}` {
		t.Fatalf("combine: %s %v", twice, err)
	}
}
