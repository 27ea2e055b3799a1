//go:build linux || darwin

package filelock

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/joblock/joblock/lock"
	"golang.org/x/sys/unix"
)

// A key used with a limit over one (lock.Limiter) keeps its slots in a
// file of its own, md5(key).slots, under one flock like a lock file: a JSON
// object with the key, its limit, the last fencing token it handed out,
// and a record per slot, live or not (without the key, which is the
// file's). Slots are rewritten in place, so a key that comes back creates
// no inode. Slot leases' owner tokens start with slotTokenPrefix, which is
// how Refresh and Release find them.
//
// A plain lock and slots of one key exclude each other through the key's
// lock file: every slot operation holds the lock file's flock around the
// slots file's, and leaves in the lock file a marker, a record with the
// limit (record.Limit) that is held until the last live slot expires and
// released with the last slot. Obtain finds the marker held and is
// refused, naming the limit; ObtainLimit finds a plain lock held and is
// refused the same way. The marker also carries the key's last fencing
// token, so plain locks and slots draw on one sequence. The order, lock
// file then slots file, is the same for every operation that takes both.

const (
	slotsSuffix     = ".slots"
	slotTokenPrefix = "slot_"
	// maxSlotsSize bounds what is read of a slots file: lock.MaxLimit slot
	// records of the largest size this engine writes, with the key once,
	// fit with room to spare (TestLargestSlotsFileFits).
	maxSlotsSize = 1 << 20
)

// slots is a slots file's JSON.
type slots struct {
	Key   string   `json:"key"`
	Limit int      `json:"limit"`
	Fence uint64   `json:"fence"`
	Slots []record `json:"slots"`

	newest int // the slot takeSlot took
}

func isSlotsFile(name string) bool {
	stem, ok := strings.CutSuffix(name, slotsSuffix)
	return ok && isLockFile(stem+lockSuffix)
}

func slotsName(key string) string {
	return strings.TrimSuffix(idOf(key).name(), lockSuffix) + slotsSuffix
}

func isSlotToken(token string) bool { return strings.HasPrefix(token, slotTokenPrefix) }

// slotsView is what a slot operation sees of a slots file under its flock.
type slotsView struct {
	s slots
	// fresh: the file is new, empty, or corrupt past its grace, and s is
	// a new set of slots; its fencing token must be found elsewhere.
	fresh bool
	// corrupt is the grace a corrupt file has left, 0 when none.
	corrupt time.Duration
	// other: the file holds another key's slots (an md5 collision).
	other bool
	// missing: there is no file (only without create).
	missing bool
}

// updateSlots runs fn on key's slots file under an exclusive flock and
// writes back what fn returns, if anything. With create a missing file is
// made; without, fn sees it as missing.
func (l *Locker) updateSlots(ctx context.Context, key string, create bool, fn func(sv *slotsView) (*slots, error)) error {
	name := slotsName(key)
	flags := lockFlags
	if create {
		flags |= unix.O_CREAT
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := l.openLocked(ctx, name, flags, unix.LOCK_EX)
		switch {
		case err == errMissing:
			_, err := fn(&slotsView{missing: true})
			return err
		case err == errRemoved:
			continue
		case err != nil:
			return err
		}
		err = l.updateSlotsLocked(f, name, key, fn)
		f.close()
		return err
	}
}

func (l *Locker) updateSlotsLocked(f locked, name, key string, fn func(sv *slotsView) (*slots, error)) error {
	content, oversized, err := readSlots(f)
	if err != nil {
		return pathError("read", l.path(name), err)
	}
	sv := slotsView{}
	if oversized || !sv.s.parse(content) {
		if len(bytes.TrimSpace(content)) > 0 || oversized {
			// Half written by a crash of another implementation, or forged:
			// held for the grace, like a lock file, then started over.
			sv.corrupt = max(l.corruptRemaining(f.info, l.cfg.clock.Now()), 0)
		}
		sv.s, sv.fresh = slots{Key: key}, true
	}
	sv.other = sv.s.Key != key
	out, err := fn(&sv)
	if out == nil || err != nil {
		return err
	}
	b, err := out.encode()
	if err != nil {
		return err
	}
	// Pad a shorter file's worth rather than truncate: one pwrite.
	for len(b)+1 < len(content) {
		b = append(b, ' ')
	}
	if err := l.writeSized(f.fd, append(b, '\n'), f.info.size); err != nil {
		if f.info.size == 0 {
			// A new file that never got its first record would read as
			// free to some and hold up others: it goes.
			_ = unix.Unlinkat(l.dirfd, name, 0)
		}
		return pathError("write", l.path(name), err)
	}
	if oversized {
		if err := unix.Ftruncate(f.fd, int64(len(b)+1)); err != nil {
			return pathError("truncate", l.path(name), err)
		}
	}
	return nil
}

// readSlots reads a slots file whole, into a buffer the size of the file
// (up to maxSlotsSize, beyond which it is oversized).
func readSlots(f locked) ([]byte, bool, error) {
	buf := make([]byte, min(max(f.info.size, 0), maxSlotsSize)+1)
	for {
		content, oversized, err := readRecord(f.fd, buf)
		if err != nil || !oversized || len(buf) > maxSlotsSize {
			return content, oversized, err
		}
		// It grew since fstat (another implementation writing it unlocked).
		buf = make([]byte, maxSlotsSize+1)
	}
}

