package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultTTL is the Manager's lock timeout when none is given, the spec's
// 30 seconds.
const DefaultTTL = 30 * time.Second

// Manager is the spec's LockManager on top of any engine. Like a PHP
// LockManager instance it remembers the leases it obtained, so a second
// Acquire of the same key renews the lease instead of failing, Release needs
// only the key, and ReleaseAll frees everything at shutdown. Goroutines that
// must exclude each other should each call Do or use the engine directly,
// not share one Manager's Acquire.
//
// A Manager is safe for concurrent use.
type Manager struct {
	locker  Locker
	renewer *Renewer
	ttl     time.Duration
	jitter  float64

	mu   sync.Mutex
	held map[string]Lease
	// limits holds the limit each held lease was taken with, for keys
	// taken with a limit over 1.
	limits map[string]int
}

// ManagerOption configures a Manager.
type ManagerOption func(*Manager)

// WithDefaultTTL sets the lock timeout used when a call passes zero.
// Default DefaultTTL. A TTL that ValidateTTL refuses makes every call that
// relies on the default fail with that error.
func WithDefaultTTL(ttl time.Duration) ManagerOption {
	return func(m *Manager) { m.ttl = ttl }
}

// WithJitter spreads AcquireWithWait's retry pauses by up to this fraction
// of the retry interval (see Wait.Jitter). Default 0.1.
func WithJitter(fraction float64) ManagerOption {
	return func(m *Manager) { m.jitter = fraction }
}

// NewManager returns a Manager over engine l.
func NewManager(l Locker, opts ...ManagerOption) *Manager {
	m := &Manager{locker: l, renewer: NewRenewer(l), ttl: DefaultTTL, jitter: 0.1, held: make(map[string]Lease), limits: make(map[string]int)}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Locker returns the engine the Manager runs on.
func (m *Manager) Locker() Locker { return m.locker }

func (m *Manager) ttlOr(ttl time.Duration) time.Duration {
	if ttl == 0 {
		return m.ttl
	}
	return ttl
}

func (m *Manager) lease(key string) (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.held[key]
	return l, ok
}

func (m *Manager) remember(l Lease, limit int) {
	m.mu.Lock()
	m.held[l.Key] = l
	if limit > 1 {
		m.limits[l.Key] = limit
	} else {
		delete(m.limits, l.Key)
	}
	m.mu.Unlock()
}

// limitOf is the limit key's held lease was taken with.
func (m *Manager) limitOf(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.limits[key], 1)
}

func (m *Manager) forget(key, token string) {
	m.mu.Lock()
	if l, ok := m.held[key]; ok && l.Token == token {
		delete(m.held, key)
		delete(m.limits, key)
	}
	m.mu.Unlock()
}

// renew refreshes a lease this instance holds. ok is false when it holds
// none or has lost it, and the caller should obtain anew. A lease taken
// with another limit than limit is not renewed: the call is refused as
// held, as an engine refuses a holder asking another limit than the key's.
func (m *Manager) renew(ctx context.Context, key string, ttl time.Duration, limit int) (Lease, bool, error) {
	old, ok := m.lease(key)
	if !ok {
		return Lease{}, false, nil
	}
	if held := m.limitOf(key); held != limit {
		return Lease{}, false, &HeldError{Key: key, Holder: old.Token, TTL: time.Until(old.ExpiresAt), HeldLimit: held}
	}
	l, err := m.locker.Refresh(ctx, old, ttl)
	if errors.Is(err, ErrNotHeld) {
		m.forget(key, old.Token)
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, err
	}
	m.remember(l, limit)
	return l, true, nil
}

// Acquire tries once to take key for ttl (zero means the default TTL). If
// this Manager already holds key it renews the lease instead. It does not
// block on a held key: it returns a *HeldError matching ErrNotObtained. A
// TTL that ValidateTTL refuses is returned as that error, with nothing
// obtained or renewed.
func (m *Manager) Acquire(ctx context.Context, key string, ttl time.Duration) (Lease, error) {
	return m.acquire(ctx, key, ttl, 1, Wait{})
}

// AcquireWithWait is Acquire that keeps trying every retryInterval (zero
// means DefaultRetryInterval) for up to maxWait. It blocks while it waits
// and returns an error matching ErrNotObtained if the key stayed held,
// also when ctx ended first (the error then matches ctx's cause too).
func (m *Manager) AcquireWithWait(ctx context.Context, key string, ttl, maxWait, retryInterval time.Duration) (Lease, error) {
	return m.acquire(ctx, key, ttl, 1, Wait{MaxWait: maxWait, Interval: retryInterval, Jitter: m.jitter})
}

// acquire takes key, or one of its limit slots, for ttl, or renews the
// lease this Manager holds on it.
func (m *Manager) acquire(ctx context.Context, key string, ttl time.Duration, limit int, w Wait) (Lease, error) {
	ttl = m.ttlOr(ttl)
	if err := ValidateTTL(ttl); err != nil {
		return Lease{}, err
	}
	obtain, err := obtainer(m.locker, key, limit, ttl)
	if err != nil {
		return Lease{}, err
	}
	if l, ok, err := m.renew(ctx, key, ttl, limit); ok || err != nil {
		return l, err
	}
	l, err := obtainWait(ctx, obtain, key, w, wakeups{})
	if err != nil {
		return Lease{}, err
	}
	m.remember(l, limit)
	return l, nil
}

