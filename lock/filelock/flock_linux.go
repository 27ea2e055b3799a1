package filelock

import "golang.org/x/sys/unix"

// tryFlock is flock(2) for calls that cannot block (LOCK_NB, LOCK_UN). A
// raw system call skips the scheduler hand-off that a blocking call needs,
// which is a measurable share of a lock operation.
func tryFlock(fd, how int) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_FLOCK, uintptr(fd), uintptr(how), 0); errno != 0 {
		return errno
	}
	return nil
}
