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
)

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

// useCases returns the worker's task types. ttl is the default lock TTL.
func useCases(ttl time.Duration) []useCase {
	return []useCase{
		{
			Type: TypeCacheRegenerate, Name: "cache regeneration",
			// One process regenerates; the others skip and use the stale cache.
			Rule:    middleware.Rule{Template: "cache-{{.key}}", TTL: ttl, Policy: middleware.Skip},
			Work:    300 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"key": fmt.Sprintf("product-%d", i)} },
		},
		{
			Type: TypeCDNInvalidate, Name: "CDN invalidation",
			Rule:    middleware.Rule{Key: cdnKey, TTL: 60 * time.Second, Policy: middleware.Skip},
			Work:    200 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"url": fmt.Sprintf("https://cdn.example.com/img/%d.png", i)} },
		},
		{
			Type: TypeJobProcess, Name: "job dedup",
			// acquireWithWait(300, 5): wait up to 5s, then come back later.
			Rule: middleware.Rule{Template: "job-{{.job_id}}", TTL: 300 * time.Second, Policy: middleware.Wait,
				MaxWait: 5 * time.Second, AfterWait: middleware.Skip},
			Work:    400 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"job_id": i} },
			Once:    true,
		},
		{
			Type: TypeAPICall, Name: "API rate-limit slot",
			// One call per second across every worker: the slot is kept for
			// its TTL after the call; others wait up to 2s for the next one.
			Rule: middleware.Rule{Template: "api-rate-limit", TTL: time.Second, Strategy: middleware.HoldUntilTTL,
				Policy: middleware.Wait, MaxWait: 2 * time.Second, WaitInterval: 50 * time.Millisecond},
			Work:    50 * time.Millisecond,
			Payload: func(i int) any { return map[string]any{"endpoint": fmt.Sprintf("/v1/rates/%d", i)} },
		},
		{
			Type: TypeExportUser, Name: "export prevention",
			// A second export of the same user fails ("Export already running").
			Rule:    middleware.Rule{Template: "export-user-{{.user_id}}", TTL: 600 * time.Second, Policy: middleware.Fail},
			Work:    time.Second,
			Payload: func(i int) any { return map[string]any{"user_id": i} },
		},
	}
}

// doneTTL is how long a Once use case remembers a finished key.
const doneTTL = time.Hour

// handler does a use case's (simulated) work under its lock.
func (u useCase) handler(log *slog.Logger, t *tally, rdb redis.UniversalClient) asynq.HandlerFunc {
	return func(ctx context.Context, task *asynq.Task) error {
		lease, _ := lock.LeaseFromContext(ctx)
		done := "joblock:done:" + lease.Key
		if u.Once {
			n, err := rdb.Exists(ctx, done).Result()
			if err != nil {
				return err
			}
			if n > 0 {
				t.alreadyDone(task.Type())
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
		if u.Once {
			// Still under the lock, so no copy can slip in between.
			return rdb.Set(ctx, done, lease.Fence, doneTTL).Err()
		}
		return nil
	}
}
