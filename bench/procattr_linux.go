package bench

import "syscall"

// procAttr kills a server if the benchmark dies, so none outlives a run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
