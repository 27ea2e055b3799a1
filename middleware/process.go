package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
)

// errPanicked is the Err of the event for a handler that panicked.
var errPanicked = errors.New("middleware: the handler panicked; its lock was released")

// process runs one task under its lock.
func (m *middleware) process(ctx context.Context, t *asynq.Task, next asynq.Handler) error {
	_ = growStack() // before the calls that would grow it deep down
	r := m.ruleFor(t.Type())
	queue, _ := asynq.GetQueueName(ctx)
	id, _ := asynq.GetTaskID(ctx)
	c := &call{r: r, opts: r.opts, t: t, next: next, ev: Event{TaskType: t.Type(), Queue: queue, TaskID: id, Policy: r.Policy}, sendBack: true}
	key, err := m.key(ctx, r, t)
	if err != nil {
		return m.noKey(ctx, c, err)
	}
	c.ev.Key = key
	if r.Policy == Wait {
		c.wait = r.MaxWait
	}
	if r.Unique == NotUnique {
		return m.run(ctx, c)
	}
	return m.runUnique(ctx, c)
}

// noKey fails c's task, from which no lock key could be made, for good.
func (m *middleware) noKey(ctx context.Context, c *call, err error) error {
	ev := c.ev
	ev.Kind, ev.Err = Error, err
	m.emit(ev)
	m.log.WarnContext(ctx, "joblock: task failed without retry: no lock key", "task", c.t.Type(), "err", err)
	// Bad input does not get better with retries.
	return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
}

// runUnique runs c's task under its lock, freeing the unique key it took
// when it was enqueued (see Client) when its rule's mode says.
func (m *middleware) runUnique(ctx context.Context, c *call) error {
	r, t, next := c.r, c.t, c.next
	// The task holds its unique key under its first ID (see resentBase).
	held := lock.Lease{Key: m.uniqueKey(c.ev.Queue, c.ev.Key), Token: resentBase(c.ev.TaskID)}
	free := func(ctx context.Context) { m.freeUnique(ctx, held) }
	switch r.Unique {
	case UniqueUntilExecuting:
		free(ctx) // and runs are not kept apart
		return next.ProcessTask(ctx, t)
	case UniqueUntilExecuted:
		// Runs are kept apart by the task's lock, as under every rule; the
		// unique key says a copy exists until this run ends. While it runs
		// the key lasts one lease at a time (a crashed run frees it within
		// one), and it is freed when the run ends, whatever the outcome.
		var keep *lock.Renewal
		c.started = func(ctx context.Context) bool {
			keep = m.keepUnique(ctx, held, r.Lease)
			return true
		}
		c.dropped = free
		err := m.run(ctx, c)
		if keep != nil {
			_, _ = keep.Stop()
			free(ctx)
		}
		return err
	default:
		// The unique key is freed the moment the task's turn to run comes:
		// a newer copy may then wait in the queue. A task whose key a
		// newer copy took (Replace, Debounce) while it waited does not run.
		c.started = func(ctx context.Context) bool { return m.claimTurn(ctx, held) }
		c.dropped = free
	}
	return m.run(ctx, c)
}

// keepUnique renews the unique key a running task holds, one lease at a
// time, until the returned Renewal is stopped; nil if the task no longer
// holds it (it ran out, or this is a later attempt of a task whose key was
// freed), which does not stop the run: its lock keeps runs apart.
func (m *middleware) keepUnique(ctx context.Context, held lock.Lease, lease time.Duration) *lock.Renewal {
	l, err := m.locker.Refresh(ctx, held, lease)
	if err != nil {
		if !errors.Is(err, lock.ErrNotHeld) {
			m.log.WarnContext(ctx, "joblock: could not shorten a running task's unique key to its lease; it ends with its UniqueFor", "key", held.Key, "err", err)
		}
		return nil
	}
	_, keep := m.renewer.Hold(context.WithoutCancel(ctx), l, lease, 0)
	return keep
}

