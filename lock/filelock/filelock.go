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
	"time"

	"github.com/joblock/joblock/lock"
)

// Locker is the file engine. It implements lock.Locker and is safe for
// concurrent use by goroutines and by processes sharing the directory.
type Locker struct {
	dir  string
	cfg  config
	host string
	pid  int
	uid  uint32 // this process's effective user, who must own a private directory

	scratch sync.Pool // of *scratch
}

var _ lock.Limiter = (*Locker)(nil)

// New returns a Locker keeping its lock files in dir, creating dir (but not
// its parents) if it is missing, with mode 0700 (0770 and setgid with
// WithSharedGroup). It returns an error naming the path, and saying how to
// fix it, when dir cannot be used safely: its parent is missing, it is not
// a directory, it is not writable, it is on a network filesystem where
// flock does not exclude other hosts, or another user could delete or forge
// its lock files (ErrUnsafeDir: see WithSharedGroup).
func New(dir string, opts ...Option) (*Locker, error) {
	if dir == "" {
		return nil, errors.New("filelock: lock directory is empty")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.clock == nil {
		cfg.clock = systemClock{bootID: bootID()}
	}
	dir = filepath.Clean(dir)
	l := &Locker{dir: dir, cfg: cfg, pid: os.Getpid(), uid: uint32(os.Geteuid())}
	if err := l.prepareDir(); err != nil {
		return nil, err
	}
	l.host, _ = os.Hostname()
	// Creating the floor file proves the directory takes new files.
	if _, err := l.readFloor(context.Background()); err != nil {
		return nil, err
	}
	return l, nil
}

// Dir returns the lock directory.
func (l *Locker) Dir() string { return l.dir }

// Close does nothing and returns nil: a Locker keeps no file open between
// operations. It releases no lock.
func (l *Locker) Close() error { return nil }

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
// and rewrites it in place after that.
func (l *Locker) Obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	if err := lock.ValidateKey(key); err != nil {
		return lock.Lease{}, err
	}
	if err := lock.ValidateTTL(ttl); err != nil {
		return lock.Lease{}, err
	}
	var lease lock.Lease
	err := l.update(ctx, key, true, func(v *view) (*record, error) {
		now := readClock(l.cfg.clock)
		old, ok := v.parse()
		var fence uint64
		switch {
		case ok:
			if st, left := old.judge(now); st == lock.Held {
				return nil, &lock.HeldError{Key: key, Holder: old.LockID, TTL: left}
			}
			fence = old.Fence
		case len(v.content) == 0 && v.created:
		default:
			if st, left := l.unreadable(v, now); st == lock.Held {
				return nil, &lock.HeldError{Key: key, Holder: unreadableHolder(v.name()), TTL: left}
			}
		}
		from := v.name()
		if fence == 0 {
			floor, err := l.readFloor(ctx)
			if err != nil {
				return nil, err
			}
			fence, from = floor, floorName
		}
		if fence == math.MaxUint64 {
			return nil, fmt.Errorf("%w: key %q: %s in %s holds fencing token %d, the largest there is, so no later holder can get a greater one; this engine never writes it: remove the forged file",
				ErrFenceExhausted, key, from, l.dir, fence)
		}
		v.out = record{
			LockID:       newToken(),
			Key:          key,
			AcquiredAt:   now.wall.Unix(),
			AcquiredAtMs: now.wall.UnixMilli(),
			PID:          l.pid,
			Host:         l.host,
			Fence:        fence + 1,
			State:        "held",
		}
		v.out.setExpiry(now, ttl)
		lease = lock.Lease{Key: key, Token: v.out.LockID, Fence: v.out.Fence, ExpiresAt: time.UnixMilli(v.out.ExpiresAtMs)}
		return &v.out, nil
	})
	return lease, err
}

// owned returns v's record if lease's token owns it and has not released
// it. Nobody can have taken the lock over from a record that still carries
// the lease's token.
func owned(v *view, lease lock.Lease) (record, error) {
	if !v.exists {
		return record{}, lock.ErrNotHeld
	}
	rec, ok := v.parse()
	if !ok || rec.Key != lease.Key || rec.LockID != lease.Token || rec.State == stateReleased {
		return record{}, lock.ErrNotHeld
	}
	return rec, nil
}

// Refresh implements lock.Locker.
func (l *Locker) Refresh(ctx context.Context, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	if err := lock.ValidateTTL(ttl); err != nil {
		return lock.Lease{}, err
	}
	if err := lock.ValidateKey(lease.Key); err != nil {
		return lock.Lease{}, err
	}
	if isSlotToken(lease.Token) {
		return l.refreshSlot(ctx, lease, ttl)
	}
	err := l.update(ctx, lease.Key, false, func(v *view) (*record, error) {
		rec, err := owned(v, lease)
		if err != nil {
			return nil, err
		}
		// Only a live lease on the file at the path may be extended.
		now := readClock(l.cfg.clock)
		if st, _ := rec.judge(now); st != lock.Held {
			return nil, lock.ErrNotHeld
		}
		rec.setExpiry(now, ttl)
		lease.Fence = rec.Fence
		lease.ExpiresAt = time.UnixMilli(rec.ExpiresAtMs)
		v.out = rec
		return &v.out, nil
	})
	if err != nil {
		return lock.Lease{}, err
	}
	return lease, nil
}

// Release implements lock.Locker. The file stays, marked released, for the
// next holder to rewrite; Cleanup removes it. A lease that ran out but that
// nobody took over can still be released.
func (l *Locker) Release(ctx context.Context, lease lock.Lease) error {
	if err := lock.ValidateKey(lease.Key); err != nil {
		return err
	}
	if isSlotToken(lease.Token) {
		return l.releaseSlot(ctx, lease)
	}
	return l.update(ctx, lease.Key, false, func(v *view) (*record, error) {
		rec, err := owned(v, lease)
		if err != nil {
			return nil, err
		}
		// The wall clock is enough here: a released record is never judged
		// by time.
		rec.release(instant{wall: l.cfg.clock.Now()})
		v.out = rec
		return &v.out, nil
	})
}

// Inspect implements lock.Locker.
func (l *Locker) Inspect(ctx context.Context, key string) (lock.Record, bool, error) {
	if err := lock.ValidateKey(key); err != nil {
		return lock.Record{}, false, err
	}
	var out lock.Record
	var found bool
	err := l.update(ctx, key, false, func(v *view) (*record, error) {
		if !v.exists {
			return nil, nil
		}
		out, found = l.toRecord(v, readClock(l.cfg.clock)), true
		return nil, nil
	})
	if err != nil || !found || out.State == lock.Released {
		return lock.Record{}, false, err
	}
	return out, true, nil
}

// toRecord describes a lock file, readable or not.
func (l *Locker) toRecord(v *view, now instant) lock.Record {
	if rec, ok := v.parse(); ok {
		return rec.toRecord(now)
	}
	st, left := l.unreadable(v, now)
	what := "empty or not a lock record"
	if v.oversized {
		what = fmt.Sprintf("over %d bytes, too large for a lock record", maxRecordSize)
	}
	return lock.Record{Token: unreadableHolder(v.name()), State: st, TTL: left, Note: v.name() + ": " + what}
}
