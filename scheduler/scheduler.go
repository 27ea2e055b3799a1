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
	// Mode is ModeOncePerTick (the default), ModeNoOverlap, or both
	// (ModeOncePerTick|ModeNoOverlap: each tick once, and a tick whose
	// previous run is still going is skipped, with a warning).
	Mode Mode
	// Lease is ModeNoOverlap's lease: renewed every third of it while the
	// job runs, it bounds how long a crashed run keeps the next one from
	// starting. Default lock.DefaultLease.
	Lease time.Duration
	// Limit is how many runs of the job may go at once, anywhere, under
	// ModeNoOverlap: a run that would be one too many is skipped. Default
	// 1. The engine must be a lock.Limiter (both of joblock's are).
	Limit int
	// MaxRunTime, if set, cancels a run's context (cause
	// lock.ErrMaxRunTime) once it has run that long. Default: no limit.
	MaxRunTime time.Duration
	// Run is the job. Required.
	Run func(ctx context.Context) error
}

// Scheduler is a cron.Cron whose jobs run under locks. Create it with New.
type Scheduler struct {
	locker  lock.Locker
	renewer *lock.Renewer
	cfg     config
	cron    *cron.Cron
	parser  cron.Parser
	ctx     context.Context
	cancel  context.CancelFunc
	stop    sync.Once
}

// New returns a Scheduler on locker, not yet started. A panicking job lets
// its locks go and is logged with its stack by cron.Recover.
func New(locker lock.Locker, opts ...Option) *Scheduler {
	cfg := newConfig(opts)
	if cfg.location == nil {
		cfg.location = time.UTC
	}
	fields := cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor
	if cfg.seconds {
		fields |= cron.Second
	}
	s := &Scheduler{locker: locker, renewer: lock.NewRenewer(locker), cfg: cfg, parser: cron.NewParser(fields)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cfg.base = s.ctx
	logger := CronLogger(cfg.logger)
	s.cron = cron.New(cron.WithLocation(cfg.location), cron.WithParser(s.parser),
		cron.WithLogger(logger), cron.WithChain(cron.Recover(logger)))
	return s
}

// Add schedules j. It returns an error naming the job for a missing name,
// spec or function, a spec that does not parse or never fires (see
// ParseStandard), an unknown mode or a bad lease or run time.
func (s *Scheduler) Add(j Job) (cron.EntryID, error) {
	if err := validName(j.Name); err != nil {
		return 0, err
	}
	fail := func(format string, args ...any) (cron.EntryID, error) {
		return 0, fmt.Errorf("scheduler: job %q: "+format, append([]any{j.Name}, args...)...)
	}
	if j.Run == nil {
		return fail("no Run function")
	}
	sched, err := parse(s.parser, j.Spec)
	if err != nil {
		return fail("spec %q: %w", j.Spec, err)
	}
	switch j.Mode {
	case 0:
		j.Mode = ModeOncePerTick
	case ModeOncePerTick, ModeNoOverlap, ModeOncePerTick | ModeNoOverlap:
	default:
		return fail("unknown mode %v", j.Mode)
	}
	cfg := s.cfg
	if j.Lease != 0 {
		cfg.lease = j.Lease
	}
	cfg.maxRun = j.MaxRunTime
	if j.Limit != 0 {
		cfg.limit = j.Limit
	}
	if err := cfg.check(j.Mode, s.locker); err != nil {
		return fail("%w", err)
	}
	sched = Aligned(sched)
	fires := sched // when cron fires: on this host's clock
	if s.cfg.clock != nil {
		fires = skewed{inner: sched, clock: s.cfg.clock}
	}
	g := &guard{renewer: s.renewer, name: j.Name, mode: j.Mode, sched: sched, cfg: cfg}
	return s.cron.Schedule(fires, &guarded{g: g, job: Func(j.Run), key: cfg.prefix + j.Name, id: j.Name}), nil
}

// Cron returns the cron.Cron the Scheduler runs, for its Entries. Jobs
// added to it directly run without locks.
func (s *Scheduler) Cron() *cron.Cron { return s.cron }

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
