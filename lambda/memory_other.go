//go:build !linux

package lambda

import (
	"github.com/tetratelabs/wazero/experimental"
)

// memoryAllocator returns nil elsewhere: wazero's default (Go slices).
func memoryAllocator() experimental.MemoryAllocator { return nil }

// liveMemoryCount is unknown with wazero's allocator.
func liveMemoryCount() int64 { return -1 }

// snapImage is a snapshot's memory, copied into every sandbox restored
// from it.
type snapImage struct{ b []byte }

func newSnapImage(mem []byte) (*snapImage, int64, error) {
	b := append([]byte(nil), mem...)
	return &snapImage{b: b}, int64(len(b)), nil
}

func (img *snapImage) bytes() []byte { return img.b }

func (img *snapImage) close() {}

// mapSnapshot cannot map: the caller copies.
func mapSnapshot(experimental.LinearMemory, []byte, *snapImage) bool { return false }

// privateBytes is unknown: the caller counts the whole memory.
func privateBytes(experimental.LinearMemory, uint64) (int64, bool) { return 0, false }
