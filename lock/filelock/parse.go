package filelock

import (
	"encoding/json"
	"math"
	"strings"
	"unsafe"
)

// parseRecord decodes a lock file. ok is false for an empty or unreadable
// file, or one without the fields a lock needs.
//
// Files this engine wrote are flat objects of plain strings and integers;
// scanFlat reads those without reflection. Anything else (escapes, floats,
// nested values, odd spacing from another writer) goes to encoding/json.
func parseRecord(b []byte) (record, bool) {
	r, ok := scanFlat(b)
	if !ok {
		// Declared here so only this path pays for the heap copy that
		// encoding/json's pointer forces.
		slow := new(record)
		if err := json.Unmarshal(b, slow); err != nil {
			return record{}, false
		}
		r = *slow
	}
	if r.Key == "" || r.LockID == "" {
		return record{}, false
	}
	return r, true
}

// scanFlat parses {"name":value,...} where every value is a string without
// escapes or an integer, followed only by whitespace. ok is false for
// anything else.
func scanFlat(b []byte) (r record, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return r, false
	}
	i++
	for {
		i = skipSpace(b, i)
		name, j, ok := plainString(b, i)
		if !ok {
			return r, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return r, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return r, false
		}
		if b[i] == '"' {
			val, j, ok := plainString(b, i)
			if !ok || !r.setString(name, val) {
				return r, false
			}
			i = j
		} else {
			n, j, ok := plainInt(b, i)
			if !ok || !r.setInt(name, n) {
				return r, false
			}
			i = j
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return r, false
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return r, false
		}
		i++
	}
	return r, skipSpace(b, i) == len(b)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// plainString reads a JSON string at b[i] that has no escapes, returning
// its bytes and the index after it.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, i, false
		}
	}
	return nil, i, false
}

// plainInt reads a JSON integer at b[i] that fits an int64.
func plainInt(b []byte, i int) (int64, int, bool) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	var n uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if n > (math.MaxInt64-9)/10 {
			return 0, i, false
		}
		n = n*10 + uint64(b[i]-'0')
	}
	if i == start || (b[start] == '0' && i-start > 1) {
		return 0, i, false
	}
	if neg {
		return -int64(n), i, true
	}
	return int64(n), i, true
}

// borrow returns b as a string without copying. Records parsed by scanFlat
// point into the read buffer, which the next read overwrites: they live
// only inside one operation, and whatever leaves it is cloned (see
// retained).
func borrow(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// retained returns a copy of r that owns its strings.
func (r record) retained() record {
	r.LockID = strings.Clone(r.LockID)
	r.Key = strings.Clone(r.Key)
	r.Host = strings.Clone(r.Host)
	r.State = strings.Clone(r.State)
	r.BootID = strings.Clone(r.BootID)
	return r
}

// setString stores a string field; unknown names are ignored as
// encoding/json does, known names of another type refuse.
func (r *record) setString(name, val []byte) bool {
	switch string(name) {
	case "lock_id":
		r.LockID = borrow(val)
	case "key":
		r.Key = borrow(val)
	case "host":
		r.Host = borrow(val)
	case "state":
		r.State = borrow(val)
	case "boot_id":
		r.BootID = borrow(val)
	case "expires_at", "acquired_at", "pid", "fence", "expires_at_ms", "acquired_at_ms", "boot_expires_ns":
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

func (r *record) setInt(name []byte, n int64) bool {
	switch string(name) {
	case "expires_at":
		r.ExpiresAt = n
	case "acquired_at":
		r.AcquiredAt = n
	case "pid":
		r.PID = int(n)
	case "fence":
		if n < 0 {
			return false
		}
		r.Fence = uint64(n)
	case "expires_at_ms":
		r.ExpiresAtMs = n
	case "acquired_at_ms":
		r.AcquiredAtMs = n
	case "boot_expires_ns":
		r.BootExpires = n
	case "lock_id", "key", "host", "state", "boot_id":
		return false
	default:
		return plainName(name)
	}
	return true
}
