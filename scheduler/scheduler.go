package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/robfig/cron/v3"
)

// Job is a scheduled job.
type Job struct {
	// Name identifies the job across processes: the same name on two hosts
	// is the same job. Required.
	Name string
	// Spec is a cron spec ("0 3 * * *", "@every 1m", "@daily"). Required.
	Spec string
	// Mode is ModeOncePerTick (the default) or ModeNoOverlap.
	Mode Mode
	// TTL of the job's lock; defaults DefaultTickTTL or DefaultRunTTL.
	TTL time.Duration
	// Run is the job. Required.
	Run func(ctx context.Context) error
}

// Scheduler is a cron.Cron whose jobs run under locks. Create it with New.
type Scheduler struct {
	locker lock.Locker
	cfg    config
	cron   *cron.Cron
	parser cron.Parser
	ctx    context.Context
	cancel context.CancelFunc
	stop   sync.Once
}

// New returns a Scheduler on locker, not yet started. Panics in jobs are
// recovered and logged.
func New(locker lock.Locker, opts ...Option) *Scheduler {
	cfg := newConfig(opts)
	fields := cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor
	if cfg.seconds {
		fields |= cron.Second
	}
	s := &Scheduler{locker: locker, cfg: cfg, parser: cron.NewParser(fields)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cfg.base = s.ctx
	logger := CronLogger(cfg.logger)
	s.cron = cron.New(cron.WithLocation(cfg.location), cron.WithParser(s.parser),
		cron.WithLogger(logger), cron.WithChain(cron.Recover(logger)))
	return s
}

// Add schedules j. It returns an error naming the job for a missing name,
// spec or function, a spec that does not parse, or an unknown mode.
func (s *Scheduler) Add(j Job) (cron.EntryID, error) {
	if err := validName(j.Name); err != nil {
		return 0, err
	}
	if j.Run == nil {
		return 0, fmt.Errorf("scheduler: job %q has no Run function", j.Name)
	}
	sched, err := s.parser.Parse(j.Spec)
	if err != nil {
		return 0, fmt.Errorf("scheduler: job %q: spec %q: %w", j.Name, j.Spec, err)
	}
	sched = Aligned(sched)
	fires := sched // when cron fires: on this host's clock
	if s.cfg.clock != nil {
		fires = skewed{inner: sched, clock: s.cfg.clock}
	}
	cfg := s.cfg
	cfg.ttl = j.TTL
	// The tick is read off the schedule itself with this host's clock.
	g := &guard{locker: s.locker, name: j.Name, mode: j.Mode, sched: sched, cfg: cfg}
	switch j.Mode {
	case ModeOncePerTick, ModeNoOverlap:
	default:
		return 0, fmt.Errorf("scheduler: job %q: unknown mode %v", j.Name, j.Mode)
	}
	if j.TTL != 0 {
		if err := lock.ValidateTTL(j.TTL); err != nil {
			return 0, fmt.Errorf("scheduler: job %q: %w", j.Name, err)
		}
	}
	if err := lock.ValidateTTL(g.ttl()); err != nil {
		return 0, fmt.Errorf("scheduler: job %q: %w", j.Name, err)
	}
	return s.cron.Schedule(fires, g.wrap(Func(j.Run))), nil
}

// Start runs the scheduler in its own goroutine; it does not block.
func (s *Scheduler) Start() { s.cron.Start() }

// Stop stops scheduling, cancels the context of running jobs and waits for
// them to return until ctx ends. It returns ctx's error if jobs were still
// running then. Calling it more than once is safe.
func (s *Scheduler) Stop(ctx context.Context) error {
	var done context.Context
	s.stop.Do(func() {
		s.cancel()
		done = s.cron.Stop()
	})
	if done == nil {
		return nil
	}
	select {
	case <-done.Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scheduler: jobs still running at stop: %w", ctx.Err())
	}
}

// EnqueueJob returns a job that enqueues task with client: run it under
// OncePerTick in several processes and each tick is enqueued once.
func EnqueueJob(client *asynq.Client, task *asynq.Task, opts ...asynq.Option) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := client.EnqueueContext(ctx, task, opts...)
		return err
	}
}

// CronLogger adapts a slog.Logger to cron.Logger: cron's chatty info
// messages at debug level, its errors at error level.
func CronLogger(l *slog.Logger) cron.Logger { return cronLogger{l} }

type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }

func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}
