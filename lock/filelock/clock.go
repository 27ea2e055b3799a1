package filelock

import (
	"sync/atomic"
	"time"
)

// Clock tells the engine the time. The engine judges a record written
// under the same Boot identifier by Boot, which wall-clock steps do not
// move, and any other record by Now.
type Clock interface {
	// Now returns the wall-clock time.
	Now() time.Time
	// Boot returns an identifier of the boot clock this process reads and
	// the time elapsed on it since boot, counting suspended time. Readings
	// are compared only under equal identifiers, so the identifier must
	// change with anything that shifts the clock: the boot, and on Linux
	// the time namespace's offsets. An empty id means there is no such
	// clock and Now alone is used.
	Boot() (id string, elapsed time.Duration)
}

// instant is one reading of a Clock.
type instant struct {
	wall   time.Time
	bootID string
	boot   time.Duration
}

// readClock reads the wall clock first: a lease's ExpiresAt is the wall
// reading plus its TTL and its expiry the boot reading plus the same TTL,
// so the lease then says it ends no later than it does, whatever the
// process's pause between the two reads.
func readClock(c Clock) instant {
	wall := c.Now()
	id, d := c.Boot()
	return instant{wall: wall, bootID: id, boot: d}
}

// systemClock reads the host's clocks. The boot clock is read off Go's
// monotonic clock (read without a system call) plus an offset: the boot
// clock and the monotonic clock tick together and differ only by the time
// the host spent suspended, which the boot clock counts and the monotonic
// clock does not. The offset is measured again (one real clock read) at
// least every bootResync, and at once whenever a suspend may have
// happened since the last measure. A suspend moves the wall clock forward
// by its length while the monotonic clock stands still, so a change in the
// difference between the two readings time.Now returns shows it; so does
// a step of the wall clock, which merely costs a measure more. Without
// that check a reading after a resume would lag the boot clock by the
// suspend, and a lock written with it would expire that much early for
// every other process.
type systemClock struct {
	bootID string
	// readBoot reads the boot clock itself; readNow the wall clock and the
	// monotonic clock, as time elapsed since some origin, in one go.
	readBoot func() time.Duration
	readNow  func() (wall time.Time, mono time.Duration)
	last     atomic.Pointer[bootSync]
}

// bootSync is one measure of the boot clock against the monotonic one.
type bootSync struct {
	wall time.Time     // the wall clock at the measure
	mono time.Duration // the monotonic clock at the measure
	boot time.Duration // the boot clock at that same moment, or just before
}

const (
	// bootResync bounds how long one measure is used.
	bootResync = 50 * time.Millisecond
	// bootDrift is how far the wall and monotonic clocks may drift apart
	// between two readings before a suspend is suspected: they tick at one
	// rate (NTP slews both), so only a preempted read of the two moves
	// them apart otherwise.
	bootDrift = time.Millisecond
	// bootReadSlack is the longest a measure may take; a longer one (the
	// thread was preempted) is taken again.
	bootReadSlack = 50 * time.Microsecond
)

func newSystemClock() *systemClock {
	origin := time.Now()
	return &systemClock{
		bootID:   bootID(),
		readBoot: bootElapsed,
		readNow: func() (time.Time, time.Duration) {
			now := time.Now()
			return now.Round(0), now.Sub(origin)
		},
	}
}

func (*systemClock) Now() time.Time { return time.Now() }

func (c *systemClock) Boot() (string, time.Duration) {
	if c.bootID == "" {
		return "", 0
	}
	wall, mono := c.readNow()
	if s := c.last.Load(); s != nil {
		elapsed := mono - s.mono
		if elapsed >= 0 && elapsed < bootResync && (wall.Sub(s.wall)-elapsed).Abs() < bootDrift {
			return c.bootID, s.boot + elapsed
		}
	}
	return c.bootID, c.resync()
}

// resync measures the boot clock against the monotonic clock and returns
// the boot clock's reading. The boot clock is read between two monotonic
// readings and taken to belong to the later one: the boot time it gives
// later on is early by at most bootReadSlack, never late.
func (c *systemClock) resync() time.Duration {
	var s bootSync
	for range 4 {
		_, before := c.readNow()
		s.boot = c.readBoot()
		s.wall, s.mono = c.readNow()
		if s.mono-before < bootReadSlack {
			break
		}
	}
	c.last.Store(&s)
	return s.boot
}
