package lock

import (
	"context"
	"time"
)

// Locker is what an engine implements. Every method is safe for concurrent
// use, takes at most one trip to the backend per key, and never waits for a
// lock to become free: waiting is ObtainWait's job.
type Locker interface {
	// Obtain tries once to take key for ttl. It returns a *HeldError
	// (matching ErrNotObtained) when a live lock is held by someone else,
	// or, with Reason ErrRestartGrace, while the engine grants no new lock
	// after its store restarted, and takes over an expired lock
	// atomically: of several contenders exactly one wins.
	Obtain(ctx context.Context, key string, ttl time.Duration) (Lease, error)

	// Refresh extends a held lease to ttl from now and returns the renewed
	// lease. It returns ErrNotHeld when lease is not the current holder's.
	Refresh(ctx context.Context, lease Lease, ttl time.Duration) (Lease, error)

	// Release gives up a held lease. It returns ErrNotHeld, and changes
	// nothing, when lease is not the current holder's. Only Key and Token
	// of lease are used, so a lease rebuilt from a lock_id works.
	Release(ctx context.Context, lease Lease) error

	// Inspect returns the record stored for key. ok is false when no record
	// exists or the record has been released.
	Inspect(ctx context.Context, key string) (rec Record, ok bool, err error)

	// Scan calls fn for every record the engine stores, live or not, until
	// fn returns false. Records may change while Scan runs. An entry that
	// is not a lock record is reported as a Skipped record, never as an
	// error.
	Scan(ctx context.Context, fn func(Record) bool) error

	// Cleanup removes records that expired or were released, never a live
	// one, and returns how many it removed. Entries that are not lock
	// records are left alone and do not stop it.
	Cleanup(ctx context.Context) (int, error)
}

// Limiter is an engine whose keys can admit several holders at once: a
// counting lock, or semaphore. Both of joblock's engines are Limiters.
type Limiter interface {
	Locker

	// ObtainLimit tries once to take one of limit slots of key for ttl, as
	// Obtain takes a lock; limit 1 is Obtain. A full key gives a *HeldError
	// naming the holder whose slot frees first. Every lease is a normal
	// one: Refresh and Release take it as they are, it expires alike, and
	// its fencing token is above every token the key handed out before.
	// All holders of a key must ask for the same limit.
	ObtainLimit(ctx context.Context, key string, limit int, ttl time.Duration) (Lease, error)

	// InspectSlots returns the records of key's live and expired slots
	// (not the released ones), for a key used with ObtainLimit.
	InspectSlots(ctx context.Context, key string) ([]Record, error)
}

// Lease is a held lock. It is a value: Refresh returns a new one.
type Lease struct {
	// Key is the lock's key.
	Key string
	// Token is the random owner token, the spec's lock_id.
	Token string
	// Fence strictly increases for Key with every successful Obtain, across
	// all holders and processes.
	Fence uint64
	// ExpiresAt is when the lease runs out unless refreshed, by the
	// obtaining process's wall clock.
	ExpiresAt time.Time
}

// State says what a stored record means now.
type State int

const (
	// Held means the lock is live.
	Held State = iota + 1
	// Expired means the lease ran out without being released.
	Expired
	// Released means the holder gave the lock up.
	Released
	// Skipped marks an entry of the engine's store that is not a lock
	// record and that the engine leaves alone: for the file engine, a
	// symlink, directory, FIFO or other file named like a lock file that it
	// must not use. Scan reports it so it can be counted and removed by a
	// person; Record.Note says what it is.
	Skipped
)

func (s State) String() string {
	switch s {
	case Held:
		return "held"
	case Expired:
		return "expired"
	case Released:
		return "released"
	case Skipped:
		return "skipped"
	}
	return "unknown"
}

// MarshalText encodes the state as its name, for JSON output.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Record is what an engine stores for a key, as Inspect and Scan see it.
type Record struct {
	Key        string    `json:"key"`
	Token      string    `json:"lock_id"`
	Fence      uint64    `json:"fence"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	PID        int       `json:"pid,omitempty"`
	Host       string    `json:"host,omitempty"`
	State      State     `json:"state"`
	// TTL is the time left on a held lock, as the engine judges it.
	TTL time.Duration `json:"ttl"`
	// Limit is how many holders the key admits, for a slot of a key used
	// with ObtainLimit; 0 for a plain lock.
	Limit int `json:"limit,omitempty"`
	// Note says, for an entry whose record could not be read (unreadable
	// or Skipped), what the engine found instead, naming the entry.
	Note string `json:"note,omitempty"`
}
