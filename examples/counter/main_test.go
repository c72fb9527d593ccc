//go:build !wasip1

package main

import (
	"testing"

	"lambdadb/sdk/fn"
)

func TestCounter(t *testing.T) {
	l := fn.NewLocal()
	for want := 1; want <= 3; want++ {
		out, err := l.InvokeKey("hits", nil)
		if err != nil || string(out) != string(rune('0'+want)) {
			t.Fatalf("call %d: %q %v", want, out, err)
		}
	}
	// Without a key, the body names the key.
	if out, err := l.Invoke([]byte("other")); err != nil || string(out) != "1" {
		t.Fatalf("keyless call: %q %v", out, err)
	}
	l.Put("text", []byte("not a number"))
	if _, err := l.InvokeKey("text", nil); err == nil {
		t.Fatal("incrementing a non-number succeeded")
	}
	if _, err := l.Invoke(nil); err == nil {
		t.Fatal("call without a key succeeded")
	}
}
