//go:build linux || darwin

package filelock

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/joblock/joblock/lock"
	"golang.org/x/sys/unix"
)

// Locker is the file engine. It implements lock.Locker and is safe for
// concurrent use by goroutines and by processes sharing the directory.
type Locker struct {
	dir   string
	dirfd int // the lock directory, opened once: see openDir
	cfg   config
	host  string
	pid   int
	uid   uint32 // this process's effective user, who must own a private directory
	gid   uint32 // this process's effective group, whose a shared directory must be

	closeMu sync.RWMutex // held for reading by every operation, so Close waits for them
	closed  bool

	dirDev, dirIno uint64       // the opened directory's identity: see atPath
	pathChecked    atomic.Int64 // when atPath last found it at l.dir, in Unix ns

	fds        fdPool
	floor      floorCache
	seen       [seenSets]seenSet // see known
	publishVia atomic.Int32      // see publish
	scratch    sync.Pool         // of *scratch
}

var _ lock.Limiter = (*Locker)(nil)

// New returns a Locker keeping its lock files in dir, creating dir (but not
// its parents) if it is missing, with mode 0700 (2770, in this process's
// effective group, with WithSharedGroup). It opens dir once and works in
// what it opened until Close, whatever later replaces the path. It returns
// an error naming the path, and saying how to fix it, when dir cannot be
// used safely: its parent is missing, it is a symlink or not a directory,
// it is not writable, it is on a network filesystem where flock does not
// exclude other hosts, or another user could delete or forge its lock
// files (ErrUnsafeDir: see WithSharedGroup).
func New(dir string, opts ...Option) (*Locker, error) {
	if dir == "" {
		return nil, errors.New("filelock: lock directory is empty")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.clock == nil {
		cfg.clock = newSystemClock()
	}
	l := &Locker{dir: filepath.Clean(dir), cfg: cfg, pid: os.Getpid(), uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
	fd, err := l.openDir()
	if err != nil {
		return nil, err
	}
	l.dirfd = fd
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, pathError("stat", l.dir, err)
	}
	l.dirDev, l.dirIno = uint64(st.Dev), uint64(st.Ino)
	l.host, _ = os.Hostname()
	if _, _, err := l.readFloor(context.Background()); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return l, nil
}

// Dir returns the lock directory.
func (l *Locker) Dir() string { return l.dir }

// Close closes the lock directory, after waiting for the operations in
// progress. It releases no lock. Operations after Close return an error
// wrapping ErrClosed.
func (l *Locker) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.fds.close()
	return unix.Close(l.dirfd)
}

// enter starts an operation, which must call leave when done, or fails
// with ErrClosed.
func (l *Locker) enter() error {
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (l *Locker) leave() { l.closeMu.RUnlock() }

// pathCheckEvery is how long a check that the directory is still at its
// path holds for Obtain.
const pathCheckEvery = 10 * time.Millisecond

// atPath returns an error wrapping ErrDirMoved when l.dir no longer names
// the directory this Locker opened (renamed, removed or replaced). The
// Locker works through the descriptor it opened, which keeps it safe from
// a symlink swapped in, but a directory renamed away would otherwise leave
// it granting and renewing locks nobody else sees. Obtain checks at most
// every pathCheckEvery (a stat per obtain would cost a system call on the
// hot path); Refresh checks every time (fresh), so a holder learns of it at
// its next renewal, as it does of a directory removed.
func (l *Locker) atPath(fresh bool) error {
	now := time.Now().UnixNano()
	if !fresh && now-l.pathChecked.Load() < int64(pathCheckEvery) {
		return nil
	}
	var st unix.Stat_t
	err := unix.Fstatat(unix.AT_FDCWD, l.dir, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && uint64(st.Dev) == l.dirDev && uint64(st.Ino) == l.dirIno {
		l.pathChecked.Store(now)
		return nil
	}
	const why = "%w: %s is no longer the directory this process opened (renamed, removed or replaced since): " +
		"its locks exclude nobody who opened the path since; restart with the directory in place"
	if err != nil {
		return fmt.Errorf(why+" (%w)", ErrDirMoved, l.dir, pathError("stat", l.dir, err))
	}
	return fmt.Errorf(why, ErrDirMoved, l.dir)
}

func newToken() string { return "lock_" + rand.Text() }

// unreadableHolder is the holder named for an empty or corrupt lock file.
func unreadableHolder(name string) string { return "unknown (unreadable lock file " + name + ")" }

// unreadable judges a lock file without a readable record by how long ago
// it last changed: held for the corrupt-file grace, then expired.
func (l *Locker) unreadable(v *view, now instant) (lock.State, time.Duration) {
	if left := l.corruptRemaining(v.info, now.wall); left > 0 {
		return lock.Held, left
	}
	return lock.Expired, 0
}

// corruptRemaining is how much of the corrupt-file grace an unreadable
// file has left, negative once it is over. The grace runs from the file's
// change time, which nobody can set, not its modification time, which
// anyone who can write the file can set to any date. A change time further
// in the future than the grace itself (the wall clock was stepped back
// since) cannot be a write in progress: no grace at all.
func (l *Locker) corruptRemaining(info fileInfo, now time.Time) time.Duration {
	age := now.Sub(info.ctime)
	if age < -l.cfg.corruptGrace {
		return math.MinInt64
	}
	return l.cfg.corruptGrace - max(age, 0)
}

// Obtain implements lock.Locker. It creates key's lock file on first use
// and rewrites it in place after that. A key whose file another process
// keeps under its flock for the busy wait (WithBusyWait) is refused with a
// *lock.HeldError whose Reason wraps ErrBusy: no holder is known.
func (l *Locker) Obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	if err := lock.ValidateKey(key); err != nil {
		return lock.Lease{}, err
	}
	if err := lock.ValidateTTL(ttl); err != nil {
		return lock.Lease{}, err
	}
	if err := l.enter(); err != nil {
		return lock.Lease{}, err
	}
	defer l.leave()
	if err := l.atPath(false); err != nil {
		return lock.Lease{}, err
	}
	return l.obtain(ctx, key, ttl)
}

func (l *Locker) obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	rec, err := l.update(ctx, key, true, func(v *view) (*record, error) {
		now := readClock(l.cfg.clock)
		var old looked
		l.look(v, now, &old)
		if err := l.refuseHeld(v, &old, key, now, 1); err != nil {
			return nil, err
		}
		fence, err := l.lastFence(ctx, v, &old)
		if err != nil {
			return nil, err
		}
		if fence >= maxFence {
			return nil, l.fenceExhausted(v, key, fence)
		}
		// Field by field, in place (see view.reset).
		out := &v.out
		*out = record{}
		out.LockID, out.Key, out.State = newToken(), key, "held"
		out.AcquiredAt, out.AcquiredAtMs = now.wall.Unix(), now.wall.UnixMilli()
		out.PID, out.Host, out.Fence = l.pid, l.host, fence+1
		out.setExpiry(now, ttl)
		return out, nil
	})
	if err != nil {
		return lock.Lease{}, l.obtainError(key, err)
	}
	return lock.Lease{Key: key, Token: rec.token, Fence: rec.fence, ExpiresAt: time.UnixMilli(rec.expiresMs)}, nil
}