// claimTurn frees the unique key of a task whose turn to run has come. It
// reports false when a newer copy replaced the task while it waited,
// which the Client marks. A key that is no longer the task's without a
// mark does not stop it: an earlier attempt of the task took its turn
// (this is a retry, or a redelivery after a crash), or the task was not
// enqueued through a Client, or its key ran out.
func (m *middleware) claimTurn(ctx context.Context, held lock.Lease) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.releaseTO)
	defer cancel()
	err := m.locker.Release(rctx, held)
	switch {
	case errors.Is(err, lock.ErrNotHeld):
		return !m.takeMark(rctx, replacedKey(held.Key, held.Token))
	case err != nil:
		m.log.WarnContext(ctx, "joblock: could not free a task's unique key; it ends with its UniqueFor", "key", held.Key, "err", err)
	}
	return true
}

// takeMark reports whether the mark key is held, and removes it. An engine
// error says no: better run a replaced copy than drop one that was not.
func (m *middleware) takeMark(ctx context.Context, key string) bool {
	rec, ok, err := m.locker.Inspect(ctx, key)
	if err != nil {
		m.log.WarnContext(ctx, "joblock: could not read whether a task was replaced; it runs", "key", key, "err", err)
		return false
	}
	if !ok || rec.State != lock.Held {
		return false
	}
	_ = m.locker.Release(ctx, lock.Lease{Key: key, Token: rec.Token})
	return true
}

// freeUnique releases the unique key a task held while it was queued.
func (m *middleware) freeUnique(ctx context.Context, held lock.Lease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.releaseTO)
	defer cancel()
	if err := m.locker.Release(rctx, held); err != nil && !errors.Is(err, lock.ErrNotHeld) {
		m.log.WarnContext(ctx, "joblock: could not free a task's unique key; it ends with its UniqueFor", "key", held.Key, "err", err)
	}
}

// key derives and checks the task's lock key.
func (m *middleware) key(ctx context.Context, r *rule, t *asynq.Task) (string, error) {
	var key string
	if r.simple != nil {
		// Prefix and key in one allocation.
		var b strings.Builder
		b.Grow(len(m.prefix) + r.simple.size + 32)
		b.WriteString(m.prefix)
		if err := r.simple.write(&b, ctx, t); err != nil {
			return "", fmt.Errorf("middleware: task %q: %w", t.Type(), err)
		}
		key = b.String()
	} else {
		k, err := r.Key(ctx, t)
		if err != nil {
			return "", fmt.Errorf("middleware: task %q: %w", t.Type(), err)
		}
		key = m.prefix + k
	}
	if err := lock.ValidateKey(key); err != nil {
		return "", fmt.Errorf("middleware: task %q: %w", t.Type(), err)
	}
	if r.Unique != NotUnique {
		if err := m.checkUniqueKey(QueueName(ctx), key); err != nil {
			return "", fmt.Errorf("middleware: task %q: %w", t.Type(), err)
		}
	}
	return key, nil
}

// enqueueSuffix ends the key that enqueuers of a unique key take turns on.
const enqueueSuffix = "#enqueue"

// checkUniqueKey checks the keys a unique rule derives from key in queue:
// the unique key, and the one its enqueuers take turns on, a few bytes
// longer. The Client and the worker check the same, so a task one accepts
// the other does not refuse.
func (m *middleware) checkUniqueKey(queue, key string) error {
	k := m.uniqueKey(queue, key) + enqueueSuffix
	if len(k) > lock.MaxKeyLen {
		return fmt.Errorf("%w: its unique key is too long: %q, the key and %q make %d bytes, the limit is %d",
			lock.ErrInvalidKey, m.uniqueKey(queue, ""), enqueueSuffix, len(k), lock.MaxKeyLen)
	}
	if err := lock.ValidateKey(k); err != nil {
		return fmt.Errorf("its unique key: %w", err)
	}
	return nil
}

// call is one task on its way through the middleware.
type call struct {
	r    *rule
	opts []lock.RunOption
	t    *asynq.Task
	next asynq.Handler
	ev   Event
	// sendBack says a duplicate may still be sent back (see refused).
	sendBack bool
	// wait is how long to wait for a held key; zero tries once.
	wait time.Duration
	// rechecks counts the tries made because a refused key came free.
	rechecks int
	// started runs once the lock is taken, before the handler, which runs
	// only if it reports true; dropped runs when the task completes without
	// running (Skip, Fail).
	started func(ctx context.Context) bool
	dropped func(ctx context.Context)
}

