// Package middleware is asynq handler middleware that runs each task under
// a lock whose key comes from the task itself, so two workers (in one
// process or on many hosts) never run the same work at once.
//
//	locker, _ := filelock.New("/tmp/joblock") // or redislock.New(redisClient)
//	mw, _ := middleware.New(locker,
//		middleware.WithRule("export:user", middleware.Rule{Template: "export-user-{{.user_id}}"}))
//	mux.Use(mw)
//
// # What it does for each task
//
// It derives the key (a Rule's Key or Template, by default the task type
// plus a hash of the payload) and runs the handler under the lock as
// lock.Renewer.Run does: a short lease (Rule.Lease, default 15s) renewed
// every third of it while the handler runs, so a crashed worker blocks the
// key for at most one lease however long its tasks may run (Rule.MaxRunTime
// bounds that, separately). The handler's context is cancelled, with a
// cause matching lock.ErrLost, as soon as a renewal finds the lock gone,
// and at the latest a third of the lease before it could run out when
// renewals keep failing, so the handler can stop before anyone else may
// take the key. The handler reads its lease, with the fencing token to
// hand to the resource it writes, from lock.LeaseFromContext. When the
// handler returns, or panics, the lock is released with a context that
// survives the handler's cancellation, or, with Rule.Window, kept until the
// window's end after a success.
//
// A task whose key is held is a duplicate, and its rule's Policy decides:
// Retry (the default; set Config.IsFailure to IsFailure and
// Config.RetryDelayFunc to RetryDelayFunc so it neither uses up retries nor
// comes back before the holder is due to finish), Skip, Wait or Fail.
// asynq archives a task whose retries are used up without asking
// IsFailure, so under Retry a duplicate with no retries left is enqueued
// again as a new task (given WithRedisClient) or waits for the key: Retry
// never loses a task. Skip drops the duplicate (its work is the holder's,
// which asynq runs again if its worker crashed); Fail archives it. A key
// refused while the engine waits out a restart (redislock's restart grace)
// has no holder to leave the work to, so such a task comes back later
// under every policy.
//
// A task whose key cannot be derived (a field missing from the payload, a
// payload that is not JSON, a key that is not valid) fails with
// asynq.SkipRetry and an error naming the task type and the field: it would
// fail the same way on every retry.
//
// # This, asynq's Unique, or both
//
// asynq.Unique(ttl) deduplicates at enqueue time: while a task with the same
// type and payload is queued (or until ttl), enqueuing another fails with
// asynq.ErrDuplicateTask. It cannot take a key from some payload fields, it
// keeps its lock after a failed run until the TTL, and it does nothing about
// two tasks that are both already queued, or enqueued by code that does not
// set it.
//
// This middleware decides at run time, on a key of your choosing, and only
// for as long as the handler runs (or until the end of Rule.Window). Use
// Unique to keep the queue from filling with copies, this middleware to
// guarantee that copies never run concurrently, and both when you want
// both: they do not interfere.
//
// # More than one at a time
//
// Rule.Limit lets N tasks of one key run at once across every worker: a
// per-tenant cap ("import-{{.tenant_id}}", Limit 2), a cap per task type
// (Template "{{._type}}") or per queue. A task beyond the limit is a
// duplicate like any other, and its Policy applies; under Retry, a
// duplicate sent back is handed the slot the moment one frees
// (WithRedisClient). asynq's Config.Concurrency caps what one server runs
// of every type together, and its queue priorities only order what it
// takes next: neither caps a key across servers.
//
// # Keeping copies out of the queue
//
// Client enqueues tasks under the same rules: a rule with Unique set keeps
// a copy out of the queue while its key is taken (UniqueUntilExecuting,
// UniqueUntilExecuted, UniqueUntilAndWhileExecuting say until when), and
// OnConflict says what happens to the copy (Reject, Ignore, Replace,
// Debounce). The middleware frees the key at the moment the rule says, and
// the Client frees a key whose task will not run (deleted, archived,
// completed, past its deadline, never enqueued).
//
// # Observing
//
// WithObserver receives an Event for every decision (obtained, duplicate,
// waited, lost, released, error, with durations); the worker in cmd/worker
// turns them into Prometheus metrics. WithLogger logs the same decisions
// with log/slog.
package middleware
