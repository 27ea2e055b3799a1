package filelock

import "golang.org/x/sys/unix"

// tryFlock is flock(2) for calls that cannot block (LOCK_NB, LOCK_UN).
func tryFlock(fd, how int) error { return unix.Flock(fd, how) }
