package lock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultReleaseTimeout bounds the release Run makes after fn returns,
// which runs even when the caller's context has ended.
const DefaultReleaseTimeout = 5 * time.Second

// ErrMaxRunTime is the cause of a context cancelled because the work ran
// longer than its maximum run time (WithMaxRunTime).
var ErrMaxRunTime = errors.New("lock: maximum run time exceeded")

// RunOption configures Renewer.Run and Manager.Do.
type RunOption func(*runConfig)

type runConfig struct {
	lease     time.Duration
	margin    time.Duration
	maxRun    time.Duration
	window    time.Duration
	wait      Wait
	releaseTO time.Duration
	held      *Lease
	limit     int
	waiting   func(key string) (stop func())
}

// WithLease sets how long the lock lasts between renewals while the work
// runs; it is renewed every third of it. It bounds how long a crashed
// holder blocks the key, not how long the work may run (see
// WithMaxRunTime). Default DefaultLease.
func WithLease(d time.Duration) RunOption { return func(c *runConfig) { c.lease = d } }

// WithMargin sets how long before the lease could run out the work's
// context is cancelled when renewals keep failing. Default a third of the
// lease; at most half of it.
func WithMargin(d time.Duration) RunOption { return func(c *runConfig) { c.margin = d } }

// WithMaxRunTime cancels the work's context, with cause ErrMaxRunTime,
// once it has run for d. Default: no limit.
func WithMaxRunTime(d time.Duration) RunOption { return func(c *runConfig) { c.maxRun = d } }

// WithWindow keeps the key taken after the work succeeds until d after the
// lock was obtained (released at once if that has passed), so the key runs
// at most once per window: rate-limit slots, once-per-window jobs. Work
// that fails or panics releases the key so a retry is not blocked. Default
// 0: the key is released when the work returns.
func WithWindow(d time.Duration) RunOption { return func(c *runConfig) { c.window = d } }

// WithHeldLease makes Run start from lease, which the caller already holds
// on the key (taken earlier, perhaps by another process), instead of
// obtaining the key: Run refreshes it for the lease's length and carries on
// as usual. When lease is no longer held, Run returns ErrNotHeld without
// running the work. Default: Run obtains the key.
func WithHeldLease(lease Lease) RunOption { return func(c *runConfig) { c.held = &lease } }

// WithLimit lets up to n holders run under key at once (see Limiter): the
// engine must be a Limiter when n is over 1. Default 1: one holder.
func WithLimit(n int) RunOption { return func(c *runConfig) { c.limit = n } }

// WithWait makes Run wait for a held key as w says. Default: try once.
func WithWait(w Wait) RunOption { return func(c *runConfig) { c.wait = w } }

// OnWait calls start when a Run waiting for a held key (WithWait) finds
// it held, and the function start returns when the Run stops waiting.
// Use it to hear of releases in other processes and pass them on with
// Renewer.Wake (the middleware does, over Redis pub/sub). Default: none.
func OnWait(start func(key string) (stop func())) RunOption {
	return func(c *runConfig) { c.waiting = start }
}

// WithReleaseTimeout bounds the release (or the shortening of a window)
// made after the work returns. Default DefaultReleaseTimeout.
func WithReleaseTimeout(d time.Duration) RunOption { return func(c *runConfig) { c.releaseTO = d } }

func newRunConfig(opts []RunOption) (runConfig, error) {
	c := runConfig{lease: DefaultLease, releaseTO: DefaultReleaseTimeout, limit: 1}
	for _, o := range opts {
		o(&c)
	}
	if err := ValidateLease(c.lease); err != nil {
		return c, fmt.Errorf("lease: %w", err)
	}
	if err := ValidateWindow(c.window); err != nil {
		return c, fmt.Errorf("window: %w", err)
	}
	if err := ValidateLimit(c.limit); err != nil {
		return c, err
	}
	if c.margin < 0 || c.maxRun < 0 || c.releaseTO <= 0 {
		return c, fmt.Errorf("lock: margin %s and maximum run time %s must not be negative, and release timeout %s must be positive",
			c.margin, c.maxRun, c.releaseTO)
	}
	return c, nil
}

// Outcome says what happened to the lock a Run held.
type Outcome struct {
	// Ran is true when the lock was obtained and the work ran.
	Ran bool
	// Lease is the lease as last renewed.
	Lease Lease
	// Held is how long the lock was held, from obtaining it until it was
	// released or kept.
	Held time.Duration
	// Lost is a *LostError (matching ErrLost) when the lock was lost while
	// the work ran (its context was cancelled then) or was found gone when
	// the work returned; nil otherwise.
	Lost error
	// Kept is true when the key stays taken until the end of its window
	// (WithWindow) instead of being released.
	Kept bool
	// ReleaseErr is the engine's failure to release the lock or to shorten
	// it to its window; the lock then ends with its lease.
	ReleaseErr error
}

