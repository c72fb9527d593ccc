//go:build !linux

package lambda

import "github.com/tetratelabs/wazero/experimental"

// memoryAllocator returns nil elsewhere: wazero's default (Go slices).
func memoryAllocator() experimental.MemoryAllocator { return nil }

// liveMemoryCount is unknown with wazero's allocator.
func liveMemoryCount() int64 { return -1 }
