// Package scheduler runs cron jobs (robfig/cron/v3) so that each scheduled
// run happens once across processes and hosts, or never overlaps itself,
// or both.
//
// # Modes
//
// ModeOncePerTick locks the job's name plus the scheduled tick, and keeps
// that lock after a successful run until the next tick plus the hosts'
// clock skew, so a host whose clock runs behind, or whose cron fired late,
// finds the tick taken and skips it. Locking by job name alone, as most
// distributed cron lockers do, lets such a host run the tick a second time
// once the first run has released. A run that fails or panics frees its
// tick, so a host whose cron fires later may still run it.
//
// ModeNoOverlap locks the job's name for as long as the run takes, with a
// short lease renewed while it runs, and releases it at the end: a run
// that finds the previous one still going, here or on another host, is
// skipped. robfig/cron's SkipIfStillRunning does this inside one process
// only. A crashed run blocks the next for at most one lease.
//
// ModeOncePerTick|ModeNoOverlap does both, for long jobs: each tick runs
// once, and a tick whose previous run is still going is skipped with a
// warning (by the one host that took the tick).
//
// Job.Limit (WithLimit on a wrapper) lets N runs of a ModeNoOverlap job go
// at once, across hosts: a run that would make N+1 is skipped.
//
// A key refused with no holder known (the Redis engine waiting out its
// restart grace, lock.ErrRestartGrace) skips nothing: the run waits until
// the refusal ends, then tries again, keeping its tick.
//
// # The tick
//
// A run's tick is the scheduled time it belongs to: the latest activation
// of the schedule at or before the run's start, with the schedule read in
// its own location (a Scheduler's is UTC unless WithLocation or CRON_TZ=
// in the spec says otherwise), never in the host's zone. Every host fires a tick when its own clock reads it, or
// later under load, so every host derives the same tick, however late it
// starts, up to the next tick. "@every D" schedules run at whole multiples
// of D (robfig/cron counts them from each process's start, which no two
// hosts share).
//
// Daylight saving time: robfig/cron does not run a job scheduled in a local
// hour that a spring-forward day skips (02:30 in New York on the second
// Sunday of March does not happen that day), and runs one scheduled in the
// hour a fall-back day repeats twice, at two different instants (01:30
// EDT, then 01:30 EST). Each of those instants is a tick of its own and
// runs once across hosts. Schedule in UTC to avoid both.
//
// # Jobs
//
// Jobs get a context that carries the lease (lock.LeaseFromContext, with
// the key and fencing token) and is cancelled when the lock is lost, when
// the run exceeds its MaxRunTime, and when the scheduler stops. Use
// Scheduler for the whole package in a few lines, or the OncePerTick and
// NoOverlap wrappers with a cron.Cron of your own: in a cron.WithChain
// they key every job separately (by Named, or its function or type), and
// a panic lets the locks go and reaches a cron.Recover further out.
//
// # asynq
//
// Several asynq.Scheduler processes each enqueue every periodic task. Run
// EnqueueJob under OncePerTick in each process instead, and each tick is
// enqueued exactly once across them.
//
// # Housekeeping
//
// OncePerTick takes a new key every tick. Redis forgets them by itself; the
// file engine leaves one small file per tick until a cleanup removes it, so
// schedule lock.Manager.CleanupExpiredLocks (the worker in cmd/worker does).
package scheduler
