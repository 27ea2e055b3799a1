//go:build linux || darwin

package filelock

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"

	"github.com/joblock/joblock/lock"
	"golang.org/x/sys/unix"
)

// eachFile opens every lock file in the directory in turn, takes a flock of
// kind how on it and calls fn with what it holds, until fn returns false.
// Files removed meanwhile are skipped.
func (l *Locker) eachFile(ctx context.Context, how int, fn func(v *view, path string) bool) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return pathError("readdir", l.dir, err)
	}
	buf := make([]byte, readBufSize)
	for _, de := range entries {
		if !isLockFile(de.Name()) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		path := filepath.Join(l.dir, de.Name())
		more, err := l.visit(ctx, path, de.Name(), how, &buf, fn)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

func (l *Locker) visit(ctx context.Context, path, name string, how int, buf *[]byte, fn func(v *view, path string) bool) (bool, error) {
	fd, err := unix.Open(path, openFlags, 0)
	if err == unix.ENOENT {
		return true, nil
	}
	if err != nil {
		return false, pathError("open", path, err)
	}
	defer func() { _ = unix.Close(fd) }()
	if err := flock(ctx, fd, how); err != nil {
		return false, pathError("flock", path, err)
	}
	defer func() { _ = unix.Flock(fd, unix.LOCK_UN) }()
	info, err := fstat(fd)
	if err != nil {
		return false, pathError("fstat", path, err)
	}
	if info.nlink == 0 {
		return true, nil
	}
	content, err := readAll(fd, buf)
	if err != nil {
		return false, pathError("read", path, err)
	}
	var id fileID
	_, _ = hex.Decode(id[:], []byte(name[:2*len(id)]))
	return fn(&view{dir: l.dir, id: id, exists: true, content: content, fd: fd, info: info, statted: true}, path), nil
}

// Scan implements lock.Locker, reading each lock file under a shared flock.
// Empty or corrupt files are reported with an empty Key.
func (l *Locker) Scan(ctx context.Context, fn func(lock.Record) bool) error {
	return l.eachFile(ctx, unix.LOCK_SH, func(v *view, _ string) bool {
		// The view is already statted, so toRecord cannot fail.
		rec, _ := l.toRecord(v, readClock(l.cfg.clock))
		return fn(rec)
	})
}

// Cleanup implements lock.Locker. It removes the files of records released
// or expired for at least the cleanup age (see WithCleanupAge), and of
// unreadable files past their grace, each under its exclusive flock, after
// raising the fencing floor above the removed record's token.
func (l *Locker) Cleanup(ctx context.Context) (int, error) {
	var n int
	var ferr error
	err := l.eachFile(ctx, unix.LOCK_EX, func(v *view, path string) bool {
		fence, ok := l.removable(v, readClock(l.cfg.clock))
		if !ok {
			return true
		}
		if fence > 0 {
			if ferr = l.raiseFloor(ctx, fence); ferr != nil {
				return false
			}
		}
		if err := unix.Unlink(path); err != nil {
			ferr = pathError("unlink", path, err)
			return false
		}
		n++
		return true
	})
	if err == nil {
		err = ferr
	}
	return n, err
}

// removable says whether a lock file may be removed, and the fencing token
// its removal must not let a later holder reuse.
func (l *Locker) removable(v *view, now instant) (uint64, bool) {
	rec, ok := parseRecord(v.content)
	if !ok {
		return 0, now.wall.Sub(v.info.mtime) >= l.cfg.corruptGrace+l.cfg.cleanupAge
	}
	if st, _ := rec.judge(now); st == lock.Held {
		return 0, false
	}
	if l.cfg.cleanupAge <= 0 {
		return rec.Fence, true
	}
	// A released record's expiry is its release time.
	return rec.Fence, -rec.remaining(now) >= l.cfg.cleanupAge
}
