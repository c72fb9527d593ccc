//go:build linux

package lambda

import (
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// mmapAllocator backs each sandbox's linear memory with its own anonymous
// mapping of the memory cap, reserved up front (MAP_NORESERVE: pages cost
// nothing until touched). Growing the memory then never copies it — with
// Go-slice memory every memory.grow during the Go runtime's start copies
// the whole memory, which dominated instantiation.
//
// Freed mappings are kept for reuse, up to poolBytes of touched memory in
// all: a fresh mapping page-faults on every first touch, while a reused
// one only needs the bytes its last user touched cleared.
//
// A mapping is freed when wazero closes its instance, which the engine does
// only once no call runs in it (see Engine.Close).
type mmapAllocator struct{}

const poolBytes = 256 << 20

// liveMemories counts memories handed out and not yet freed (tests check
// that every sandbox's memory is returned).
var liveMemories atomic.Int64

var memPool struct {
	sync.Mutex
	free  map[uint64][]*mmapMemory // by mapping size
	bytes uint64                   // touched bytes held in free
}

func (mmapAllocator) Allocate(capacity, max uint64) experimental.LinearMemory {
	liveMemories.Add(1)
	if max == 0 || max > 1<<36 {
		return &sliceMemory{max: max}
	}
	memPool.Lock()
	if l := memPool.free[max]; len(l) > 0 {
		m := l[len(l)-1]
		memPool.free[max] = l[:len(l)-1]
		memPool.bytes -= m.used
		memPool.Unlock()
		clear(m.buf[:m.used])
		m.used, m.freed = 0, false
		return m
	}
	memPool.Unlock()
	b, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
	if err != nil {
		return &sliceMemory{max: max} // no mapping: grow by copying, as wazero does
	}
	return &mmapMemory{buf: b}
}

type mmapMemory struct {
	buf   []byte
	used  uint64 // high-water length handed out
	freed bool   // Free ran (a second Free is a no-op)
}

func (m *mmapMemory) Reallocate(size uint64) []byte {
	if m.buf == nil || size > uint64(len(m.buf)) {
		return nil
	}
	m.used = max(m.used, size)
	return m.buf[:size]
}

func (m *mmapMemory) Free() {
	if m.buf == nil || m.freed {
		return
	}
	m.freed = true
	liveMemories.Add(-1)
	size := uint64(len(m.buf))
	memPool.Lock()
	if memPool.bytes+m.used <= poolBytes {
		if memPool.free == nil {
			memPool.free = map[uint64][]*mmapMemory{}
		}
		memPool.free[size] = append(memPool.free[size], m)
		memPool.bytes += m.used
		memPool.Unlock()
		return
	}
	memPool.Unlock()
	_ = syscall.Munmap(m.buf)
	m.buf = nil
}

// sliceMemory is linear memory in a Go slice, grown by copying.
type sliceMemory struct {
	buf []byte
	max uint64
}

func (m *sliceMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size > uint64(cap(m.buf)) {
		nb := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.max))
		copy(nb, m.buf)
		m.buf = nb
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *sliceMemory) Free() {
	if m.buf != nil || m.max > 0 {
		liveMemories.Add(-1)
	}
	m.buf, m.max = nil, 0
}

func memoryAllocator() experimental.MemoryAllocator { return mmapAllocator{} }

// liveMemoryCount returns the sandbox memories not yet freed.
func liveMemoryCount() int64 { return liveMemories.Load() }
