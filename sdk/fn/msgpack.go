package fn

import (
	"encoding/binary"
	"errors"
	"math"
)

// A minimal msgpack codec for the few shapes that cross the host/guest
// boundary (arrays of strings, byte strings, unsigned integers, booleans
// and nil). It keeps handler modules free of reflection-based encoders;
// the host decodes the same bytes with a general msgpack library.

var errShort = errors.New("fn: msgpack: truncated message")

type encoder struct{ b []byte }

func (e *encoder) array(n int) {
	switch {
	case n < 16:
		e.b = append(e.b, 0x90|byte(n))
	case n <= math.MaxUint16:
		e.b = append(e.b, 0xdc)
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(n))
	default:
		e.b = append(e.b, 0xdd)
		e.b = binary.BigEndian.AppendUint32(e.b, uint32(n))
	}
}

func (e *encoder) str(s string) {
	n := len(s)
	switch {
	case n < 32:
		e.b = append(e.b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		e.b = append(e.b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		e.b = append(e.b, 0xda)
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(n))
	default:
		e.b = append(e.b, 0xdb)
		e.b = binary.BigEndian.AppendUint32(e.b, uint32(n))
	}
	e.b = append(e.b, s...)
}

func (e *encoder) bin(p []byte) {
	if p == nil {
		e.b = append(e.b, 0xc0)
		return
	}
	n := len(p)
	switch {
	case n <= math.MaxUint8:
		e.b = append(e.b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		e.b = append(e.b, 0xc5)
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(n))
	default:
		e.b = append(e.b, 0xc6)
		e.b = binary.BigEndian.AppendUint32(e.b, uint32(n))
	}
	e.b = append(e.b, p...)
}

func (e *encoder) uint(v uint64) {
	switch {
	case v < 128:
		e.b = append(e.b, byte(v))
	case v <= math.MaxUint8:
		e.b = append(e.b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		e.b = append(e.b, 0xcd)
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(v))
	case v <= math.MaxUint32:
		e.b = append(e.b, 0xce)
		e.b = binary.BigEndian.AppendUint32(e.b, uint32(v))
	default:
		e.b = append(e.b, 0xcf)
		e.b = binary.BigEndian.AppendUint64(e.b, v)
	}
}

func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 0xc3)
	} else {
		e.b = append(e.b, 0xc2)
	}
}

// decoder reads msgpack values; the first error sticks and later reads
// return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(errShort)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) byte() byte {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) be(n int) uint64 {
	p := d.take(n)
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v
}

// array reads an array header; nil reads as an empty array.
func (d *decoder) array() int {
	c := d.byte()
	switch {
	case d.err != nil:
		return 0
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		return d.length(d.be(2))
	case c == 0xdd:
		return d.length(d.be(4))
	case c == 0xc0:
		return 0
	}
	d.fail(errors.New("fn: msgpack: expected an array"))
	return 0
}

// length bounds a declared length by the bytes left (every element takes
// at least one byte), so a hostile header cannot force a huge allocation.
func (d *decoder) length(n uint64) int {
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)) {
		d.fail(errShort)
		return 0
	}
	return int(n)
}

// raw reads a str, bin or nil and returns its bytes (nil for nil), aliasing
// the input.
func (d *decoder) raw() []byte {
	c := d.byte()
	var n uint64
	switch {
	case d.err != nil:
		return nil
	case c == 0xc0:
		return nil
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n = d.be(1)
	case c == 0xda || c == 0xc5:
		n = d.be(2)
	case c == 0xdb || c == 0xc6:
		n = d.be(4)
	default:
		d.fail(errors.New("fn: msgpack: expected a string"))
		return nil
	}
	p := d.take(d.length(n))
	if p == nil && d.err == nil {
		p = []byte{}
	}
	return p
}

func (d *decoder) str() string { return string(d.raw()) }

// bin returns a copy of a str, bin or nil value.
func (d *decoder) bin() []byte {
	p := d.raw()
	if p == nil {
		return nil
	}
	return append([]byte{}, p...)
}

func (d *decoder) uint() uint64 {
	c := d.byte()
	switch {
	case d.err != nil:
		return 0
	case c < 0x80:
		return uint64(c)
	case c == 0xcc || c == 0xd0:
		return d.nonNeg(c, d.be(1), 8)
	case c == 0xcd || c == 0xd1:
		return d.nonNeg(c, d.be(2), 16)
	case c == 0xce || c == 0xd2:
		return d.nonNeg(c, d.be(4), 32)
	case c == 0xcf || c == 0xd3:
		return d.nonNeg(c, d.be(8), 64)
	case c == 0xc0:
		return 0
	}
	d.fail(errors.New("fn: msgpack: expected an unsigned integer"))
	return 0
}

// nonNeg rejects negative signed integers (0xd0..0xd3).
func (d *decoder) nonNeg(c byte, v uint64, bits uint) uint64 {
	if c >= 0xd0 && v>>(bits-1) != 0 {
		d.fail(errors.New("fn: msgpack: negative integer"))
		return 0
	}
	return v
}

func (d *decoder) bool() bool {
	switch c := d.byte(); {
	case d.err != nil:
		return false
	case c == 0xc3:
		return true
	case c == 0xc2 || c == 0xc0:
		return false
	}
	d.fail(errors.New("fn: msgpack: expected a boolean"))
	return false
}

// skip discards one value of any type (for fields a newer host adds).
func (d *decoder) skip() {
	c := d.byte()
	switch {
	case d.err != nil:
	case c < 0x80 || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
	case c&0xf0 == 0x80: // fixmap
		d.skipN(2 * int(c&0x0f))
	case c&0xf0 == 0x90:
		d.skipN(int(c & 0x0f))
	case c&0xe0 == 0xa0:
		d.take(int(c & 0x1f))
	case c == 0xc4 || c == 0xd9:
		d.take(d.length(d.be(1)))
	case c == 0xc5 || c == 0xda:
		d.take(d.length(d.be(2)))
	case c == 0xc6 || c == 0xdb:
		d.take(d.length(d.be(4)))
	case c == 0xcc || c == 0xd0:
		d.take(1)
	case c == 0xcd || c == 0xd1:
		d.take(2)
	case c == 0xce || c == 0xd2 || c == 0xca:
		d.take(4)
	case c == 0xcf || c == 0xd3 || c == 0xcb:
		d.take(8)
	case c == 0xdc:
		d.skipN(d.length(d.be(2)))
	case c == 0xdd:
		d.skipN(d.length(d.be(4)))
	case c == 0xde:
		d.skipN(2 * d.length(d.be(2)))
	case c == 0xdf:
		d.skipN(2 * d.length(d.be(4)))
	default:
		d.fail(errors.New("fn: msgpack: unsupported type"))
	}
}

func (d *decoder) skipN(n int) {
	for i := 0; i < n && d.err == nil; i++ {
		d.skip()
	}
}

// rest skips the remaining elements of an array of n after reading read.
func (d *decoder) rest(n, read int) {
	if n > read {
		d.skipN(n - read)
	}
}
