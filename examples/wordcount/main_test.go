//go:build !wasip1

package main

import (
	"encoding/json"
	"testing"

	"lambdadb/sdk/fn"
)

func TestWordcount(t *testing.T) {
	l := fn.NewLocal()
	l.Put("doc/1", []byte("the quick brown fox"))
	l.Put("doc/2", []byte("The lazy dog"))
	l.Put("doc/3", []byte("fox"))
	l.Put("doc/4", []byte("a fox again"))
	l.Put("other", []byte("ignored words"))
	leaf, err := l.Leaf("doc/")
	if err != nil {
		t.Fatal(err)
	}
	total, err := l.Combine([][]byte{leaf, []byte(`{"fox":2,"cat":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	if err := json.Unmarshal(total, &got); err != nil {
		t.Fatal(err)
	}
	if got["fox"] != 5 || got["the"] != 2 || got["cat"] != 1 || got["ignored"] != 0 {
		t.Fatalf("counts = %v", got)
	}
	if _, err := l.Combine([][]byte{[]byte("not json")}); err == nil {
		t.Fatal("combining garbage succeeded")
	}
}
