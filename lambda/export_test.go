package lambda

import (
	"context"
	"time"

	"github.com/tetratelabs/wazero/experimental"
)

// Reap runs one keep-alive pass now (tests drive the clock).
func Reap(e *Engine) { e.reap() }

// StopPaused stops every paused sandbox (as the keep-alive would).
func StopPaused(e *Engine) { e.shutdown() }

// DropCompiled drops every compiled module no instance uses, making
// those functions cold.
func DropCompiled(e *Engine) {
	e.mu.Lock()
	var mods []*compiled
	for k, c := range e.modules {
		if c.users == 0 && c.cm != nil {
			delete(e.modules, k)
			e.liveBytes -= c.snap.release()
			mods = append(mods, c)
		}
	}
	for _, p := range e.pools {
		p.stopped = 0
	}
	e.mu.Unlock()
	for _, c := range mods {
		_ = c.cm.Close(context.Background())
	}
}

// UseDefaultAllocator switches sandboxes to wazero's default linear memory
// (Go slices) when on, and back to memoryAllocator when off.
func UseDefaultAllocator(on bool) {
	if on {
		allocator = func() experimental.MemoryAllocator { return nil }
	} else {
		allocator = memoryAllocator
	}
}

// LiveMemories returns the sandbox memories allocated and not yet freed
// (-1 where unknown).
func LiveMemories() int64 { return liveMemoryCount() }

// FnCountKey is the system-space key of the registry's function count.
const FnCountKey = fnCountKey

// SnapshotBytes returns the size of the snapshot of the function's
// current module on this node and the bytes it is accounted (ok false:
// none taken, or the module is not prepared for one).
func SnapshotBytes(e *Engine, name string) (size, resident int64, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pools[name]
	if p == nil {
		return 0, 0, false
	}
	c := e.modules[compiledKey(p.fn)]
	if c == nil {
		return 0, 0, false
	}
	s := c.snap.snap.Load()
	if s == nil {
		return 0, 0, false
	}
	return int64(s.size), s.resident, true
}

// PrepareSnapshot exposes the module rewrite to tests.
func PrepareSnapshot(wasm []byte) ([]byte, bool) {
	out, _, err := prepareSnapshot(wasm)
	return out, err == nil
}

// Sample records the series' interval ending at t now.
func Sample(e *Engine, t time.Time) { e.sample(t) }
