//go:build !wasip1

package main

import (
	"testing"

	"lambdadb/sdk/fn"
)

func TestReserve(t *testing.T) {
	l := fn.NewLocal()
	l.Put("stock/{w}", []byte("5"))
	for _, tc := range []struct{ req, want, stock string }{
		{`{"qty":3}`, `{"ok":true,"left":2}`, "2"},
		{`{"qty":3}`, `{"ok":false,"left":2}`, "2"}, // never below zero
		{`{"qty":-3}`, `{"ok":true,"left":5}`, "5"}, // given back
		{`{"qty":5}`, `{"ok":true,"left":0}`, "0"},
	} {
		out, err := l.InvokeKey("stock/{w}", []byte(tc.req))
		if err != nil || string(out) != tc.want {
			t.Fatalf("%s: %s %v, want %s", tc.req, out, err, tc.want)
		}
		if v, _ := l.Get("stock/{w}"); string(v) != tc.stock {
			t.Fatalf("%s: stock %s, want %s", tc.req, v, tc.stock)
		}
	}
	if out, err := l.InvokeKey("stock/{none}", []byte(`{"qty":1}`)); err != nil || string(out) != `{"ok":false,"left":0,"unknown":true}` {
		t.Fatalf("unknown product: %s %v", out, err)
	}
	if _, err := l.InvokeKey("stock/{w}", []byte(`nope`)); err == nil {
		t.Fatal("a bad request succeeded")
	}
}
