package lock

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrNotObtained is returned by Obtain when a live lock is held by
	// someone else. The error is a *HeldError with the holder's details.
	ErrNotObtained = errors.New("lock: not obtained, key is held")

	// ErrNotHeld is returned by Refresh and Release when the caller is no
	// longer the holder: the lease expired and was taken over, was released,
	// or never existed.
	ErrNotHeld = errors.New("lock: lease not held")

	// ErrInvalidKey is returned for an empty key, a key longer than
	// MaxKeyLen, a key that is not valid UTF-8 or holds control characters.
	ErrInvalidKey = errors.New("lock: invalid key")

	// ErrInvalidTTL is returned for a TTL that is not positive, under
	// MinTTL or over MaxTTL (see ValidateTTL).
	ErrInvalidTTL = errors.New("lock: invalid ttl")

	// ErrInvalidLimit is returned for a limit of holders under 1 or over
	// MaxLimit (see ValidateLimit).
	ErrInvalidLimit = errors.New("lock: invalid limit")

	// ErrLost is the cause of a context cancelled because the lock that
	// guarded the work could not be renewed and may now belong to someone
	// else.
	ErrLost = errors.New("lock: lock lost")

	// ErrRestartGrace is the Reason of a *HeldError from an engine whose
	// store restarted moments ago and may have forgotten locks whose holders
	// still work: it grants no new lock until they have had time to learn
	// that theirs is gone (see redislock.WithRestartGrace). No holder is
	// known, so the key must not be taken as held by a live run: try again
	// after the error's TTL.
	ErrRestartGrace = errors.New("lock: store restarted, new locks wait out its grace")
)

// HeldError describes a key held by someone else, or refused for a while
// with no holder known (Reason). It matches ErrNotObtained with errors.Is,
// and Reason too when set.
type HeldError struct {
	Key string
	// Holder is the holder's owner token (the spec's lock_id) or, when
	// Reason is set, why the key was refused, in words.
	Holder string
	// TTL is how long the holder's lease still runs, as the engine sees it,
	// or how long the refusal lasts.
	TTL time.Duration
	// Reason is nil when a live lock was seen; otherwise why the engine
	// refused without seeing one: ErrRestartGrace when it grants no new
	// lock yet, or an engine's own (the file engine's filelock.ErrBusy: the
	// key's file stayed locked by a process that does not let go). Treat a
	// Reason like a holder: try again later.
	Reason error
	// HeldLimit, when not 0, is the limit the key's holders took it with,
	// which is not the one asked for (1 for a plain lock, see Limiter):
	// holders of one key that ask different limits exclude each other,
	// each side refused while the other holds the key.
	HeldLimit int
}

func (e *HeldError) Error() string {
	if e.Reason != nil {
		return fmt.Sprintf("lock: key %q is refused for another %s: %s", e.Key, e.TTL.Round(time.Millisecond), e.Holder)
	}
	if e.HeldLimit != 0 {
		return fmt.Sprintf("lock: key %q is held by %s for another %s, with a limit of %d: every holder of a key must ask for the same limit",
			e.Key, e.Holder, e.TTL.Round(time.Millisecond), e.HeldLimit)
	}
	return fmt.Sprintf("lock: key %q is held by %s for another %s", e.Key, e.Holder, e.TTL.Round(time.Millisecond))
}

// Is makes a *HeldError match ErrNotObtained.
func (e *HeldError) Is(target error) bool { return target == ErrNotObtained }

// Unwrap returns Reason.
func (e *HeldError) Unwrap() error { return e.Reason }

// LostError is the cause of a context cancelled by KeepAlive. It matches
// ErrLost and unwraps to the renewal error that revealed the loss.
type LostError struct {
	Key string
	Err error
}

func (e *LostError) Error() string {
	return fmt.Sprintf("lock: lock on %q lost: %v", e.Key, e.Err)
}

// Is makes a *LostError match ErrLost.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// Unwrap returns the renewal error.
func (e *LostError) Unwrap() error { return e.Err }