// run calls the handler under the task's lock, as lock.Renewer.Run holds
// it, and turns what happened into events and the error asynq sees.
func (m *middleware) run(ctx context.Context, c *call) error {
	opts := c.opts
	if c.wait > 0 {
		opts = c.waitOptions(ctx)
	}
	ev := c.ev
	start := time.Now()
	var obtained time.Time
	returned := false
	defer func() {
		if !returned && !obtained.IsZero() {
			// The handler panicked: Run released the lock, and the panic
			// goes on to asynq's recoverer, which retries the task.
			ev.Kind, ev.Err, ev.Duration = Released, errPanicked, time.Since(obtained)
			m.emit(ev)
		}
	}()
	// The work of this function is split over helpers that return before
	// the engine is called, so the goroutine asynq starts per task needs a
	// shallower stack (it grows one afresh for every task).
	out, err := m.renewer.Run(ctx, ev.Key, func(ctx context.Context) error {
		obtained = time.Now()
		if !m.obtained(ctx, c, &ev, start, obtained) {
			return nil
		}
		return c.next.ProcessTask(ctx, c.t)
	}, opts...)
	returned = true
	if !out.Ran {
		return m.notRun(ctx, c, &ev, start, err)
	}
	return m.ran(ctx, c, &ev, &out, err)
}

// waitOptions are the options of a Run that waits for the key.
func (c *call) waitOptions(ctx context.Context) []lock.RunOption {
	w := lock.Wait{MaxWait: untilDeadline(ctx, c.wait), Interval: c.r.WaitInterval, Jitter: 0.2}
	return append(c.opts[:len(c.opts):len(c.opts)], lock.WithWait(w))
}

// obtained reports the lock taken for c's task and says whether its
// handler runs.
func (m *middleware) obtained(ctx context.Context, c *call, ev *Event, start, obtained time.Time) bool {
	lease, _ := lock.LeaseFromContext(ctx)
	ev.Kind, ev.Fence, ev.Duration, ev.Holder = Obtained, lease.Fence, obtained.Sub(start), ""
	if c.r.Policy == Wait {
		m.emit(Event{Kind: Waited, TaskType: ev.TaskType, Queue: ev.Queue, TaskID: ev.TaskID, Key: ev.Key, Policy: Wait, Duration: ev.Duration})
	}
	m.emit(*ev)
	if m.debug(ctx) {
		m.log.DebugContext(ctx, "joblock: lock obtained", "task", c.t.Type(), "key", ev.Key, "fence", lease.Fence)
	}
	if c.started != nil && !c.started(ctx) {
		m.emit(Event{Kind: Replaced, TaskType: ev.TaskType, Queue: ev.Queue, TaskID: ev.TaskID, Key: ev.Key})
		m.log.InfoContext(ctx, "joblock: task replaced by a newer copy while it waited: not run", "task", c.t.Type(), "key", ev.Key)
		return false
	}
	return true
}

// notRun applies the policy to c's task, whose lock was not taken.
func (m *middleware) notRun(ctx context.Context, c *call, ev *Event, start time.Time, err error) error {
	if c.r.Policy == Wait && errors.Is(err, lock.ErrNotObtained) {
		m.emit(Event{Kind: Waited, TaskType: ev.TaskType, Queue: ev.Queue, TaskID: ev.TaskID, Key: ev.Key, Policy: Wait,
			Duration: time.Since(start), Err: err})
	}
	return m.refused(ctx, c, ev, err)
}

// ran reports what happened to the lock of c's task, which ran and
// returned err, and returns the error asynq sees.
func (m *middleware) ran(ctx context.Context, c *call, ev *Event, out *lock.Outcome, err error) error {
	t := c.t
	ev.Fence, ev.Duration = out.Lease.Fence, out.Held
	switch {
	case out.Lost != nil:
		ev.Kind, ev.Err = Lost, out.Lost
		m.emit(*ev)
		m.log.WarnContext(ctx, "joblock: lock lost while the task ran; its context was cancelled",
			"task", t.Type(), "key", ev.Key, "fence", ev.Fence, "err", out.Lost)
		if err == nil {
			// The handler finished anyway; its work may have overlapped
			// another holder's, which the fencing token lets it detect.
			return nil
		}
		return errors.Join(err, out.Lost)
	case out.ReleaseErr != nil:
		ev.Kind, ev.Err = Error, out.ReleaseErr
		m.emit(*ev)
		m.log.WarnContext(ctx, "joblock: release failed; the lock ends with its lease", "task", t.Type(), "key", ev.Key, "err", out.ReleaseErr)
		return err
	}
	ev.Kind = Released
	m.emit(*ev)
	if !out.Kept {
		m.handOff(ctx, *ev)
	}
	switch {
	case !m.debug(ctx):
	case out.Kept:
		m.log.DebugContext(ctx, "joblock: key kept for its window", "task", t.Type(), "key", ev.Key, "expires_at", out.Lease.ExpiresAt)
	default:
		m.log.DebugContext(ctx, "joblock: lock released", "task", t.Type(), "key", ev.Key, "held", ev.Duration)
	}
	return err
}

