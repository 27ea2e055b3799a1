package main

import "syscall"

// commandAttr starts COMMAND in a process group of its own, so that a
// signal reaches the processes it starts too, and has the kernel kill it
// if lockctl dies first (the thread that starts it must live as long).
func commandAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
