package middleware_test

import (
	"context"
	"crypto/rand"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/middleware"
)

// BenchmarkAsynqThroughput: one op is one trivial task taken from the queue
// and handled by a real asynq server (concurrency 10) on a real Redis:
// without the middleware, and with it on each engine. Each task has a key
// of its own, so the numbers are the middleware's cost, not contention.
//
//	go test -run '^$' -bench AsynqThroughput -benchtime 3000x ./middleware
func BenchmarkAsynqThroughput(b *testing.B) {
	srv := redistest.New(b)
	srv.RequireReal(b, "asynq")
	engines := []struct {
		name   string
		locker func(b *testing.B) lock.Locker
	}{
		{"none", nil},
		{"file", func(b *testing.B) lock.Locker {
			l, err := filelock.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return l
		}},
		{"redis", func(b *testing.B) lock.Locker {
			return redislock.New(srv.Client(b), redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(0)) // a Redis of the benchmark's own
		}},
	}
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			queue := "bench" + rand.Text()[:8]
			client := asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr})
			defer client.Close()
			for i := range b.N {
				if _, err := client.Enqueue(asynq.NewTask("job", []byte(`{"id":`+strconv.Itoa(i)+`}`)), asynq.Queue(queue)); err != nil {
					b.Fatal(err)
				}
			}
			var done atomic.Int64
			all := make(chan struct{})
			mux := asynq.NewServeMux()
			mux.HandleFunc("job", func(context.Context, *asynq.Task) error {
				if done.Add(1) == int64(b.N) {
					close(all)
				}
				return nil
			})
			if e.locker != nil {
				mw, err := middleware.New(e.locker(b), middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}"}))
				if err != nil {
					b.Fatal(err)
				}
				mux.Use(mw)
			}
			server := asynq.NewServer(asynq.RedisClientOpt{Addr: srv.Addr}, asynq.Config{
				Concurrency: 10, Queues: map[string]int{queue: 1}, LogLevel: asynq.FatalLevel,
			})
			b.ResetTimer()
			if err := server.Start(mux); err != nil {
				b.Fatal(err)
			}
			select {
			case <-all:
			case <-time.After(10 * time.Minute):
				b.Fatalf("only %d of %d tasks ran", done.Load(), b.N)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			server.Shutdown()
		})
	}
}

// nopLocker grants every lock at no cost of its own, so a benchmark over it
// counts the middleware's own work and allocations.
type nopLocker struct{ lock.Locker }

func (nopLocker) Obtain(_ context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	return lock.Lease{Key: key, Token: "lock_nop", Fence: 1, ExpiresAt: time.Now().Add(ttl)}, nil
}

func (nopLocker) Release(context.Context, lock.Lease) error { return nil }

// BenchmarkMiddlewareOverhead: one op is one task through the middleware
// to a trivial handler, on an engine that costs nothing, with the key from
// a template over the payload: the middleware's own time and allocations.
//
//	go test -run '^$' -bench MiddlewareOverhead -benchmem ./middleware
func BenchmarkMiddlewareOverhead(b *testing.B) {
	mw, err := middleware.New(nopLocker{}, middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}-{{._type}}"}))
	if err != nil {
		b.Fatal(err)
	}
	h := mw(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	task := asynq.NewTask("job", []byte(`{"id":12345,"user":"someone","items":[1,2,3]}`))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := h.ProcessTask(ctx, task); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOwnGoroutine: one op is one task through the middleware to a
// trivial handler on a goroutine of its own, as asynq runs every task, so
// the goroutine's stack starts small and grows on the way: without the
// middleware, over an engine that does nothing, and over the file engine
// with 100 keys reused.
//
//	go test -run '^$' -bench OwnGoroutine -benchmem ./middleware
func BenchmarkOwnGoroutine(b *testing.B) {
	trivial := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })
	rule := middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}-{{._type}}"})
	for _, tt := range []struct {
		name   string
		locker func(b *testing.B) lock.Locker
	}{
		{"none", nil},
		{"nop", func(*testing.B) lock.Locker { return nopLocker{} }},
		{"file", func(b *testing.B) lock.Locker {
			l, err := filelock.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = l.Close() })
			return l
		}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var h asynq.Handler = trivial
			if tt.locker != nil {
				mw, err := middleware.New(tt.locker(b), rule)
				if err != nil {
					b.Fatal(err)
				}
				h = mw(trivial)
			}
			tasks := make([]*asynq.Task, 100)
			for i := range tasks {
				tasks[i] = asynq.NewTask("job", []byte(`{"id":`+strconv.Itoa(i)+`,"user":"someone","items":[1,2,3]}`))
			}
			ctx := context.Background()
			errs := make(chan error)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				t := tasks[i%len(tasks)]
				i++
				go func() { errs <- h.ProcessTask(ctx, t) }()
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKeyTemplate: one op is one key rendered from the payload the
// MiddlewareOverhead benchmark uses, by a simple template (read from the
// payload's bytes) and by one with a function (text/template over the
// decoded payload).
//
//	go test -run '^$' -bench KeyTemplate -benchmem ./middleware
func BenchmarkKeyTemplate(b *testing.B) {
	task := asynq.NewTask("job", []byte(`{"id":12345,"user":"someone","items":[1,2,3]}`))
	for _, tt := range []struct{ name, text string }{
		{"simple", "job-{{.id}}-{{._type}}"},
		{"function", `job-{{printf "%v" .id}}-{{._type}}`},
	} {
		b.Run(tt.name, func(b *testing.B) {
			key, err := middleware.KeyTemplate(tt.text)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := key(ctx, task); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
