package lock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Actions a Request can name.
const (
	ActionAcquire = "acquire"
	ActionRelease = "release"
)

// Request is the spec's process() input. Its JSON form is
// {"key": "...", "action": "acquire"|"release", "timeout": 30}, with an
// optional "limit" that the spec does not have.
type Request struct {
	// Key is the lock's key. Required.
	Key string `json:"key"`
	// Action is ActionAcquire or ActionRelease. Required.
	Action string `json:"action"`
	// Timeout is the lock's TTL in whole seconds. Nil means the Manager's
	// default TTL; zero, negative, or more than MaxTTL is an error (see
	// TTLFromSeconds).
	Timeout *int `json:"timeout,omitempty"`
	// LockID, on a release, frees the lock with that lock_id even if
	// another Manager or process acquired it. Without it a release frees
	// only this Manager's own lock.
	LockID string `json:"lock_id,omitempty"`
	// Limit, on an acquire, is how many holders the key admits: the
	// acquire takes one of its slots (see Limiter). Nil or 1 takes the
	// lock, as the spec does; a value out of range is an error wrapping
	// ErrInvalidLimit. Every holder of a key must ask for the same limit.
	Limit *int `json:"limit,omitempty"`
}

// UnmarshalJSON decodes the spec's request. Field names are matched
// exactly, as the spec's PHP array keys are, and a field the spec does not
// have is an error naming it, rather than a setting silently dropped
// ("ttl" is no timeout). A request that is not valid UTF-8 is an error:
// invalid bytes would be replaced, and two keys that differ only in them
// would share one lock. A timeout, when present and not null, must be a
// JSON number holding a whole number of seconds that TTLFromSeconds
// accepts (30, 30.0 and 3e1 are the same); anything else is an error
// wrapping ErrInvalidTTL that names the value and the limit.
func (r *Request) UnmarshalJSON(b []byte) error {
	if !utf8.Valid(b) {
		i := invalidUTF8(b)
		return fmt.Errorf("lock: request is not valid UTF-8: byte %#x at offset %d", b[i], i)
	}
	if string(bytes.TrimSpace(b)) == "null" {
		return nil // as encoding/json leaves a value for null
	}
	fields, err := requestFields(b)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		switch name {
		case "key", "action", "timeout", "lock_id", "limit":
		default:
			return fmt.Errorf("lock: unknown field %q in request: the fields are key, action, timeout, lock_id and limit", name)
		}
	}
	var req Request
	for _, f := range []struct {
		name string
		dst  any
	}{{"key", &req.Key}, {"action", &req.Action}, {"lock_id", &req.LockID}} {
		if raw, ok := fields[f.name]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return fmt.Errorf("lock: request field %q: %w", f.name, err)
			}
		}
	}
	if raw := fields["limit"]; len(raw) > 0 && string(raw) != "null" {
		n, err := limitValue(string(raw))
		if err != nil {
			return err
		}
		req.Limit = &n
	}
	if raw := fields["timeout"]; len(raw) > 0 && string(raw) != "null" {
		secs, err := timeoutSeconds(string(raw))
		if err != nil {
			return err
		}
		n := int(secs)
		req.Timeout = &n
	}
	*r = req
	return nil
}

// requestFields splits a request object into its fields, refusing one
// that is not an object or that names a field twice (a decoder would keep
// the last, another reader the first).
func requestFields(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('{') {
		return nil, errors.New("lock: request is not a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		if _, dup := fields[name]; dup {
			return nil, fmt.Errorf("lock: field %q appears twice in the request", name)
		}
		fields[name] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("lock: data after the request object")
	}
	return fields, nil
}

// limitValue reads a JSON limit: a whole number of holders within
// ValidateLimit's range, in any JSON number form (2, 2.0 and 2e0 are the
// same). Its errors wrap ErrInvalidLimit and name the value.
func limitValue(raw string) (int, error) {
	f, err := strconv.ParseFloat(raw, 64)
	switch {
	case err != nil && !isJSONNumber(raw):
		return 0, fmt.Errorf("%w: limit must be a number of holders, got %s", ErrInvalidLimit, raw)
	case err != nil || f < 1 || f > MaxLimit:
		return 0, fmt.Errorf("%w: %s, want 1 to %d holders", ErrInvalidLimit, raw, MaxLimit)
	case f != math.Trunc(f):
		return 0, fmt.Errorf("%w: limit %s is not a whole number of holders", ErrInvalidLimit, raw)
	}
	return int(f), nil
}

// isJSONNumber reports whether raw is a JSON number literal (not a
// string holding one).
func isJSONNumber(raw string) bool {
	var n json.Number
	return raw != "" && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') && json.Unmarshal([]byte(raw), &n) == nil
}

