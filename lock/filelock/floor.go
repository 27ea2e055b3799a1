//go:build linux || darwin

package filelock

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// floorName is the file that keeps fencing tokens increasing when lock
// files are removed: it holds a token at least as high as that of any
// removed record, and a new lock file starts above it. It is never
// removed. A new floor file starts at the wall clock in microseconds, and
// a new lock file above that clock too, so tokens keep rising even across
// a lost directory (a tmpfs after a reboot), as long as the clock does.
const floorName = ".fence"

// floorFresh is how long a Locker uses a floor it read without reading it
// again; see floorCache.
const floorFresh = 10 * time.Millisecond

// floorCache is a Locker's last reading of the floor file.
//
// Why a reading up to floorFresh old is enough: a key's new lock file needs
// a token above every token the key had before, and those tokens are
// either in a file that exists, or were folded into the floor by the
// Cleanup that removed their file, before it unlinked it. Cleanup unlinks
// a file only once the floor has covered its token for floorFresh (see
// Cleanup). A new file is created (linked) only after the old one was
// unlinked, since its name must be free; so when a creator checks, after
// its link succeeded, that the reading it used began less than floorFresh
// ago, that reading began after the floor covered the old token, and saw
// it. A creator whose reading turns out older reads the floor again and,
// if its file's token is not above it, writes a higher one before it
// returns the lease (confirmFence).
type floorCache struct {
	mu    sync.Mutex
	value uint64
	at    time.Time // when the reading began; zero: none yet
}

// floorPath is the floor file's path, for errors.
func (l *Locker) floorPath() string { return l.path(floorName) }

// withFloor runs fn on the floor file's current value under a flock of kind
// how and writes back what fn returns when it differs. A value that does
// not parse, or is over maxFence, counts as none: it was not written by
// this engine, and a floor restarts, like a lost one, from the wall clock
// (see freshFence). Like a lock file, the floor is opened for each use.
func (l *Locker) withFloor(ctx context.Context, how int, fn func(cur uint64) uint64) (uint64, error) {
	var f locked
	for {
		var err error
		f, err = l.openLocked(ctx, floorName, lockFlags|unix.O_CREAT, how)
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
		return 0, pathError("read", l.floorPath(), err)
	}
	cur, err := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
	if err != nil || cur > maxFence {
		cur = 0
	}
	next := fn(cur)
	if next == cur {
		return cur, nil
	}
	out := strconv.AppendUint(nil, next, 10)
	for len(out) < n-1 {
		out = append(out, ' ')
	}
	if err := l.writeSized(f.fd, append(out, '\n'), int64(n)); err != nil {
		return 0, pathError("write", l.floorPath(), err)
	}
	return next, nil
}

// readFloor reads the floor file, starting it at the wall clock if it is
// missing or holds no valid value, and caches what it read.
func (l *Locker) readFloor(ctx context.Context) (uint64, time.Time, error) {
	at := time.Now()
	v, err := l.withFloor(ctx, unix.LOCK_SH, func(cur uint64) uint64 { return cur })
	if err == nil && v == 0 {
		v, err = l.withFloor(ctx, unix.LOCK_EX, func(cur uint64) uint64 { return max(cur, l.wallMicros()) })
	}
	if err != nil {
		return 0, time.Time{}, err
	}
	l.floor.mu.Lock()
	if at.After(l.floor.at) {
		l.floor.value, l.floor.at = v, at
	}
	l.floor.mu.Unlock()
	return v, at, nil
}

// cachedFloor returns the floor and when the reading began, reading it
// again if the cached reading is floorFresh old.
func (l *Locker) cachedFloor(ctx context.Context) (uint64, time.Time, error) {
	l.floor.mu.Lock()
	v, at := l.floor.value, l.floor.at
	l.floor.mu.Unlock()
	if !at.IsZero() && time.Since(at) < floorFresh {
		return v, at, nil
	}
	return l.readFloor(ctx)
}

// raiseFloor raises the floor to at least fence and returns the floor
// after the raise.
func (l *Locker) raiseFloor(ctx context.Context, fence uint64) (uint64, error) {
	return l.withFloor(ctx, unix.LOCK_EX, func(cur uint64) uint64 { return max(cur, fence) })
}

// wallMicros is the wall clock in microseconds, or 0 if it is before 1970
// or past maxFence (year 2255).
func (l *Locker) wallMicros() uint64 {
	us := l.cfg.clock.Now().UnixMicro()
	if us < 0 || us > maxFence {
		return 0
	}
	return uint64(us)
}