// fenceExhausted is the error of an obtain of key whose file v holds
// fence, the largest token there is.
func (l *Locker) fenceExhausted(v *view, key string, fence uint64) error {
	return fmt.Errorf("%w: key %q: %s in %s holds fencing token %d, the largest this engine hands out, so no later holder can get a greater one; remove the forged file",
		ErrFenceExhausted, key, v.name(), l.dir, fence)
}

// obtainError turns a lock file too busy to look at into a refusal with
// no holder known.
func (l *Locker) obtainError(key string, err error) error {
	var busy *busyError
	if errors.As(err, &busy) {
		if _, ok := err.(*lock.HeldError); !ok {
			return &lock.HeldError{Key: key, Holder: "unknown (" + busy.Error() + ")", TTL: l.cfg.busyWait, Reason: busy}
		}
	}
	return err
}

// looked is what an operation made of a lock file's record.
type looked struct {
	rec record
	ok  bool // rec was read: the file exists and holds a record
}

// look reads v's record once, into *old, for the helpers below.
func (l *Locker) look(v *view, now instant, old *looked) {
	if !v.exists {
		*old = looked{}
		return
	}
	old.ok = l.parseAtInto(v, now, &old.rec)
}

// refuseHeld returns a *lock.HeldError when v's record (old) is live, or
// unreadable within its grace, for an obtain asking for limit: the
// record's holders took the key with their own limit (1 for a plain lock).
func (l *Locker) refuseHeld(v *view, old *looked, key string, now instant, limit int) error {
	if !v.exists {
		return nil
	}
	if !old.ok {
		if st, left := l.unreadable(v, now); st == lock.Held {
			return &lock.HeldError{Key: key, Holder: unreadableHolder(v.name()), TTL: left}
		}
		return nil
	}
	st, left := old.rec.judge(now)
	if st != lock.Held || (old.rec.isMarker() && limit > 1) {
		return nil // slots are for ObtainLimit to count
	}
	held := &lock.HeldError{Key: key, Holder: old.rec.LockID, TTL: left}
	if had := max(old.rec.Limit, 1); had != limit {
		held.HeldLimit = had
	}
	return held
}

// lastFence returns the last fencing token key had, for the next holder
// to get the one after it; old is v's record. A file without one (new,
// unreadable, or written by another implementation) starts above the floor
// and the wall clock in microseconds.
func (l *Locker) lastFence(ctx context.Context, v *view, old *looked) (uint64, error) {
	if old.ok && old.rec.Fence > 0 {
		return old.rec.Fence, nil
	}
	var floor uint64
	var err error
	if v.exists {
		// Not a file this Locker creates: no link to check the reading
		// against, so a reading made now.
		floor, _, err = l.readFloor(ctx)
	} else {
		floor, v.floorAt, err = l.cachedFloor(ctx)
	}
	if err != nil {
		return 0, err
	}
	return max(floor, l.wallMicros()), nil
}