// invalidUTF8 returns the offset of the first byte of b that starts no
// valid UTF-8 sequence.
func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// timeoutSeconds reads a JSON timeout: a number of whole seconds within
// TTLFromSeconds's range, in any JSON number form.
func timeoutSeconds(raw string) (int64, error) {
	n, err := strconv.ParseInt(raw, 10, 64)
	if err == nil {
		_, err = TTLFromSeconds(n)
		return n, err
	}
	f, ferr := strconv.ParseFloat(raw, 64)
	var num *strconv.NumError
	switch {
	case errors.As(ferr, &num) && num.Err == strconv.ErrRange && f < 0:
		return 0, fmt.Errorf("%w: timeout must be a positive number of seconds, got %s", ErrInvalidTTL, raw)
	case errors.As(ferr, &num) && num.Err == strconv.ErrRange:
		return 0, fmt.Errorf("%w: timeout %s s is over the maximum of %d s (365 days)", ErrInvalidTTL, raw, maxTTLSeconds)
	case ferr != nil:
		return 0, fmt.Errorf("%w: timeout must be a number of seconds, got %s", ErrInvalidTTL, raw)
	case f != math.Trunc(f):
		return 0, fmt.Errorf("%w: timeout %s is not a whole number of seconds", ErrInvalidTTL, raw)
	case f > float64(maxTTLSeconds):
		return 0, fmt.Errorf("%w: timeout %s s is over the maximum of %d s (365 days)", ErrInvalidTTL, raw, maxTTLSeconds)
	}
	// Whole and at most the maximum: exact as an int64.
	_, err = TTLFromSeconds(int64(f))
	return int64(f), err
}

// Result is the spec's process() output, field for field. LockID and
// ExpiresAt encode as null when absent, as in the spec.
type Result struct {
	Locked        bool    `json:"locked"`
	LockID        *string `json:"lock_id"`
	ExpiresAt     *int64  `json:"expires_at"`
	AlreadyLocked bool    `json:"already_locked"`
	// LockedBy is the holder's lock_id when AlreadyLocked is true.
	LockedBy string `json:"locked_by,omitempty"`
	// Released is set on every release result.
	Released *bool `json:"released,omitempty"`
	// Error says what was wrong with the request or what failed; beside
	// AlreadyLocked, why the key cannot be taken as asked (its holders
	// took it with another limit).
	Error string `json:"error,omitempty"`
}

// Process carries out one spec request and reports the outcome, including
// any failure, in the Result; it never panics on bad input. An acquire
// neither waits nor fails when this Manager already holds the key: it
// renews the lease, if asked with the limit the lease was taken with (an
// acquire asking another is refused as AlreadyLocked).
func (m *Manager) Process(ctx context.Context, req Request) Result {
	if req.Key == "" {
		return Result{Error: "key is required"}
	}
	switch req.Action {
	case ActionAcquire:
		return m.processAcquire(ctx, req)
	case ActionRelease:
		return m.processRelease(ctx, req)
	case "":
		return Result{Error: `action is required: "acquire" or "release"`}
	}
	return Result{Error: fmt.Sprintf(`unknown action %q: want "acquire" or "release"`, req.Action)}
}

func (m *Manager) processAcquire(ctx context.Context, req Request) Result {
	var ttl time.Duration
	if req.Timeout != nil {
		var err error
		if ttl, err = TTLFromSeconds(int64(*req.Timeout)); err != nil {
			return Result{Error: err.Error()}
		}
	}
	limit := 1
	if req.Limit != nil {
		limit = *req.Limit
	}
	return AcquireResult(m.acquire(ctx, req.Key, ttl, limit, Wait{}))
}

// AcquireResult describes the outcome of an acquire (Obtain, ObtainWait,
// Manager.Acquire) as the spec's process() output. Its expires_at is the
// lease's expiry rounded up to the second, as the file engine writes it,
// so a whole-second reader never sees the lock end early.
func AcquireResult(l Lease, err error) Result {
	var held *HeldError
	switch {
	case err == nil:
		exp := unixCeil(l.ExpiresAt)
		return Result{Locked: true, LockID: &l.Token, ExpiresAt: &exp}
	case errors.As(err, &held) && held.HeldLimit != 0:
		// Held, and by holders of another limit: say so, or the caller
		// waits for a key it can never take with the limit it asks.
		return Result{AlreadyLocked: true, LockedBy: held.Holder, Error: held.Error()}
	case errors.As(err, &held):
		return Result{AlreadyLocked: true, LockedBy: held.Holder}
	}
	return Result{Error: err.Error()}
}

// unixCeil is t in unix seconds, rounded up.
func unixCeil(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// ReleaseResult describes the outcome of releasing lockID as the spec's
// process() output.
func ReleaseResult(lockID string, err error) Result {
	ok := err == nil
	r := Result{LockID: &lockID, Released: &ok}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func (m *Manager) processRelease(ctx context.Context, req Request) Result {
	id := req.LockID
	if id == "" {
		l, ok := m.lease(req.Key)
		if !ok {
			f := false
			return Result{Released: &f, Error: fmt.Sprintf("this manager holds no lock on %q; pass its lock_id to release a lock taken elsewhere", req.Key)}
		}
		id = l.Token
	}
	return ReleaseResult(id, m.ReleaseID(ctx, req.Key, id))
}
