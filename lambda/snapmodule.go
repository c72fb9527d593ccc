package lambda

import (
	"errors"
	"fmt"
)

// A module is prepared for snapshot restarts (ADR 0016) by rewriting its
// binary before wazero compiles it:
//
//   - every mutable global gets an export ("__ldb_g<index>"), since wazero's
//     API reaches only exported globals and a restored sandbox must get the
//     snapshot's values;
//   - the data segments leave the module, so that instantiation writes
//     nothing into memory: the engine writes them itself before running
//     the module's init for a snapshot, and a restored sandbox gets the
//     snapshot's memory instead of paying to copy segments the snapshot
//     overwrites anyway (a Go module has tens of thousands of them, and
//     wazero allocates a slot per segment at every instantiation).
//
// Only modules built by Go are prepared (they carry a go:buildid custom
// section): the Go toolchain never emits the instructions that would make
// a snapshot unfaithful (table.set/grow, memory.init/data.drop of these
// segments), which this package does not scan code for. Anything the
// rewrite does not fully understand leaves the module as it is, to start
// the ordinary way.

// snapPrefix names the exports added for mutable globals.
const snapPrefix = "__ldb_g"

// snapModule describes a prepared module.
type snapModule struct {
	globals  []snapGlobal  // mutable globals, with their export names
	segments []snapSegment // the module's data segments, in order
}

type snapGlobal struct {
	index  uint32
	export string
}

type snapSegment struct {
	offset uint32
	data   []byte
}

// errNotSnapshottable is why prepareSnapshot left a module alone.
var errNotSnapshottable = errors.New("module not snapshottable")

func notSnap(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errNotSnapshottable, fmt.Sprintf(format, args...))
}

// Section ids of the WebAssembly binary format.
const (
	secCustom   = 0
	secImport   = 2
	secMemory   = 5
	secGlobal   = 6
	secExport   = 7
	secStart    = 8
	secData     = 11
	secDataCnt  = 12
	wasmHdrSize = 8
)

// prepareSnapshot rewrites wasm for snapshot restarts. It never panics; an
// error (wrapping errNotSnapshottable) means the module is left as it is.
func prepareSnapshot(wasm []byte) ([]byte, *snapModule, error) {
	if len(wasm) < wasmHdrSize || string(wasm[:4]) != "\x00asm" || string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return nil, nil, notSnap("not a WebAssembly 1.0 binary")
	}
	type section struct {
		id         byte
		start, end int // content
	}
	var secs []section
	r := &wasmReader{b: wasm, i: wasmHdrSize}
	for r.i < len(wasm) {
		id := r.byte()
		n := r.u32()
		if r.err != nil || uint64(r.i)+uint64(n) > uint64(len(wasm)) {
			return nil, nil, notSnap("truncated section")
		}
		secs = append(secs, section{id, r.i, r.i + int(n)})
		r.i += int(n)
	}
	var (
		goBuild   bool
		memories  int
		sm        = &snapModule{}
		exportSec = -1
		dataSec   = -1
		exported  = map[string]bool{}
	)
	for k, s := range secs {
		r := &wasmReader{b: wasm[:s.end], i: s.start}
		switch s.id {
		case secCustom:
			if r.name() == "go:buildid" && r.err == nil {
				goBuild = true
			}
		case secImport:
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				r.name()
				r.name()
				if kind := r.byte(); kind != 0 && r.err == nil {
					return nil, nil, notSnap("imports a table, memory, global or tag (kind %d)", kind)
				}
				r.u32()
			}
		case secMemory:
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				memories++
				switch flags := r.byte(); flags {
				case 0:
					r.u32()
				case 1:
					r.u32()
					r.u32()
				default:
					return nil, nil, notSnap("memory limits flags %#x (shared or memory64)", flags)
				}
			}
		case secGlobal:
			n := r.u32()
			for g := uint32(0); g < n && r.err == nil; g++ {
				vt, mut := r.byte(), r.byte()
				if mut > 1 {
					return nil, nil, notSnap("global mutability %d", mut)
				}
				if mut == 1 {
					switch vt {
					case 0x7F, 0x7E, 0x7D, 0x7C: // i32 i64 f32 f64
					default:
						return nil, nil, notSnap("mutable global %d of type %#x", g, vt)
					}
					sm.globals = append(sm.globals, snapGlobal{index: g, export: fmt.Sprintf("%s%d", snapPrefix, g)})
				}
				if _, err := r.constExpr(); err != nil {
					return nil, nil, err
				}
			}
		case secExport:
			exportSec = k
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				exported[r.name()] = true
				r.byte()
				r.u32()
			}
		case secStart:
			return nil, nil, notSnap("has a start function")
		case secDataCnt:
			return nil, nil, notSnap("has a data count section (memory.init or data.drop)")
		case secData:
			dataSec = k
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				if flags := r.u32(); flags != 0 {
					return nil, nil, notSnap("data segment flags %d (passive or explicit memory)", flags)
				}
				off, err := r.constExpr()
				if err != nil {
					return nil, nil, err
				}
				if off.op != 0x41 {
					return nil, nil, notSnap("data segment offset is not an i32.const")
				}
				size := r.u32()
				if r.err == nil && uint64(r.i)+uint64(size) > uint64(s.end) {
					return nil, nil, notSnap("truncated data segment")
				}
				if r.err == nil {
					sm.segments = append(sm.segments, snapSegment{offset: uint32(off.val), data: wasm[r.i : r.i+int(size)]})
					r.i += int(size)
				}
			}
		}
		if r.err != nil {
			return nil, nil, notSnap("section %d: %v", s.id, r.err)
		}
		parsed := s.id == secImport || s.id == secMemory || s.id == secGlobal || s.id == secExport || s.id == secData
		if parsed && r.i != s.end {
			return nil, nil, notSnap("section %d has %d trailing bytes", s.id, s.end-r.i)
		}
	}
	switch {
	case !goBuild:
		return nil, nil, notSnap("not built by Go (no go:buildid section)")
	case memories != 1:
		return nil, nil, notSnap("defines %d memories", memories)
	case exportSec < 0:
		return nil, nil, notSnap("exports nothing")
	}
	for _, g := range sm.globals {
		if exported[g.export] {
			return nil, nil, notSnap("already exports %s", g.export)
		}
	}

	out := make([]byte, 0, len(wasm)+len(sm.globals)*16+16)
	out = append(out, wasm[:wasmHdrSize]...)
	for k, s := range secs {
		switch k {
		case exportSec:
			r := &wasmReader{b: wasm[:s.end], i: s.start}
			n := r.u32()
			body := appendU32(nil, n+uint32(len(sm.globals)))
			body = append(body, wasm[r.i:s.end]...)
			for _, g := range sm.globals {
				body = appendU32(body, uint32(len(g.export)))
				body = append(body, g.export...)
				body = append(body, 3) // global
				body = appendU32(body, g.index)
			}
			out = appendSection(out, s.id, body)
		case dataSec:
			out = appendSection(out, s.id, appendU32(nil, 0))
		default:
			out = appendSection(out, s.id, wasm[s.start:s.end])
		}
	}
	// The segments leave the module: the engine writes them itself, from
	// one copy.
	total := 0
	for _, seg := range sm.segments {
		total += len(seg.data)
	}
	all := make([]byte, 0, total)
	for k := range sm.segments {
		seg := &sm.segments[k]
		p := len(all)
		all = append(all, seg.data...)
		seg.data = all[p:len(all):len(all)]
	}
	return out, sm, nil
}

