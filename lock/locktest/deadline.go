package locktest

import (
	"context"
	"time"

	"github.com/joblock/joblock/lock"
)

// Deadlined wraps l so that every lease it hands out, obtained or
// refreshed, expires no later than the clock read before the call plus
// the TTL asked for: a deadline SectionLog.Exit can trust whatever clock
// the engine reads, and however long the caller was descheduled inside
// the call, as long as the engine's store runs on this host's time. It is
// a lock.Limiter when l is one.
func Deadlined(l lock.Locker) lock.Locker {
	d := deadlined{Locker: l}
	if lim, ok := l.(lock.Limiter); ok {
		return deadlinedLimiter{deadlined: d, lim: lim}
	}
	return d
}

type deadlined struct{ lock.Locker }

// clamp keeps the expiry of a lease that a call started at start
// returned no later than start+ttl.
func clamp(lease lock.Lease, err error, start time.Time, ttl time.Duration) (lock.Lease, error) {
	if end := start.Add(ttl); err == nil && end.Before(lease.ExpiresAt) {
		lease.ExpiresAt = end
	}
	return lease, err
}

func (d deadlined) Obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	start := time.Now()
	lease, err := d.Locker.Obtain(ctx, key, ttl)
	return clamp(lease, err, start, ttl)
}

func (d deadlined) Refresh(ctx context.Context, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	start := time.Now()
	lease, err := d.Locker.Refresh(ctx, lease, ttl)
	return clamp(lease, err, start, ttl)
}

type deadlinedLimiter struct {
	deadlined
	lim lock.Limiter
}

func (d deadlinedLimiter) ObtainLimit(ctx context.Context, key string, limit int, ttl time.Duration) (lock.Lease, error) {
	start := time.Now()
	lease, err := d.lim.ObtainLimit(ctx, key, limit, ttl)
	return clamp(lease, err, start, ttl)
}

func (d deadlinedLimiter) InspectSlots(ctx context.Context, key string) ([]lock.Record, error) {
	return d.lim.InspectSlots(ctx, key)
}
