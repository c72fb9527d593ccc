package shard

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// commandsEqual compares two commands field by field, nested ops included
// (a nil and an empty value are equal).
func commandsEqual(a, b command) bool {
	if a.Op != b.Op || a.Key != b.Key || !bytes.Equal(a.Value, b.Value) || a.Cond != b.Cond ||
		a.Version != b.Version || a.Space != b.Space || a.Depth != b.Depth || len(a.Ops) != len(b.Ops) {
		return false
	}
	for i := range a.Ops {
		if !commandsEqual(a.Ops[i], b.Ops[i]) {
			return false
		}
	}
	return true
}

func withDepth(c command, d uint8) command {
	c.Depth = d
	return c
}

func systemCommand(op uint8, key string, value []byte, c Cond) command {
	cmd := newCommand(op, key, value, c)
	cmd.Space = uint8(SystemSpace)
	return cmd
}

func batchCommand(ops ...command) command { return command{Op: opBatch, Ops: ops} }

func TestCommandRoundTrip(t *testing.T) {
	v := uint64(7)
	cases := []command{
		newCommand(opPut, "k", []byte("value"), Cond{}),
		newCommand(opPut, "k", nil, Cond{IfNoneMatch: true}),
		newCommand(opDelete, "k/é", nil, Cond{IfMatch: &v}),
		{Op: opNoop},
		systemCommand(opPut, "fn/echo", []byte("\x00asm"), Cond{IfMatch: &v}),
		systemCommand(opDelete, "fn/echo", nil, Cond{}),
		batchCommand(newCommand(opPut, "{t}a", []byte("1"), Cond{})),
		batchCommand(
			newCommand(opPut, "{t}a", []byte("1"), Cond{IfNoneMatch: true}),
			newCommand(opDelete, "{t}b", nil, Cond{IfMatch: &v}),
			systemCommand(opPut, "{t}a", []byte("sys"), Cond{}),
			systemCommand(opDelete, "{t}b", nil, Cond{}),
		),
		withDepth(newCommand(opPut, "k", []byte("v"), Cond{}), 3),
		withDepth(systemCommand(opDelete, "k", nil, Cond{}), 1),
		withDepth(batchCommand(newCommand(opPut, "{t}a", []byte("1"), Cond{})), 16),
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
		if !commandsEqual(got, c) {
			t.Fatalf("round trip: got %+v, want %+v", got, c)
		}
	}
}

// legacyCommand is the command encoding of the versions before spaces and
// batches: msgpack's array encoding of the five original fields.
type legacyCommand struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	Op       uint8
	Key      string
	Value    []byte
	Cond     uint8
	Version  uint64
}

