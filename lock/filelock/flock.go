//go:build linux || darwin

package filelock

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// busyError is an ErrBusy naming the file.
type busyError struct {
	path string
	wait time.Duration
}

func (e *busyError) Error() string {
	return "filelock: " + e.path + " is busy: another process has held its flock for over " + e.wait.String() +
		" (a process stopped or stuck in the middle of an operation on it)"
}

func (e *busyError) Is(target error) bool { return target == ErrBusy }

// flock takes a flock of kind how on fd without blocking the thread. Other
// holders keep it for microseconds, so it polls, backing off, until it
// has it, ctx ends, or the busy wait (WithBusyWait) is over: a process
// stopped (SIGSTOP, a debugger) or stuck while it holds the flock must
// not hang every operation on the file. It returns errBusyWait then, for
// the caller to name the file.
func (l *Locker) flock(ctx context.Context, fd, how int) error {
	err := tryFlock(fd, how|unix.LOCK_NB)
	if err == nil {
		return nil
	}
	deadline := time.Now().Add(l.cfg.busyWait)
	pause := 5 * time.Microsecond
	for {
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !time.Now().Before(deadline) {
			return errBusyWait
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
		if err = tryFlock(fd, how|unix.LOCK_NB); err == nil {
			return nil
		}
	}
}

// errBusyWait: flock's wait is over; openLocked turns it into a
// *busyError naming the file.
var errBusyWait = errors.New("filelock: busy")
