//go:build linux || darwin

package filelock

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/joblock/joblock/lock"
	"golang.org/x/sys/unix"
)

// visitor receives what eachFile finds: a lock file under its flock, or
// an entry named like one that is not one (what says what it is, e.g. "a
// symlink"). Either returns false to stop.
type visitor struct {
	file  func(v *view, path string) bool
	slots func(s *slots, path string) bool
	skip  func(name, what string) bool
}

// eachFile opens every lock file in the directory in turn, takes a flock of
// kind how on it and shows it to vis, until vis says stop. Files removed
// meanwhile are passed over; entries that are not lock files are shown to
// vis.skip and never opened for writing.
func (l *Locker) eachFile(ctx context.Context, how int, vis visitor) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return pathError("readdir", l.dir, err)
	}
	s := l.getScratch()
	defer l.scratch.Put(s)
	for _, de := range entries {
		lockFile, slotsFile := isLockFile(de.Name()), isSlotsFile(de.Name())
		if !lockFile && !slotsFile {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if t := de.Type(); !t.IsRegular() {
			if !vis.skip(de.Name(), typeName(t)) {
				return nil
			}
			continue
		}
		visit := l.visit
		if slotsFile {
			visit = l.visitSlots
		}
		more, err := visit(ctx, de.Name(), how, s, vis)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

// openEntry opens a directory entry for a visit under a flock of kind
// how. When open is false the visit of this entry is over (it is gone,
// was shown to vis.skip as not a lock file, or failed with err), and more
// says whether to go on.
func (l *Locker) openEntry(ctx context.Context, name string, how int, vis visitor) (f locked, path string, open, more bool, err error) {
	path = filepath.Join(l.dir, name)
	f, err = l.openLocked(ctx, path, false, how)
	var stray *notLockFileError
	switch {
	case err == errMissing || err == errRemoved:
		return f, path, false, true, nil
	case errors.As(err, &stray):
		return f, path, false, vis.skip(name, stray.what), nil
	case err != nil:
		return f, path, false, false, err
	}
	return f, path, true, true, nil
}

func (l *Locker) visit(ctx context.Context, name string, how int, s *scratch, vis visitor) (bool, error) {
	f, path, open, more, err := l.openEntry(ctx, name, how, vis)
	if !open {
		return more, err
	}
	defer f.close()
	content, oversized, err := readRecord(f.fd, s.buf)
	if err != nil {
		return false, pathError("read", path, err)
	}
	var id fileID
	_, _ = hex.Decode(id[:], []byte(name[:2*len(id)]))
	s.v = view{dir: l.dir, id: id, exists: true, content: content, oversized: oversized, info: f.info}
	return vis.file(&s.v, path), nil
}

// visitSlots shows a slots file to vis; one that does not parse is shown
// to vis.skip.
func (l *Locker) visitSlots(ctx context.Context, name string, how int, _ *scratch, vis visitor) (bool, error) {
	f, path, open, more, err := l.openEntry(ctx, name, how, vis)
	if !open {
		return more, err
	}
	defer f.close()
	buf := make([]byte, maxSlotsSize+1)
	content, oversized, err := readRecord(f.fd, buf)
	if err != nil {
		return false, pathError("read", path, err)
	}
	var sl slots
	if oversized || json.Unmarshal(content, &sl) != nil || sl.Key == "" {
		if len(content) == 0 && !oversized {
			return true, nil // being created
		}
		return vis.skip(name, "not a slots file"), nil
	}
	return vis.slots(&sl, path), nil
}

// typeName names a directory entry's type as fileInfo.kind does.
func typeName(t fs.FileMode) string {
	switch {
	case t&fs.ModeSymlink != 0:
		return "a symlink"
	case t.IsDir():
		return "a directory"
	case t&fs.ModeNamedPipe != 0:
		return "a fifo"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeDevice != 0:
		return "a device"
	}
	return "a file of unknown type"
}

// Scan implements lock.Locker, reading each lock file under a shared flock.
// Empty, corrupt or oversized files are reported with an empty Key and a
// Note; entries named like lock files that are not lock files (symlinks,
// directories, FIFOs, files with hard links) as lock.Skipped records.
func (l *Locker) Scan(ctx context.Context, fn func(lock.Record) bool) error {
	return l.eachFile(ctx, unix.LOCK_SH, visitor{
		file: func(v *view, _ string) bool { return fn(l.toRecord(v, readClock(l.cfg.clock))) },
		slots: func(s *slots, _ string) bool {
			for _, r := range s.records(readClock(l.cfg.clock)) {
				if !fn(r) {
					return false
				}
			}
			return true
		},
		skip: func(name, what string) bool {
			return fn(lock.Record{State: lock.Skipped, Note: name + " is " + what + ", not a lock file"})
		},
	})
}

// Cleanup implements lock.Locker. It removes the files of records released
// or expired for at least the cleanup age (see WithCleanupAge), and of
// unreadable files past their grace, each under its exclusive flock, after
// raising the fencing floor above the removed record's token. Entries that
// are not lock files are left alone.
func (l *Locker) Cleanup(ctx context.Context) (int, error) {
	var n int
	var ferr error
	remove := func(fence uint64, path string) bool {
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
	}
	err := l.eachFile(ctx, unix.LOCK_EX, visitor{
		file: func(v *view, path string) bool {
			fence, ok := l.removable(v, readClock(l.cfg.clock))
			return !ok || remove(fence, path)
		},
		slots: func(s *slots, path string) bool {
			fence, ok := s.removable(readClock(l.cfg.clock), l.cfg.cleanupAge)
			return !ok || remove(fence, path)
		},
		skip: func(string, string) bool { return true },
	})
	if err == nil {
		err = ferr
	}
	return n, err
}

// removable says whether a lock file may be removed, and the fencing token
// its removal must not let a later holder reuse.
func (l *Locker) removable(v *view, now instant) (uint64, bool) {
	rec, ok := v.parse()
	if !ok {
		return 0, l.corruptRemaining(v.info, now.wall) <= -l.cfg.cleanupAge
	}
	if st, _ := rec.judge(now); st == lock.Held {
		return 0, false
	}
	if l.cfg.cleanupAge <= 0 {
		return rec.Fence, true
	}
	// A released record's expiry is its release time.
	return rec.Fence, rec.remaining(now) <= -l.cfg.cleanupAge
}
