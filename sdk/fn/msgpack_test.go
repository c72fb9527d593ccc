package fn

import (
	"bytes"
	"testing"
)

func TestMsgpackRoundTrip(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 70000))
	e := encoder{}
	e.array(7)
	e.str("")
	e.str("key")
	e.str(long)
	e.bin(nil)
	e.bin([]byte{1, 2, 3})
	e.uint(1 << 40)
	e.bool(true)
	d := &decoder{b: e.b}
	if n := d.array(); n != 7 {
		t.Fatalf("array = %d", n)
	}
	if s := d.str(); s != "" {
		t.Fatalf("empty str = %q", s)
	}
	if s := d.str(); s != "key" {
		t.Fatalf("str = %q", s)
	}
	if s := d.str(); s != long {
		t.Fatalf("long str len = %d", len(s))
	}
	if b := d.bin(); b != nil {
		t.Fatalf("nil bin = %v", b)
	}
	if b := d.bin(); !bytes.Equal(b, []byte{1, 2, 3}) {
		t.Fatalf("bin = %v", b)
	}
	if v := d.uint(); v != 1<<40 {
		t.Fatalf("uint = %d", v)
	}
	if !d.bool() {
		t.Fatal("bool = false")
	}
	if d.err != nil || len(d.b) != 0 {
		t.Fatalf("err %v, %d bytes left", d.err, len(d.b))
	}
}

func TestMsgpackUints(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1} {
		e := encoder{}
		e.uint(v)
		d := &decoder{b: e.b}
		if got := d.uint(); got != v || d.err != nil {
			t.Errorf("uint %d: got %d, %v", v, got, d.err)
		}
	}
}

func TestMsgpackErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		read func(d *decoder)
	}{
		{"empty", nil, func(d *decoder) { d.array() }},
		{"huge array", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, func(d *decoder) { d.array() }},
		{"short str", []byte{0xa5, 'a'}, func(d *decoder) { d.str() }},
		{"huge bin", []byte{0xc6, 0x7f, 0xff, 0xff, 0xff}, func(d *decoder) { d.bin() }},
		{"wrong type", []byte{0xc3}, func(d *decoder) { d.str() }},
		{"negative", []byte{0xd0, 0xff}, func(d *decoder) { d.uint() }},
		{"float", []byte{0xcb, 0, 0, 0, 0, 0, 0, 0, 0}, func(d *decoder) { d.uint() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &decoder{b: tt.in}
			tt.read(d)
			if d.err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// FuzzDecode feeds arbitrary bytes to every reader the SDK uses on host
// messages; none may panic or allocate beyond the input.
func FuzzDecode(f *testing.F) {
	e := encoder{}
	e.array(3)
	e.str("k")
	e.bin([]byte("v"))
	e.uint(7)
	f.Add(e.b)
	f.Add([]byte{0x92, 0xa0, 0xc0})
	f.Add([]byte{0xdc, 0x00, 0x02, 0x91, 0x90, 0xc3})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeChanges(&decoder{b: b})
		d := &decoder{b: b}
		d.skip()
		d = &decoder{b: b}
		n := d.array()
		for i := 0; i < n && d.err == nil; i++ {
			d.skip()
		}
		for _, kind := range []uint32{kindHandle, kindChanges, kindLeaf, kindCombine, 99} {
			invoke(kind, b)
		}
	})
}
