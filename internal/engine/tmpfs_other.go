//go:build !linux

package engine

// onTmpfs reports whether path is on a tmpfs; only Linux is asked.
func onTmpfs(string) bool { return false }

// writable is only asked of a tmpfs, which only Linux reports.
func writable(string) bool { return false }
