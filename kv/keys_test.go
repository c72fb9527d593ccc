package kv

import (
	"bytes"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestPrefixEnd(t *testing.T) {
	tests := []struct{ in, want []byte }{
		{[]byte("a"), []byte("b")},
		{[]byte("ab"), []byte("ac")},
		{[]byte("a\xff"), []byte("b")},
		{[]byte("a\xff\xff"), []byte("b")},
		{[]byte("\x00"), []byte("\x01")},
		{[]byte("\xfe\xff"), []byte("\xff")},
		{[]byte("\xff"), nil},
		{[]byte("\xff\xff"), nil},
		{[]byte{}, nil},
	}
	for _, tc := range tests {
		in := bytes.Clone(tc.in)
		got := prefixEnd(in)
		if !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("prefixEnd(%q) = %q; want %q", tc.in, got, tc.want)
		}
		if !bytes.Equal(in, tc.in) {
			t.Errorf("prefixEnd modified its argument: %q", in)
		}
	}
}

func TestKeyLayout(t *testing.T) {
	// The layout in doc.go, byte for byte.
	if got, want := shardKey(0x0102, kindData, []byte("k")), []byte("S\x01\x02dk"); !bytes.Equal(got, want) {
		t.Errorf("shardKey = %q; want %q", got, want)
	}
	if got, want := raftEntryKey(65535, 0x0a0b), []byte("S\xff\xffe\x00\x00\x00\x00\x00\x00\x0a\x0b"); !bytes.Equal(got, want) {
		t.Errorf("raftEntryKey = %q; want %q", got, want)
	}
	if got, want := shardKey(7, kindMeta, appliedName), []byte("S\x00\x07aapplied"); !bytes.Equal(got, want) {
		t.Errorf("applied key = %q; want %q", got, want)
	}
	if got, want := shardKey(0x0102, kindSystem, []byte("fn/x")), []byte("S\x01\x02yfn/x"); !bytes.Equal(got, want) {
		t.Errorf("system key = %q; want %q", got, want)
	}
	for i := 1; i < len(replicatedKinds); i++ {
		if replicatedKinds[i-1] >= replicatedKinds[i] {
			t.Fatalf("replicatedKinds %q are not in key order", replicatedKinds)
		}
	}

	// Every kind range of every shard is disjoint from, and ordered with,
	// the others; raft entry keys sort by index.
	var prevHi []byte
	for _, shard := range []int{0, 1, 255, 256, 65534, 65535} {
		for _, kind := range []byte{kindMeta, kindCheckpoint, kindData, kindRaftEntry, kindFeed, kindRaftState, kindSystem} {
			lo, hi := kindRange(shard, kind)
			if bytes.Compare(lo, hi) >= 0 {
				t.Fatalf("kindRange(%d, %c) empty: %q..%q", shard, kind, lo, hi)
			}
			if prevHi != nil && bytes.Compare(prevHi, lo) > 0 {
				t.Fatalf("kindRange(%d, %c) overlaps the previous range", shard, kind)
			}
			prevHi = hi
			for _, k := range [][]byte{shardKey(shard, kind, nil), shardKey(shard, kind, []byte("\xff\xff\xff"))} {
				if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 {
					t.Fatalf("key %q outside kindRange(%d, %c)", k, shard, kind)
				}
			}
		}
		if a, b := raftEntryKey(shard, 255), raftEntryKey(shard, 256); bytes.Compare(a, b) >= 0 {
			t.Fatalf("raft entry keys out of index order")
		}
		if a, b := raftEntryKey(shard, math.MaxUint64-1), raftEntryKey(shard, math.MaxUint64); bytes.Compare(a, b) >= 0 {
			t.Fatalf("raft entry keys out of index order")
		}
		if lo, hi := kindRange(shard, kindRaftEntry); bytes.Compare(raftEntryKey(shard, 0), lo) < 0 || bytes.Compare(raftEntryKey(shard, math.MaxUint64), hi) >= 0 {
			t.Fatalf("raft entry keys outside kindRange(%d, e)", shard)
		}
	}
}

func TestRecordEncoding(t *testing.T) {
	for _, tc := range []struct {
		version uint64
		value   []byte
	}{{0, nil}, {1, []byte("v")}, {math.MaxUint64, []byte("\x00\xff")}, {1 << 40, bytes.Repeat([]byte("x"), 1000)}} {
		b := encodeRecord(tc.version, tc.value)
		if len(b) != 8+len(tc.value) {
			t.Fatalf("encodeRecord length %d", len(b))
		}
		v, val, ok := decodeRecord(b)
		if !ok || v != tc.version || !bytes.Equal(val, tc.value) {
			t.Fatalf("decodeRecord(encodeRecord(%d, %q)) = %d, %q, %v", tc.version, tc.value, v, val, ok)
		}
	}
	for n := 0; n < 8; n++ {
		if _, _, ok := decodeRecord(make([]byte, n)); ok {
			t.Fatalf("decodeRecord accepted %d bytes", n)
		}
	}
}

func TestNodeMeta(t *testing.T) {
	fs := vfs.NewCrashableMem()
	e := openEngine(t, fs, "db")

	if v, found, err := e.NodeMeta("layout"); err != nil || found || v != nil {
		t.Fatalf("NodeMeta(missing) = %q, %v, %v", v, found, err)
	}
	for _, name := range []string{"layout", "", "S\x00\x01d"} {
		if err := e.SetNodeMeta(name, []byte("v-"+name)); err != nil {
			t.Fatal(err)
		}
	}
	// Node metadata lives outside every shard.
	put(t, e, 1, 1, kvPair{"d", "record", 1})
	if got := scanAll(t, e, 1, nil, nil); len(got) != 1 {
		t.Fatalf("shard scan sees node metadata: %v", got)
	}
	if err := e.SetNodeMeta("layout", []byte("v2")); err != nil {
		t.Fatal(err)
	}

	// Synced: it survives a crash.
	e2, _ := crashAndReopen(t, fs, "db", e, vfs.CrashCloneCfg{})
	for name, want := range map[string]string{"layout": "v2", "": "v-", "S\x00\x01d": "v-S\x00\x01d"} {
		v, found, err := e2.NodeMeta(name)
		if err != nil || !found || string(v) != want {
			t.Errorf("NodeMeta(%q) after crash = %q, %v, %v; want %q", name, v, found, err, want)
		}
	}
}
