package middleware_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// otherQueue is a second queue the server works, for tests of tasks of
// one key in two queues.
func (p *inProcess) otherQueue() string { return p.queue + "-b" }

// serverOption is a middleware option made from the test's Redis.
type serverOption func(*redistest.Server) middleware.Option

// withSendBack gives the middleware the asynq server's Redis, so it can
// send back duplicates that asynq would archive.
func withSendBack(t *testing.T) serverOption {
	return func(s *redistest.Server) middleware.Option { return middleware.WithRedisClient(s.Client(t)) }
}

func startInProcess(t *testing.T, locker func(*redistest.Server) lock.Locker, rule middleware.Rule, handler asynq.HandlerFunc, opts ...serverOption) (*inProcess, lock.Locker) {
	srv := redistest.New(t)
	srv.RequireReal(t, "asynq")
	p := &inProcess{redis: srv, queue: "q" + rand.Text()[:8]}
	l := locker(srv)
	mwOpts := []middleware.Option{middleware.WithDefaultRule(rule), middleware.WithPrefix("srvtest:")}
	for _, o := range opts {
		mwOpts = append(mwOpts, o(srv))
	}
	mw, err := middleware.New(l, mwOpts...)
	require.NoError(t, err)
	mux := asynq.NewServeMux()
	mux.Use(mw)
	mux.Handle("job", handler)
	p.server = asynq.NewServer(asynq.RedisClientOpt{Addr: srv.Addr}, asynq.Config{
		Concurrency:              10,
		Queues:                   map[string]int{p.queue: 1, p.otherQueue(): 1},
		IsFailure:                middleware.IsFailure(nil),
		RetryDelayFunc:           middleware.RetryDelayFunc(func(int, error, *asynq.Task) time.Duration { return 50 * time.Millisecond }),
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		ShutdownTimeout:          time.Second,
		LogLevel:                 asynq.FatalLevel,
	})
	require.NoError(t, p.server.Start(mux))
	p.client = asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr})
	t.Cleanup(func() {
		p.server.Shutdown()
		_ = p.client.Close()
	})
	return p, l
}

// redisEngine is the Redis engine on the test's own Redis, where no holder
// predates the start: no restart grace.
func redisEngine(t *testing.T) func(*redistest.Server) lock.Locker {
	return func(s *redistest.Server) lock.Locker {
		return redislock.New(s.Client(t), redislock.WithPrefix(s.Prefix), redislock.WithRestartGrace(0))
	}
}

func fileEngine(t *testing.T) func(*redistest.Server) lock.Locker {
	return func(*redistest.Server) lock.Locker { return newFileLocker(t) }
}

func engines(t *testing.T) map[string]func(*redistest.Server) lock.Locker {
	return map[string]func(*redistest.Server) lock.Locker{"file": fileEngine(t), "redis": redisEngine(t)}
}

func (p *inProcess) enqueue(t *testing.T, payload string, opts ...asynq.Option) {
	_, err := p.client.Enqueue(asynq.NewTask("job", []byte(payload)), append(opts, asynq.Queue(p.queue))...)
	require.NoError(t, err)
}

// settled waits until the queue holds nothing that will still run, and
// returns how many of its tasks asynq archived.
func (p *inProcess) settled(t *testing.T) int {
	in := asynq.NewInspector(asynq.RedisClientOpt{Addr: p.redis.Addr})
	defer in.Close()
	var q *asynq.QueueInfo
	require.Eventually(t, func() bool {
		var err error
		q, err = in.GetQueueInfo(p.queue)
		require.NoError(t, err)
		return q.Pending+q.Active+q.Scheduled+q.Retry == 0
	}, 30*time.Second, 20*time.Millisecond, "tasks still queued")
	return q.Archived
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
	t.Parallel()
	for name, engine := range engines(t) {
		t.Run(name, func(t *testing.T) { testAsynqLostLock(t, engine) })
	}
}

