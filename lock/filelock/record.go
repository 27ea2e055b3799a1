package filelock

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/joblock/joblock/lock"
)

// record is a lock file's JSON. The first five fields are the spec's, so
// the PHP LockManager and `jq` read the files; the rest are this engine's.
type record struct {
	LockID     string `json:"lock_id"`
	Key        string `json:"key"`
	ExpiresAt  int64  `json:"expires_at"`  // unix seconds, rounded up
	AcquiredAt int64  `json:"acquired_at"` // unix seconds
	PID        int    `json:"pid"`

	Host         string `json:"host,omitempty"`
	Fence        uint64 `json:"fence,omitempty"`
	State        string `json:"state,omitempty"` // "held" or "released"; absent means held
	ExpiresAtMs  int64  `json:"expires_at_ms,omitempty"`
	AcquiredAtMs int64  `json:"acquired_at_ms,omitempty"`
	// BootID and BootExpires judge expiry on the host that wrote the record
	// with a clock that wall-clock steps cannot move.
	BootID      string `json:"boot_id,omitempty"`
	BootExpires int64  `json:"boot_expires_ns,omitempty"`
}

const stateReleased = "released"

// expiresMs is the record's expiry in unix milliseconds, from whichever
// field the writer filled in.
func (r *record) expiresMs() int64 {
	if r.ExpiresAtMs != 0 {
		return r.ExpiresAtMs
	}
	return r.ExpiresAt * 1000
}

// remaining is the time until the record's expiry, negative once past it,
// read off the boot clock when the record was written on this boot of this
// host and off the wall clock otherwise.
func (r *record) remaining(now instant) time.Duration {
	if r.BootID != "" && r.BootID == now.bootID {
		return time.Duration(r.BootExpires - int64(now.boot))
	}
	return time.Duration(r.expiresMs()-now.wall.UnixMilli()) * time.Millisecond
}

// judge says whether the record is live and how long it has left.
func (r *record) judge(now instant) (lock.State, time.Duration) {
	if r.State == stateReleased {
		return lock.Released, 0
	}
	left := r.remaining(now)
	if left <= 0 {
		return lock.Expired, 0
	}
	return lock.Held, left
}

// setExpiry makes the record run out ttl after now.
func (r *record) setExpiry(now instant, ttl time.Duration) {
	exp := now.wall.Add(ttl)
	r.ExpiresAtMs = exp.UnixMilli()
	r.ExpiresAt = (r.ExpiresAtMs + 999) / 1000
	r.BootID = now.bootID
	r.BootExpires = 0
	if now.bootID != "" {
		r.BootExpires = int64(now.boot + ttl)
	}
}

// release marks the record released now. expires_at is rounded down so the
// PHP implementation, which compares whole seconds, sees it expired too.
func (r *record) release(now instant) {
	r.State = stateReleased
	r.setExpiry(now, 0)
	r.ExpiresAt = r.ExpiresAtMs / 1000
}

func (r *record) toRecord(now instant) lock.Record {
	st, left := r.judge(now)
	acq := r.AcquiredAtMs
	if acq == 0 {
		acq = r.AcquiredAt * 1000
	}
	return lock.Record{
		Key:        r.Key,
		Token:      r.LockID,
		Fence:      r.Fence,
		AcquiredAt: time.UnixMilli(acq),
		ExpiresAt:  time.UnixMilli(r.expiresMs()),
		PID:        r.PID,
		Host:       r.Host,
		State:      st,
		TTL:        left,
	}
}

// appendJSON encodes the record in the field order above without
// reflection; it is on every write's path.
func (r *record) appendJSON(b []byte) []byte {
	b = append(b, `{"lock_id":`...)
	b = appendString(b, r.LockID)
	b = append(b, `,"key":`...)
	b = appendString(b, r.Key)
	b = append(b, `,"expires_at":`...)
	b = strconv.AppendInt(b, r.ExpiresAt, 10)
	b = append(b, `,"acquired_at":`...)
	b = strconv.AppendInt(b, r.AcquiredAt, 10)
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, int64(r.PID), 10)
	if r.Host != "" {
		b = append(b, `,"host":`...)
		b = appendString(b, r.Host)
	}
	b = append(b, `,"fence":`...)
	b = strconv.AppendUint(b, r.Fence, 10)
	if r.State != "" {
		b = append(b, `,"state":`...)
		b = appendString(b, r.State)
	}
	b = append(b, `,"expires_at_ms":`...)
	b = strconv.AppendInt(b, r.ExpiresAtMs, 10)
	b = append(b, `,"acquired_at_ms":`...)
	b = strconv.AppendInt(b, r.AcquiredAtMs, 10)
	if r.BootID != "" {
		b = append(b, `,"boot_id":`...)
		b = appendString(b, r.BootID)
		b = append(b, `,"boot_expires_ns":`...)
		b = strconv.AppendInt(b, r.BootExpires, 10)
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
