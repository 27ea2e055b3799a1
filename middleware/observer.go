package middleware

import "time"

// EventKind says what the middleware did.
type EventKind int

const (
	// Obtained: the task's lock was taken; Duration is how long it took,
	// waiting included.
	Obtained EventKind = iota + 1
	// Duplicate: the key was held and the policy was applied; Policy says
	// which (after a wait, the policy applied afterwards).
	Duplicate
	// Waited: a Wait policy waited; Duration is how long, Err is nil if it
	// then got the lock.
	Waited
	// Lost: the lock could not be renewed while the handler ran and the
	// handler's context was cancelled; Duration is how long it was held.
	Lost
	// Released: the lock was released (or kept for the rule's Window);
	// Duration is how long it was held. Err is set when the handler
	// panicked (the lock was released all the same).
	Released
	// Error: the key could not be derived or the engine failed; Err says
	// why.
	Error
	// Requeued: a duplicate under Retry had no retries left (asynq would
	// have archived it) and was enqueued again as a new task.
	Requeued
	// HandedOff: a released key was handed to the oldest duplicate waiting
	// for it, which was moved to pending; TaskID is that duplicate's.
	HandedOff
	// Replaced: a task of a UniqueUntilAndWhileExecuting rule, still
	// waiting for its turn to run, was replaced by a newer copy (Replace,
	// Debounce): it completes without running.
	Replaced
)

func (k EventKind) String() string {
	switch k {
	case Obtained:
		return "obtained"
	case Duplicate:
		return "duplicate"
	case Waited:
		return "waited"
	case Lost:
		return "lost"
	case Released:
		return "released"
	case Error:
		return "error"
	case Requeued:
		return "requeued"
	case HandedOff:
		return "handed-off"
	case Replaced:
		return "replaced"
	}
	return "unknown"
}

// Event is one thing the middleware did for one task.
type Event struct {
	Kind     EventKind
	TaskType string
	Queue    string
	// TaskID is asynq's ID of the task.
	TaskID string
	Key    string
	Fence  uint64
	// Holder is the lock id of the key's holder, on Duplicate events: it
	// releases the lock, so keep it out of what others read. When the key
	// was refused with no holder known, it says why instead, and Err is
	// the reason (lock.ErrRestartGrace).
	Holder   string
	Policy   Policy
	Duration time.Duration
	Err      error
}

// Observer receives every Event, synchronously, on the task's goroutine:
// it must be quick and safe for concurrent use. Metrics adapters (such as
// the worker's Prometheus one) are Observers.
type Observer func(Event)
