package tolerant_test

import (
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/tolerant"
)

type v1 struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	A        uint64
	B        string
}

type v2 struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	A        uint64
	B        string
	C        []string
}

func (r *v2) DecodeMsgpack(d *msgpack.Decoder) error {
	return tolerant.DecodeArray(d, &r.A, &r.B, &r.C)
}

type v3 struct {
	//lint:ignore U1000 read by msgpack through its tag
	_msgpack struct{} `msgpack:",as_array"`
	A        uint64
	B        string
	C        []string
	D        map[string]int
}

func TestDecodeArray(t *testing.T) {
	old, _ := msgpack.Marshal(&v1{A: 7, B: "b"})
	same, _ := msgpack.Marshal(&v2{A: 7, B: "b", C: []string{"c"}})
	newer, _ := msgpack.Marshal(&v3{A: 7, B: "b", C: []string{"c"}, D: map[string]int{"d": 1}})
	for _, tc := range []struct {
		name  string
		in    []byte
		wantC []string
	}{
		{"written before C was added", old, nil},
		{"same version", same, []string{"c"}},
		{"written by a newer version", newer, []string{"c"}},
	} {
		var r v2
		if err := msgpack.Unmarshal(tc.in, &r); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.A != 7 || r.B != "b" || len(r.C) != len(tc.wantC) || len(r.C) > 0 && r.C[0] != tc.wantC[0] {
			t.Fatalf("%s: %+v", tc.name, r)
		}
	}
	// Plain as_array decoding refuses what DecodeArray reads.
	var plain v3
	if err := msgpack.Unmarshal(old, &plain); err == nil {
		t.Fatal("msgpack now decodes arrays of another length: DecodeArray may be unnecessary")
	}
	var r v2
	if err := msgpack.Unmarshal([]byte{0xa1, 'x'}, &r); !errors.Is(err, tolerant.ErrNotArray) {
		t.Fatalf("a string: %v", err)
	}
	if err := msgpack.Unmarshal([]byte{0x93, 0x01, 0xc1}, &r); err == nil {
		t.Fatal("a truncated or invalid element decoded")
	}
}

func FuzzDecodeArray(f *testing.F) {
	old, _ := msgpack.Marshal(&v1{A: 7, B: "b"})
	newer, _ := msgpack.Marshal(&v3{A: 7, B: "b", C: []string{"c"}, D: map[string]int{"d": 1}})
	f.Add(old)
	f.Add(newer)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r v2
		_ = msgpack.Unmarshal(b, &r) // must not panic
	})
}
