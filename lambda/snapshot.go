package lambda

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// snapshot is a module's state right after its init ran (ADR 0016): its
// linear memory, held in an image sandboxes map copy-on-write, and its
// mutable globals. A sandbox restarted from it skips the init — for a Go
// handler, the Go runtime's start and the package inits.
type snapshot struct {
	size     uint64   // linear memory bytes (whole 64 KiB pages)
	globals  []uint64 // mutable globals, in snapModule.globals order
	img      *snapImage
	resident int64 // bytes of the image's non-zero pages: accounted once

	// The guest's clocks when the snapshot was taken: a restored sandbox's
	// clocks continue from there, so its time never runs backwards.
	nanotime, walltime int64

	// dirty is what the last sandbox paused from this snapshot had
	// dirtied: a starting sandbox is assumed to need about as much.
	dirty atomic.Int64
}

// snapState is a compiled module's snapshot, taken by its first sandbox.
type snapState struct {
	mu     sync.Mutex
	taking bool // a sandbox is running the init to take it
	failed bool // the image could not be made: restarts run the init
	snap   atomic.Pointer[snapshot]
}

// claim returns the snapshot, or reports that the caller should take it.
func (s *snapState) claim() (snap *snapshot, take bool) {
	if snap := s.snap.Load(); snap != nil {
		return snap, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if snap := s.snap.Load(); snap != nil {
		return snap, false
	}
	if s.taking || s.failed {
		return nil, false
	}
	s.taking = true
	return nil, true
}

// done ends a claim: snap is the snapshot taken (nil: none, another
// sandbox may try again unless failed).
func (s *snapState) done(snap *snapshot, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.taking = false
	s.failed = s.failed || failed
	if snap != nil {
		s.snap.Store(snap)
	}
}

// release drops the snapshot (its module is dropped) and returns the
// bytes it was accounted.
func (s *snapState) release() int64 {
	snap := s.snap.Swap(nil)
	if snap == nil {
		return 0
	}
	snap.img.close()
	return snap.resident
}

// Estimates of what a sandbox started from a snapshot dirties before it
// is first measured, and the least it is assumed to.
const (
	snapStartEstimate = 1 << 20
	snapMinEstimate   = 256 << 10
)

func (s *snapshot) estimate() int64 {
	if d := s.dirty.Load(); d > 0 {
		return max(d, snapMinEstimate)
	}
	return snapStartEstimate
}

// guestClock is a sandbox's fake clocks, as wazero's defaults are (every
// reading 1 ms later than the previous one; the wall clock starts at
// 2022-01-01), but starting from a snapshot's readings.
type guestClock struct {
	nanos atomic.Int64
	wall  atomic.Int64
}

const (
	clockTick      = int64(time.Millisecond)
	fakeEpochNanos = 1640995200000 * int64(time.Millisecond)
)

func newGuestClock(snap *snapshot) *guestClock {
	c := &guestClock{}
	if snap != nil {
		c.nanos.Store(snap.nanotime)
		c.wall.Store(snap.walltime)
	} else {
		c.nanos.Store(-clockTick)
		c.wall.Store(fakeEpochNanos - clockTick)
	}
	return c
}

func (c *guestClock) nanotime() int64 { return c.nanos.Add(clockTick) }

func (c *guestClock) walltime() (int64, int32) {
	t := c.wall.Add(clockTick)
	return t / 1e9, int32(t % 1e9)
}

// initModule runs a prepared module's init in a sandbox instantiated
// without start functions: it writes the data segments, as instantiation
// would have, and calls _initialize.
func initModule(ctx context.Context, mod api.Module, sm *snapModule) error {
	mem := mod.Memory()
	for _, seg := range sm.segments {
		if !mem.Write(seg.offset, seg.data) {
			return fmt.Errorf("data segment at %d (%d bytes) is out of bounds of memory (%d bytes)", seg.offset, len(seg.data), mem.Size())
		}
	}
	fn := mod.ExportedFunction(exportInitialize)
	if fn == nil {
		return errors.New("no " + exportInitialize)
	}
	if _, err := fn.Call(ctx); err != nil {
		return fmt.Errorf("%s failed: %w", exportInitialize, err)
	}
	return nil
}

// takeSnapshot captures mod's memory and mutable globals after its init.
func takeSnapshot(mod api.Module, sm *snapModule, clk *guestClock) (*snapshot, error) {
	mem := mod.Memory()
	buf, ok := mem.Read(0, mem.Size())
	if !ok {
		return nil, errors.New("reading memory")
	}
	s := &snapshot{size: uint64(len(buf)), nanotime: clk.nanos.Load(), walltime: clk.wall.Load()}
	for _, g := range sm.globals {
		eg := mod.ExportedGlobal(g.export)
		if eg == nil {
			return nil, fmt.Errorf("global %s not exported", g.export)
		}
		s.globals = append(s.globals, eg.Get())
	}
	img, resident, err := newSnapImage(buf)
	if err != nil {
		return nil, err
	}
	s.img, s.resident = img, resident
	return s, nil
}

// restoreSnapshot puts snap into mod, a sandbox just instantiated without
// start functions: memory grown to the snapshot's size and replaced by
// it (mapped copy-on-write when the sandbox's memory is an mmap
// allocation, else copied), globals set.
func restoreSnapshot(mod api.Module, lm experimental.LinearMemory, sm *snapModule, snap *snapshot) error {
	mem := mod.Memory()
	cur := uint64(mem.Size())
	if cur > snap.size || (snap.size-cur)%65536 != 0 {
		return fmt.Errorf("memory of %d bytes does not fit a snapshot of %d", cur, snap.size)
	}
	if cur < snap.size {
		if _, ok := mem.Grow(uint32((snap.size - cur) / 65536)); !ok {
			return fmt.Errorf("out of memory: growing to the snapshot's %d bytes", snap.size)
		}
	}
	buf, ok := mem.Read(0, uint32(snap.size))
	if !ok {
		return errors.New("reading memory")
	}
	if !mapSnapshot(lm, buf, snap.img) {
		copy(buf, snap.img.bytes())
	}
	for k, g := range sm.globals {
		mg, ok := mod.ExportedGlobal(g.export).(api.MutableGlobal)
		if !ok {
			return fmt.Errorf("global %s not mutable", g.export)
		}
		mg.Set(snap.globals[k])
	}
	return nil
}
