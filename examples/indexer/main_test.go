//go:build !wasip1

package main

import (
	"testing"

	"lambdadb/sdk/fn"
)

func TestIndexer(t *testing.T) {
	l := fn.NewLocal()
	err := l.Changes([]fn.Change{
		{Key: "users/1", Value: []byte("ada"), Op: "put", Version: 5},
		{Key: "users/2", Value: []byte("bob"), Op: "put", Version: 6},
		{Key: "users/1", Op: "delete", Version: 7},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := l.Get("idx/users/2"); !ok || string(v) != "bob" {
		t.Fatalf("idx/users/2 = %q %v", v, ok)
	}
	if _, ok := l.Get("idx/users/1"); ok {
		t.Fatal("idx/users/1 survived its delete")
	}
}
