//go:build linux || darwin

package filelock

import (
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/joblock/joblock/lock"
	"golang.org/x/sys/unix"
)

// visitor receives what eachFile finds: a lock file under its flock, a
// slots file, or an entry named like one that cannot be used (what says
// why, e.g. "a symlink"). Each returns false to stop.
type visitor struct {
	file  func(v *view, name string) bool
	slots func(s *slots, name string) bool
	// skip is shown an entry that is not read: what it is, and whether
	// it is a stray (not a lock file at all) rather than a lock file this
	// process could not read now (busy, or not its to open), whose
	// record may be live.
	skip func(name, what string, stray bool) bool
	// temp, if set, is shown the name of every file left by publish.
	temp func(name string)
}

// eachFile opens every lock and slots file in the directory in turn, for
// reading only, takes a flock of kind how on it and shows it to vis, until
// vis says stop. Files removed meanwhile are passed over. Entries that are
// not lock files, that this process may not open, or whose flock another
// process keeps for the busy wait are shown to vis.skip, so that none of
// them stops a scan.
func (l *Locker) eachFile(ctx context.Context, how int, vis visitor) error {
	entries, err := l.readDir()
	if err != nil {
		return pathError("readdir", l.dir, err)
	}
	s := l.getScratch()
	defer l.scratch.Put(s)
	for _, de := range entries {
		name := de.Name()
		lockFile, slotsFile := isLockFile(name), isSlotsFile(name)
		if !lockFile && !slotsFile {
			more := true
			switch {
			case isTempFile(name) && vis.temp != nil:
				vis.temp(name)
			case looksLikeLockFile(name) || isSlotsFile(lowerStem(name)):
				more = vis.skip(name, "named in uppercase hex, as this engine never names a file", true)
			}
			if !more {
				return nil
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if t := de.Type(); !t.IsRegular() {
			if !vis.skip(name, typeName(t), true) {
				return nil
			}
			continue
		}
		visit := l.visit
		if slotsFile {
			visit = l.visitSlots
		}
		more, err := visit(ctx, name, how, s, vis)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

// readDir lists the lock directory through its descriptor.
func (l *Locker) readDir() ([]fs.DirEntry, error) {
	fd, err := l.openat(".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), l.dir)
	defer f.Close()
	return f.ReadDir(-1)
}

// lowerStem is name with its hex digits lowercased, to recognise a slots
// file named in uppercase.
func lowerStem(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// openEntry opens a directory entry for a visit under a flock of kind
// how. When open is false the visit of this entry is over (it is gone,
// was shown to vis.skip, or failed with err), and more says whether to go
// on.
func (l *Locker) openEntry(ctx context.Context, name string, how int, vis visitor) (f locked, open, more bool, err error) {
	f, err = l.openLocked(ctx, name, scanFlags, how)
	var stray *notLockFileError
	var busy *busyError
	switch {
	case err == nil:
		return f, true, true, nil
	case err == errMissing || err == errRemoved:
		return f, false, true, nil
	case errors.As(err, &stray):
		return f, false, vis.skip(name, stray.what, true), nil
	case errors.As(err, &busy):
		return f, false, vis.skip(name, "busy: another process has held its flock for over "+l.cfg.busyWait.String()+
			" (stopped or stuck mid-operation; its lock may be live: do not remove it)", false), nil
	case isPermission(err):
		return f, false, vis.skip(name, "a file this process may not open", false), nil
	}
	return f, false, false, err
}

func (l *Locker) visit(ctx context.Context, name string, how int, s *scratch, vis visitor) (bool, error) {
	f, open, more, err := l.openEntry(ctx, name, how, vis)
	if !open {
		return more, err
	}
	defer f.close()
	content, oversized, err := readRecord(f.fd, s.buf)
	if err != nil {
		return false, pathError("read", l.path(name), err)
	}
	var id fileID
	_, _ = hex.Decode(id[:], []byte(name[:2*len(id)]))
	s.v.found(id, content, oversized, &f.info)
	return vis.file(&s.v, name), nil
}

// visitSlots shows a slots file to vis; one that does not parse is shown
// to vis.skip.
func (l *Locker) visitSlots(ctx context.Context, name string, how int, _ *scratch, vis visitor) (bool, error) {
	f, open, more, err := l.openEntry(ctx, name, how, vis)
	if !open {
		return more, err
	}
	defer f.close()
	content, oversized, err := readSlots(f)
	if err != nil {
		return false, pathError("read", l.path(name), err)
	}
	var sl slots
	if oversized || !sl.parse(content) {
		if len(content) == 0 && !oversized {
			return true, nil // being created
		}
		return vis.skip(name, "not a slots file", true), nil
	}
	return vis.slots(&sl, name), nil
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
// Note; entries that cannot be read as lock files (symlinks, directories,
// FIFOs, files with hard links, files this process may not open, files
// another process keeps busy, names in uppercase hex) as lock.Skipped
// records. The lock file of a key held by slots is not reported: its
// slots are.
func (l *Locker) Scan(ctx context.Context, fn func(lock.Record) bool) error {
	if err := l.enter(); err != nil {
		return err
	}
	defer l.leave()
	return l.eachFile(ctx, unix.LOCK_SH, visitor{
		file: func(v *view, _ string) bool {
			now := readClock(l.cfg.clock)
			var old looked
			if l.look(v, now, &old); old.ok && old.rec.isMarker() {
				return true
			}
			return fn(l.toRecord(v, &old, now))
		},
		slots: func(s *slots, _ string) bool {
			for _, r := range s.records(readClock(l.cfg.clock)) {
				if !fn(r) {
					return false
				}
			}
			return true
		},
		skip: func(name, what string, stray bool) bool {
			note := name + " is " + what
			if stray {
				note += ", not a lock file"
			}
			return fn(lock.Record{State: lock.Skipped, Note: note})
		},
	})
}

// Cleanup implements lock.Locker. It removes the files of records released
// or expired for at least the cleanup age (see WithCleanupAge), and of
// unreadable files past their grace, each under its exclusive flock, once
// the fencing floor has covered the removed record's token for
// floorFresh (see floorCache): records whose token the floor already
// covered when Cleanup began go at once, the others after one wait at the
// end. Entries that are not lock files, or that cannot be opened or
// flocked, are left alone.
func (l *Locker) Cleanup(ctx context.Context) (int, error) {
	if err := l.enter(); err != nil {
		return 0, err
	}
	defer l.leave()
	covered, err := l.raiseFloor(ctx, l.wallMicros())
	if err != nil {
		return 0, err
	}
	start := time.Now()
	c := cleanup{l: l, ctx: ctx, covered: covered, since: start}
	if err := l.eachFile(ctx, unix.LOCK_EX, c.visitor(true)); err != nil {
		return c.n, err
	}
	if c.err != nil || len(c.pending) == 0 {
		return c.n, c.err
	}
	// The rest: cover them, wait, then remove those still removable.
	if c.maxPending > c.covered {
		if c.covered, c.err = l.raiseFloor(ctx, c.maxPending); c.err != nil {
			return c.n, c.err
		}
		c.since = time.Now()
	}
	if err := sleep(ctx, floorFresh-time.Since(c.since)); err != nil {
		return c.n, err
	}
	pending := c.pending
	c.pending = nil
	for _, name := range pending {
		if _, err := c.visitOne(name); err != nil || c.err != nil {
			return c.n, errors.Join(err, c.err)
		}
	}
	return c.n, nil
}

// cleanup is one Cleanup's state.
type cleanup struct {
	l          *Locker
	ctx        context.Context
	covered    uint64    // the floor as of since
	since      time.Time // when the floor was covered
	pending    []string  // removable, waiting for the floor to cover them
	maxPending uint64
	n          int
	err        error
}

func (c *cleanup) visitor(canWait bool) visitor {
	l := c.l
	return visitor{
		file: func(v *view, name string) bool {
			fence, ok := l.removable(v, readClock(l.cfg.clock))
			return !ok || c.remove(fence, name, canWait)
		},
		slots: func(s *slots, name string) bool {
			fence, ok := s.removable(readClock(l.cfg.clock), l.cfg.cleanupAge)
			return !ok || c.remove(fence, name, canWait)
		},
		skip: func(string, string, bool) bool { return true },
		temp: c.removeTemp,
	}
}

// visitOne visits the entry name again, removing it if it still may be.
func (c *cleanup) visitOne(name string) (bool, error) {
	l, vis := c.l, c.visitor(false)
	s := l.getScratch()
	defer l.scratch.Put(s)
	if isSlotsFile(name) {
		return l.visitSlots(c.ctx, name, unix.LOCK_EX, s, vis)
	}
	return l.visit(c.ctx, name, unix.LOCK_EX, s, vis)
}

// remove removes the file name, whose record has token fence (0: none
// known) and which the caller holds under flock, if the floor has covered
// fence for floorFresh; otherwise, if canWait is set, it puts it off.
func (c *cleanup) remove(fence uint64, name string, canWait bool) bool {
	if fence > 0 && (fence > c.covered || time.Since(c.since) < floorFresh) {
		if canWait {
			c.pending = append(c.pending, name)
			c.maxPending = max(c.maxPending, fence)
		}
		return true
	}
	if err := unix.Unlinkat(c.l.dirfd, name, 0); err != nil {
		c.err = pathError("unlink", c.l.path(name), err)
		return false
	}
	if id, err := hex.DecodeString(name[:32]); err == nil {
		c.l.forget(fileID(id))
	}
	c.n++
	return true
}

// removeTemp removes a file publish left behind when its process died,
// once it is older than the corrupt-file grace (publish takes
// microseconds). It is never opened: an unlink removes whatever it is.
func (c *cleanup) removeTemp(name string) {
	var st unix.Stat_t
	if unix.Fstatat(c.l.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	info := infoOf(&st)
	if info.regular && c.l.corruptRemaining(info, c.l.cfg.clock.Now()) < 0 {
		_ = unix.Unlinkat(c.l.dirfd, name, 0)
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// removable says whether a lock file may be removed, and the fencing token
// its removal must not let a later holder reuse.
func (l *Locker) removable(v *view, now instant) (uint64, bool) {
	rec, ok := l.parseAt(v, now)
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