// Single UserSpace writes and no-ops encode byte for byte as before, and
// what older versions wrote (possibly still in a Raft log) decodes.
func TestCommandLegacyEncoding(t *testing.T) {
	for _, l := range []legacyCommand{
		{Op: opPut, Key: "k", Value: []byte("v")},
		{Op: opPut, Key: "k", Value: bytes.Repeat([]byte("x"), 70000), Cond: condIfNoneMatch},
		{Op: opDelete, Key: "k/é", Cond: condIfMatch, Version: 1 << 40},
		{Op: opNoop},
	} {
		old, err := msgpack.Marshal(&l)
		if err != nil {
			t.Fatal(err)
		}
		cmd := command{Op: l.Op, Key: l.Key, Value: l.Value, Cond: l.Cond, Version: l.Version}
		b, err := encodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, old) {
			t.Errorf("op %d: encoding changed:\n got %x\nwant %x", l.Op, b[:min(len(b), 40)], old[:min(len(old), 40)])
		}
		got, err := decodeCommand(old)
		if err != nil || !commandsEqual(got, cmd) {
			t.Errorf("op %d: legacy bytes decode to %+v, %v", l.Op, got, err)
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
	cmd := func(c command) []byte {
		b, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(key string) command { return newCommand(opPut, key, []byte("v"), Cond{}) }
	var many []command
	for i := 0; i <= MaxBatchOps; i++ {
		many = append(many, put(fmt.Sprintf("{t}%d", i)))
	}
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"garbage", []byte{0xc1, 0x00}},
		{"nil", enc(nil)},
		{"empty array", enc([]any{})},
		{"four elements", enc([]any{opPut, "k", nil, 0})},
		{"unknown op", enc([]any{9, "k", nil, 0, 0})},
		{"empty key", enc([]any{opPut, "", nil, 0, 0})},
		{"bad utf8 key", enc([]any{opPut, "\xff", nil, 0, 0})},
		{"long key", enc([]any{opPut, strings.Repeat("k", MaxKeyBytes+1), nil, 0, 0})},
		{"unknown cond", enc([]any{opPut, "k", nil, 7, 0})},
		{"unknown space", enc([]any{opPut, "k", nil, 0, 0, 2})},
		{"key of wrong type", enc([]any{opPut, 5, nil, 0, 0})},
		{"noop with key", enc([]any{opNoop, "k", nil, 0, 0})},
		{"noop with space", enc([]any{opNoop, "", nil, 0, 0, 1})},
		{"noop with ops", cmd(command{Op: opNoop, Ops: []command{put("k")}})},
		{"put with ops", cmd(command{Op: opPut, Key: "k", Ops: []command{put("k")}})},
		{"ops of wrong type", enc([]any{opBatch, "", nil, 0, 0, 0, "x"})},
		{"empty batch", cmd(command{Op: opBatch, Ops: []command{}})},
		{"batch without ops", enc([]any{opBatch, "", nil, 0, 0, 0, nil})},
		{"legacy batch", enc([]any{opBatch, "", nil, 0, 0})},
		{"too many ops", cmd(batchCommand(many...))},
		{"batch with a key", cmd(command{Op: opBatch, Key: "k", Ops: []command{put("k")}})},
		{"batch with a value", cmd(command{Op: opBatch, Value: []byte("v"), Ops: []command{put("k")}})},
		{"batch with a cond", cmd(command{Op: opBatch, Cond: condIfNoneMatch, Ops: []command{put("k")}})},
		{"batch with a version", cmd(command{Op: opBatch, Version: 3, Ops: []command{put("k")}})},
		{"batch with a space", cmd(command{Op: opBatch, Space: 1, Ops: []command{put("k")}})},
		{"nested batch", cmd(batchCommand(put("a"), batchCommand(put("b"))))},
		{"depth on a nested op", cmd(batchCommand(put("a"), withDepth(put("b"), 2)))},
		{"depth of wrong type", enc([]any{opPut, "k", nil, 0, 0, 0, nil, "x"})},
		{"nine elements", enc([]any{opPut, "k", nil, 0, 0, 0, nil, 1, 1})},
		{"noop in a batch", cmd(batchCommand(put("a"), command{Op: opNoop}))},
		{"unknown op in a batch", cmd(batchCommand(command{Op: 9, Key: "a"}))},
		{"bad key in a batch", cmd(batchCommand(put("a"), put("")))},
		{"bad cond in a batch", cmd(batchCommand(command{Op: opPut, Key: "a", Cond: 5}))},
		{"bad space in a batch", cmd(batchCommand(command{Op: opPut, Key: "a", Space: 9}))},
		{"duplicate key", cmd(batchCommand(put("a"), put("b"), newCommand(opDelete, "a", nil, Cond{})))},
		{"duplicate system key", cmd(batchCommand(systemCommand(opPut, "a", nil, Cond{}), put("a"), systemCommand(opDelete, "a", nil, Cond{})))},
		// Lengths far beyond the input must fail without allocating them.
		{"forged value length", []byte("\x95\xcc\x02\xa1 \xc6\xcc\x01\xcf\x00\x00\x00\x00\x00\x00\x01\x03")},
		{"forged key length", []byte("\x95\x01\xdb\xff\xff\xff\xf0k")},
		{"huge op count", []byte{0x97, opBatch, 0xa0, 0xc0, 0, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, err := decodeCommand(c.in); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("err = %v (decoded %+v), want ErrBadCommand", err, got)
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
		systemCommand(opPut, "fn/f", []byte("m"), Cond{IfNoneMatch: true}),
		batchCommand(newCommand(opPut, "{a}1", []byte("v"), Cond{}), systemCommand(opDelete, "{a}1", nil, Cond{IfMatch: &v})),
		batchCommand(newCommand(opPut, "k", nil, Cond{}), batchCommand(newCommand(opPut, "j", nil, Cond{}))),
	} {
		b, _ := encodeCommand(c)
		f.Add(b)
	}
	f.Add([]byte{0x95, 0x01})
	f.Add([]byte{0x97, opBatch, 0xa0, 0xc0, 0, 0, 0, 0x91, 0x95, opPut, 0xa1, 'k', 0xc0, 0, 0})
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
		if !commandsEqual(c, c2) {
			t.Fatalf("round trip changed command: %+v vs %+v", c, c2)
		}
	})
}

// BenchmarkCommandCodec compares the encoding and decoding of a 256-byte
// put with msgpack's struct codec of the versions before batches.
func BenchmarkCommandCodec(b *testing.B) {
	val := make([]byte, 256)
	b.Run("current", func(b *testing.B) {
		for b.Loop() {
			enc, err := encodeCommand(newCommand(opPut, "user/12345", val, Cond{}))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := decodeCommand(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("legacy", func(b *testing.B) {
		for b.Loop() {
			enc, err := msgpack.Marshal(&legacyCommand{Op: opPut, Key: "user/12345", Value: val})
			if err != nil {
				b.Fatal(err)
			}
			var c legacyCommand
			if err := msgpack.Unmarshal(enc, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}
