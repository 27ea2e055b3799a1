package scheduler

import (
	"time"

	"github.com/robfig/cron/v3"
)

// DefaultSkew is how far apart hosts' clocks may be, unless WithSkew says
// otherwise: a tick stays taken until this long after the next tick.
const DefaultSkew = 5 * time.Second

// searchLimit bounds how far back Tick looks for an activation, as
// robfig/cron bounds how far ahead Next looks.
const searchLimit = 5 * 366 * 24 * time.Hour

// Tick returns the scheduled time that a run at now belongs to: the latest
// activation of sched at or before now, with the schedule read in loc (a
// spec's own CRON_TZ= wins, as in robfig/cron). A host whose cron fires
// late, however late, keeps the tick it fired for, up to the next one; the
// host's own time zone plays no part. It returns the zero time when sched
// has no activation in the five years before now.
//
// An "@every D" schedule is taken as firing at whole multiples of D (see
// Aligned), the only ticks hosts started at different times can agree on.
func Tick(sched cron.Schedule, now time.Time, loc *time.Location) time.Time {
	sched = Aligned(sched)
	now = now.In(loc)
	for back := time.Second; back <= 2*searchLimit; back *= 2 {
		a := sched.Next(now.Add(-back))
		if a.IsZero() {
			return time.Time{}
		}
		if a.After(now) {
			continue // no activation in the last back
		}
		for {
			next := sched.Next(a)
			if next.IsZero() || next.After(now) {
				return a
			}
			a = next
		}
	}
	return time.Time{}
}

// skewed makes a schedule fire when a clock that is offset from the real
// one reads the scheduled time, as that host's cron would.
type skewed struct {
	inner cron.Schedule
	clock func() time.Time
}

func (s skewed) Next(t time.Time) time.Time {
	offset := time.Until(s.clock())
	return s.inner.Next(t.Add(offset)).Add(-offset)
}

// Aligned returns sched, except that an "@every D" schedule (which robfig/cron
// counts from when each process started) becomes one firing at whole
// multiples of D in absolute time, so every host fires the same ticks.
func Aligned(sched cron.Schedule) cron.Schedule {
	if c, ok := sched.(cron.ConstantDelaySchedule); ok {
		return every{c.Delay}
	}
	return sched
}

type every struct{ d time.Duration }

func (e every) Next(t time.Time) time.Time { return t.Truncate(e.d).Add(e.d) }
