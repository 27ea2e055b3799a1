package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
)

// Task types: one per use case of the LockManager spec.
const (
	TypeCacheRegenerate = "cache:regenerate" // {"key": "product-123"}
	TypeCDNInvalidate   = "cdn:invalidate"   // {"url": "https://..."}
	TypeJobProcess      = "job:process"      // {"job_id": 7}
	TypeAPICall         = "api:call"         // {"endpoint": "/v1/rates"}
	TypeExportUser      = "export:user"      // {"user_id": 42}
	TypeTenantImport    = "import:tenant"    // {"tenant_id": "acme", "file": "2026-11.csv"}
)

// importsPerTenant is how many imports of one tenant run at once, across
// every worker.
const importsPerTenant = 2

// useCase is a task type with its lock rule and its (simulated) work.
type useCase struct {
	Type string
	Name string
	Rule middleware.Rule
	Work time.Duration
	// Payload makes the i-th demo payload; bursts reuse i, so they collide.
	Payload func(i int) any
	// Once marks each key done after its work (the spec's markJobComplete),
	// so a copy that gets the lock later finds it done and skips the work.
	Once bool
	// DemoEvery makes the demo enqueue this case's burst every DemoEvery
	// rounds instead of every round (0 or 1: every round), for a case that
	// admits fewer runs a second than a burst a round brings.
	DemoEvery int
}

// cdnKey locks on the URL's md5, as the spec's invalidateCDN does.
func cdnKey(_ context.Context, t *asynq.Task) (string, error) {
	var p struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return "", fmt.Errorf("payload is not JSON: %w", err)
	}
	if p.URL == "" {
		return "", fmt.Errorf(`payload has no "url"`)
	}
	sum := md5.Sum([]byte(p.URL))
	return "cdn-invalidate-" + hex.EncodeToString(sum[:]), nil
}

// useCases returns the worker's task types. lease is the lease of their
// locks: renewed while a task runs, it is how long a crashed worker keeps
// a key blocked.
func useCases(lease time.Duration) []useCase {
	return []useCase{
		{
			Type: TypeCacheRegenerate, Name: "cache regeneration",
			// One process regenerates; the others skip and use the stale
			// cache. A skipped copy loses nothing: the holder regenerates, or
			// if it crashed, asynq runs the holder's task again.
			Rule:    middleware.Rule{Template: "cache-{{.key}}", Lease: lease, MaxRunTime: time.Minute, Policy: middleware.Skip},
			Work:    300 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"key": fmt.Sprintf("product-%d", i)} },
		},
		{
			Type: TypeCDNInvalidate, Name: "CDN invalidation",
			Rule:    middleware.Rule{Key: cdnKey, Lease: lease, MaxRunTime: time.Minute, Policy: middleware.Skip},
			Work:    200 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"url": fmt.Sprintf("https://cdn.example.com/img/%d.png", i)} },
		},
		{
			Type: TypeJobProcess, Name: "job dedup",
			// acquireWithWait(5s): wait up to 5s, then come back later, when
			// the job's completion mark makes the copy a no-op.
			Rule: middleware.Rule{Template: "job-{{.job_id}}", Lease: lease, MaxRunTime: 5 * time.Minute, Policy: middleware.Wait,
				MaxWait: 5 * time.Second},
			Work:    400 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"job_id": i} },
			Once:    true,
		},
		{
			Type: TypeAPICall, Name: "API rate-limit slot",
			// One call per second across every worker: the slot is kept for
			// a second after it was taken; others wait up to 2s for the next
			// one, then come back later. A crashed call blocks the slot for
			// one short lease.
			Rule: middleware.Rule{Template: "api-rate-limit", Lease: 3 * time.Second, Window: time.Second,
				Policy: middleware.Wait, MaxWait: 2 * time.Second, WaitInterval: 50 * time.Millisecond},
			Work:    50 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"endpoint": fmt.Sprintf("/v1/rates/%d", i)} },
			// A burst every 10s: at one call a second it drains before the
			// next, where one every 2s would queue without end.
			DemoEvery: 5,
		},
		{
			Type: TypeExportUser, Name: "export prevention",
			// A second export of the same user fails ("Export already
			// running") and is archived; the daily cleanup deletes it once
			// an export of that user has completed after it.
			Rule: middleware.Rule{Template: "export-user-{{.user_id}}", Lease: lease, MaxRunTime: 10 * time.Minute,
				Policy: middleware.Fail},
			Work:    time.Second,
			Payload: func(i int) any { return map[string]any{"user_id": i} },
		},
		{
			Type: TypeTenantImport, Name: "per-tenant import cap",
			// Every import runs, but no tenant runs more than two at once,
			// however many workers there are: one tenant's big upload cannot
			// take every worker. An import over the cap goes back to the
			// queue and is handed the slot the moment one frees.
			Rule: middleware.Rule{Template: "import-{{.tenant_id}}", Limit: importsPerTenant, Lease: lease,
				MaxRunTime: 30 * time.Minute, Policy: middleware.Retry},
			Work: 200 * time.Millisecond,
			Payload: func(i int) any {
				return map[string]any{"tenant_id": fmt.Sprintf("tenant-%d", i%2), "file": fmt.Sprintf("upload-%d.csv", i)}
			},
		},
	}
}

