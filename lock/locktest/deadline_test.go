package locktest

import (
	"context"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lateClock is an engine whose leases claim to run an hour longer than
// asked, as one reading its clock late would.
type lateClock struct{ lock.Limiter }

func (lateClock) Obtain(_ context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	return lock.Lease{Key: key, ExpiresAt: time.Now().Add(ttl + time.Hour)}, nil
}

func (lateClock) Refresh(_ context.Context, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	lease.ExpiresAt = time.Now().Add(ttl + time.Hour)
	return lease, nil
}

func (lateClock) ObtainLimit(ctx context.Context, key string, _ int, ttl time.Duration) (lock.Lease, error) {
	return lateClock{}.Obtain(ctx, key, ttl)
}

func TestDeadlined(t *testing.T) {
	ctx := context.Background()
	l := Deadlined(lateClock{})
	lim, ok := l.(lock.Limiter)
	require.True(t, ok, "a Limiter stays one")
	for name, call := range map[string]func() (lock.Lease, error){
		"obtain":  func() (lock.Lease, error) { return l.Obtain(ctx, "k", time.Minute) },
		"refresh": func() (lock.Lease, error) { return l.Refresh(ctx, lock.Lease{Key: "k"}, time.Minute) },
		"limit":   func() (lock.Lease, error) { return lim.ObtainLimit(ctx, "k", 2, time.Minute) },
	} {
		before := time.Now()
		lease, err := call()
		require.NoError(t, err, name)
		assert.False(t, lease.ExpiresAt.After(time.Now().Add(time.Minute)), "%s: the engine's late expiry kept", name)
		assert.False(t, lease.ExpiresAt.Before(before.Add(time.Minute)), "%s: read before the call, not earlier", name)
	}

	var plain lock.Locker = deadlined{}
	_, isLimiter := Deadlined(plain).(lock.Limiter)
	assert.False(t, isLimiter, "a plain Locker does not become a Limiter")
}