// parseAt is view.parse, refusing as forged a record whose expiry lies
// further from now than any TTL could put it.
func (l *Locker) parseAt(v *view, now instant) (record, bool) {
	var r record
	ok := l.parseAtInto(v, now, &r)
	return r, ok
}

// parseAtInto is parseAt writing into *r (see parseRecordInto).
func (l *Locker) parseAtInto(v *view, now instant, r *record) bool {
	ok := v.parseInto(r)
	if ok && r.State != stateReleased && r.remaining(now) > lock.MaxTTL+forgeSlack {
		*r = record{}
		return false
	}
	return ok
}

// forgeSlack is how far past lock.MaxTTL a record's expiry may lie, for a
// wall clock stepped back a little since it was written.
const forgeSlack = time.Minute

// owned reads v's record into *rec and returns ErrNotHeld unless lease's
// token owns it and has not released it. Nobody can have taken the lock
// over from a record that still carries the lease's token.
func owned(v *view, lease lock.Lease, rec *record) error {
	if !v.exists {
		return lock.ErrNotHeld
	}
	if !v.parseInto(rec) || rec.Key != lease.Key || rec.LockID != lease.Token || rec.State == stateReleased || rec.isMarker() {
		return lock.ErrNotHeld
	}
	return nil
}

// Refresh implements lock.Locker. A lock file busy for the busy wait gives
// an error wrapping ErrBusy.
func (l *Locker) Refresh(ctx context.Context, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	if err := lock.ValidateTTL(ttl); err != nil {
		return lock.Lease{}, err
	}
	if err := lock.ValidateKey(lease.Key); err != nil {
		return lock.Lease{}, err
	}
	if err := l.enter(); err != nil {
		return lock.Lease{}, err
	}
	defer l.leave()
	if err := l.atPath(true); err != nil {
		return lock.Lease{}, fmt.Errorf("%w: %w", lock.ErrNotHeld, err)
	}
	if isSlotToken(lease.Token) {
		return l.refreshSlot(ctx, lease, ttl)
	}
	rec, err := l.update(ctx, lease.Key, false, func(v *view) (*record, error) {
		if err := owned(v, lease, &v.out); err != nil {
			return nil, err
		}
		// Only a live lease on the file at the path may be extended.
		now := readClock(l.cfg.clock)
		if st, _ := v.out.judge(now); st != lock.Held {
			return nil, lock.ErrNotHeld
		}
		v.out.setExpiry(now, ttl)
		return &v.out, nil
	})
	if err != nil {
		return lock.Lease{}, err
	}
	lease.Fence, lease.ExpiresAt = rec.fence, time.UnixMilli(rec.expiresMs)
	return lease, nil
}

// Release implements lock.Locker. The file stays, marked released, for the
// next holder to rewrite; Cleanup removes it. A lease that ran out but that
// nobody took over can still be released. A lock file busy for the busy
// wait gives an error wrapping ErrBusy.
func (l *Locker) Release(ctx context.Context, lease lock.Lease) error {
	if err := lock.ValidateKey(lease.Key); err != nil {
		return err
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.leave()
	if isSlotToken(lease.Token) {
		return l.releaseSlot(ctx, lease)
	}
	_, err := l.update(ctx, lease.Key, false, func(v *view) (*record, error) {
		if err := owned(v, lease, &v.out); err != nil {
			return nil, err
		}
		// The wall clock is enough here: a released record is never judged
		// by time.
		v.out.release(instant{wall: l.cfg.clock.Now()})
		return &v.out, nil
	})
	return err
}

// Inspect implements lock.Locker. A key taken with a limit over one has
// slots, not a lock: see InspectSlots. A lock file busy for the busy wait
// gives an error wrapping ErrBusy.
func (l *Locker) Inspect(ctx context.Context, key string) (lock.Record, bool, error) {
	if err := lock.ValidateKey(key); err != nil {
		return lock.Record{}, false, err
	}
	if err := l.enter(); err != nil {
		return lock.Record{}, false, err
	}
	defer l.leave()
	var out lock.Record
	var found bool
	_, err := l.update(ctx, key, false, func(v *view) (*record, error) {
		now := readClock(l.cfg.clock)
		var old looked
		if l.look(v, now, &old); v.exists && !(old.ok && old.rec.isMarker()) {
			out, found = l.toRecord(v, &old, now), true
		}
		return nil, nil
	})
	if err != nil || !found || out.State == lock.Released {
		return lock.Record{}, false, err
	}
	return out, true, nil
}

// toRecord describes a lock file, readable or not, whose record is old.
func (l *Locker) toRecord(v *view, old *looked, now instant) lock.Record {
	if old.ok {
		return old.rec.toRecord(now)
	}
	st, left := l.unreadable(v, now)
	what := "empty or not a lock record"
	switch {
	case v.oversized:
		what = fmt.Sprintf("over %d bytes, too large for a lock record", maxRecordSize)
	case len(v.content) > 0:
		if _, ok := v.parse(); ok {
			what = "a lock record expiring further ahead than any TTL, forged"
		}
	}
	return lock.Record{Token: unreadableHolder(v.name()), State: st, TTL: left, Note: v.name() + ": " + what}
}
