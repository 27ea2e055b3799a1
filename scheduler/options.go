package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/joblock/joblock/lock"
)

// Option configures a Scheduler or a wrapper.
type Option func(*config)

type config struct {
	prefix   string
	skew     time.Duration
	clock    func() time.Time
	logger   *slog.Logger
	location *time.Location
	seconds  bool
	lease    time.Duration
	maxRun   time.Duration
	limit    int
	base     context.Context
}

func newConfig(opts []Option) config {
	c := config{prefix: "cron:", skew: DefaultSkew, base: context.Background(), lease: lock.DefaultLease, limit: 1}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.New(warnings{slog.Default().Handler()})
	}
	return c
}

// warnings passes on the records of level Warn and above: without
// WithLogger, failed and panicking runs and lost locks are still told, on
// slog's default logger, and routine runs are not.
type warnings struct{ slog.Handler }

func (w warnings) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

func (w warnings) WithAttrs(attrs []slog.Attr) slog.Handler {
	return warnings{w.Handler.WithAttrs(attrs)}
}

func (w warnings) WithGroup(name string) slog.Handler { return warnings{w.Handler.WithGroup(name)} }

// check reports settings that cannot work for runs of mode on locker,
// naming the setting as a Job field (Lease, MaxRunTime, Limit).
func (c *config) check(mode Mode, locker lock.Locker) error {
	if err := lock.ValidateLease(c.lease); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	if c.maxRun < 0 {
		return fmt.Errorf("MaxRunTime %s must not be negative", c.maxRun)
	}
	if err := lock.ValidateLimit(c.limit); err != nil {
		return fmt.Errorf("limit: %w", err)
	}
	if c.limit == 1 {
		return nil
	}
	if mode&ModeNoOverlap == 0 {
		return fmt.Errorf("a Limit of %d needs ModeNoOverlap: under %v alone each tick runs once", c.limit, mode)
	}
	if _, ok := locker.(lock.Limiter); !ok {
		return fmt.Errorf("a Limit of %d needs an engine that is a lock.Limiter, not %T", c.limit, locker)
	}
	return nil
}

func (c *config) now() time.Time {
	if c.clock != nil {
		return c.clock()
	}
	return time.Now()
}

// WithPrefix sets the prefix of every lock key. Default "cron:".
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithSkew sets how far apart hosts' clocks may be: a tick stays taken
// until this long after the next tick, so a host whose clock is behind
// cannot run it again. Default DefaultSkew.
func WithSkew(d time.Duration) Option { return func(c *config) { c.skew = d } }

// WithClock replaces the host's clock, for tests that play hosts whose
// clocks disagree: on a Scheduler the schedule fires when this clock reads
// the scheduled time, and ticks are derived from it. Default time.Now.
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithLogger logs runs, skips and failures with log/slog. Default: slog's
// default logger, for warnings and errors only (failed and panicking
// runs, lost locks, skipped ticks of a job still running).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithLocation sets the time zone schedules are read in, for firing and
// for ticks: give a wrapper the location of the cron.Cron it runs in.
// A spec's own CRON_TZ= wins. Default: UTC for a Scheduler, so that hosts
// in different zones agree on when "0 3 * * *" is; time.Local, as
// cron.New's, for a wrapper.
func WithLocation(loc *time.Location) Option { return func(c *config) { c.location = loc } }

// WithSeconds makes specs start with a seconds field. Default: standard
// five-field specs (descriptors such as @every work either way). Scheduler
// only.
func WithSeconds() Option { return func(c *config) { c.seconds = true } }

// WithLease sets NoOverlap's lease (Job.Lease does it on a Scheduler):
// renewed every third of it while the job runs, it bounds how long a
// crashed run keeps the next one from starting. Default lock.DefaultLease.
func WithLease(d time.Duration) Option { return func(c *config) { c.lease = d } }

// WithMaxRunTime cancels a run's context (cause lock.ErrMaxRunTime) once it
// has run for d (Job.MaxRunTime does it on a Scheduler). Default: no limit.
func WithMaxRunTime(d time.Duration) Option { return func(c *config) { c.maxRun = d } }

// WithLimit lets n runs of a job go at once under NoOverlap (Job.Limit
// does it on a Scheduler); one more is skipped. The engine must be a
// lock.Limiter. Default 1.
func WithLimit(n int) Option { return func(c *config) { c.limit = n } }

// WithContext sets the context a wrapper's runs derive theirs from;
// cancelling it cancels running jobs and stops new ones from starting.
// Default context.Background(). A Scheduler manages its own.
func WithContext(ctx context.Context) Option { return func(c *config) { c.base = ctx } }
