package lock

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultLease is how long a lock taken for running work lasts unless it
// is renewed. Work renews it every third of it for as long as it runs, so
// the lease bounds how long a crashed holder keeps its key blocked, not how
// long work may run.
const DefaultLease = 15 * time.Second

// idleLinger is how long the renewer's goroutine waits for new leases once
// it has none, so a worker running one short task after another does not
// start a goroutine per task.
const idleLinger = 100 * time.Millisecond

// Renewer keeps the leases of running work alive: one goroutine per
// Renewer renews every lease it holds when it falls due, instead of one
// goroutine per lease. The goroutine starts with the first lease and ends
// shortly after the last one is stopped, so a Renewer needs no closing.
//
// A Renewer is safe for concurrent use.
type Renewer struct {
	locker Locker
	wake   chan struct{}

	mu         sync.Mutex
	due        holdHeap
	refreshing int                  // renewals on the wire
	alive      bool                 // the goroutine runs
	idleSince  time.Time            // when it last had nothing to do; zero while busy
	wakeAt     time.Time            // when it wakes unless poked; zero when it is not sleeping
	waiters    map[string][]*waiter // by key, longest waiting first
}

// waiter is a Run of one Renewer waiting for a key, woken when another of
// its Runs releases it (or Wake says it was released elsewhere).
type waiter struct {
	woken chan struct{}
	done  bool // woken already
}

// waitFor registers a Run as waiting for key and returns the channel
// closed when a release wakes it. Releases wake one waiter each, the
// longest waiting, so that one release does not send every waiter to the
// engine at once. Call leave when the Run stops waiting on this channel:
// with gaveUp when it ends its wait without the key, so that a wake-up it
// got passes to the next waiter.
func (r *Renewer) waitFor(key string) (woken <-chan struct{}, leave func(gaveUp bool)) {
	w := &waiter{woken: make(chan struct{})}
	r.mu.Lock()
	if r.waiters == nil {
		r.waiters = map[string][]*waiter{}
	}
	r.waiters[key] = append(r.waiters[key], w)
	r.mu.Unlock()
	return w.woken, func(gaveUp bool) {
		r.mu.Lock()
		queue := r.waiters[key]
		for i, o := range queue {
			if o == w {
				queue = append(queue[:i:i], queue[i+1:]...)
				break
			}
		}
		if len(queue) == 0 {
			delete(r.waiters, key)
		} else {
			r.waiters[key] = queue
		}
		passOn := gaveUp && w.done
		r.mu.Unlock()
		if passOn {
			r.released(key)
		}
	}
}

// Wake makes a Run of r waiting for key (WithWait), the longest waiting,
// try again at once, as a release by another Run of r does: call it when
// key was released elsewhere and you hear of it (see OnWait).
func (r *Renewer) Wake(key string) { r.released(key) }

// released wakes the longest waiting Run of r for key, if any.
func (r *Renewer) released(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	queue := r.waiters[key]
	if len(queue) == 0 {
		return
	}
	w := queue[0]
	if len(queue) == 1 {
		delete(r.waiters, key)
	} else {
		r.waiters[key] = queue[1:]
	}
	w.done = true
	close(w.woken)
}

// NewRenewer returns a Renewer that renews leases of engine l.
func NewRenewer(l Locker) *Renewer {
	return &Renewer{locker: l, wake: make(chan struct{}, 1)}
}

// Locker returns the engine the Renewer renews leases on.
func (r *Renewer) Locker() Locker { return r.locker }

// Renewal is a lease that a Renewer keeps alive. Stop it when the work ends.
type Renewal struct {
	// The work's context, which the Renewal is, with the lease as a value
	// (LeaseFromContext).
	context.Context
	r      *Renewer
	cancel context.CancelCauseFunc
	ttl    time.Duration
	margin time.Duration

	// Guarded by r.mu.
	lease    Lease
	deadline time.Time // the lease runs out no earlier than this
	next     time.Time // next renewal
	lastErr  error     // the last renewal's failure
	lost     error     // set once: why the work was cancelled
	inflight bool
	stopped  bool
	settled  chan struct{} // closed when a renewal in flight at Stop ends
	index    int           // in r.due, -1 when not there
}

