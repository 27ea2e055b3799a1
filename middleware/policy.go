package middleware

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
)

// Policy says what happens to a task whose key is held. A key refused
// with no holder known (a lock.HeldError with a Reason: the engine's store
// restarted and waits out its grace) is not a duplicate of a live run, so
// whatever the policy, the task is handled as under Retry, after a Wait
// policy has waited.
type Policy int

const (
	// Retry returns a *DuplicateError so asynq runs the task again later.
	// With IsFailure in the server's Config it does not count as a failure
	// (no retry is used up), and with RetryDelayFunc it comes back when the
	// holder's lock is due to end. A task with no retries left, which asynq
	// would archive, is sent back as a new task (WithRedisClient) or waits
	// for the key. The default: nothing is dropped.
	Retry Policy = iota
	// Skip completes the duplicate without running it.
	Skip
	// Wait waits up to Rule.MaxWait for the key, then applies
	// Rule.AfterWait (Skip or Retry).
	Wait
	// Fail archives the duplicate: it fails with asynq.SkipRetry.
	Fail
)

func (p Policy) String() string {
	switch p {
	case Retry:
		return "retry"
	case Skip:
		return "skip"
	case Wait:
		return "wait"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ErrDuplicate matches the error a duplicate task fails with under Retry
// and Fail.
var ErrDuplicate = errors.New("middleware: duplicate task, its key is held")

// DuplicateError says which lock a duplicate task ran into. It matches
// ErrDuplicate. Its message leaves out the holder's lock id, which would
// let whoever reads it (asynq keeps it as the task's last error) release
// the lock.
type DuplicateError struct {
	TaskType string
	Key      string
	// Holder is the holder's lock id.
	Holder string
	// TTL is how long the holder's lock still runs.
	TTL time.Duration
	// Reason, when set, says the key was refused with no holder known
	// (lock.HeldError's Reason, such as lock.ErrRestartGrace); Holder then
	// says why in words, and TTL is how long the refusal lasts.
	Reason error
}

func (e *DuplicateError) Error() string {
	if e.Reason != nil {
		return fmt.Sprintf("middleware: task %q comes back later: key %q is refused for another %s: %s",
			e.TaskType, e.Key, e.TTL.Round(time.Millisecond), e.Holder)
	}
	return fmt.Sprintf("middleware: task %q is a duplicate: key %q is held for another %s",
		e.TaskType, e.Key, e.TTL.Round(time.Millisecond))
}

// Is makes a *DuplicateError match ErrDuplicate.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// IsFailure wraps an asynq Config.IsFailure so duplicates sent back by the
// Retry policy do not count as failures. next may be nil (asynq's default:
// every error is a failure).
//
//	asynq.Config{IsFailure: middleware.IsFailure(nil)}
func IsFailure(next func(error) bool) func(error) bool {
	return func(err error) bool {
		if errors.Is(err, ErrDuplicate) {
			return false
		}
		if next == nil {
			return err != nil
		}
		return next(err)
	}
}

// MinRetryDelay is the shortest delay RetryDelayFunc gives a duplicate.
const MinRetryDelay = 50 * time.Millisecond

// RetryDelayFunc wraps an asynq Config.RetryDelayFunc so a duplicate comes
// back when the holder's lock is due to end: after a random delay between a
// quarter of the holder's remaining TTL and all of it (a holder that
// releases early is not waited for in full, and duplicates do not return in
// lockstep), at least MinRetryDelay. Other errors go to next, or to
// asynq.DefaultRetryDelayFunc when next is nil.
func RetryDelayFunc(next asynq.RetryDelayFunc) asynq.RetryDelayFunc {
	if next == nil {
		next = asynq.DefaultRetryDelayFunc
	}
	return func(n int, err error, t *asynq.Task) time.Duration {
		var dup *DuplicateError
		if !errors.As(err, &dup) {
			return next(n, err, t)
		}
		return dupDelay(dup)
	}
}

// dupDelay is when a duplicate should come back: between a quarter of the
// holder's remaining lease and all of it, at least MinRetryDelay.
func dupDelay(dup *DuplicateError) time.Duration {
	lo := dup.TTL / 4
	d := lo + time.Duration(rand.Int64N(int64(dup.TTL-lo)+1))
	return max(d, MinRetryDelay)
}
