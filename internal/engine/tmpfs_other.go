//go:build !linux

package engine

// onTmpfs reports whether path is on a tmpfs; only Linux is asked.
func onTmpfs(string) bool { return false }
