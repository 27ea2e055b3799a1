package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
)

// timeIt returns how long fn took, averaged over n calls.
func timeIt(n int, fn func(i int) error) (time.Duration, error) {
	start := time.Now()
	for i := range n {
		if err := fn(i); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

func scaleSection(ctx context.Context, o options, rdb *redis.Client) error {
	dir := engine.DefaultDir()
	fmt.Printf("\n### At scale\n\nThe file engine in %s (%s) and the Redis engine, holding n live locks; times are medians of %d rounds.\n",
		dir, fsType(dir), o.rounds)
	table("live locks", "file: obtain a new key", "file: obtain a held key (refused)", "file: Scan", "file: GetStats",
		"file: Cleanup (nothing to remove)", "the spec's getStats (read and decode every file)", "Redis: Scan")
	for _, n := range []int{1000, 10000, 100000} {
		cells, err := scaleRow(ctx, o, rdb, dir, n)
		if err != nil {
			return err
		}
		row(append([]string{thousands(float64(n))}, cells...)...)
	}
	return nil
}

func scaleRow(ctx context.Context, o options, rdb *redis.Client, parent string, n int) ([]string, error) {
	l, cleanup, err := lockerIn(parent)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	m := lock.NewManager(l)
	prefix := "joblockbench:" + rand.Text()[:8] + ":"
	rl := redislock.New(rdb, redislock.WithPrefix(prefix))
	for i := range n {
		key := "live-" + strconv.Itoa(i)
		if _, err := l.Obtain(ctx, key, time.Hour); err != nil {
			return nil, err
		}
		if _, err := rl.Obtain(ctx, key, time.Hour); err != nil {
			return nil, err
		}
	}
	defer deleteRedisPrefix(ctx, rdb, prefix)
	measures := []func(round int) (time.Duration, error){
		func(round int) (time.Duration, error) {
			return timeIt(1000, func(i int) error {
				lease, err := l.Obtain(ctx, fmt.Sprintf("new-%d-%d", round, i), time.Hour)
				if err == nil {
					err = l.Release(ctx, lease)
				}
				return err
			})
		},
		func(int) (time.Duration, error) {
			return timeIt(1000, func(i int) error {
				_, err := l.Obtain(ctx, "live-"+strconv.Itoa(i%n), time.Hour)
				if err == nil {
					return fmt.Errorf("obtained a held key")
				}
				return nil
			})
		},
		func(int) (time.Duration, error) {
			return timeIt(1, func(int) error { return l.Scan(ctx, func(lock.Record) bool { return true }) })
		},
		func(int) (time.Duration, error) {
			return timeIt(1, func(int) error { _, err := m.GetStats(ctx); return err })
		},
		func(int) (time.Duration, error) {
			return timeIt(1, func(int) error { _, err := l.Cleanup(ctx); return err })
		},
		func(int) (time.Duration, error) { return timeIt(1, func(int) error { return specStats(l.Dir()) }) },
		func(int) (time.Duration, error) {
			return timeIt(1, func(int) error { return rl.Scan(ctx, func(lock.Record) bool { return true }) })
		},
	}
	names := make([]string, len(measures))
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	round := 0
	ms, err := interleave(o.rounds, names, func(name string) (float64, error) {
		i, _ := strconv.Atoi(name)
		round++
		d, err := measures[i](round)
		return float64(d), err
	})
	if err != nil {
		return nil, err
	}
	cells := make([]string, len(ms))
	for i, m := range ms {
		cells[i] = time.Duration(m.median()).Round(time.Microsecond / 10).String()
	}
	return cells, nil
}

// specStats is the spec's getStats: list the lock files, read and decode
// each, count the live ones.
func specStats(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	active := 0
	now := time.Now().Unix()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var rec struct {
			ExpiresAt int64 `json:"expires_at"`
		}
		if json.Unmarshal(b, &rec) == nil && rec.ExpiresAt > now {
			active++
		}
	}
	return nil
}

func deleteRedisPrefix(ctx context.Context, rdb *redis.Client, prefix string) {
	deleteRedisMatch(ctx, rdb, prefix+"*")
}

// deleteQueue removes an asynq queue of the report's own and every key
// asynq keeps for it, its statistics included, which DeleteQueue leaves.
func deleteQueue(ctx context.Context, rdb *redis.Client, queue string) {
	_ = asynq.NewInspectorFromRedisClient(rdb).DeleteQueue(queue, true)
	deleteRedisMatch(ctx, rdb, "asynq:{"+queue+"}:*") // "{" is no glob character
}

// deleteRedisMatch deletes every key matching the SCAN pattern.
func deleteRedisMatch(ctx context.Context, rdb *redis.Client, pattern string) {
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			rdb.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Del(ctx, batch...)
	}
}

// nopLocker grants every lock at no cost of its own, so the middleware's
// own cost shows.
type nopLocker struct{ lock.Locker }

func (nopLocker) Obtain(_ context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	return lock.Lease{Key: key, Token: "lock_nop", Fence: 1, ExpiresAt: time.Now().Add(ttl)}, nil
}

func (nopLocker) Release(context.Context, lock.Lease) error { return nil }

func middlewareSection(ctx context.Context, o options, rdb *redis.Client) error {
	fmt.Printf("\n### The middleware's own cost\n\nOne task through the middleware to a trivial handler, key from a template over the payload, no asynq server.\n")
	dir, cleanup, err := tempDir(engine.DefaultDir())
	if err != nil {
		return err
	}
	defer cleanup()
	fl, closeFile, err := lockerIn(dir)
	if err != nil {
		return err
	}
	defer closeFile()
	prefix := "joblockbench:" + rand.Text()[:8] + ":"
	defer deleteRedisPrefix(ctx, rdb, prefix)
	engines := []struct {
		name   string
		locker lock.Locker
	}{
		{"an engine that costs nothing (the middleware alone)", nopLocker{}},
		{"file engine, 100 keys reused (" + fsType(dir) + ")", fl},
		{"Redis engine, 100 keys reused", redislock.New(rdb, redislock.WithPrefix(prefix))},
	}
	table("engine", "ns/task", "allocs/task", "B/task")
	for _, e := range engines {
		mw, err := middleware.New(e.locker, middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}-{{._type}}"}))
		if err != nil {
			return err
		}
		h := mw(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
		tasks := make([]*asynq.Task, 100)
		for i := range tasks {
			tasks[i] = asynq.NewTask("job", []byte(`{"id":`+strconv.Itoa(i)+`,"user":"someone","items":[1,2,3]}`))
		}
		var errs int
		var results []testing.BenchmarkResult
		for range o.rounds {
			results = append(results, testing.Benchmark(func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if h.ProcessTask(ctx, tasks[i%len(tasks)]) != nil {
						errs++
					}
					i++
				}
			}))
		}
		sort.Slice(results, func(i, j int) bool { return results[i].NsPerOp() < results[j].NsPerOp() })
		med := results[len(results)/2]
		if errs > 0 {
			return fmt.Errorf("%s: %d tasks failed", e.name, errs)
		}
		row(e.name, thousands(float64(med.NsPerOp())), strconv.FormatInt(med.AllocsPerOp(), 10), strconv.FormatInt(med.AllocedBytesPerOp(), 10))
	}
	return nil
}