// Release frees the lock this Manager holds on key. It returns ErrNotHeld
// when this Manager holds no lease on key or the lease was lost; it never
// frees another holder's lock.
func (m *Manager) Release(ctx context.Context, key string) error {
	l, ok := m.lease(key)
	if !ok {
		return fmt.Errorf("%w: this manager holds no lock on %q", ErrNotHeld, key)
	}
	return m.release(ctx, l)
}

// ReleaseID frees the lock on key whose lock_id is lockID, whoever obtained
// it, so a process can release what an earlier one acquired. It returns
// ErrNotHeld when lockID is not the current holder's.
func (m *Manager) ReleaseID(ctx context.Context, key, lockID string) error {
	return m.release(ctx, Lease{Key: key, Token: lockID})
}

func (m *Manager) release(ctx context.Context, l Lease) error {
	err := m.locker.Release(ctx, l)
	if err == nil || errors.Is(err, ErrNotHeld) {
		m.forget(l.Key, l.Token)
	}
	return err
}

// IsLocked reports whether a live lock is held on key, by anyone; for a
// key taken with a limit (see Limiter), whether any of its slots is.
func (m *Manager) IsLocked(ctx context.Context, key string) (bool, error) {
	rec, ok, err := m.locker.Inspect(ctx, key)
	if err != nil || ok && rec.State == Held {
		return err == nil, err
	}
	l, isLimiter := m.locker.(Limiter)
	if !isLimiter {
		return false, nil
	}
	slots, err := l.InspectSlots(ctx, key)
	if err != nil {
		return false, err
	}
	for _, r := range slots {
		if r.State == Held {
			return true, nil
		}
	}
	return false, nil
}

// CleanupExpiredLocks removes records of expired and released locks and
// returns how many it removed. Live locks are never touched.
func (m *Manager) CleanupExpiredLocks(ctx context.Context) (int, error) {
	return m.locker.Cleanup(ctx)
}

// Stats are the spec's getStats counts.
type Stats struct {
	// TotalLocks counts live and expired locks still on record.
	TotalLocks int `json:"total_locks"`
	// ActiveLocks counts live locks.
	ActiveLocks int `json:"active_locks"`
	// ExpiredLocks counts locks whose lease ran out without a release and
	// that cleanup has not removed yet.
	ExpiredLocks int `json:"expired_locks"`
	// InstanceLocks counts live leases this Manager holds.
	InstanceLocks int `json:"instance_locks"`
	// SkippedEntries counts entries of the store that are not lock records
	// and that the engine leaves alone (Skipped records): a symlink,
	// directory or FIFO named like a lock file. They are in no other count.
	// Not in the spec; omitted from JSON when zero.
	SkippedEntries int `json:"skipped_entries,omitempty"`
}

// GetStats scans the engine's records and counts them.
func (m *Manager) GetStats(ctx context.Context) (Stats, error) {
	var s Stats
	err := m.locker.Scan(ctx, func(r Record) bool {
		switch r.State {
		case Held:
			s.ActiveLocks++
		case Expired:
			s.ExpiredLocks++
		case Skipped:
			s.SkippedEntries++
		}
		return true
	})
	if err != nil {
		return Stats{}, err
	}
	s.TotalLocks = s.ActiveLocks + s.ExpiredLocks
	now := time.Now()
	m.mu.Lock()
	for _, l := range m.held {
		if l.ExpiresAt.After(now) {
			s.InstanceLocks++
		}
	}
	m.mu.Unlock()
	return s, nil
}

// ReleaseAll releases every lease this Manager holds, for shutdown
// handlers, and returns how many it released. Leases already lost are
// forgotten without error; other failures are joined into the error.
func (m *Manager) ReleaseAll(ctx context.Context) (int, error) {
	m.mu.Lock()
	leases := make([]Lease, 0, len(m.held))
	for _, l := range m.held {
		leases = append(leases, l)
	}
	m.mu.Unlock()
	var n int
	var errs []error
	for _, l := range leases {
		err := m.release(ctx, l)
		switch {
		case err == nil:
			n++
		case !errors.Is(err, ErrNotHeld):
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// Do obtains key, runs fn while renewing the lock, and releases it when fn
// returns, as Renewer.Run does (a lease of DefaultLease unless WithLease
// says otherwise; no waiting unless WithWait). It blocks until fn has
// returned and the lock is released. It returns a *HeldError without
// calling fn when the key is held, and otherwise fn's error joined with
// the loss (a *LostError matching ErrLost) when the lock was lost while fn
// ran, and with the release's failure. A panic in fn releases the lock and
// goes on.
func (m *Manager) Do(ctx context.Context, key string, fn func(ctx context.Context) error, opts ...RunOption) error {
	out, err := m.renewer.Run(ctx, key, fn, opts...)
	if !out.Ran {
		return err
	}
	return errors.Join(err, out.Lost, out.ReleaseErr)
}