func appendSection(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = appendU32(out, uint32(len(body)))
	return append(out, body...)
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// wasmReader decodes a WebAssembly binary; the first error sticks and
// every later read returns zero.
type wasmReader struct {
	b   []byte
	i   int
	err error
}

var errTruncated = errors.New("truncated")

func (r *wasmReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.i >= len(r.b) {
		r.err = errTruncated
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

// u32 reads an unsigned LEB128 of at most 32 bits.
func (r *wasmReader) u32() uint32 {
	var v uint32
	for shift := uint(0); ; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 28 && c > 0x0f {
			r.err = errors.New("u32 LEB128 overflows")
			return 0
		}
		v |= uint32(c&0x7f) << shift
		if c < 0x80 {
			return v
		}
	}
}

// sleb reads a signed LEB128 of at most bits bits.
func (r *wasmReader) sleb(bits uint) int64 {
	var v int64
	var shift uint
	for {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift >= bits || shift+7 > 70 {
			r.err = errors.New("signed LEB128 too long")
			return 0
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c < 0x80 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

func (r *wasmReader) name() string {
	n := r.u32()
	if r.err != nil {
		return ""
	}
	if uint64(r.i)+uint64(n) > uint64(len(r.b)) {
		r.err = errTruncated
		return ""
	}
	s := string(r.b[r.i : r.i+int(n)])
	r.i += int(n)
	return s
}

// constVal is a constant expression's first instruction.
type constVal struct {
	op  byte
	val int64
}

// constExpr skips a constant expression and returns its first
// instruction.
func (r *wasmReader) constExpr() (constVal, error) {
	var first constVal
	for k := 0; ; k++ {
		op := r.byte()
		if r.err != nil {
			return first, notSnap("constant expression: %v", r.err)
		}
		if k == 0 {
			first.op = op
		} else if op != 0x0B {
			first.op = 0 // not a single instruction
		}
		switch op {
		case 0x0B: // end
			return first, nil
		case 0x41: // i32.const
			first.val = r.sleb(32)
		case 0x42: // i64.const
			first.val = r.sleb(64)
		case 0x43: // f32.const
			r.skip(4)
		case 0x44: // f64.const
			r.skip(8)
		case 0x23, 0xD2: // global.get, ref.func
			r.u32()
		case 0xD0: // ref.null
			r.byte()
		case 0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E: // extended-const arithmetic
		default:
			return first, notSnap("constant expression opcode %#x", op)
		}
		if k > 64 {
			return first, notSnap("constant expression too long")
		}
	}
}

func (r *wasmReader) skip(n int) {
	if r.err != nil {
		return
	}
	if r.i+n > len(r.b) {
		r.err = errTruncated
		return
	}
	r.i += n
}
