//go:build !linux

package lambda

import "github.com/tetratelabs/wazero/experimental"

// memoryAllocator returns nil elsewhere: wazero's default (Go slices).
func memoryAllocator() experimental.MemoryAllocator { return nil }
