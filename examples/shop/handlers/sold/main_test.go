//go:build !wasip1

package main

import (
	"testing"

	"lambdadb/sdk/fn"
)

func TestSoldMarkers(t *testing.T) {
	l := fn.NewLocal()
	ch := fn.Change{Key: "orders/{a}/7", Value: []byte(`{"id":"7","customer":"a","product":"w","qty":3}`), Op: "put", Version: 4}
	for i := 0; i < 2; i++ { // delivered twice: one marker
		if err := l.Changes([]fn.Change{ch}); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := l.Get("sold/{w}/a-7"); string(v) != `{"product":"w","qty":3}` {
		t.Fatalf("marker %s", v)
	}
}
