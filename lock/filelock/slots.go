//go:build linux || darwin

package filelock

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/joblock/joblock/lock"
	"golang.org/x/sys/unix"
)

// A key used with a limit over one (lock.Limiter) keeps its slots in one
// file of its own, md5(key).slots, under one flock like a lock file: a
// JSON object with the key, its limit, the last fencing token it handed
// out, and a record per slot, live or not. Slots are rewritten in place,
// so a key that comes back creates no inode. Slot leases' owner tokens
// start with slotTokenPrefix, which is how Refresh and Release find them.

const (
	slotsSuffix     = ".slots"
	slotTokenPrefix = "slot_"
	// maxSlotsSize bounds what is read of a slots file: lock.MaxLimit records.
	maxSlotsSize = 1 << 20
)

// slots is a slots file's JSON.
type slots struct {
	Key   string   `json:"key"`
	Limit int      `json:"limit"`
	Fence uint64   `json:"fence"`
	Slots []record `json:"slots"`
}

func isSlotsFile(name string) bool {
	stem, ok := strings.CutSuffix(name, slotsSuffix)
	return ok && isLockFile(stem+lockSuffix)
}

func (l *Locker) slotsPath(key string) string {
	return filepath.Join(l.dir, strings.TrimSuffix(idOf(key).name(), lockSuffix)+slotsSuffix)
}

func isSlotToken(token string) bool { return strings.HasPrefix(token, slotTokenPrefix) }

// updateSlots runs fn on key's slots file under an exclusive flock and
// writes back what fn returns, if anything. Without create a missing file
// is shown to fn as nil.
func (l *Locker) updateSlots(ctx context.Context, key string, create bool, fn func(s *slots) (*slots, error)) error {
	path := l.slotsPath(key)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := l.openLocked(ctx, path, create, unix.LOCK_EX)
		switch {
		case err == errMissing:
			_, err := fn(nil)
			return err
		case err == errRemoved:
			continue
		case err != nil:
			return err
		}
		err = l.updateSlotsLocked(f, path, key, fn)
		f.close()
		return err
	}
}

