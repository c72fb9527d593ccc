package shard

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCommandRoundTrip(t *testing.T) {
	v := uint64(7)
	cases := []command{
		newCommand(opPut, "k", []byte("value"), Cond{}),
		newCommand(opPut, "k", nil, Cond{IfNoneMatch: true}),
		newCommand(opDelete, "k/é", nil, Cond{IfMatch: &v}),
		{Op: opNoop},
	}
	for _, c := range cases {
		b, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeCommand(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		if got.Op != c.Op || got.Key != c.Key || !bytes.Equal(got.Value, c.Value) || got.Cond != c.Cond || got.Version != c.Version {
			t.Fatalf("round trip: got %+v, want %+v", got, c)
		}
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"garbage", []byte{0xc1, 0x00}},
		{"unknown op", enc([]any{9, "k", nil, 0, 0})},
		{"empty key", enc([]any{opPut, "", nil, 0, 0})},
		{"bad utf8 key", enc([]any{opPut, "\xff", nil, 0, 0})},
		{"unknown cond", enc([]any{opPut, "k", nil, 7, 0})},
		{"noop with key", enc([]any{opNoop, "k", nil, 0, 0})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := decodeCommand(c.in); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("err = %v, want ErrBadCommand", err)
			}
		})
	}
}

func FuzzDecodeCommand(f *testing.F) {
	v := uint64(3)
	for _, c := range []command{
		newCommand(opPut, "k", []byte("v"), Cond{}),
		newCommand(opDelete, "x", nil, Cond{IfMatch: &v}),
		{Op: opNoop},
	} {
		b, _ := encodeCommand(c)
		f.Add(b)
	}
	f.Add([]byte{0x95, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(b)
		if err != nil {
			return
		}
		again, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeCommand(again)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if c2.Op != c.Op || c2.Key != c.Key || !bytes.Equal(c2.Value, c.Value) || c2.Cond != c.Cond || c2.Version != c.Version {
			t.Fatalf("round trip changed command: %+v vs %+v", c, c2)
		}
	})
}
