//go:build linux

package lambda

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
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
		memPool.bytes -= m.used - m.fresh
		memPool.Unlock()
		if m.used > m.fresh {
			clear(m.buf[m.fresh:m.used])
		}
		m.used, m.fresh, m.freed = 0, 0, false
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
	// overlay is the length of the snapshot image mapped over the start
	// of buf (0: none); fresh is the length at the start of buf that Free
	// replaced with untouched anonymous memory.
	overlay, fresh uint64
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
	if m.overlay > 0 {
		// Drop the snapshot's mapping and the pages copied from it:
		// clearing them would copy every page of the snapshot instead.
		if _, err := unix.MmapPtr(-1, 0, unsafe.Pointer(&m.buf[0]), uintptr(m.overlay), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED); err != nil {
			_ = syscall.Munmap(m.buf)
			m.buf = nil
			return
		}
		m.fresh, m.overlay = m.overlay, 0
	}
	memPool.Lock()
	if touched := m.used - min(m.used, m.fresh); memPool.bytes+touched <= poolBytes {
		if memPool.free == nil {
			memPool.free = map[uint64][]*mmapMemory{}
		}
		m.fresh = min(m.fresh, m.used)
		memPool.free[size] = append(memPool.free[size], m)
		memPool.bytes += touched
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

// snapImage is a snapshot's memory in a memfd: sandboxes map it
// copy-on-write (MAP_PRIVATE), so its pages are shared by every sandbox
// until one writes to them. Only non-zero pages are written: zero pages
// stay holes.
type snapImage struct {
	fd   int
	view []byte // read-only shared mapping, for sandboxes that copy
}

func newSnapImage(mem []byte) (*snapImage, int64, error) {
	fd, err := unix.MemfdCreate("lambdadb-snapshot", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, 0, err
	}
	img := &snapImage{fd: fd}
	if err := unix.Ftruncate(fd, int64(len(mem))); err != nil {
		img.close()
		return nil, 0, err
	}
	page := os.Getpagesize()
	var resident int64
	for off := 0; off < len(mem); {
		if isZero(mem[off:min(off+page, len(mem))]) {
			off += page
			continue
		}
		end := off + page
		for end < len(mem) && !isZero(mem[end:min(end+page, len(mem))]) {
			end += page
		}
		end = min(end, len(mem))
		for w := off; w < end; {
			n, err := unix.Pwrite(fd, mem[w:end], int64(w))
			if err != nil {
				img.close()
				return nil, 0, err
			}
			w += n
		}
		resident += int64(end - off)
		off = end
	}
	if len(mem) > 0 {
		if img.view, err = unix.Mmap(fd, 0, len(mem), unix.PROT_READ, unix.MAP_SHARED); err != nil {
			img.close()
			return nil, 0, err
		}
	}
	return img, resident, nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (img *snapImage) bytes() []byte { return img.view }

func (img *snapImage) close() {
	if img == nil {
		return
	}
	if img.view != nil {
		_ = unix.Munmap(img.view)
		img.view = nil
	}
	if img.fd >= 0 {
		_ = unix.Close(img.fd)
		img.fd = -1
	}
}

// mapSnapshot maps img copy-on-write over buf, the start of lm's
// memory, and reports whether it could (else the caller copies).
func mapSnapshot(lm experimental.LinearMemory, buf []byte, img *snapImage) bool {
	m, ok := lm.(*mmapMemory)
	if !ok || len(buf) == 0 || m.buf == nil || len(buf) > len(m.buf) || unsafe.SliceData(buf) != unsafe.SliceData(m.buf) {
		return false
	}
	if _, err := unix.MmapPtr(img.fd, 0, unsafe.Pointer(&m.buf[0]), uintptr(len(buf)), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_FIXED); err != nil {
		return false
	}
	m.overlay = max(m.overlay, uint64(len(buf)))
	return true
}

var pagemap struct {
	once sync.Once
	f    *os.File
	buf  sync.Pool
}

// Bits of a /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
	pmFile    = 1 << 61 // file page or shared anonymous
)

// privateBytes returns the bytes of lm's first size bytes that are the
// sandbox's own — written to (a snapshot page copied on write, an
// anonymous page touched) — as /proc/self/pagemap tells. ok is false when
// it cannot tell.
func privateBytes(lm experimental.LinearMemory, size uint64) (n int64, ok bool) {
	m, isMmap := lm.(*mmapMemory)
	if !isMmap || m.buf == nil || m.freed {
		return 0, false
	}
	pagemap.once.Do(func() {
		if f, err := os.Open("/proc/self/pagemap"); err == nil {
			pagemap.f = f
		}
	})
	if pagemap.f == nil {
		return 0, false
	}
	page := uint64(os.Getpagesize())
	size = min(size, uint64(len(m.buf)))
	pages := int((size + page - 1) / page)
	bp, _ := pagemap.buf.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer pagemap.buf.Put(bp)
	const chunk = 4096 // entries per read
	if cap(*bp) < chunk*8 {
		*bp = make([]byte, chunk*8)
	}
	first := int64(uintptr(unsafe.Pointer(&m.buf[0])) / uintptr(page))
	for done := 0; done < pages; {
		k := min(pages-done, chunk)
		b := (*bp)[:k*8]
		if _, err := pagemap.f.ReadAt(b, (first+int64(done))*8); err != nil {
			return 0, false
		}
		for i := 0; i < k; i++ {
			e := binary.NativeEndian.Uint64(b[i*8:])
			if e&pmSwapped != 0 || e&pmPresent != 0 && e&pmFile == 0 {
				n += int64(page)
			}
		}
		done += k
	}
	return n, true
}