// deadlineMargin is how long before its task's deadline a wait for a key
// gives up, so that the policy that follows (sending the task back, or
// returning it to asynq as a duplicate) is done before asynq, at the
// deadline, counts the task as failed and archives it if it has no
// retries left.
const deadlineMargin = time.Second

// untilDeadline caps a wait of d so that it ends deadlineMargin before
// ctx's deadline (half the time left, if that is shorter).
func untilDeadline(ctx context.Context, d time.Duration) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return d
	}
	left := time.Until(dl)
	return max(min(d, left-min(deadlineMargin, left/2)), 0)
}

// debug reports whether the logger takes debug records: every task logs
// two, whose arguments cost allocations even when they are dropped.
func (m *middleware) debug(ctx context.Context) bool { return m.log.Enabled(ctx, slog.LevelDebug) }

// refused applies the policy to a task whose lock was not obtained.
func (m *middleware) refused(ctx context.Context, c *call, ev *Event, err error) error {
	r, t := c.r, c.t
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
	if held.Reason != nil {
		// No run is known to hold the key (the engine's store restarted):
		// dropping the task could lose its work.
		policy = Retry
		m.log.InfoContext(ctx, "joblock: key refused for a while; the task comes back after it", "task", t.Type(), "key", ev.Key,
			"for", held.TTL, "why", held.Holder)
	}
	ev.Kind, ev.Policy, ev.Holder, ev.Err = Duplicate, policy, held.Holder, held.Reason
	m.emit(*ev)
	m.log.DebugContext(ctx, "joblock: duplicate task", "task", t.Type(), "key", ev.Key,
		"holder_ttl", held.TTL, "policy", policy.String())
	dup := &DuplicateError{TaskType: t.Type(), Key: ev.Key, Holder: held.Holder, TTL: held.TTL, Reason: held.Reason}
	switch policy {
	case Skip, Fail:
		if c.dropped != nil {
			c.dropped(ctx)
		}
		if policy == Fail {
			return fmt.Errorf("%w: %w", dup, asynq.SkipRetry)
		}
		return nil
	}
	if !c.sendBack || retriesLeft(ctx) {
		m.addWaiter(ctx, ev.Key, ev.Queue, ev.TaskID)
		if held.Reason == nil && c.rechecks < maxRechecks && m.keyFree(ctx, ev.Key, r.Limit) {
			// Released between the refusal and the sign-up: no release
			// will hand it the key now, so it tries again here. (A key
			// refused for a while with no holder looks free, and stays
			// refused until the TTL.)
			m.removeWaiter(ctx, ev.Key, ev.Queue, ev.TaskID)
			c.rechecks++
			return m.run(ctx, c)
		}
		return dup
	}
	return m.sendBack(ctx, c, *ev, dup)
}

// maxRechecks bounds how often one delivery of a task tries again because
// the key it was refused came free meanwhile.
const maxRechecks = 3

// keyFree reports whether key has a free place now (limit holders at
// most); an engine error says no.
func (m *middleware) keyFree(ctx context.Context, key string, limit int) bool {
	if limit > 1 {
		l, ok := m.locker.(lock.Limiter)
		if !ok {
			return false
		}
		slots, err := l.InspectSlots(ctx, key)
		if err != nil {
			return false
		}
		held := 0
		for _, r := range slots {
			if r.State == lock.Held {
				held++
			}
		}
		return held < limit
	}
	rec, ok, err := m.locker.Inspect(ctx, key)
	return err == nil && (!ok || rec.State != lock.Held)
}

