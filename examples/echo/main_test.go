//go:build !wasip1

package main

import (
	"testing"

	"lambdadb/sdk/fn"
)

func TestEcho(t *testing.T) {
	out, err := fn.NewLocal().Invoke([]byte("hello"))
	if err != nil || string(out) != "hello" {
		t.Fatalf("%q %v", out, err)
	}
}
