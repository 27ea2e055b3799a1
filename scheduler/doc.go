// Package scheduler runs cron jobs (robfig/cron/v3) so that each scheduled
// run happens once across processes and hosts, or never overlaps itself.
//
// # Modes
//
// OncePerTick locks the job's name plus the scheduled tick, and keeps that
// lock until its TTL after the run ends, so a host whose clock runs a little
// behind, or whose cron fired late, finds the tick taken and skips it.
// Locking by job name alone, as most distributed cron lockers do, lets such
// a host run the tick a second time once the first run has released.
//
// NoOverlap locks the job's name for as long as the run takes (renewing the
// lock) and releases it at the end: a run that finds the previous one still
// going, here or on another host, is skipped. robfig/cron's
// SkipIfStillRunning does this inside one process only.
//
// # The tick
//
// The tick is derived from the schedule, not from the time a run happened
// to start: a run at time t belongs to the first scheduled time after
// t-tolerance, where the tolerance is the configured skew (default 5s)
// capped at half the schedule's period. Hosts whose clocks differ by less
// than that derive the same key for the same tick. "@every D" schedules run
// at whole multiples of D (robfig/cron counts them from each process's
// start, which no two hosts share).
//
// # Jobs
//
// Jobs get a context that is cancelled when their lock is lost and when
// the scheduler stops; lock.LeaseFromContext gives the key and fencing
// token. Use Scheduler for the whole package in a few lines, or the
// OncePerTick and NoOverlap wrappers with a cron.Cron of your own.
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
