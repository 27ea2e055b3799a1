//go:build linux || darwin

package filelock

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// floorName is the file that keeps fencing tokens increasing when lock
// files are removed: it holds the highest fencing token of any removed
// record, and a new lock file starts above it. It is never removed.
const floorName = ".fence"

func (l *Locker) floorPath() string { return filepath.Join(l.dir, floorName) }

// withFloor runs fn on the floor file's current value under a flock of kind
// how and writes back what fn returns when it differs. Like a lock file,
// the floor is opened for each use: only new lock files and cleanup need
// it.
func (l *Locker) withFloor(ctx context.Context, how int, fn func(cur uint64) uint64) (uint64, error) {
	path := l.floorPath()
	var f locked
	for {
		var err error
		f, err = l.openLocked(ctx, path, true, how)
		if err == errRemoved {
			continue
		}
		if err != nil {
			return 0, err
		}
		break
	}
	defer f.close()
	var buf [32]byte
	n, err := unix.Pread(f.fd, buf[:], 0)
	if err != nil {
		return 0, pathError("read", path, err)
	}
	cur, _ := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
	next := fn(cur)
	if next == cur {
		return cur, nil
	}
	out := strconv.AppendUint(nil, next, 10)
	for len(out) < n-1 {
		out = append(out, ' ')
	}
	if err := writeAll(f.fd, append(out, '\n')); err != nil {
		return 0, pathError("write", path, err)
	}
	return next, nil
}

func (l *Locker) readFloor(ctx context.Context) (uint64, error) {
	return l.withFloor(ctx, unix.LOCK_SH, func(cur uint64) uint64 { return cur })
}

func (l *Locker) raiseFloor(ctx context.Context, fence uint64) error {
	_, err := l.withFloor(ctx, unix.LOCK_EX, func(cur uint64) uint64 { return max(cur, fence) })
	return err
}
