//go:build unix

package main

import (
	"os"
	"syscall"
)

// signalGroup sends sig to the process group COMMAND leads.
func signalGroup(p *os.Process, sig syscall.Signal) error { return syscall.Kill(-p.Pid, sig) }