func testAsynqLostLock(t *testing.T, engine func(*redistest.Server) lock.Locker) {
	causes := make(chan error, 1)
	lockers := make(chan lock.Locker, 1)
	p, l := startInProcess(t, engine, middleware.Rule{Template: "job-{{.id}}", Lease: 600 * time.Millisecond},
		func(ctx context.Context, _ *asynq.Task) error {
			lease, _ := lock.LeaseFromContext(ctx)
			locker := <-lockers
			require.NoError(t, locker.Release(context.Background(), lease), "someone frees the lock")
			select {
			case <-ctx.Done():
				causes <- context.Cause(ctx)
			case <-time.After(10 * time.Second):
				causes <- nil
			}
			return ctx.Err()
		})
	lockers <- l
	p.enqueue(t, `{"id":1}`)
	select {
	case cause := <-causes:
		require.ErrorIs(t, cause, lock.ErrLost, "the handler was not told its lock was gone")
	case <-time.After(20 * time.Second):
		t.Fatal("task never ran")
	}
}

// TestAsynqRetryNeverArchivesADuplicate: asynq archives a task whose
// retries are used up before it asks IsFailure. A duplicate under Retry
// must still run, once, after the holder finishes, whatever MaxRetry says.
func TestAsynqRetryNeverArchivesADuplicate(t *testing.T) {
	for name, engine := range engines(t) {
		for _, maxRetry := range []int{0, 1} {
			for _, sendBack := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/max-retry-%d/send-back-%t", name, maxRetry, sendBack), func(t *testing.T) {
					t.Parallel()
					testRetryNeverArchives(t, engine, maxRetry, sendBack)
				})
			}
		}
	}
}

func testRetryNeverArchives(t *testing.T, engine func(*redistest.Server) lock.Locker, maxRetry int, sendBack bool) {
	var mu sync.Mutex
	var runs []string
	holding := make(chan struct{})
	var opts []serverOption
	if sendBack {
		opts = append(opts, withSendBack(t))
	}
	p, _ := startInProcess(t, engine, middleware.Rule{Template: "job-{{.id}}"},
		func(ctx context.Context, task *asynq.Task) error {
			mu.Lock()
			runs = append(runs, "start "+string(task.Payload()))
			first := len(runs) == 1
			mu.Unlock()
			if first {
				close(holding)
				time.Sleep(300 * time.Millisecond)
			}
			mu.Lock()
			runs = append(runs, "end "+string(task.Payload()))
			mu.Unlock()
			return nil
		}, opts...)
	p.enqueue(t, `{"id":1,"n":"holder"}`)
	<-holding
	p.enqueue(t, `{"id":1,"n":"dup"}`, asynq.MaxRetry(maxRetry))
	assert.Zero(t, p.settled(t), "a duplicate was archived")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{`start {"id":1,"n":"holder"}`, `end {"id":1,"n":"holder"}`,
		`start {"id":1,"n":"dup"}`, `end {"id":1,"n":"dup"}`}, runs, "the duplicate runs once, after the holder")
}

// TestAsynqPanickingHandler: a handler that panics frees its key at once,
// so asynq's retry of it is not refused as a duplicate of itself (under
// Fail it would be archived), and the server goes on.
func TestAsynqPanickingHandler(t *testing.T) {
	t.Parallel()
	for name, engine := range engines(t) {
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int32
			p, l := startInProcess(t, engine, middleware.Rule{Template: "job-{{.id}}", Lease: time.Minute, Policy: middleware.Fail},
				func(context.Context, *asynq.Task) error {
					if calls.Add(1) == 1 {
						panic("boom")
					}
					return nil
				})
			p.enqueue(t, `{"id":1}`, asynq.MaxRetry(3))
			assert.Zero(t, p.settled(t), "the retry was archived")
			assert.EqualValues(t, 2, calls.Load(), "the task panicked, then its retry ran")
			assert.Empty(t, heldKeys(t, l))
			p.enqueue(t, `{"id":2}`)
			assert.Zero(t, p.settled(t))
			assert.EqualValues(t, 3, calls.Load(), "the server goes on")
		})
	}
}

