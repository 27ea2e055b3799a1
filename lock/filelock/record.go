package filelock

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/joblock/joblock/lock"
)

// record is a lock file's JSON. The first five fields are the spec's, so
// the PHP LockManager and `jq` read the files; the rest are this engine's.
type record struct {
	LockID     string `json:"lock_id"`
	Key        string `json:"key,omitempty"` // always set but in a slot, whose key is its slots file's
	ExpiresAt  int64  `json:"expires_at"`    // unix seconds, rounded up
	AcquiredAt int64  `json:"acquired_at"`   // unix seconds
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
	// Limit, over one, makes the record a marker of the key's slots (see
	// slots.go): the key is held, by slots taken with that limit, until
	// the last of them expires.
	Limit int `json:"limit,omitempty"`
}

// written is what an operation reports of the record it wrote: what a
// lease needs. Small, unlike a record, so the operations' stacks stay
// shallow (see parseRecordInto).
type written struct {
	token     string
	fence     uint64
	expiresMs int64
}

func (r *record) written() written {
	return written{token: r.LockID, fence: r.Fence, expiresMs: r.ExpiresAtMs}
}

// isMarker reports whether the record marks a key held by slots.
func (r *record) isMarker() bool { return r.Limit > 1 }

const stateReleased = "released"

// maxFence is the largest fencing token this engine hands out or believes,
// 2^53: every token up to it is exact as a JSON number in any language
// (JavaScript, PHP's floats). A record or floor file holding more was
// forged, and is not folded into anything.
const maxFence = 1 << 53

// expiresMs is the record's expiry in unix milliseconds, from whichever
// field the writer filled in. Records come from files anyone may have
// written: the arithmetic saturates instead of wrapping around.
func (r *record) expiresMs() int64 {
	if r.ExpiresAtMs != 0 {
		return r.ExpiresAtMs
	}
	return secondsToMs(r.ExpiresAt)
}

// remaining is the time until the record's expiry, negative once past it,
// read off the boot clock when the record was written under this process's
// boot clock identifier and off the wall clock otherwise. It saturates at
// the ends of the time.Duration range.
func (r *record) remaining(now instant) time.Duration {
	if r.BootID != "" && r.BootID == now.bootID {
		return time.Duration(satSub(r.BootExpires, int64(now.boot)))
	}
	ms := satSub(r.expiresMs(), now.wall.UnixMilli())
	switch {
	case ms > math.MaxInt64/int64(time.Millisecond):
		return math.MaxInt64
	case ms < math.MinInt64/int64(time.Millisecond):
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// satSub is a-b, clamped to the int64 range.
func satSub(a, b int64) int64 {
	d := a - b
	switch {
	case b < 0 && d < a:
		return math.MaxInt64
	case b > 0 && d > a:
		return math.MinInt64
	}
	return d
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

// acquiredMs is when the record was taken, in unix milliseconds, from
// whichever field the writer filled in; it saturates like expiresMs.
func (r *record) acquiredMs() int64 {
	if r.AcquiredAtMs != 0 {
		return r.AcquiredAtMs
	}
	return secondsToMs(r.AcquiredAt)
}

func secondsToMs(s int64) int64 {
	switch {
	case s > math.MaxInt64/1000:
		return math.MaxInt64
	case s < math.MinInt64/1000:
		return math.MinInt64
	}
	return s * 1000
}

func (r *record) toRecord(now instant) lock.Record {
	st, left := r.judge(now)
	acq := r.acquiredMs()
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

// encodePadded appends rec as one line of JSON to b, padded with spaces to
// at least size bytes so a shorter record overwrites a longer one without a
// truncate and the file stays valid JSON. The bytes are those encoding/json
// writes for a *record with HTML escaping off (FuzzParseRecord holds the two
// to the same output), so keys holding <, > or & stay plain strings that
// parseRecord's fast path reads. Written out by hand: a lock file is
// encoded on every obtain, renewal and release, and reflection made that a
// visible part of each.
func encodePadded(b []byte, rec *record, size int) []byte {
	start := len(b)
	b = append(b, `{"lock_id":`...)
	b = appendJSONString(b, rec.LockID)
	if rec.Key != "" {
		b = append(b, `,"key":`...)
		b = appendJSONString(b, rec.Key)
	}
	b = append(b, `,"expires_at":`...)
	b = strconv.AppendInt(b, rec.ExpiresAt, 10)
	b = append(b, `,"acquired_at":`...)
	b = strconv.AppendInt(b, rec.AcquiredAt, 10)
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, int64(rec.PID), 10)
	if rec.Host != "" {
		b = append(b, `,"host":`...)
		b = appendJSONString(b, rec.Host)
	}
	if rec.Fence != 0 {
		b = append(b, `,"fence":`...)
		b = strconv.AppendUint(b, rec.Fence, 10)
	}
	if rec.State != "" {
		b = append(b, `,"state":`...)
		b = appendJSONString(b, rec.State)
	}
	b = appendIntField(b, `,"expires_at_ms":`, rec.ExpiresAtMs)
	b = appendIntField(b, `,"acquired_at_ms":`, rec.AcquiredAtMs)
	if rec.BootID != "" {
		b = append(b, `,"boot_id":`...)
		b = appendJSONString(b, rec.BootID)
	}
	b = appendIntField(b, `,"boot_expires_ns":`, rec.BootExpires)
	b = appendIntField(b, `,"limit":`, int64(rec.Limit))
	b = append(b, '}')
	for pad := size - 1 - (len(b) - start); pad > 0; pad -= len(spaces) {
		b = append(b, spaces[:min(pad, len(spaces))]...)
	}
	return append(b, '\n')
}

// spaces pads records (encodePadded) and grows files (writeSized).
var spaces = bytes.Repeat([]byte{' '}, 4096)

// appendIntField appends name and v unless v is zero (omitempty).
func appendIntField(b []byte, name string, v int64) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(append(b, name...), v, 10)
}

// appendJSONString appends s as a JSON string. The strings of records this
// engine writes (hex tokens, host names, boot identifiers, most keys) are
// printable ASCII without quotes or backslashes and are copied as they are;
// any other goes through encoding/json, which escapes control characters,
// replaces invalid UTF-8 with U+FFFD and escapes U+2028 and U+2029.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '"' || c == '\\' {
			return appendEscapedJSONString(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendEscapedJSONString(b []byte, s string) []byte {
	w := bytes.NewBuffer(b)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	// A string always encodes; the encoder ends it with a newline.
	_ = enc.Encode(s)
	b = w.Bytes()
	return b[:len(b)-1]
}
