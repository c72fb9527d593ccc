package chaos

import "syscall"

// procAttr kills a node if the harness dies, so no process outlives a run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
