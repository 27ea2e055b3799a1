//go:build !unix

package main

import (
	"os"
	"syscall"
)

// commandAttr has nothing to add where there are no process groups.
func commandAttr() *syscall.SysProcAttr { return nil }

// signalGroup ends COMMAND: without process groups, only it.
func signalGroup(p *os.Process, _ syscall.Signal) error { return p.Kill() }
