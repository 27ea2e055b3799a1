package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// DefaultRetryInterval is the pause between tries when Wait.Interval is
// zero, the spec's acquireWithWait default of 100 ms.
const DefaultRetryInterval = 100 * time.Millisecond

// Wait bounds how ObtainWait waits for a held key. The zero value tries
// once.
type Wait struct {
	// MaxWait is how long to keep trying after the first try. Zero tries
	// once.
	MaxWait time.Duration
	// Interval is the pause between tries, cut short when the holder's
	// lease is due to run out. Default DefaultRetryInterval.
	Interval time.Duration
	// Jitter spreads each pause by up to this fraction of Interval either
	// way, so waiters that started together do not retry in lockstep.
	// Values are clamped to [0, 1]. Default 0.
	Jitter float64
}

func (w Wait) pause() time.Duration {
	d := w.Interval
	if d <= 0 {
		d = DefaultRetryInterval
	}
	j := min(max(w.Jitter, 0), 1)
	if j == 0 {
		return d
	}
	spread := float64(d) * j
	return time.Duration(float64(d) - spread + rand.Float64()*2*spread)
}

// ObtainWait tries to obtain key until it succeeds, w.MaxWait has passed, or
// ctx is done. It blocks while it waits, trying again every w.Interval,
// and also when the holder's lease is due to run out (a holder that died
// frees the key then, with no release to wake anyone). When time runs out it returns an
// error that still matches ErrNotObtained and carries the last *HeldError;
// when ctx ends first, an error matching both ctx's cause and the last
// *HeldError; any other error from the engine is returned at once. It
// leaves nothing held on failure.
func ObtainWait(ctx context.Context, l Locker, key string, ttl time.Duration, w Wait) (Lease, error) {
	return obtainWait(ctx, func(ctx context.Context) (Lease, error) { return l.Obtain(ctx, key, ttl) }, key, w, wakeups{})
}

// ObtainLimitWait is ObtainWait for one of limit slots of key (see
// Limiter); a limit of 1 is ObtainWait. A limit above 1 needs l to be a
// Limiter, and a limit out of range is an error wrapping ErrInvalidLimit.
func ObtainLimitWait(ctx context.Context, l Locker, key string, limit int, ttl time.Duration, w Wait) (Lease, error) {
	obtain, err := obtainer(l, key, limit, ttl)
	if err != nil {
		return Lease{}, err
	}
	return obtainWait(ctx, obtain, key, w, wakeups{})
}

// wakeups tell a waiting obtain when to try again before its interval
// is up.
type wakeups struct {
	// next registers for the next release of the key and returns the
	// channel closed then, and how to leave (see Renewer.waitFor); nil:
	// no early tries.
	next func() (<-chan struct{}, func(gaveUp bool))
	// waiting, if set, is called when the first try finds the key held;
	// it returns the function to call when the waiting ends.
	waiting func() (stop func())
}

// obtainWait is ObtainWait over any way of obtaining key, that also tries
// again at once when a wake-up comes.
func obtainWait(ctx context.Context, obtain func(ctx context.Context) (Lease, error), key string, w Wait, wake wakeups) (_ Lease, err error) {
	if w.MaxWait <= 0 {
		return obtain(ctx) // one try, and nothing to set up for waiting
	}
	start := time.Now()
	var timer *time.Timer
	var released <-chan struct{}
	leave := func(bool) {}
	stopWaiting := func() {}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		leave(err != nil)
		stopWaiting()
	}()
	for try := 0; ; try++ {
		if wake.next != nil {
			// Before trying: a release during the try wakes the wait.
			leave(false)
			released, leave = wake.next()
		}
		lease, err := obtain(ctx)
		if err == nil || !errors.Is(err, ErrNotObtained) {
			return lease, err
		}
		left := w.MaxWait - time.Since(start)
		if left <= 0 {
			return Lease{}, fmt.Errorf("lock: gave up waiting for %q after %s: %w", key, w.MaxWait, err)
		}
		if try == 0 && wake.waiting != nil {
			stopWaiting = wake.waiting()
		}
		d := min(w.pause(), left)
		if held := (*HeldError)(nil); errors.As(err, &held) && held.TTL > 0 {
			// A holder that stops renewing (its process was killed) frees
			// the key when its lease runs out, and no release wakes anyone
			// then: try again at that moment rather than an interval later.
			d = min(d, held.TTL+time.Millisecond)
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			// Still a refusal: the key was held when the wait ended.
			return Lease{}, &waitEnded{cause: context.Cause(ctx), held: err}
		case <-timer.C:
		case <-released:
		}
	}
}

// waitEnded is the error of a wait for a held key cut short by its
// context: it matches the context's cause and the last refusal (a
// *HeldError, matching ErrNotObtained).
type waitEnded struct {
	cause, held error
}

func (e *waitEnded) Error() string {
	return fmt.Sprintf("%v while waiting for the key: %v", e.cause, e.held)
}

func (e *waitEnded) Unwrap() []error { return []error{e.cause, e.held} }
