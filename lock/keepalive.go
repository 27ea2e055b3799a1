package lock

import (
	"context"
	"errors"
	"sync"
	"time"
)

// KeepAlive renews lease in a goroutine every ttl/3 until the returned stop
// function is called or ctx ends, and does not block. The returned context
// is derived from ctx; it is cancelled with a *LostError cause (matching
// ErrLost) as soon as a renewal reports ErrNotHeld, or when renewals keep
// failing until the lease has run out.
//
// stop ends the renewals, waits for the goroutine, and returns the latest
// lease, which the caller should release. Calling stop more than once is
// safe.
func KeepAlive(ctx context.Context, l Locker, lease Lease, ttl time.Duration) (context.Context, func() Lease) {
	workCtx, cancel := context.WithCancelCause(ctx)
	k := &keeper{
		locker:   l,
		lease:    lease,
		ttl:      ttl,
		deadline: time.Now().Add(time.Until(lease.ExpiresAt)),
		cancel:   cancel,
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go k.run(workCtx)
	var once sync.Once
	return workCtx, func() Lease {
		once.Do(func() { close(k.quit) })
		<-k.done
		return k.lease
	}
}

type keeper struct {
	locker   Locker
	lease    Lease // written only by run until done is closed
	ttl      time.Duration
	deadline time.Time // local monotonic end of the current lease
	cancel   context.CancelCauseFunc
	quit     chan struct{}
	done     chan struct{}
}

func (k *keeper) run(ctx context.Context) {
	defer close(k.done)
	interval := max(k.ttl/3, time.Millisecond)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-k.quit:
			return
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		next, lost := k.renew(ctx)
		if lost != nil {
			k.cancel(&LostError{Key: k.lease.Key, Err: lost})
			return
		}
		timer.Reset(next)
	}
}

// renew makes one renewal attempt and says when to try again, or why the
// lock is lost.
func (k *keeper) renew(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), k.deadline)
	defer cancel()
	lease, err := k.locker.Refresh(rctx, k.lease, k.ttl)
	switch {
	case err == nil:
		k.lease = lease
		k.deadline = start.Add(k.ttl)
		return max(k.ttl/3, time.Millisecond), nil
	case errors.Is(err, ErrNotHeld):
		return 0, err
	}
	left := time.Until(k.deadline)
	if left <= 0 {
		return 0, err
	}
	// A transient failure: try again soon, while the lease still runs.
	return max(min(k.ttl/10, left/2), time.Millisecond), nil
}