// retriesLeft reports whether asynq will retry the task when it fails:
// asynq archives a task whose retries are used up before it asks
// IsFailure. Outside an asynq server it says yes.
func retriesLeft(ctx context.Context) bool {
	n, ok := asynq.GetRetryCount(ctx)
	limit, ok2 := asynq.GetMaxRetry(ctx)
	return !ok || !ok2 || n < limit
}

// sendBack keeps a duplicate that asynq would archive: it enqueues it
// again as a new task, or without a Redis client waits for the key here.
func (m *middleware) sendBack(ctx context.Context, c *call, ev Event, dup *DuplicateError) error {
	t := c.t
	if m.client == nil {
		m.log.InfoContext(ctx, "joblock: duplicate has no retries left: waiting for the key (WithRedisClient would send it back instead)",
			"task", t.Type(), "key", ev.Key)
		// As long as the task may run, up to just before its deadline.
		waiting := *c
		waiting.wait, waiting.sendBack = math.MaxInt64, false
		return m.run(ctx, &waiting)
	}
	copyID, err := m.requeue(ctx, t, dup)
	if err != nil {
		ev.Kind, ev.Err = Error, err
		m.emit(ev)
		m.log.ErrorContext(ctx, "joblock: could not send a duplicate back; asynq archives it", "task", t.Type(), "key", ev.Key, "err", err)
		return fmt.Errorf("%w (sending it back failed: %v)", dup, err)
	}
	ev.Kind = Requeued
	m.emit(ev)
	m.addWaiter(ctx, ev.Key, ev.Queue, copyID) // handed the key when it frees, as other duplicates
	return nil
}

// requeue enqueues a copy of t, with the options asynq stored for it, to
// come back when the holder is due to finish, and returns the copy's ID.
// The copy's ID is derived from t's, so a second delivery of t (after a
// crash) finds its copy there and enqueues no other; a copy of the same
// ID left by an earlier task of that ID (an archived one, or a completed
// one of another payload) is passed over for the next ID.
func (m *middleware) requeue(ctx context.Context, t *asynq.Task, dup *DuplicateError) (string, error) {
	queue, _ := asynq.GetQueueName(ctx)
	id, _ := asynq.GetTaskID(ctx)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	info, err := m.inspect.GetTaskInfo(queue, id)
	if err != nil {
		return "", fmt.Errorf("read task %s: %w", id, err)
	}
	// The copy has the retries the task had left, so that sending it back
	// never adds runs of a task that keeps failing.
	opts := []asynq.Option{asynq.Queue(queue), asynq.MaxRetry(max(info.MaxRetry-info.Retried, 0)), asynq.ProcessIn(dupDelay(dup))}
	if info.Timeout > 0 {
		opts = append(opts, asynq.Timeout(info.Timeout))
	}
	if !info.Deadline.IsZero() {
		opts = append(opts, asynq.Deadline(info.Deadline))
	}
	if info.Retention > 0 {
		opts = append(opts, asynq.Retention(info.Retention))
	}
	copyID := id
	for range maxResent {
		copyID = resentID(copyID)
		_, err = m.client.EnqueueContext(ctx, asynq.NewTaskWithHeaders(t.Type(), t.Payload(), t.Headers()), append(opts, asynq.TaskID(copyID))...)
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return copyID, err
		}
		prev, perr := m.inspect.GetTaskInfo(queue, copyID)
		switch {
		case perr != nil:
			return "", fmt.Errorf("read task %s: %w", copyID, perr)
		case prev.State == asynq.TaskStateArchived,
			prev.State == asynq.TaskStateCompleted && !bytes.Equal(prev.Payload, t.Payload()):
			continue // an earlier task's copy
		}
		return copyID, nil // sent back by an earlier delivery of this task
	}
	return "", fmt.Errorf("task %s has been sent back %d times: not again", id, maxResent)
}

// resentSep separates a task's ID from the count of times it was sent
// back.
const resentSep = "~resent-"

// resentID is the ID of the copy of the task with ID id.
func resentID(id string) string {
	base, count := id, 0
	if i := strings.LastIndex(id, resentSep); i >= 0 {
		if n, err := strconv.Atoi(id[i+len(resentSep):]); err == nil {
			base, count = id[:i], n
		}
	}
	return base + resentSep + strconv.Itoa(count+1)
}