// parse decodes a slots file, reporting whether it holds a key's slots.
// A file that reads JSON null, or holds a slot that is no lock record,
// holds none.
func (s *slots) parse(b []byte) bool {
	*s = slots{}
	if json.Unmarshal(b, s) != nil || s.Key == "" || s.Limit < 0 || s.Fence > maxFence {
		return false
	}
	for i := range s.Slots {
		r := &s.Slots[i]
		r.Key = s.Key
		if r.LockID == "" || !r.saneTimes() || r.Fence > maxFence {
			return false
		}
	}
	return true
}

// encode encodes the slots without each slot's key, which is the file's.
func (s *slots) encode() ([]byte, error) {
	for i := range s.Slots {
		s.Slots[i].Key = ""
	}
	defer func() {
		for i := range s.Slots {
			s.Slots[i].Key = s.Key
		}
	}()
	return json.Marshal(s)
}

// ObtainLimit implements lock.Limiter: one of limit slots of key, in its
// slots file; a limit of 1 is Obtain. A key held by a plain lock, or by
// slots taken with another limit, is refused with a *lock.HeldError naming
// that limit (HeldLimit).
func (l *Locker) ObtainLimit(ctx context.Context, key string, limit int, ttl time.Duration) (lock.Lease, error) {
	if limit == 1 {
		return l.Obtain(ctx, key, ttl)
	}
	if err := lock.ValidateObtainLimit(key, limit, ttl); err != nil {
		return lock.Lease{}, err
	}
	if err := l.enter(); err != nil {
		return lock.Lease{}, err
	}
	defer l.leave()
	if err := l.atPath(false); err != nil {
		return lock.Lease{}, err
	}
	for {
		var lease lock.Lease
		placed := false
		_, err := l.update(ctx, key, true, func(v *view) (*record, error) {
			now := readClock(l.cfg.clock)
			// The lock file comes first, empty-handed: the slot is taken
			// under its flock, on the next round.
			if placed = !v.exists; placed {
				return l.placeholder(ctx, v, key, limit, now)
			}
			var old looked
			l.look(v, now, &old)
			if err := l.refuseHeld(v, &old, key, now, limit); err != nil {
				return nil, err
			}
			last, err := l.lastFence(ctx, v, &old)
			if err != nil {
				return nil, err
			}
			var marker *record
			err = l.updateSlots(ctx, key, true, func(sv *slotsView) (*slots, error) {
				s, err := l.takeSlot(ctx, sv, key, limit, ttl, last, now)
				if err != nil {
					return nil, err
				}
				i := s.newest
				lease = lock.Lease{Key: key, Token: s.Slots[i].LockID, Fence: s.Slots[i].Fence, ExpiresAt: time.UnixMilli(s.Slots[i].ExpiresAtMs)}
				marker = s.marker(now)
				return s, nil
			})
			if err != nil {
				return nil, err
			}
			v.out = *marker
			return &v.out, nil
		})
		if err != nil {
			return lock.Lease{}, l.obtainError(key, err)
		}
		if !placed {
			return lease, nil
		}
	}
}

// placeholder is the record a key's new lock file starts with when slots
// take it: released, so that it holds nothing, with a fencing token for
// the slots to go on from.
func (l *Locker) placeholder(ctx context.Context, v *view, key string, limit int, now instant) (*record, error) {
	last, err := l.lastFence(ctx, v, &looked{})
	if err != nil {
		return nil, err
	}
	v.out = record{LockID: slotTokenPrefix + "none", Key: key, PID: l.pid, Host: l.host, Fence: min(last+1, maxFence), Limit: limit,
		AcquiredAt: now.wall.Unix(), AcquiredAtMs: now.wall.UnixMilli()}
	v.out.release(now)
	return &v.out, nil
}

