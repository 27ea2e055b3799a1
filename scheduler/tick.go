package scheduler

import (
	"time"

	"github.com/robfig/cron/v3"
)

// DefaultSkew is how far apart hosts' clocks may be and still agree on a
// tick, unless WithSkew says otherwise.
const DefaultSkew = 5 * time.Second

// Tick returns the scheduled time a run at now belongs to: the first
// activation of sched after now minus the tolerance, which is skew capped at
// half the schedule's period around now.
//
// An "@every D" schedule is taken as firing at whole multiples of D (see
// Aligned), the only ticks hosts started at different times can agree on.
func Tick(sched cron.Schedule, now time.Time, skew time.Duration) time.Time {
	sched = Aligned(sched)
	a := sched.Next(now.Add(-skew))
	period := sched.Next(a).Sub(a)
	tol := min(skew, period/2)
	return sched.Next(now.Add(-tol))
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
