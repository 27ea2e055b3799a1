package lock

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest key, in bytes, that every engine accepts.
const MaxKeyLen = 1024

// TTL limits every engine enforces (see ValidateTTL).
const (
	// MinTTL is the shortest TTL: engines keep expiries to the millisecond.
	MinTTL = time.Millisecond
	// MaxTTL is the longest TTL, 365 days: far longer than any lease worth
	// holding, and short enough that no expiry computed from it (wall clock,
	// boot clock, milliseconds, a Redis PX) can overflow.
	MaxTTL = 365 * 24 * time.Hour
)

// MaxLimit is the most holders a key may admit (see Limiter).
const MaxLimit = 1000

// ValidateLimit returns an error wrapping ErrInvalidLimit, naming limit
// and the range, when limit is under 1 or over MaxLimit, and nil
// otherwise.
func ValidateLimit(limit int) error {
	if limit < 1 || limit > MaxLimit {
		return fmt.Errorf("%w: %d, want 1 to %d holders", ErrInvalidLimit, limit, MaxLimit)
	}
	return nil
}

// ValidateObtainLimit checks the arguments of a Limiter's ObtainLimit:
// the key (ValidateKey), the TTL (ValidateTTL) and the limit
// (ValidateLimit), in that order, returning the first error.
func ValidateObtainLimit(key string, limit int, ttl time.Duration) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ValidateTTL(ttl); err != nil {
		return err
	}
	return ValidateLimit(limit)
}

// ValidateKey reports, wrapped in ErrInvalidKey, why key cannot name a lock:
// it is empty, longer than MaxKeyLen bytes, not valid UTF-8, or holds a
// control character. It returns nil for a usable key.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalidKey, key)
	}
	for i, r := range key {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: key %q has control character %U at byte %d", ErrInvalidKey, key, r, i)
		}
	}
	return nil
}

// ValidateTTL is the one TTL check of every entry point: engines, the
// Manager, Process, the middleware, the scheduler and the command line. It
// returns an error wrapping ErrInvalidTTL, naming ttl and the limit it
// breaks, when ttl is not positive, under MinTTL or over MaxTTL, and nil
// otherwise.
func ValidateTTL(ttl time.Duration) error {
	switch {
	case ttl <= 0:
		return fmt.Errorf("%w: %s, must be positive", ErrInvalidTTL, ttl)
	case ttl < MinTTL:
		return fmt.Errorf("%w: %s is under the minimum of %s", ErrInvalidTTL, ttl, MinTTL)
	case ttl > MaxTTL:
		return fmt.Errorf("%w: %s is over the maximum of %s (365 days)", ErrInvalidTTL, ttl, MaxTTL)
	}
	return nil
}

// MinLease is the shortest lease for running work (WithLease): renewed
// every third of it, a shorter one cannot be kept alive on a busy host.
const MinLease = 100 * time.Millisecond

// ValidateLease checks a lease for running work (Run's WithLease, the
// middleware's Rule.Lease, the scheduler's, lockctl run -lease): a TTL
// that ValidateTTL accepts, and at least MinLease. Its errors wrap
// ErrInvalidTTL and name the value and the limit.
func ValidateLease(d time.Duration) error {
	if err := ValidateTTL(d); err != nil {
		return err
	}
	if d < MinLease {
		return fmt.Errorf("%w: a lease of %s is under the minimum of %s (it is renewed every third of it)", ErrInvalidTTL, d, MinLease)
	}
	return nil
}

// ValidateWindow checks a window during which a key stays taken after
// the work (Run's WithWindow, the middleware's Rule.Window, lockctl run
// -window): zero (none), or a positive duration of at most MaxTTL. Its
// errors wrap ErrInvalidTTL and name the value and the limit.
func ValidateWindow(d time.Duration) error {
	switch {
	case d < 0:
		return fmt.Errorf("%w: a window of %s, must not be negative", ErrInvalidTTL, d)
	case d > MaxTTL:
		return fmt.Errorf("%w: a window of %s is over the maximum of %s (365 days)", ErrInvalidTTL, d, MaxTTL)
	}
	return nil
}

// maxTTLSeconds is MaxTTL in whole seconds.
const maxTTLSeconds = int64(MaxTTL / time.Second)

// TTLFromSeconds converts a timeout in whole seconds, as the spec's
// process() takes it, to a TTL. It checks the range before converting, so
// no value can wrap around: it returns an error wrapping ErrInvalidTTL,
// naming the value and the limit, for zero, a negative number, or more
// seconds than MaxTTL holds.
func TTLFromSeconds(seconds int64) (time.Duration, error) {
	switch {
	case seconds <= 0:
		return 0, fmt.Errorf("%w: timeout must be a positive number of seconds, got %d", ErrInvalidTTL, seconds)
	case seconds > maxTTLSeconds:
		return 0, fmt.Errorf("%w: timeout %d s is over the maximum of %d s (365 days)", ErrInvalidTTL, seconds, maxTTLSeconds)
	}
	return time.Duration(seconds) * time.Second, nil
}
