package filelock

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// bootID identifies the boot clock this process reads: the kernel's boot
// id and the process's time namespace. Both are needed: a time namespace
// (unshare --time, a container restored by CRIU) shifts CLOCK_BOOTTIME by
// an offset of its own while every namespace shares the boot id, so two
// processes compare boot clock readings only if both match. It returns ""
// (judge by the wall clock alone) when either cannot be read; a kernel
// without time namespaces has one boot clock, and the boot id alone.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	ns, err := os.Readlink("/proc/self/ns/time")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return id
	case err != nil:
		return ""
	}
	return id + "/" + ns
}

// bootElapsed reads CLOCK_BOOTTIME: monotonic, and counting suspend.
func bootElapsed() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