// Run obtains key, runs fn under the lease while renewing it (see Hold),
// and when fn returns stops the renewals and releases the lock, or keeps it
// for its window (WithWindow). It blocks until all of that is done.
//
// fn's context carries the lease (LeaseFromContext) and is cancelled with a
// *LostError cause when the lock is lost, and with ErrMaxRunTime when the
// work overruns WithMaxRunTime. The release runs on every path, with a
// context that survives ctx's cancellation: when fn panics the lock is
// released and the panic goes on, so recoverers up the stack see it.
//
// When the key cannot be obtained fn does not run, out.Ran is false and err
// is why: a *HeldError (matching ErrNotObtained, and ctx's cause too when
// ctx ended a wait), ErrNotHeld (a lease given WithHeldLease had been
// lost), ctx's cause, or the engine's error. Otherwise err is fn's own
// error and out says what happened to the lock.
func (r *Renewer) Run(ctx context.Context, key string, fn func(ctx context.Context) error, opts ...RunOption) (out Outcome, err error) {
	cfg, err := newRunConfig(opts)
	if err != nil {
		return Outcome{}, err
	}
	var lease Lease
	if cfg.held != nil {
		if cfg.held.Key != key {
			return Outcome{}, fmt.Errorf("lock: the held lease is on %q, not %q", cfg.held.Key, key)
		}
		lease, err = r.locker.Refresh(ctx, *cfg.held, cfg.lease)
	} else if cfg.limit == 1 && cfg.wait.MaxWait <= 0 {
		lease, err = r.locker.Obtain(ctx, key, cfg.lease) // the common case, without closures
	} else {
		lease, err = r.obtainSlow(ctx, key, &cfg)
	}
	if err != nil {
		return Outcome{}, err
	}
	obtained := time.Now()
	workCtx, held := r.Hold(ctx, lease, cfg.lease, cfg.margin)
	if cfg.maxRun > 0 {
		var cancel context.CancelFunc
		workCtx, cancel = context.WithTimeoutCause(workCtx, cfg.maxRun, ErrMaxRunTime)
		defer cancel()
	}
	ok := false
	defer func() {
		out = r.finish(ctx, held, cfg, obtained, ok)
	}()
	err = fn(workCtx)
	ok = err == nil
	return out, err
}

// obtainSlow takes key for a Run that waits for it or takes one of
// several slots. A function of its own, so that the common case's stack
// (on the goroutine asynq starts per task) stays shallow.
func (r *Renewer) obtainSlow(ctx context.Context, key string, cfg *runConfig) (Lease, error) {
	obtain, err := r.obtainer(key, *cfg)
	if err != nil {
		return Lease{}, err
	}
	var wake wakeups
	if cfg.wait.MaxWait > 0 {
		// Waiters try again the moment a Run of this Renewer releases
		// the key, or Wake says it was released elsewhere; otherwise
		// every interval.
		waiting := cfg.waiting
		wake.next = func() (<-chan struct{}, func(bool)) { return r.waitFor(key) }
		if waiting != nil {
			wake.waiting = func() func() { return waiting(key) }
		}
	}
	return obtainWait(ctx, obtain, key, cfg.wait, wake)
}

// obtainer says how a Run takes key: a lock, or one of cfg.limit slots.
func (r *Renewer) obtainer(key string, cfg runConfig) (func(context.Context) (Lease, error), error) {
	return obtainer(r.locker, key, cfg.limit, cfg.lease)
}

// obtainer returns how to take key from l for ttl: a lock for a limit of
// 1, else one of limit slots, which needs l to be a Limiter.
func obtainer(l Locker, key string, limit int, ttl time.Duration) (func(context.Context) (Lease, error), error) {
	if limit == 1 {
		return func(ctx context.Context) (Lease, error) { return l.Obtain(ctx, key, ttl) }, nil
	}
	if err := ValidateLimit(limit); err != nil {
		return nil, err
	}
	lim, ok := l.(Limiter)
	if !ok {
		return nil, fmt.Errorf("lock: a limit of %d holders needs an engine that is a Limiter, not %T", limit, l)
	}
	return func(ctx context.Context) (Lease, error) { return lim.ObtainLimit(ctx, key, limit, ttl) }, nil
}

// finish stops renewing and releases the lock, or keeps it for its window
// when the work succeeded.
func (r *Renewer) finish(ctx context.Context, held *Renewal, cfg runConfig, obtained time.Time, ok bool) Outcome {
	lease, lost := held.Stop()
	out := Outcome{Ran: true, Lease: lease, Lost: lost}
	rctx, cancel := detachedTimeout(ctx, cfg.releaseTO)
	defer cancel()
	var err error
	left := time.Until(obtained.Add(cfg.window))
	if ok && lost == nil && left >= time.Millisecond {
		// Shorten (or stretch) the lease to the window's end.
		out.Lease, err = r.locker.Refresh(rctx, lease, left)
		out.Kept = err == nil
		if err != nil {
			out.Lease = lease
		}
	} else {
		err = r.locker.Release(rctx, lease)
	}
	out.Held = time.Since(obtained)
	if err == nil && !out.Kept {
		r.released(lease.Key)
	}
	switch {
	case errors.Is(err, ErrNotHeld):
		if out.Lost == nil {
			out.Lost = &LostError{Key: lease.Key, Err: fmt.Errorf("the lock was gone when the work returned: %w", err)}
		}
	case err != nil:
		out.ReleaseErr = err
	}
	return out
}
