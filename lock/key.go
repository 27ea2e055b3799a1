package lock

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest key, in bytes, that every engine accepts.
const MaxKeyLen = 1024

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

// ValidateTTL returns an error wrapping ErrInvalidTTL when ttl is under one
// millisecond, the precision every engine keeps.
func ValidateTTL(ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: %s, must be at least 1ms", ErrInvalidTTL, ttl)
	}
	return nil
}
