//go:build !linux

package filelock_test

// runTimeNSChild: time namespaces exist on Linux only.
func runTimeNSChild() bool { return false }
