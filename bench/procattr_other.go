//go:build !linux

package bench

import "syscall"

// procAttr: other systems have no parent-death signal.
func procAttr() *syscall.SysProcAttr { return nil }
