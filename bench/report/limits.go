package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
)

// limitsSection measures duplicates under Retry: one key's queue of work
// drained by two workers, with and without the handoff, and a per-tenant
// limit over many tenants.
func limitsSection(ctx context.Context, o options, rdb *redis.Client) error {
	fmt.Printf("\n### Duplicates under Retry: handoff and per-key limits\n\n" +
		"Two asynq servers of concurrency 10 (two workers), the Redis engine, `Policy: Retry` with `middleware.RetryDelayFunc(nil)`, " +
		"`TaskCheckInterval` 100ms as the worker sets it. A refusal is a task delivered, refused and sent back: a wasted round trip.\n")
	table("workload", "setup", "took", "ideal", "refusals", "handed off")
	for _, handoff := range []bool{false, true} {
		setup := "retry timers only (no `WithRedisClient`)"
		if handoff {
			setup = "handoff (`WithRedisClient`)"
		}
		r, err := drain(ctx, rdb, drainRun{tasks: 30, tenants: 1, limit: 1, work: time.Second, handoff: handoff})
		if err != nil {
			return err
		}
		row("30 one-second tasks, one key", setup, r.took.Round(100*time.Millisecond).String(), "30s",
			fmt.Sprint(r.refusals), fmt.Sprint(r.handedOff))
	}
	for _, limit := range []int{1, 2} {
		r, err := drain(ctx, rdb, drainRun{tasks: 1000, tenants: 10, limit: limit, work: 50 * time.Millisecond, handoff: true})
		if err != nil {
			return err
		}
		if r.most > limit {
			return fmt.Errorf("a tenant ran %d tasks at once, over its limit of %d", r.most, limit)
		}
		// Ten tenants of limit slots each, on twenty goroutines.
		ideal := time.Duration(1000/min(20, 10*limit)) * 50 * time.Millisecond
		row(fmt.Sprintf("1,000 50ms tasks, 10 tenants' bursts one after another, `Limit: %d`", limit), fmt.Sprintf("handoff; at most %d at once per tenant", r.most),
			r.took.Round(100*time.Millisecond).String(), ideal.String(), fmt.Sprint(r.refusals), fmt.Sprint(r.handedOff))
	}
	return nil
}

type drainRun struct {
	tasks, tenants, limit int
	work                  time.Duration
	handoff               bool
}

type drained struct {
	took                time.Duration
	refusals, handedOff int64
	most                int // the most tasks of one tenant at once
}

// drain enqueues r.tasks tasks spread over r.tenants keys, then times two
// servers running them all under a rule of limit r.limit.
func drain(ctx context.Context, rdb *redis.Client, r drainRun) (drained, error) {
	queue := "bench-limits-" + rand.Text()[:10]
	prefix := "joblockbench:" + rand.Text()[:8] + ":"
	defer deleteRedisPrefix(ctx, rdb, prefix)
	defer deleteQueue(ctx, rdb, queue) // after the servers are shut down
	locker := redislock.New(rdb, redislock.WithPrefix(prefix))
	var out drained
	var refusals, handedOff atomic.Int64
	opts := []middleware.Option{
		middleware.WithRule("job", middleware.Rule{Template: "tenant-{{.tenant}}", Limit: r.limit, Policy: middleware.Retry}),
		middleware.WithObserver(func(e middleware.Event) {
			switch e.Kind {
			case middleware.Duplicate:
				refusals.Add(1)
			case middleware.HandedOff:
				handedOff.Add(1)
			}
		}),
	}
	if r.handoff {
		opts = append(opts, middleware.WithRedisClient(rdb))
	}
	mw, err := middleware.New(locker, opts...)
	if err != nil {
		return out, err
	}
	var (
		mu      sync.Mutex
		running = map[string]int{}
		done    atomic.Int64
		all     = make(chan struct{})
	)
	mux := asynq.NewServeMux()
	mux.Use(mw)
	mux.HandleFunc("job", func(ctx context.Context, t *asynq.Task) error {
		var p struct{ Tenant string }
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return err
		}
		mu.Lock()
		running[p.Tenant]++
		out.most = max(out.most, running[p.Tenant])
		mu.Unlock()
		time.Sleep(r.work)
		mu.Lock()
		running[p.Tenant]--
		mu.Unlock()
		if done.Add(1) == int64(r.tasks) {
			close(all)
		}
		return nil
	})
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range r.tasks {
		// Each tenant's tasks one after another, as one tenant's burst
		// of uploads comes: the queue's head is one tenant's at a time.
		payload := fmt.Sprintf(`{"tenant":"t%d","n":%d}`, i*r.tenants/r.tasks, i)
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("job", []byte(payload)), asynq.Queue(queue), asynq.MaxRetry(1000)); err != nil {
			return out, err
		}
	}
	start := time.Now()
	for range 2 {
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 10, Queues: map[string]int{queue: 1},
			IsFailure: middleware.IsFailure(nil), RetryDelayFunc: middleware.RetryDelayFunc(nil),
			TaskCheckInterval: 100 * time.Millisecond, LogLevel: asynq.FatalLevel})
		if err := srv.Start(mux); err != nil {
			return out, err
		}
		defer srv.Shutdown()
	}
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		return out, fmt.Errorf("only %d of %d tasks ran", done.Load(), r.tasks)
	}
	out.took = time.Since(start)
	out.refusals, out.handedOff = refusals.Load(), handedOff.Load()
	return out, nil
}
