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
// plus a hash of the payload), takes the lock, renews it every TTL/3 while
// the handler runs and cancels the handler's context, with a cause matching
// lock.ErrLost, if a renewal fails. The handler reads its lease, with the
// fencing token to hand to the resource it writes, from
// lock.LeaseFromContext. When the handler returns the lock is released, with
// a context that survives the handler's cancellation, or, under
// HoldUntilTTL, kept until its TTL.
//
// A task whose key is held is a duplicate, and its rule's Policy decides:
// Retry (the default; set Config.IsFailure to IsFailure and
// Config.RetryDelayFunc to RetryDelayFunc so it neither uses up retries nor
// comes back before the holder is due to finish), Skip, Wait or Fail.
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
// for as long as the handler runs (or a TTL window with HoldUntilTTL). Use
// Unique to keep the queue from filling with copies, this middleware to
// guarantee that copies never run concurrently, and both when you want
// both: they do not interfere.
//
// # Observing
//
// WithObserver receives an Event for every decision (obtained, duplicate,
// waited, lost, released, error, with durations); the worker in cmd/worker
// turns them into Prometheus metrics. WithLogger logs the same decisions
// with log/slog.
package middleware
