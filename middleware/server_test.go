package middleware_test

import (
	"context"
	"crypto/rand"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/testenv"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// inProcess is a real asynq server and client in this process.
type inProcess struct {
	redis  *redistest.Server
	queue  string
	server *asynq.Server
	client *asynq.Client
}

func startInProcess(t *testing.T, locker func(*redistest.Server) lock.Locker, rule middleware.Rule, handler asynq.HandlerFunc) (*inProcess, lock.Locker) {
	srv := redistest.New(t)
	srv.RequireReal(t, "asynq")
	p := &inProcess{redis: srv, queue: "q" + rand.Text()[:8]}
	l := locker(srv)
	mw, err := middleware.New(l, middleware.WithDefaultRule(rule), middleware.WithPrefix("srvtest:"))
	require.NoError(t, err)
	mux := asynq.NewServeMux()
	mux.Use(mw)
	mux.Handle("job", handler)
	p.server = asynq.NewServer(asynq.RedisClientOpt{Addr: srv.Addr}, asynq.Config{
		Concurrency:     10,
		Queues:          map[string]int{p.queue: 1},
		IsFailure:       middleware.IsFailure(nil),
		RetryDelayFunc:  middleware.RetryDelayFunc(nil),
		ShutdownTimeout: time.Second,
		LogLevel:        asynq.FatalLevel,
	})
	require.NoError(t, p.server.Start(mux))
	p.client = asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr})
	t.Cleanup(func() {
		p.server.Shutdown()
		_ = p.client.Close()
	})
	return p, l
}

func redisEngine(t *testing.T) func(*redistest.Server) lock.Locker {
	return func(s *redistest.Server) lock.Locker {
		return redislock.New(s.Client(t), redislock.WithPrefix(s.Prefix))
	}
}

func fileEngine(t *testing.T) func(*redistest.Server) lock.Locker {
	return func(*redistest.Server) lock.Locker { return newFileLocker(t) }
}

func engines(t *testing.T) map[string]func(*redistest.Server) lock.Locker {
	return map[string]func(*redistest.Server) lock.Locker{"file": fileEngine(t), "redis": redisEngine(t)}
}

func (p *inProcess) enqueue(t *testing.T, payload string) {
	_, err := p.client.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(p.queue))
	require.NoError(t, err)
}

func heldKeys(t *testing.T, l lock.Locker) []string {
	var keys []string
	require.NoError(t, l.Scan(context.Background(), func(r lock.Record) bool {
		if r.State == lock.Held && strings.HasPrefix(r.Key, "srvtest:") {
			keys = append(keys, r.Key)
		}
		return true
	}))
	return keys
}

func TestAsynqLostLockCancelsHandler(t *testing.T) {
	for name, engine := range engines(t) {
		t.Run(name, func(t *testing.T) { testAsynqLostLock(t, engine) })
	}
}

func testAsynqLostLock(t *testing.T, engine func(*redistest.Server) lock.Locker) {
	const ttl = 600 * time.Millisecond
	type result struct {
		after time.Duration
		cause error
	}
	results := make(chan result, 1)
	lockers := make(chan lock.Locker, 1)
	p, l := startInProcess(t, engine, middleware.Rule{Template: "job-{{.id}}", TTL: ttl},
		func(ctx context.Context, _ *asynq.Task) error {
			lease, _ := lock.LeaseFromContext(ctx)
			locker := <-lockers
			require.NoError(t, locker.Release(context.Background(), lease), "someone frees the lock")
			freed := time.Now()
			select {
			case <-ctx.Done():
				results <- result{time.Since(freed), context.Cause(ctx)}
			case <-time.After(10 * time.Second):
				results <- result{cause: nil}
			}
			return ctx.Err()
		})
	lockers <- l
	p.enqueue(t, `{"id":1}`)
	select {
	case r := <-results:
		require.ErrorIs(t, r.cause, lock.ErrLost)
		assert.LessOrEqual(t, r.after, ttl/3+150*time.Millisecond, "handler not cancelled within one renewal interval")
	case <-time.After(20 * time.Second):
		t.Fatal("task never ran")
	}
}

func TestAsynqShutdownReleasesEveryLock(t *testing.T) {
	for name, engine := range engines(t) {
		t.Run(name, func(t *testing.T) { testAsynqShutdown(t, engine) })
	}
}

func testAsynqShutdown(t *testing.T, engine func(*redistest.Server) lock.Locker) {
	started := make(chan struct{}, 10)
	p, l := startInProcess(t, engine, middleware.Rule{Template: "job-{{.id}}", TTL: time.Minute},
		func(ctx context.Context, _ *asynq.Task) error {
			started <- struct{}{}
			<-ctx.Done() // runs until the server shuts down
			return ctx.Err()
		})
	for i := range 5 {
		p.enqueue(t, `{"id":`+strconv.Itoa(i)+`}`)
	}
	for range 5 {
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("tasks did not start")
		}
	}
	assert.Len(t, heldKeys(t, l), 5)
	p.server.Shutdown()
	assert.Empty(t, heldKeys(t, l), "shutdown left locks behind")
}

// TestAsynqKilledWorker kills a worker process mid-task. Its lock must
// outlive it only until its TTL, and asynq's redelivery (after its own
// task lease, about a minute) must run the task once more, never twice at
// once.
func TestAsynqKilledWorker(t *testing.T) {
	testenv.Soak(t, "waits about 70s for asynq's task lease to expire")
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			ws := newWorkerSetup(t, engine)
			const ttl = 2 * time.Second
			victim := ws.start(t, "retry", time.Hour, ttl)
			ws.enqueue(t, 1, `{"id": 9}`)
			require.Eventually(t, func() bool { return ws.count(t, "enter") == 1 }, 20*time.Second, 20*time.Millisecond)
			require.NoError(t, victim.Process.Signal(syscall.SIGKILL))
			_ = victim.Wait()
			killed := time.Now()

			locker := ws.locker(t)
			_, err := locker.Obtain(context.Background(), "mwtest:job-9", time.Second)
			require.ErrorIs(t, err, lock.ErrNotObtained, "the killed worker's lock must last until its TTL")
			lease, err := lock.ObtainWait(context.Background(), locker, "mwtest:job-9", time.Second, lock.Wait{MaxWait: 3 * ttl, Interval: 20 * time.Millisecond})
			require.NoError(t, err, "the killed worker's lock is stuck")
			assert.Less(t, time.Since(killed), ttl+time.Second)
			require.NoError(t, locker.Release(context.Background(), lease))

			// A fresh worker recovers the orphaned task once asynq's lease on
			// it has expired, and runs it.
			rescuer := ws.start(t, "retry", 10*time.Millisecond, ttl)
			require.Eventually(t, func() bool { return ws.count(t, "exit") == 1 && ws.idle(t) }, 150*time.Second, 200*time.Millisecond,
				"asynq did not redeliver the task")
			stop(t, rescuer)
			assert.Equal(t, 2, ws.count(t, "enter"), "the task ran once more, and only once")
			ws.check(t)
		})
	}
}
