package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
)

// asynqSetup is one way of running the throughput benchmark's tasks.
type asynqSetup struct {
	name string
	// locker opens the engine for one measurement (nil: no middleware) and
	// says how to get rid of it.
	locker func() (lock.Locker, func(), error)
	// keys is how many distinct keys the tasks use; 0 means one per task.
	keys int
}

func asynqSection(ctx context.Context, o options, rdb *redis.Client) error {
	defaultDir := engine.DefaultDir()
	fileIn := func(parent string) func() (lock.Locker, func(), error) {
		return func() (lock.Locker, func(), error) {
			if err := os.MkdirAll(parent, 0o700); err != nil {
				return nil, nil, err
			}
			dir, err := os.MkdirTemp(parent, "bench-")
			if err != nil {
				return nil, nil, err
			}
			l, err := filelock.New(dir)
			if err != nil {
				return nil, nil, err
			}
			return l, func() { _ = l.Close(); _ = os.RemoveAll(dir) }, nil
		}
	}
	redisEngine := func() (lock.Locker, func(), error) {
		return redislock.New(rdb, redislock.WithPrefix("joblockbench:"+rand.Text()[:8]+":")), func() {}, nil
	}
	setups := []asynqSetup{
		{name: "no middleware"},
		{name: "file engine, 100 keys reused", locker: fileIn(defaultDir), keys: 100},
		{name: "file engine, a new key per task, tmpfs (/dev/shm)", locker: fileIn("/dev/shm/joblock-bench")},
		{name: fmt.Sprintf("file engine, a new key per task, default directory (%s, %s)", defaultDir, fsType(defaultDir)), locker: fileIn(defaultDir)},
		{name: "Redis engine, a new key per task", locker: redisEngine},
	}
	names := make([]string, len(setups))
	byName := map[string]asynqSetup{}
	for i, s := range setups {
		names[i], byName[s.name] = s.name, s
	}
	fmt.Printf("\n### asynq throughput\n\nA trivial handler, concurrency 10, %d tasks per measurement, real Redis.\n", o.tasks)
	ms, err := interleave(o.rounds, names, func(name string) (float64, error) {
		return asynqRun(ctx, o, rdb, byName[name])
	})
	if err != nil {
		return err
	}
	base := ms[0].median()
	table("setup", "tasks/s", "vs no middleware")
	for _, m := range ms {
		row(m.name, thousands(m.median()), fmt.Sprintf("%.2fx", m.median()/base))
	}
	return nil
}

// asynqRun enqueues o.tasks tasks, then times a real asynq server (and the
// middleware, if the setup has an engine) handling all of them.
func asynqRun(ctx context.Context, o options, rdb *redis.Client, s asynqSetup) (float64, error) {
	queue := "bench-" + rand.Text()[:10]
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range o.tasks {
		id := i
		if s.keys > 0 {
			id = i % s.keys
		}
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("job", []byte(`{"id":`+strconv.Itoa(id)+`}`)), asynq.Queue(queue)); err != nil {
			return 0, err
		}
	}
	var done atomic.Int64
	all := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("job", func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(o.tasks) {
			close(all)
		}
		return nil
	})
	if s.locker != nil {
		l, closeFn, err := s.locker()
		if err != nil {
			return 0, err
		}
		defer closeFn()
		mw, err := middleware.New(l, middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}"}))
		if err != nil {
			return 0, err
		}
		mux.Use(mw)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 10, Queues: map[string]int{queue: 1}, LogLevel: asynq.FatalLevel})
	start := time.Now()
	if err := srv.Start(mux); err != nil {
		return 0, err
	}
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		return 0, fmt.Errorf("only %d of %d tasks ran", done.Load(), o.tasks)
	}
	elapsed := time.Since(start)
	srv.Shutdown()
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	_ = inspector.DeleteQueue(queue, true)
	return float64(o.tasks) / elapsed.Seconds(), nil
}
