//go:build !wasip1

package main

import (
	"testing"
	"time"

	"lambdadb/sdk/fn"
)

func TestSleep(t *testing.T) {
	l := fn.NewLocal()
	out, err := l.Invoke([]byte("250"))
	if err != nil || string(out) != "slept 250 ms" || l.Slept() != 250*time.Millisecond {
		t.Fatalf("%q %v, slept %v", out, err, l.Slept())
	}
	if _, err := l.Invoke([]byte("soon")); err == nil {
		t.Fatal("a non-number was accepted")
	}
}
