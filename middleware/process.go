package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
)

// process runs one task under its lock.
func (m *middleware) process(ctx context.Context, t *asynq.Task, next asynq.Handler) error {
	r := m.ruleFor(t.Type())
	queue, _ := asynq.GetQueueName(ctx)
	ev := Event{TaskType: t.Type(), Queue: queue, Policy: r.Policy}

	key, err := m.key(ctx, r, t)
	if err != nil {
		ev.Kind, ev.Err = Error, err
		m.emit(ev)
		m.log.WarnContext(ctx, "joblock: task failed without retry: no lock key", "task", t.Type(), "err", err)
		// Bad input does not get better with retries.
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	ev.Key = key

	start := time.Now()
	lease, err := m.obtain(ctx, r, t, &ev)
	if err != nil {
		return m.refused(ctx, r, t, &ev, err)
	}
	ev.Kind, ev.Fence, ev.Duration = Obtained, lease.Fence, time.Since(start)
	m.emit(ev)
	m.log.DebugContext(ctx, "joblock: lock obtained", "task", t.Type(), "key", key, "fence", lease.Fence)

	return m.run(ctx, r, t, next, lease, ev)
}

// key derives and checks the task's lock key.
func (m *middleware) key(ctx context.Context, r *rule, t *asynq.Task) (string, error) {
	k, err := r.Key(ctx, t)
	if err != nil {
		return "", fmt.Errorf("middleware: task %q: %w", t.Type(), err)
	}
	key := m.prefix + k
	if err := lock.ValidateKey(key); err != nil {
		return "", fmt.Errorf("middleware: task %q: %w", t.Type(), err)
	}
	return key, nil
}

// obtain takes the lock once, or waits for it under the Wait policy.
func (m *middleware) obtain(ctx context.Context, r *rule, t *asynq.Task, ev *Event) (lock.Lease, error) {
	if r.Policy != Wait {
		return m.locker.Obtain(ctx, ev.Key, r.TTL)
	}
	start := time.Now()
	lease, err := lock.ObtainWait(ctx, m.locker, ev.Key, r.TTL, lock.Wait{MaxWait: r.MaxWait, Interval: r.WaitInterval, Jitter: 0.2})
	if err == nil || errors.Is(err, lock.ErrNotObtained) {
		m.emit(Event{Kind: Waited, TaskType: ev.TaskType, Queue: ev.Queue, Key: ev.Key, Policy: Wait,
			Duration: time.Since(start), Err: err})
	}
	return lease, err
}

// refused applies the policy to a task whose lock was not obtained.
func (m *middleware) refused(ctx context.Context, r *rule, t *asynq.Task, ev *Event, err error) error {
	var held *lock.HeldError
	if !errors.As(err, &held) {
		ev.Kind, ev.Err = Error, err
		m.emit(*ev)
		m.log.WarnContext(ctx, "joblock: lock engine failed; asynq will retry", "task", t.Type(), "key", ev.Key, "err", err)
		return err
	}
	policy := r.Policy
	if policy == Wait {
		policy = r.AfterWait
	}
	ev.Kind, ev.Policy = Duplicate, policy
	m.emit(*ev)
	m.log.DebugContext(ctx, "joblock: duplicate task", "task", t.Type(), "key", ev.Key, "holder", held.Holder,
		"holder_ttl", held.TTL, "policy", policy.String())
	dup := &DuplicateError{TaskType: t.Type(), Key: ev.Key, Holder: held.Holder, TTL: held.TTL}
	switch policy {
	case Skip:
		return nil
	case Fail:
		return fmt.Errorf("%w: %w", dup, asynq.SkipRetry)
	}
	return dup
}

// run calls the handler under the lease, renewing it, and lets it go as the
// strategy says.
func (m *middleware) run(ctx context.Context, r *rule, t *asynq.Task, next asynq.Handler, lease lock.Lease, ev Event) error {
	start := time.Now()
	workCtx, stop := lock.KeepAlive(ctx, m.locker, lease, r.TTL)
	err := next.ProcessTask(lock.ContextWithLease(workCtx, lease), t)
	lost := context.Cause(workCtx)
	lease = stop()
	ev.Duration = time.Since(start)

	if errors.Is(lost, lock.ErrLost) {
		ev.Kind, ev.Err = Lost, lost
		m.emit(ev)
		m.log.WarnContext(ctx, "joblock: lock lost while the task ran; its context was cancelled",
			"task", t.Type(), "key", ev.Key, "fence", lease.Fence, "err", lost)
		if err == nil {
			// The handler finished anyway; its work may have overlapped
			// another holder's, which the fencing token lets it detect.
			return nil
		}
		return errors.Join(err, lost)
	}

	if r.Strategy == HoldUntilTTL && err == nil {
		ev.Kind = Released
		m.emit(ev)
		m.log.DebugContext(ctx, "joblock: lock kept until its TTL", "task", t.Type(), "key", ev.Key, "expires_at", lease.ExpiresAt)
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.releaseTO)
	defer cancel()
	if rerr := m.locker.Release(rctx, lease); rerr != nil && !errors.Is(rerr, lock.ErrNotHeld) {
		ev.Kind, ev.Err = Error, rerr
		m.emit(ev)
		m.log.WarnContext(ctx, "joblock: release failed; the lock ends at its TTL", "task", t.Type(), "key", ev.Key, "err", rerr)
		return err
	}
	ev.Kind = Released
	m.emit(ev)
	m.log.DebugContext(ctx, "joblock: lock released", "task", t.Type(), "key", ev.Key, "held", ev.Duration)
	return err
}
