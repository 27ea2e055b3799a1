//go:build unix && !linux

package main

import "syscall"

// commandAttr starts COMMAND in a process group of its own, so that a
// signal reaches the processes it starts too.
func commandAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
