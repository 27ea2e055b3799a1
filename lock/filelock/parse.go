package filelock

import (
	"encoding/json"
	"math"
	"unicode/utf8"
)

// parseRecord decodes a lock file. ok is false for an empty or unreadable
// file, or one without the fields a lock needs.
//
// Files this engine wrote are flat objects of plain strings and integers;
// scanFlat reads those without reflection, about ten times faster than
// encoding/json, which would cost a third of an acquire+release. Anything
// else (escapes, floats, nested values, invalid UTF-8, odd spacing from
// another writer) goes to encoding/json. FuzzParseRecord holds the two to
// the same results.
func parseRecord(b []byte) (record, bool) {
	var r record
	ok := parseRecordInto(b, &r)
	return r, ok
}

// parseRecordInto is parseRecord writing into *r, which it zeroes first,
// and leaves zero when ok is false. The operations on a lock file use it:
// a record is large, and copies of it up and down their calls would make
// their stacks, which a goroutine per task grows afresh, deeper.
func parseRecordInto(b []byte, r *record) bool {
	*r = record{}
	if !scanFlat(b, r) {
		// Declared here so only this path pays for the heap copy that
		// encoding/json's pointer forces.
		slow := new(record)
		if err := json.Unmarshal(b, slow); err != nil {
			*r = record{}
			return false
		}
		*r = *slow
	}
	if r.Key == "" || r.LockID == "" || !r.saneTimes() || r.Fence > maxFence || r.Limit < 0 {
		*r = record{}
		return false
	}
	return true
}

// maxUnixMs is the last millisecond of year 9999, the last a time can
// have and still encode as JSON (lock.Record's times are encoded by
// lockctl list -json and the worker's /locks).
const maxUnixMs = 253402300799999

// saneTimes reports whether the record's times lie between 1970 and the
// end of year 9999. A record with others was not written by a clock.
func (r *record) saneTimes() bool {
	for _, ms := range [...]int64{r.expiresMs(), r.acquiredMs()} {
		if ms < 0 || ms > maxUnixMs {
			return false
		}
	}
	return true
}

// scanFlat parses {"name":value,...} where every value is a string without
// escapes or an integer, followed only by whitespace, into *r, which must
// be zero. It returns false for anything else, with *r part filled.
func scanFlat(b []byte, r *record) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(b, i)
		name, j, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return false
		}
		if b[i] == '"' {
			val, j, ok := plainString(b, i)
			if !ok || !r.setString(name, val) {
				return false
			}
			i = j
		} else {
			n, neg, j, ok := plainInt(b, i)
			if !ok || !r.setInt(name, n, neg) {
				return false
			}
			i = j
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return false
		}
		i++
	}
	return skipSpace(b, i) == len(b)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// plainString reads a JSON string at b[i] that has no escapes and is
// valid UTF-8 (encoding/json would replace invalid bytes), returning its
// bytes and the index after it.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[i+1 : j]
			return s, j + 1, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, i, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, i, false
}

// plainInt reads a JSON integer at b[i] that fits an int64; neg says it
// was written with a minus sign, even as -0.
func plainInt(b []byte, i int) (n int64, neg bool, next int, ok bool) {
	neg = i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	var u uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if u > (math.MaxInt64-9)/10 {
			return 0, neg, i, false
		}
		u = u*10 + uint64(b[i]-'0')
	}
	if i == start || (b[start] == '0' && i-start > 1) {
		return 0, neg, i, false
	}
	if neg {
		return -int64(u), true, i, true
	}
	return int64(u), false, i, true
}

// setString stores a string field; unknown names are ignored as
// encoding/json does, known names of another type refuse.
func (r *record) setString(name, val []byte) bool {
	switch string(name) {
	case "lock_id":
		r.LockID = string(val)
	case "key":
		r.Key = string(val)
	case "host":
		r.Host = string(val)
	case "state":
		r.State = string(val)
	case "boot_id":
		r.BootID = string(val)
	case "expires_at", "acquired_at", "pid", "fence", "expires_at_ms", "acquired_at_ms", "boot_expires_ns", "limit":
		return false
	default:
		return plainName(name)
	}
	return true
}

// plainName reports whether an unknown field name is safe to ignore:
// encoding/json matches names case-insensitively (with Unicode folding), so
// only names that cannot fold onto a known one are.
func plainName(name []byte) bool {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// setInt stores an integer field, refusing what encoding/json refuses: a
// negative fencing token, -0 included.
func (r *record) setInt(name []byte, n int64, neg bool) bool {
	switch string(name) {
	case "expires_at":
		r.ExpiresAt = n
	case "acquired_at":
		r.AcquiredAt = n
	case "pid":
		r.PID = int(n)
	case "fence":
		if neg {
			return false
		}
		r.Fence = uint64(n)
	case "expires_at_ms":
		r.ExpiresAtMs = n
	case "acquired_at_ms":
		r.AcquiredAtMs = n
	case "boot_expires_ns":
		r.BootExpires = n
	case "limit":
		r.Limit = int(n)
	case "lock_id", "key", "host", "state", "boot_id":
		return false
	default:
		return plainName(name)
	}
	return true
}