func (l *Locker) updateSlotsLocked(f locked, path, key string, fn func(s *slots) (*slots, error)) error {
	buf := make([]byte, maxSlotsSize+1)
	content, oversized, err := readRecord(f.fd, buf)
	if err != nil {
		return pathError("read", path, err)
	}
	var s slots
	switch {
	case oversized:
		return fmt.Errorf("filelock: %s is over %d bytes, too large for a slots file: remove it", path, maxSlotsSize)
	case len(strings.TrimSpace(string(content))) == 0:
		s.Key = key // new, or emptied by a crash before its first write
	case json.Unmarshal(content, &s) != nil:
		return fmt.Errorf("filelock: %s is not a slots file: remove it", path)
	}
	out, err := fn(&s)
	if out == nil || err != nil {
		return err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	// Pad a shorter file's worth rather than truncate: one pwrite.
	for len(b)+1 < len(content) {
		b = append(b, ' ')
	}
	if err := writeAll(f.fd, append(b, '\n')); err != nil {
		return pathError("write", path, err)
	}
	return nil
}

// ObtainLimit implements lock.Limiter: one of limit slots of key, in its
// slots file; a limit of 1 is Obtain. It returns an error naming both
// limits when the key's live slots were taken with another limit.
func (l *Locker) ObtainLimit(ctx context.Context, key string, limit int, ttl time.Duration) (lock.Lease, error) {
	if limit == 1 {
		return l.Obtain(ctx, key, ttl)
	}
	if err := lock.ValidateObtainLimit(key, limit, ttl); err != nil {
		return lock.Lease{}, err
	}
	var lease lock.Lease
	err := l.updateSlots(ctx, key, true, func(s *slots) (*slots, error) {
		if s.Key != key {
			// Another key's slots under the same md5: contend, never share.
			return nil, &lock.HeldError{Key: key, Holder: "unknown (another key's slots in " + filepath.Base(l.slotsPath(key)) + ")", TTL: time.Second}
		}
		now := readClock(l.cfg.clock)
		free, live := -1, 0
		var first *record
		var firstLeft time.Duration
		for i := range s.Slots {
			st, left := s.Slots[i].judge(now)
			if st != lock.Held {
				if free < 0 {
					free = i
				}
				continue
			}
			live++
			if first == nil || left < firstLeft {
				first, firstLeft = &s.Slots[i], left
			}
		}
		if live > 0 && s.Limit != limit {
			return nil, fmt.Errorf("filelock: key %q is held with a limit of %d, not %d: every holder of a key must ask for the same limit", key, s.Limit, limit)
		}
		if live >= limit {
			return nil, &lock.HeldError{Key: key, Holder: first.LockID, TTL: firstLeft}
		}
		if s.Fence == 0 {
			floor, err := l.readFloor(ctx)
			if err != nil {
				return nil, err
			}
			s.Fence = floor
		}
		if s.Fence == math.MaxUint64 {
			return nil, fmt.Errorf("%w: key %q's slots hold fencing token %d, the largest there is", ErrFenceExhausted, key, s.Fence)
		}
		s.Limit = limit
		s.Fence++
		rec := record{LockID: slotTokenPrefix + rand.Text(), Key: key, AcquiredAt: now.wall.Unix(), AcquiredAtMs: now.wall.UnixMilli(),
			PID: l.pid, Host: l.host, Fence: s.Fence, State: "held"}
		rec.setExpiry(now, ttl)
		if free >= 0 {
			s.Slots[free] = rec
		} else {
			s.Slots = append(s.Slots, rec)
		}
		lease = lock.Lease{Key: key, Token: rec.LockID, Fence: rec.Fence, ExpiresAt: time.UnixMilli(rec.ExpiresAtMs)}
		return s, nil
	})
	return lease, err
}

// slotOf returns the index of lease's live or expired slot in s, or -1.
func slotOf(s *slots, lease lock.Lease) int {
	if s == nil || s.Key != lease.Key {
		return -1
	}
	for i := range s.Slots {
		if s.Slots[i].LockID == lease.Token && s.Slots[i].State != stateReleased {
			return i
		}
	}
	return -1
}

// refreshSlot is Refresh for a slot lease.
func (l *Locker) refreshSlot(ctx context.Context, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	err := l.updateSlots(ctx, lease.Key, false, func(s *slots) (*slots, error) {
		i := slotOf(s, lease)
		if i < 0 {
			return nil, lock.ErrNotHeld
		}
		now := readClock(l.cfg.clock)
		if st, _ := s.Slots[i].judge(now); st != lock.Held {
			return nil, lock.ErrNotHeld
		}
		s.Slots[i].setExpiry(now, ttl)
		lease.Fence, lease.ExpiresAt = s.Slots[i].Fence, time.UnixMilli(s.Slots[i].ExpiresAtMs)
		return s, nil
	})
	if err != nil {
		return lock.Lease{}, err
	}
	return lease, nil
}

// releaseSlot is Release for a slot lease.
func (l *Locker) releaseSlot(ctx context.Context, lease lock.Lease) error {
	return l.updateSlots(ctx, lease.Key, false, func(s *slots) (*slots, error) {
		i := slotOf(s, lease)
		if i < 0 {
			return nil, lock.ErrNotHeld
		}
		s.Slots[i].release(instant{wall: l.cfg.clock.Now()})
		return s, nil
	})
}

// InspectSlots implements lock.Limiter.
func (l *Locker) InspectSlots(ctx context.Context, key string) ([]lock.Record, error) {
	if err := lock.ValidateKey(key); err != nil {
		return nil, err
	}
	var out []lock.Record
	err := l.updateSlots(ctx, key, false, func(s *slots) (*slots, error) {
		if s != nil && s.Key == key {
			out = s.records(readClock(l.cfg.clock))
		}
		return nil, nil
	})
	return out, err
}

// records describes the slots that are not released.
func (s *slots) records(now instant) []lock.Record {
	var out []lock.Record
	for i := range s.Slots {
		if s.Slots[i].State == stateReleased {
			continue
		}
		r := s.Slots[i].toRecord(now)
		r.Limit = s.Limit
		out = append(out, r)
	}
	return out
}

// removable says whether a slots file may be removed (no slot live, every
// one released or expired for the cleanup age) and the fencing token its
// removal must not let a later holder reuse.
func (s *slots) removable(now instant, age time.Duration) (uint64, bool) {
	for i := range s.Slots {
		st, _ := s.Slots[i].judge(now)
		if st == lock.Held || (age > 0 && s.Slots[i].remaining(now) > -age) {
			return 0, false
		}
	}
	return s.Fence, true
}