// takeSlot adds a live slot to sv's slots, last, or refuses: the key is
// full, or held with another limit, or its slots file is another key's or
// corrupt within its grace. last is the lock file's last fencing token.
func (l *Locker) takeSlot(ctx context.Context, sv *slotsView, key string, limit int, ttl time.Duration, last uint64, now instant) (*slots, error) {
	switch {
	case sv.other:
		return nil, &lock.HeldError{Key: key, Holder: "unknown (another key's slots in " + slotsName(key) + ")", TTL: time.Second}
	case sv.corrupt > 0:
		return nil, &lock.HeldError{Key: key, Holder: unreadableHolder(slotsName(key)), TTL: sv.corrupt}
	}
	s := &sv.s
	live, first, firstLeft := s.live(now)
	if live > 0 && s.Limit != limit {
		return nil, &lock.HeldError{Key: key, Holder: first.LockID, TTL: firstLeft, HeldLimit: s.Limit}
	}
	if live >= limit {
		return nil, &lock.HeldError{Key: key, Holder: first.LockID, TTL: firstLeft}
	}
	fence := max(s.Fence, last)
	if sv.fresh {
		// A new slots file may follow one Cleanup removed, whose tokens
		// only the floor remembers.
		floor, _, err := l.readFloor(ctx)
		if err != nil {
			return nil, err
		}
		fence = max(fence, floor)
	}
	if fence >= maxFence {
		return nil, fmt.Errorf("%w: key %q's slots hold fencing token %d, the largest this engine hands out", ErrFenceExhausted, key, fence)
	}
	s.Limit, s.Fence = limit, fence+1
	rec := record{LockID: slotTokenPrefix + rand.Text(), Key: key, AcquiredAt: now.wall.Unix(), AcquiredAtMs: now.wall.UnixMilli(),
		PID: l.pid, Host: l.host, Fence: s.Fence, State: "held"}
	rec.setExpiry(now, ttl)
	s.newest = len(s.Slots)
	for i := range s.Slots {
		if st, _ := s.Slots[i].judge(now); st != lock.Held {
			s.newest = i
			break
		}
	}
	if s.newest == len(s.Slots) {
		s.Slots = append(s.Slots, rec)
	} else {
		s.Slots[s.newest] = rec
	}
	return s, nil
}

// live counts the live slots and returns the one that frees first.
func (s *slots) live(now instant) (n int, first *record, firstLeft time.Duration) {
	for i := range s.Slots {
		if st, left := s.Slots[i].judge(now); st == lock.Held {
			n++
			if first == nil || left < firstLeft {
				first, firstLeft = &s.Slots[i], left
			}
		}
	}
	return n, first, firstLeft
}

// marker is the lock file record for s: held until its last live slot
// expires, by that slot, or released when none is live.
func (s *slots) marker(now instant) *record {
	var last *record
	var lastLeft time.Duration
	for i := range s.Slots {
		if st, left := s.Slots[i].judge(now); st == lock.Held && (last == nil || left > lastLeft) {
			last, lastLeft = &s.Slots[i], left
		}
	}
	m := record{LockID: slotTokenPrefix + "none", State: stateReleased}
	if last != nil {
		m = *last
	}
	m.Key, m.Fence, m.Limit = s.Key, s.Fence, max(s.Limit, 2)
	if last == nil {
		m.release(now)
	}
	return &m
}

// slotOf returns the index of lease's live or expired slot in s, or -1.
func slotOf(s *slots, lease lock.Lease) int {
	if s.Key != lease.Key {
		return -1
	}
	for i := range s.Slots {
		if s.Slots[i].LockID == lease.Token && s.Slots[i].State != stateReleased {
			return i
		}
	}
	return -1
}

// changeSlot runs change on lease's slot under the lock file's flock and
// the slots file's, and brings the lock file's marker up to date. A lock
// file that holds a live plain lock is left alone: only an older version
// of this engine, which knows no markers, lets one be taken beside slots.
func (l *Locker) changeSlot(ctx context.Context, lease lock.Lease, change func(r *record, now instant) error) error {
	_, err := l.update(ctx, lease.Key, false, func(v *view) (*record, error) {
		now := readClock(l.cfg.clock)
		var marker *record
		err := l.updateSlots(ctx, lease.Key, false, func(sv *slotsView) (*slots, error) {
			if sv.missing || sv.fresh {
				return nil, lock.ErrNotHeld
			}
			i := slotOf(&sv.s, lease)
			if i < 0 {
				return nil, lock.ErrNotHeld
			}
			if err := change(&sv.s.Slots[i], now); err != nil {
				return nil, err
			}
			marker = sv.s.marker(now)
			return &sv.s, nil
		})
		if err != nil || !v.exists {
			return nil, err
		}
		if rec, ok := l.parseAt(v, now); ok && !rec.isMarker() {
			if st, _ := rec.judge(now); st == lock.Held {
				return nil, nil
			}
		}
		v.out = *marker
		return &v.out, nil
	})
	return err
}

// refreshSlot is Refresh for a slot lease.
func (l *Locker) refreshSlot(ctx context.Context, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	err := l.changeSlot(ctx, lease, func(r *record, now instant) error {
		if st, _ := r.judge(now); st != lock.Held {
			return lock.ErrNotHeld
		}
		r.setExpiry(now, ttl)
		lease.Fence, lease.ExpiresAt = r.Fence, time.UnixMilli(r.ExpiresAtMs)
		return nil
	})
	if err != nil {
		return lock.Lease{}, err
	}
	return lease, nil
}

// releaseSlot is Release for a slot lease.
func (l *Locker) releaseSlot(ctx context.Context, lease lock.Lease) error {
	return l.changeSlot(ctx, lease, func(r *record, now instant) error {
		r.release(now)
		return nil
	})
}

// InspectSlots implements lock.Limiter.
func (l *Locker) InspectSlots(ctx context.Context, key string) ([]lock.Record, error) {
	if err := lock.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.leave()
	var out []lock.Record
	err := l.updateSlots(ctx, key, false, func(sv *slotsView) (*slots, error) {
		if !sv.missing && !sv.fresh && !sv.other {
			out = sv.s.records(readClock(l.cfg.clock))
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
