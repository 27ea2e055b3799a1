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

// openFloor opens (creating) the floor file. l.floorMu must be held.
func (l *Locker) openFloor() error {
	if l.floorFD >= 0 {
		return nil
	}
	fd, _, err := l.openLockFile(l.floorPath(), true)
	if err != nil {
		return pathError("open", l.floorPath(), err)
	}
	l.floorFD = fd
	return nil
}

// withFloor runs fn on the floor file's current value under a flock of kind
// how and writes back what fn returns when it differs. floorMu orders this
// process's goroutines, which share one descriptor and so one flock.
func (l *Locker) withFloor(ctx context.Context, how int, fn func(cur uint64) uint64) (uint64, error) {
	path := l.floorPath()
	l.floorMu.Lock()
	defer l.floorMu.Unlock()
	fd, err := l.lockFloor(ctx, how)
	if err != nil {
		return 0, err
	}
	defer func() { _ = unix.Flock(fd, unix.LOCK_UN) }()
	var buf [32]byte
	n, err := unix.Pread(fd, buf[:], 0)
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
	if err := writeAll(fd, append(out, '\n')); err != nil {
		return 0, pathError("write", path, err)
	}
	return next, nil
}

// lockFloor takes a flock of kind how on the floor file and returns its
// descriptor. The descriptor is opened on first need and kept, since the
// file is never removed; if someone removed it anyway, it is opened again,
// so that every Locker agrees on one floor. l.floorMu must be held.
func (l *Locker) lockFloor(ctx context.Context, how int) (int, error) {
	for {
		if err := l.openFloor(); err != nil {
			return -1, err
		}
		fd := l.floorFD
		if err := flock(ctx, fd, how); err != nil {
			return -1, pathError("flock", l.floorPath(), err)
		}
		info, err := fstat(fd)
		if err != nil {
			_ = unix.Flock(fd, unix.LOCK_UN)
			return -1, pathError("fstat", l.floorPath(), err)
		}
		if what := l.strange(info); info.nlink > 0 && what != "" {
			_ = unix.Flock(fd, unix.LOCK_UN)
			return -1, notLockFile(l.floorPath(), what)
		}
		if info.nlink > 0 {
			return fd, nil
		}
		_ = unix.Flock(fd, unix.LOCK_UN)
		_ = unix.Close(fd)
		l.floorFD = -1
	}
}

func (l *Locker) readFloor(ctx context.Context) (uint64, error) {
	return l.withFloor(ctx, unix.LOCK_SH, func(cur uint64) uint64 { return cur })
}

func (l *Locker) raiseFloor(ctx context.Context, fence uint64) error {
	_, err := l.withFloor(ctx, unix.LOCK_EX, func(cur uint64) uint64 { return max(cur, fence) })
	return err
}
