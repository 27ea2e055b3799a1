package lock

import (
	"context"
	"sync"
	"time"
)

// detachedTimeout returns a context with ctx's values but not its
// cancellation, which ends d from now or when cancel is called, as
// context.WithTimeout(context.WithoutCancel(ctx), d) would. It starts a
// timer only once something asks for its Done channel: a release on the
// file engine checks Err between system calls and never waits on Done, and
// a timer set and stopped around every release was a measurable part of a
// short task's cost.
func detachedTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	c := &detached{Context: context.WithoutCancel(ctx), deadline: time.Now().Add(d)}
	return c, c.cancel
}

type detached struct {
	context.Context // the values; never done
	deadline        time.Time

	mu    sync.Mutex
	err   error // why it ended; nil while it runs
	done  chan struct{}
	timer *time.Timer
}

func (c *detached) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *detached) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errLocked()
}

func (c *detached) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		err := c.errLocked()
		c.done = make(chan struct{})
		if err != nil {
			close(c.done)
		} else {
			c.timer = time.AfterFunc(time.Until(c.deadline), c.expire)
		}
	}
	return c.done
}

// errLocked returns why c ended, ending it first if its deadline has
// passed, so that Err says it ended no later than the deadline whether or
// not a timer was started.
func (c *detached) errLocked() error {
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.endLocked(context.DeadlineExceeded)
	}
	return c.err
}

func (c *detached) endLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
}

func (c *detached) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(context.DeadlineExceeded)
}

func (c *detached) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(context.Canceled)
}
