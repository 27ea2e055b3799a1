package filelock

import (
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// bootID is the boot time as the kernel reports it, fixed for one boot.
func bootID() string {
	tv, err := unix.SysctlTimeval("kern.boottime")
	if err != nil {
		return ""
	}
	return strconv.FormatInt(tv.Sec, 10) + "." + strconv.FormatInt(int64(tv.Usec), 10)
}

// bootElapsed reads CLOCK_MONOTONIC, which on macOS counts sleep.
func bootElapsed() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
