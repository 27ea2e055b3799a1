package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/robfig/cron/v3"
)

// Mode says how a job's runs exclude each other. Modes combine with |.
type Mode int

const (
	// ModeOncePerTick: each scheduled tick runs once across all processes.
	// The zero Mode means this.
	ModeOncePerTick Mode = 1 << iota
	// ModeNoOverlap: a run never starts while another is going, anywhere.
	ModeNoOverlap
)

func (m Mode) String() string {
	switch m {
	case 0, ModeOncePerTick:
		return "once-per-tick"
	case ModeNoOverlap:
		return "no-overlap"
	case ModeOncePerTick | ModeNoOverlap:
		return "once-per-tick+no-overlap"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

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

// Named gives job a name, which the wrappers use in its lock key instead of
// its function's or type's name: keys then survive code changes that move
// the function.
func Named(name string, job cron.Job) cron.Job { return named{name: name, Job: job} }

type named struct {
	cron.Job
	name string
}

func (n named) Name() string { return n.name }

func (n named) RunContext(ctx context.Context) error { return runJob(ctx, n.Job) }

// OncePerTick and NoOverlap panic on options that cannot work (a lease
// under lock.MinLease, a negative maximum run time, a limit out of range,
// or one with OncePerTick), as a wrapper cannot return an error.

// OncePerTick returns a cron.JobWrapper that runs each tick of sched once
// across every process sharing locker. sched is the jobs' schedule, as
// cron.ParseStandard returns it: it lets a run that starts late keep its
// tick (see Tick). With a nil sched (a cron.WithChain over jobs on several
// schedules) the tick is the second the run started in, which a run that
// starts a second or more late does not keep.
//
// Each job the wrapper wraps locks on a key of its own: name, then the
// job's name (see Named), function or type. Put the wrapper last in a
// chain, next to the job, so it sees the job itself. Jobs that would get
// the same key (closures of one function literal, method values of one
// method) must be told apart with Named: wrapping the second one panics,
// as a key by order of registration could differ between hosts.
//
// A tick stays taken until the next tick plus the skew (WithSkew), or is
// freed when its run fails or panics, so a host whose cron fires later
// may run it. A panic goes on, after the lock is let go, to a cron.Recover
// further out in the chain.
func OncePerTick(locker lock.Locker, name string, sched cron.Schedule, opts ...Option) cron.JobWrapper {
	return newGuard(locker, name, ModeOncePerTick, sched, opts).wrap
}

// NoOverlap returns a cron.JobWrapper that skips a run while another run of
// the same job is going in any process sharing locker. Keys are as for
// OncePerTick.
func NoOverlap(locker lock.Locker, name string, opts ...Option) cron.JobWrapper {
	return newGuard(locker, name, ModeNoOverlap, nil, opts).wrap
}

// guard runs the runs of the jobs one wrapper wraps under their locks.
type guard struct {
	renewer *lock.Renewer
	name    string
	mode    Mode
	sched   cron.Schedule // OncePerTick: nil means by the second
	cfg     config

	mu   sync.Mutex
	seen map[string]bool // jobs wrapped, by name
}

func newGuard(locker lock.Locker, name string, mode Mode, sched cron.Schedule, opts []Option) *guard {
	if sched != nil {
		sched = Aligned(sched)
	}
	cfg := newConfig(opts)
	if cfg.location == nil {
		cfg.location = time.Local // as cron.New's
	}
	if err := cfg.check(mode, locker); err != nil {
		// A wrapper cannot return an error, and would otherwise skip every
		// run, saying why only in its log.
		wrapper := "NoOverlap"
		if mode == ModeOncePerTick {
			wrapper = "OncePerTick"
		}
		panic(fmt.Sprintf("scheduler: %s(%q): %v", wrapper, name, err))
	}
	return &guard{renewer: lock.NewRenewer(locker), name: name, mode: mode, sched: sched, cfg: cfg, seen: map[string]bool{}}
}

// wrap is the cron.JobWrapper: each job gets a key of its own.
func (g *guard) wrap(j cron.Job) cron.Job {
	id := jobName(j)
	g.mu.Lock()
	taken := g.seen[id]
	g.seen[id] = true
	g.mu.Unlock()
	if taken {
		// A suffix by order of registration would differ between hosts
		// that register their jobs in another order, and swap their keys.
		panic(fmt.Sprintf("scheduler: two jobs wrapped by %q are both named %q (closures of one function literal, or method values of one method): "+
			"give each a name of its own with scheduler.Named", g.name, id))
	}
	return &guarded{g: g, job: j, key: g.cfg.prefix + g.name + "/" + id, id: id}
}

// jobName names a job for its key: by Named, else by its function or type.
func jobName(j cron.Job) string {
	if n, ok := j.(interface{ Name() string }); ok {
		return n.Name()
	}
	v := reflect.ValueOf(j)
	if v.Kind() == reflect.Func {
		if f := runtime.FuncForPC(v.Pointer()); f != nil {
			return f.Name()
		}
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", j), "*")
}

// guarded is a job under a guard.
type guarded struct {
	g   *guard
	job cron.Job
	key string // without the tick
	id  string
}

// Name lets a guard further out in a chain key on the job inside.
func (j *guarded) Name() string { return j.id }

// Run runs the job from a cron.
func (j *guarded) Run() {
	if ctx := j.g.cfg.base; ctx.Err() == nil {
		_ = j.RunContext(ctx)
	}
}

// RunContext runs the job under its locks; it returns nil when the run was
// skipped. While the lock engine holds new locks back after a restart (a
// refusal with no holder known: lock.ErrRestartGrace), it waits, since no
// other run is known to have the key, and tries again: a late run keeps
// its tick.
func (j *guarded) RunContext(ctx context.Context) error {
	for {
		err := j.runOnce(ctx)
		var held *lock.HeldError
		if !errors.As(err, &held) || held.Reason == nil {
			return err
		}
		t := time.NewTimer(max(held.TTL, minGraceWait))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// minGraceWait is the shortest wait for a grace to end before trying again.
const minGraceWait = 50 * time.Millisecond

func (j *guarded) runOnce(ctx context.Context) error {
	switch j.g.mode {
	case ModeOncePerTick | ModeNoOverlap:
		// The tick first, so one process decides (and reports) for it.
		return j.g.oncePerTick(ctx, j.key, func(ctx context.Context) error {
			return j.g.noOverlap(ctx, j.key, j.job, skip{"tick skipped: " + j.g.going("the previous run is", "runs are"), slog.LevelWarn})
		})
	case ModeNoOverlap:
		return j.g.noOverlap(ctx, j.key, j.job, skip{"run skipped: " + j.g.going("a run is", "runs are"), slog.LevelInfo})
	}
	return j.g.oncePerTick(ctx, j.key, func(ctx context.Context) error { return runJob(ctx, j.job) })
}

// going says that as many runs as the limit are still going.
func (g *guard) going(one, many string) string {
	if g.cfg.limit == 1 {
		return one + " still going"
	}
	return strconv.Itoa(g.cfg.limit) + " " + many + " still going (the limit)"
}

// skip is what to log when a run is skipped because its key is held.
type skip struct {
	msg   string
	level slog.Level
}

// tick is the scheduled time a run starting now belongs to.
func (g *guard) tick(now time.Time) (tick, next time.Time) {
	if g.sched == nil {
		tick = now.Truncate(time.Second)
		return tick, tick.Add(time.Second)
	}
	tick = Tick(g.sched, now, g.cfg.location)
	return tick, g.sched.Next(tick)
}

// oncePerTick runs fn under the key of the current tick, which it keeps
// until the next tick plus the skew when fn succeeds.
func (g *guard) oncePerTick(ctx context.Context, key string, fn func(ctx context.Context) error) error {
	now := g.cfg.now()
	tick, next := g.tick(now)
	if tick.IsZero() {
		g.cfg.logger.ErrorContext(ctx, "joblock: run skipped: no tick of the schedule before now", "key", key, "now", now)
		return nil
	}
	key += "@" + tick.UTC().Format(time.RFC3339)
	// Until no host, however late its clock, can take the run for this tick.
	// (A yearly schedule's window is capped at the longest TTL.)
	window := min(max(next.Add(g.cfg.skew).Sub(now), time.Millisecond), lock.MaxTTL)
	return g.run(ctx, key, fn, skip{"run skipped: another process took this tick", slog.LevelDebug},
		lock.WithLease(window), lock.WithWindow(window))
}

// noOverlap runs job under its key, held by a short lease while it runs.
func (g *guard) noOverlap(ctx context.Context, key string, job cron.Job, busy skip) error {
	return g.run(ctx, key, func(ctx context.Context) error { return runJob(ctx, job) }, busy,
		lock.WithLease(g.cfg.lease), lock.WithMaxRunTime(g.cfg.maxRun), lock.WithLimit(g.cfg.limit))
}

// run runs fn under key, logging what happened; a held key skips the run
// and says why.
func (g *guard) run(ctx context.Context, key string, fn func(ctx context.Context) error, busy skip, opts ...lock.RunOption) error {
	log := g.cfg.logger.With("job", g.name, "mode", g.mode.String(), "key", key)
	start := time.Now()
	out, err := g.renewer.Run(ctx, key, func(ctx context.Context) error {
		lease, _ := lock.LeaseFromContext(ctx)
		log.DebugContext(ctx, "joblock: run starting", "fence", lease.Fence)
		return fn(ctx)
	}, opts...)
	var held *lock.HeldError
	graced := errors.As(err, &held) && held.Reason != nil
	switch {
	case graced:
		// Refused here or, for a tick that is also no-overlap, by the
		// inner lock; RunContext tries again when the refusal ends.
		log.InfoContext(ctx, "joblock: run waits: the lock engine holds new locks back for a while", "for", held.TTL, "why", held.Holder)
		return held
	case !out.Ran && errors.As(err, &held):
		log.Log(ctx, busy.level, "joblock: "+busy.msg, "holder_ttl", held.TTL)
		return nil
	case !out.Ran:
		log.ErrorContext(ctx, "joblock: run skipped: lock engine failed", "err", err)
		return err
	case out.Lost != nil:
		log.WarnContext(ctx, "joblock: lock lost during the run; the job's context was cancelled", "err", out.Lost)
	case err != nil:
		log.ErrorContext(ctx, "joblock: run failed", "err", err, "took", time.Since(start))
	default:
		log.InfoContext(ctx, "joblock: run done", "took", time.Since(start))
	}
	if out.ReleaseErr != nil {
		log.WarnContext(ctx, "joblock: release failed; the lock ends with its lease", "err", out.ReleaseErr)
	}
	return err
}

// runJob runs j with ctx if it takes one.
func runJob(ctx context.Context, j cron.Job) error {
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