// doneTTL is how long the worker remembers a finished key (Once use
// cases) or task.
const doneTTL = 48 * time.Hour

// tracer follows what handlers do, for the crash tests; nil otherwise.
type tracer interface {
	Handler(ctx context.Context, task *asynq.Task, what string)
	Event(e middleware.Event)
}

var trace tracer

// Outcomes of a handler run, as the tracer sees them.
const (
	traceEnter     = "enter"     // the work starts
	traceCommitted = "committed" // the work is done and recorded
	traceTaskDone  = "task-done" // an earlier delivery of this task did the work
	traceKeyDone   = "key-done"  // another task did this key's work (Once)
	traceExit      = "exit"      // the handler leaves its critical section
)

// handler does a use case's (simulated) work under its lock. asynq
// delivers a task at least once (a worker that dies after the work but
// before asynq hears of it gets it delivered again), so the work is
// recorded per task, under the lock, and a later delivery of a task whose
// work is recorded does nothing.
func (u useCase) handler(log *slog.Logger, t *tally, rdb redis.UniversalClient) asynq.HandlerFunc {
	return func(ctx context.Context, task *asynq.Task) error {
		lease, _ := lock.LeaseFromContext(ctx)
		id, _ := asynq.GetTaskID(ctx)
		follow(ctx, task, traceEnter)
		defer follow(ctx, task, traceExit)
		keyDone, taskDone := "joblock:done:"+lease.Key, "joblock:done-task:"+id
		n, err := rdb.Exists(ctx, taskDone).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			follow(ctx, task, traceTaskDone)
			log.InfoContext(ctx, "already done by an earlier delivery", "task", task.Type(), "id", id)
			return nil
		}
		if u.Once {
			if n, err = rdb.Exists(ctx, keyDone).Result(); err != nil {
				return err
			}
			if n > 0 {
				t.alreadyDone(task.Type())
				follow(ctx, task, traceKeyDone)
				log.InfoContext(ctx, "already done", "task", task.Type(), "key", lease.Key)
				return nil
			}
		}
		t.executed(task.Type())
		log.InfoContext(ctx, "working", "task", task.Type(), "key", lease.Key, "fence", lease.Fence)
		select {
		case <-time.After(u.Work):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		// Still under the lock, so no copy can slip in between.
		_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if u.Once {
				p.Set(ctx, keyDone, lease.Fence, doneTTL)
			}
			p.Set(ctx, taskDone, lease.Fence, doneTTL)
			p.Set(ctx, completedKey(lease.Key), time.Now().UnixMilli(), completedTTL)
			return nil
		})
		if err == nil {
			follow(ctx, task, traceCommitted)
		}
		return err
	}
}

func follow(ctx context.Context, task *asynq.Task, what string) {
	if trace != nil {
		trace.Handler(ctx, task, what)
	}
}

// completedTTL is how long the worker remembers that work on a key
// completed: longer than the daily cleanup's period.
const completedTTL = 48 * time.Hour

// completedKey records when work on a lock key last completed.
func completedKey(lockKey string) string { return "joblock:completed:" + lockKey }