func TestAsynqShutdownReleasesEveryLock(t *testing.T) {
	t.Parallel()
	for name, engine := range engines(t) {
		t.Run(name, func(t *testing.T) { testAsynqShutdown(t, engine) })
	}
}

func testAsynqShutdown(t *testing.T, engine func(*redistest.Server) lock.Locker) {
	started := make(chan struct{}, 10)
	p, l := startInProcess(t, engine, middleware.Rule{Template: "job-{{.id}}"},
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
	// asynq cancels a running handler's context only once ShutdownTimeout
	// has passed, as its worker goroutine gives the task up, and Shutdown
	// returns without waiting for the handler to return: the middleware
	// releases the key a moment later, on the handler's way out. Released,
	// not left to run out: well within the 15s lease.
	require.Eventually(t, func() bool { return len(heldKeys(t, l)) == 0 }, 5*time.Second, 10*time.Millisecond,
		"shutdown left locks behind")
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
			// Its last renewal came before the kill, so the lock ends within
			// ttl of it; the second beyond covers the 20ms polls and a
			// loaded machine, and is far below the 3*ttl a stuck lock waits.
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

// TestAsynqRestartGraceIsNoDuplicate: a task whose key the engine refuses
// while it waits out a restart of the locks' Redis is no duplicate of a
// live run: under every policy it comes back and runs, once, after the
// grace, even with no retries left.
func TestAsynqRestartGraceIsNoDuplicate(t *testing.T) {
	for _, policy := range []middleware.Policy{middleware.Retry, middleware.Skip, middleware.Wait, middleware.Fail} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			locks := redistest.Start(t) // the locks' own Redis, without persistence
			const grace = 2 * time.Second
			var mu sync.Mutex
			var kinds []string
			observe := func(*redistest.Server) middleware.Option {
				return middleware.WithObserver(func(e middleware.Event) {
					mu.Lock()
					defer mu.Unlock()
					if e.Kind == middleware.Duplicate {
						assert.ErrorIs(t, e.Err, lock.ErrRestartGrace)
						assert.Equal(t, middleware.Retry, e.Policy, "applied as Retry")
						assert.Contains(t, e.Holder, "new locks wait out the 2s grace")
					}
					if n := len(kinds); n == 0 || kinds[n-1] != e.Kind.String() {
						kinds = append(kinds, e.Kind.String())
					}
				})
			}
			var runs atomic.Int32
			first := &firstObtainWaits{called: make(chan struct{}), let: make(chan struct{})}
			p, _ := startInProcess(t, func(*redistest.Server) lock.Locker {
				first.Locker = redislock.New(locks.Client(t), redislock.WithRestartGrace(grace))
				return first
			}, middleware.Rule{Template: "job-{{.id}}", Policy: policy, MaxWait: 100 * time.Millisecond},
				func(context.Context, *asynq.Task) error {
					runs.Add(1)
					return nil
				}, observe)
			p.enqueue(t, `{"id":1}`, asynq.MaxRetry(0))
			<-first.called
			locks.Restart(t) // between the task's start and its lock: the grace starts over
			close(first.let)
			assert.Zero(t, p.settled(t), "archived")
			assert.EqualValues(t, 1, runs.Load(), "runs")
			mu.Lock()
			defer mu.Unlock()
			require.Greater(t, len(kinds), 2, "events %v", kinds)
			assert.Contains(t, kinds[:len(kinds)-2], "duplicate", "refused by the grace first")
			assert.Equal(t, []string{"obtained", "released"}, kinds[len(kinds)-2:], "then run once")
		})
	}
}

// firstObtainWaits is an engine whose first Obtain waits until let is
// closed, having closed called: the test restarts Redis in between.
type firstObtainWaits struct {
	lock.Locker
	once        sync.Once
	called, let chan struct{}
}

func (f *firstObtainWaits) Obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	f.once.Do(func() {
		close(f.called)
		<-f.let
	})
	return f.Locker.Obtain(ctx, key, ttl)
}