// Hold keeps lease, obtained for ttl, alive while work runs under it, and
// does not block: the lease is refreshed for ttl every ttl/3. The returned
// context is derived from ctx, carries the lease as last renewed
// (LeaseFromContext), and is cancelled with a *LostError cause
// (matching ErrLost) as soon as a renewal finds the lock gone, or at the
// latest margin before the lease could run out when renewals keep failing,
// so the work can stop before anyone else may take the lock. A margin of
// zero means ttl/3; margins over ttl/2 are taken as ttl/2.
//
// Renewals go on until Stop, even after ctx ends: work that does not watch
// its context still holds its lock until it returns.
func (r *Renewer) Hold(ctx context.Context, lease Lease, ttl, margin time.Duration) (context.Context, *Renewal) {
	// On this process's monotonic clock from here on.
	now := time.Now()
	deadline := now.Add(lease.ExpiresAt.Sub(now))
	if margin <= 0 {
		margin = ttl / 3
	}
	margin = min(margin, ttl/2)
	// The first renewal comes a third of the lease from now, or, for a
	// lease obtained a while ago, half way to the point where the work
	// would be told it is lost, so that it is tried before then.
	next := now.Add(ttl / 3)
	if cut := deadline.Add(-margin); next.After(cut) {
		next = now.Add(max(cut.Sub(now)/2, 0))
	}
	workCtx, cancel := context.WithCancelCause(ctx)
	h := &Renewal{Context: workCtx, r: r, cancel: cancel, ttl: ttl, margin: margin,
		lease: lease, deadline: deadline, next: next, index: -1}
	r.mu.Lock()
	heap.Push(&r.due, h)
	start := !r.alive
	r.alive = true
	// The goroutine sleeps until the first lease falls due, or until its
	// idle linger ends: it needs waking only when this lease falls due
	// before that. With one lease length for all work, a lease held later
	// is due later, so a worker running short tasks does not wake it for
	// each.
	early := h.when().Before(r.wakeAt)
	r.mu.Unlock()
	switch {
	case start:
		go r.loop()
	case early:
		r.poke()
	}
	return h, h
}

// Value returns the lease for LeaseFromContext, and the work context's
// values otherwise.
func (h *Renewal) Value(key any) any {
	if key == (leaseKey{}) {
		return h
	}
	return h.Context.Value(key)
}

// Lease returns the lease as last renewed: its expiry moves with each
// renewal, its key, owner and fencing token never do.
func (h *Renewal) Lease() Lease {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	return h.lease
}

// Stop ends the renewals, waiting for one in flight, and returns the lease
// as last renewed and, if the work's context was cancelled because the lock
// was lost, why (a *LostError). The lock itself is left as it is: release
// it, or let it run out. Calling Stop more than once is safe.
func (h *Renewal) Stop() (Lease, error) {
	r := h.r
	r.mu.Lock()
	if !h.stopped {
		h.stopped = true
		if h.index >= 0 {
			heap.Remove(&r.due, h.index)
		}
		if h.inflight {
			h.settled = make(chan struct{})
		}
	}
	settled := h.settled
	r.mu.Unlock()
	if settled != nil {
		<-settled
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// The goroutine wakes when the first lease falls due, even if it was
	// this one, and finds the next. Once no lease is left it lingers from
	// now, and needs waking only if it would sleep longer than that.
	if len(r.due) == 0 && r.refreshing == 0 {
		now := time.Now()
		r.idleSince = now
		if r.wakeAt.After(now.Add(idleLinger)) {
			r.poke()
		}
	}
	return h.lease, h.lost
}

// cut is when the work must be told the lock is lost if no renewal has
// succeeded by then.
func (h *Renewal) cut() time.Time { return h.deadline.Add(-h.margin) }

// when is the next time the renewer must look at h.
func (h *Renewal) when() time.Time {
	if cut := h.cut(); h.inflight || h.next.After(cut) {
		return cut
	}
	return h.next
}

func (r *Renewer) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Renewer) loop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait, exit := r.step(time.Now())
		if exit {
			return
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-r.wake:
		}
	}
}

