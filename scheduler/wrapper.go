package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/robfig/cron/v3"
)

// Mode says how a job's runs exclude each other.
type Mode int

const (
	// ModeOncePerTick: each scheduled tick runs once across all processes.
	ModeOncePerTick Mode = iota
	// ModeNoOverlap: a run never starts while another is going, anywhere.
	ModeNoOverlap
)

func (m Mode) String() string {
	switch m {
	case ModeOncePerTick:
		return "once-per-tick"
	case ModeNoOverlap:
		return "no-overlap"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Default lock TTLs.
const (
	// DefaultTickTTL is how long a tick stays taken after its run, so a host
	// that fires late cannot run it again. It must exceed the hosts' clock
	// skew plus how late a cron may fire.
	DefaultTickTTL = time.Minute
	// DefaultRunTTL is a NoOverlap run's lease, renewed every third of it:
	// how long a crashed run blocks the next.
	DefaultRunTTL = 30 * time.Second
)

// ContextJob is a cron.Job that takes a context. The wrappers give it one
// that carries the lease (lock.LeaseFromContext) and is cancelled when the
// lock is lost or the scheduler stops; a plain cron.Job just runs.
type ContextJob interface {
	cron.Job
	RunContext(ctx context.Context) error
}

// Func is a ContextJob made of a function.
type Func func(ctx context.Context) error

// Run runs f with a background context, for a plain cron.
func (f Func) Run() { _ = f(context.Background()) }

// RunContext runs f.
func (f Func) RunContext(ctx context.Context) error { return f(ctx) }

// guard runs one job's runs under its lock.
type guard struct {
	locker lock.Locker
	name   string
	mode   Mode
	sched  cron.Schedule // OncePerTick only
	cfg    config
}

// OncePerTick returns a cron.JobWrapper that runs each tick of sched (the
// job's own schedule, as cron.ParseStandard returns it) once across every
// process sharing locker.
func OncePerTick(locker lock.Locker, name string, sched cron.Schedule, opts ...Option) cron.JobWrapper {
	g := &guard{locker: locker, name: name, mode: ModeOncePerTick, sched: sched, cfg: newConfig(opts)}
	return g.wrap
}

// NoOverlap returns a cron.JobWrapper that skips a run while another run of
// the job named name is going in any process sharing locker.
func NoOverlap(locker lock.Locker, name string, opts ...Option) cron.JobWrapper {
	g := &guard{locker: locker, name: name, mode: ModeNoOverlap, cfg: newConfig(opts)}
	return g.wrap
}

func (g *guard) wrap(j cron.Job) cron.Job {
	return cron.FuncJob(func() { g.run(j) })
}

func (g *guard) ttl() time.Duration {
	switch {
	case g.cfg.ttl > 0:
		return g.cfg.ttl
	case g.mode == ModeOncePerTick:
		return max(DefaultTickTTL, 2*g.cfg.skew)
	}
	return DefaultRunTTL
}

// key is the run's lock key: the job name, and for OncePerTick its tick.
func (g *guard) key() string {
	if g.mode == ModeNoOverlap {
		return g.cfg.prefix + g.name
	}
	tick := Tick(g.sched, g.cfg.now(), g.cfg.skew)
	return g.cfg.prefix + g.name + "@" + tick.UTC().Format(time.RFC3339)
}

func (g *guard) run(j cron.Job) {
	ctx := g.cfg.base
	if ctx.Err() != nil {
		return
	}
	log := g.cfg.logger.With("job", g.name, "mode", g.mode.String())
	key, ttl := g.key(), g.ttl()
	lease, err := g.locker.Obtain(ctx, key, ttl)
	var held *lock.HeldError
	switch {
	case errors.As(err, &held):
		log.DebugContext(ctx, "joblock: run skipped: taken elsewhere", "key", key, "holder", held.Holder)
		return
	case err != nil:
		log.ErrorContext(ctx, "joblock: run skipped: lock engine failed", "key", key, "err", err)
		return
	}
	log.InfoContext(ctx, "joblock: run starting", "key", key, "fence", lease.Fence)
	start := time.Now()
	workCtx, stop := lock.KeepAlive(ctx, g.locker, lease, ttl)
	err = runJob(lock.ContextWithLease(workCtx, lease), j)
	lost := context.Cause(workCtx)
	lease = stop()
	switch {
	case errors.Is(lost, lock.ErrLost):
		log.WarnContext(ctx, "joblock: lock lost during the run; the job's context was cancelled", "key", key, "err", lost)
	case err != nil:
		log.ErrorContext(ctx, "joblock: run failed", "key", key, "err", err, "took", time.Since(start))
	default:
		log.InfoContext(ctx, "joblock: run done", "key", key, "took", time.Since(start))
	}
	if g.mode == ModeNoOverlap {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := g.locker.Release(rctx, lease); err != nil && !errors.Is(err, lock.ErrNotHeld) {
			log.WarnContext(ctx, "joblock: release failed; the lock ends at its TTL", "key", key, "err", err)
		}
	}
}

// runJob runs j, turning a panic into an error so the lock is still let go.
func runJob(ctx context.Context, j cron.Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	if cj, ok := j.(ContextJob); ok {
		return cj.RunContext(ctx)
	}
	j.Run()
	return nil
}

// validName rejects names that cannot become a lock key.
func validName(name string) error {
	if strings.TrimSpace(name) == "" {
		return errors.New("scheduler: job name is empty")
	}
	if err := lock.ValidateKey(name); err != nil {
		return fmt.Errorf("scheduler: job name %q: %w", name, err)
	}
	return nil
}
