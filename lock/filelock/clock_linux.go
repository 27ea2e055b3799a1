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
// id and the boot clock offset of the process's time namespace. Both are
// needed: a time namespace (unshare --time, a container restored by CRIU)
// shifts CLOCK_BOOTTIME by an offset of its own while every namespace
// shares the boot id. The offset itself is the identity, not the
// namespace's id: namespace ids are reused as soon as a namespace is gone,
// by one that may have another offset, while two namespaces with one
// offset read one clock. It returns "" (judge by the wall clock alone)
// when either cannot be read; a kernel without time namespaces has one
// boot clock, and the boot id alone.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	offsets, err := os.ReadFile("/proc/self/timens_offsets")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Readlink("/proc/self/ns/time"); errors.Is(err, fs.ErrNotExist) {
			return id // no time namespaces
		}
		return ""
	case err != nil:
		return ""
	}
	off, ok := boottimeOffset(string(offsets))
	if !ok {
		return ""
	}
	return id + "/boottime" + off
}

// boottimeOffset reads the boottime line of /proc/self/timens_offsets,
// "boottime <seconds> <nanoseconds>", as "<seconds>.<nanoseconds>".
func boottimeOffset(offsets string) (string, bool) {
	for line := range strings.Lines(offsets) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "boottime" {
			return f[1] + "." + f[2], true
		}
	}
	return "", false
}

// bootElapsed reads CLOCK_BOOTTIME: monotonic, and counting suspend.
func bootElapsed() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