// step starts the renewals that are due, cancels the work of leases that
// could not be renewed in time, and says how long to sleep, or to exit
// when nothing is left to do.
func (r *Renewer) step(now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.due) > 0 {
		h := r.due[0]
		if h.when().After(now) {
			break
		}
		if !now.Before(h.cut()) {
			r.loseLocked(h, fmt.Errorf("not renewed in time, given up %s before the lease could run out: %w", h.margin, renewalError(h.lastErr)))
			continue
		}
		h.inflight = true
		heap.Fix(&r.due, 0)
		r.refreshing++
		go r.refresh(h)
	}
	wait := r.sleepLocked(now)
	if wait <= 0 {
		r.alive, r.idleSince, r.wakeAt = false, time.Time{}, time.Time{}
		return 0, true
	}
	// Hold pokes the goroutine for a lease due before this. It sets its
	// timer a moment after now, and so wakes that moment later: far
	// inside the third of a lease that renewals leave before it runs out.
	r.wakeAt = now.Add(wait)
	return wait, false
}

// sleepLocked says how long the renewer's goroutine may sleep, zero when
// it should exit.
func (r *Renewer) sleepLocked(now time.Time) time.Duration {
	switch {
	case len(r.due) > 0:
		r.idleSince = time.Time{}
		return max(r.due[0].when().Sub(now), time.Nanosecond)
	case r.refreshing > 0:
		r.idleSince = time.Time{}
		return time.Hour // a finished renewal pokes
	case r.idleSince.IsZero():
		r.idleSince = now
	}
	// Linger for new leases, then exit if none came.
	return max(idleLinger-now.Sub(r.idleSince), 0)
}

func renewalError(err error) error {
	if err == nil {
		return errors.New("no renewal answered")
	}
	return err
}

// loseLocked cancels h's work with a *LostError and stops renewing it.
// r.mu must be held.
func (r *Renewer) loseLocked(h *Renewal, err error) {
	if h.lost == nil {
		h.lost = &LostError{Key: h.lease.Key, Err: err}
		h.cancel(h.lost)
	}
	if h.index >= 0 {
		heap.Remove(&r.due, h.index)
	}
}

func (r *Renewer) refresh(h *Renewal) {
	r.mu.Lock()
	lease, cut := h.lease, h.cut()
	r.mu.Unlock()

	start := time.Now()
	// Renewals go on after the work's context ends, until Stop.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(h.Context), cut)
	next, err := r.locker.Refresh(ctx, lease, h.ttl)
	cancel()

	r.mu.Lock()
	h.inflight = false
	r.refreshing--
	switch {
	case h.stopped || h.lost != nil:
	case err == nil:
		h.lease, h.lastErr = next, nil
		h.deadline, h.next = start.Add(h.ttl), start.Add(h.ttl/3)
		heap.Fix(&r.due, h.index)
	case errors.Is(err, ErrNotHeld):
		r.loseLocked(h, err)
	default:
		// A transient failure: try again soon, while the lease still runs.
		h.lastErr = err
		h.next = time.Now().Add(max(min(h.ttl/10, time.Until(cut)/2), time.Millisecond))
		heap.Fix(&r.due, h.index)
	}
	if h.settled != nil {
		close(h.settled)
	}
	r.mu.Unlock()
	r.poke()
}

// holdHeap orders leases by when the renewer must next look at them.
type holdHeap []*Renewal

func (q holdHeap) Len() int           { return len(q) }
func (q holdHeap) Less(i, j int) bool { return q[i].when().Before(q[j].when()) }
func (q holdHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *holdHeap) Push(x any) {
	h := x.(*Renewal)
	h.index = len(*q)
	*q = append(*q, h)
}

func (q *holdHeap) Pop() any {
	old := *q
	h := old[len(old)-1]
	old[len(old)-1] = nil
	h.index = -1
	*q = old[:len(old)-1]
	return h
}
