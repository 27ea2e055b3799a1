package middleware_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"crypto/rand"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/testenv"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Environment of a worker child process.
const (
	envChild  = "JOBLOCK_MW_CHILD"
	envRedis  = "JOBLOCK_MW_REDIS"
	envQueue  = "JOBLOCK_MW_QUEUE"
	envPolicy = "JOBLOCK_MW_POLICY"
	envLog    = "JOBLOCK_MW_LOG"
	envHold   = "JOBLOCK_MW_HOLD"
	envTTL    = "JOBLOCK_MW_TTL"
	envLimit  = "JOBLOCK_MW_LIMIT"
	// envRetryDelay is the duplicates' retry delay: a duration, or
	// "holder" for RetryDelayFunc's guess from the holder's lease.
	envRetryDelay = "JOBLOCK_MW_RETRY_DELAY"
)

func retryDelay(spec string) asynq.RetryDelayFunc {
	if spec == "holder" {
		return middleware.RetryDelayFunc(nil)
	}
	d, err := time.ParseDuration(spec)
	if err != nil {
		d = 100 * time.Millisecond
	}
	return middleware.RetryDelayFunc(func(int, error, *asynq.Task) time.Duration { return d })
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		run := workerMain
		if mode == "enqueuer" {
			run = enqueuerMain
		}
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// workerMain is a real asynq worker process: concurrency 10, every "job"
// task under the middleware, each critical section logged for the checker.
func workerMain() error {
	addr := os.Getenv(envRedis)
	cfg := engine.FromEnv()
	engineLocker, closeLocker, err := cfg.Open(context.Background())
	if err != nil {
		return err
	}
	defer closeLocker()
	// Leases whose expiry the section log can trust, whatever the engine.
	locker := locktest.Deadlined(engineLocker)
	ttl, _ := time.ParseDuration(os.Getenv(envTTL))
	hold, _ := time.ParseDuration(os.Getenv(envHold))
	policy := map[string]middleware.Policy{"skip": middleware.Skip, "retry": middleware.Retry, "wait": middleware.Wait}[os.Getenv(envPolicy)]
	unique := map[string]middleware.Uniqueness{"unique": middleware.UniqueUntilExecuted,
		"unique-and-while": middleware.UniqueUntilAndWhileExecuting}[os.Getenv(envPolicy)]
	limit, _ := strconv.Atoi(os.Getenv(envLimit))
	runs, err := locktest.OpenSectionLog(os.Getenv(envLog))
	if err != nil {
		return err
	}
	defer runs.Close()
	write := func(format string, args ...any) { _ = runs.Line(format, args...) }
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	mw, err := middleware.New(locker,
		middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}", Lease: ttl, Policy: policy, Unique: unique, Limit: limit,
			// Waiters poll once a minute: only a release heard of wakes them
			// sooner.
			MaxWait: 5 * time.Minute, WaitInterval: time.Minute}),
		middleware.WithPrefix("mwtest:"),
		middleware.WithRedisClient(rdb),
		middleware.WithObserver(func(e middleware.Event) {
			switch e.Kind {
			case middleware.Duplicate:
				write("dup 0 %s", e.Policy)
			case middleware.HandedOff:
				write("handoff 0 %s", e.TaskID)
			}
		}))
	if err != nil {
		return err
	}
	mux := asynq.NewServeMux()
	mux.Use(mw)
	mux.HandleFunc("job", func(ctx context.Context, t *asynq.Task) error {
		lease, _ := lock.LeaseFromContext(ctx)
		_ = runs.Enter(lease.Fence)
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		// The lease as obtained: renewals only move its end later.
		_ = runs.Exit(lease.Fence, lease.ExpiresAt)
		return nil
	})
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: addr}, asynq.Config{
		Concurrency:              10,
		Queues:                   map[string]int{os.Getenv(envQueue): 1},
		IsFailure:                middleware.IsFailure(nil),
		RetryDelayFunc:           retryDelay(os.Getenv(envRetryDelay)),
		DelayedTaskCheckInterval: 25 * time.Millisecond,
		// A task moved to pending (handed a key) is picked up this soon by
		// an idle worker.
		TaskCheckInterval: 20 * time.Millisecond,
		ShutdownTimeout:   2 * time.Second,
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(mux); err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Shutdown()
	return nil
}

type workerSetup struct {
	redis  *redistest.Server
	queue  string
	engine engine.Config
	log    string
}

func newWorkerSetup(t *testing.T, kind string) *workerSetup {
	srv := redistest.New(t)
	srv.RequireReal(t, "asynq")
	ws := &workerSetup{redis: srv, queue: "q" + rand.Text()[:8], log: t.TempDir() + "/tasks.log"}
	ws.engine = engine.Config{Engine: kind, Dir: t.TempDir(), RedisURL: "redis://" + srv.Addr, Prefix: srv.Prefix}
	return ws
}

// start runs a worker process and waits until it serves. env adds to its
// environment.
func (ws *workerSetup) start(t *testing.T, policy string, hold, ttl time.Duration, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(testenv.ChildEnviron(ws.engine.Env()...), envChild+"=1", envRedis+"="+ws.redis.Addr, envQueue+"="+ws.queue,
		envPolicy+"="+policy, envLog+"="+ws.log, envHold+"="+hold.String(), envTTL+"="+ttl.String()), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	return cmd
}

// locker opens the setup's lock engine in this process.
func (ws *workerSetup) locker(t *testing.T) lock.Locker {
	l, closeLocker, err := ws.engine.Open(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = closeLocker() })
	return l
}

func (ws *workerSetup) enqueue(t *testing.T, n int, payload string) {
	c := asynq.NewClient(asynq.RedisClientOpt{Addr: ws.redis.Addr})
	defer c.Close()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(ws.queue), asynq.MaxRetry(3))
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
}

func (ws *workerSetup) count(t *testing.T, op string) int {
	raw, err := os.ReadFile(ws.log)
	if os.IsNotExist(err) {
		return 0
	}
	require.NoError(t, err)
	return strings.Count("\n"+string(raw), "\n"+op+" ")
}

func (ws *workerSetup) idle(t *testing.T) bool {
	in := asynq.NewInspector(asynq.RedisClientOpt{Addr: ws.redis.Addr})
	defer in.Close()
	q, err := in.GetQueueInfo(ws.queue)
	require.NoError(t, err)
	return q.Pending+q.Active+q.Scheduled+q.Retry == 0
}

func (ws *workerSetup) check(t *testing.T) locktest.HammerSummary { return ws.checkLimit(t, 1) }

// checkLimit checks that no more than limit handlers ran for one key at
// once.
func (ws *workerSetup) checkLimit(t *testing.T, limit int) locktest.HammerSummary {
	raw, err := os.ReadFile(ws.log)
	require.NoError(t, err)
	var sections []string
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if strings.HasPrefix(l, "enter ") || strings.HasPrefix(l, "exit ") || strings.HasPrefix(l, "held ") {
			sections = append(sections, l)
		}
	}
	s, err := locktest.CheckHammerLogLimit(strings.Join(sections, "\n"), limit)
	require.NoError(t, err, "more handlers ran for one key at once than its limit")
	return s
}

// pids counts the worker processes that wrote to the log.
func (ws *workerSetup) pids(t *testing.T) int {
	raw, err := os.ReadFile(ws.log)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.Fields(l)
		seen[f[len(f)-1]] = true
	}
	return len(seen)
}

func stop(t *testing.T, cmds ...*exec.Cmd) {
	for _, c := range cmds {
		require.NoError(t, c.Process.Signal(syscall.SIGTERM))
	}
	for _, c := range cmds {
		require.NoError(t, c.Wait(), "worker did not shut down cleanly")
	}
}

func TestTwoWorkerProcessesOneKey(t *testing.T) {
	for _, engine := range []string{"file", "redis"} {
		for _, policy := range []string{"skip", "retry"} {
			t.Run(engine+"/"+policy, func(t *testing.T) {
				t.Parallel()
				ws := newWorkerSetup(t, engine)
				const ttl, hold = 400 * time.Millisecond, 20 * time.Millisecond
				a := ws.start(t, policy, hold, ttl)
				b := ws.start(t, policy, hold, ttl)
				ws.enqueue(t, 50, `{"id": 7}`)

				require.Eventually(t, func() bool {
					switch policy {
					case "skip":
						return ws.count(t, "enter")+ws.count(t, "dup") == 50 && ws.idle(t)
					default:
						return ws.count(t, "enter") == 50 && ws.idle(t)
					}
				}, 90*time.Second, 50*time.Millisecond, "tasks did not all finish: %d ran, %d duplicates", ws.count(t, "enter"), ws.count(t, "dup"))
				stop(t, a, b)

				s := ws.check(t)
				dups := ws.count(t, "dup")
				t.Logf("%d ran, %d duplicates seen", s.Sections, dups)
				assert.Positive(t, dups, "50 tasks on one key at once and no duplicate seen")
				if policy == "retry" {
					assert.Equal(t, 50, s.Sections, "with Retry every task runs, one after another")
					assert.Equal(t, 2, ws.pids(t), "both worker processes must have run tasks")
				}
				if engine == "redis" {
					var n int
					require.NoError(t, redislock.New(ws.redis.Client(t), redislock.WithPrefix(ws.redis.Prefix)).
						Scan(context.Background(), func(lock.Record) bool { n++; return true }))
					assert.Zero(t, n, "locks left behind")
				}
			})
		}
	}
}

// TestHandOffRunsDuplicatesBackToBack: 30 tasks on one key across two
// worker processes, under Retry with the retry delay guessed from the
// holder's lease (seconds): each release hands the key to a waiting
// duplicate at once, so the runs follow one another without waiting for
// retry timers, and a task is refused only a few times.
func TestHandOffRunsDuplicatesBackToBack(t *testing.T) {
	for _, eng := range []string{"file", "redis"} {
		t.Run(eng, func(t *testing.T) {
			t.Parallel()
			ws := newWorkerSetup(t, eng)
			const tasks, hold = 30, 100 * time.Millisecond
			env := envRetryDelay + "=holder"
			a := ws.start(t, "retry", hold, 5*time.Second, env)
			b := ws.start(t, "retry", hold, 5*time.Second, env)
			ws.enqueue(t, tasks, `{"id": 11}`)
			require.Eventually(t, func() bool { return ws.count(t, "enter") == tasks && ws.idle(t) }, 2*time.Minute, 20*time.Millisecond)
			stop(t, a, b)
			s := ws.check(t)
			assert.Equal(t, tasks, s.Sections)
			handoffs, dups := ws.count(t, "handoff"), ws.count(t, "dup")
			t.Logf("%d runs, %d handed the key by the one before, %d refusals", s.Sections, handoffs, dups)
			// Every run but the first follows a release; a few may be taken
			// by a duplicate whose timer fired first.
			assert.GreaterOrEqual(t, handoffs, tasks*2/3, "the key was not handed on")
			assert.LessOrEqual(t, dups, 3*tasks, "duplicates kept coming back on their own")
		})
	}
}

// TestTwoWorkerProcessesLimitThree: 40 tasks of one key, each holding it
// 100ms, across two worker processes of concurrency 10, under a Limit of
// 3: never more than three run at once, three do run at once, and every
// task runs.
func TestTwoWorkerProcessesLimitThree(t *testing.T) {
	for _, eng := range []string{"file", "redis"} {
		t.Run(eng, func(t *testing.T) {
			t.Parallel()
			ws := newWorkerSetup(t, eng)
			const tasks, hold = 40, 100 * time.Millisecond
			env := []string{envLimit + "=3", envRetryDelay + "=holder"}
			a := ws.start(t, "retry", hold, 5*time.Second, env...)
			b := ws.start(t, "retry", hold, 5*time.Second, env...)
			ws.enqueue(t, tasks, `{"id": 12}`)
			require.Eventually(t, func() bool { return ws.count(t, "enter") == tasks && ws.idle(t) }, 2*time.Minute, 20*time.Millisecond)
			stop(t, a, b)
			s := ws.checkLimit(t, 3)
			assert.Equal(t, tasks, s.Sections)
			assert.Equal(t, 3, s.MaxInside, "three slots, and forty tasks queued for them")
			assert.Equal(t, 2, ws.pids(t), "both worker processes must have run tasks")
			t.Logf("%d runs, %d handed a slot by the one before, %d refusals", s.Sections, ws.count(t, "handoff"), ws.count(t, "dup"))
		})
	}
}

// TestWaitWokenAcrossProcesses: 12 tasks of one key under Wait, across two
// worker processes whose waiters would try again only once a minute: each
// release, published on Redis, wakes the waiters of both processes, so
// every task runs well within that minute, one at a time, in both
// processes.
func TestWaitWokenAcrossProcesses(t *testing.T) {
	for _, eng := range []string{"file", "redis"} {
		t.Run(eng, func(t *testing.T) {
			t.Parallel()
			ws := newWorkerSetup(t, eng)
			const tasks = 12
			a := ws.start(t, "wait", 50*time.Millisecond, 5*time.Second)
			b := ws.start(t, "wait", 50*time.Millisecond, 5*time.Second)
			ws.enqueue(t, tasks, `{"id": 13}`)
			// Under the minute a waiter would otherwise sleep.
			require.Eventually(t, func() bool { return ws.count(t, "enter") == tasks && ws.idle(t) }, 45*time.Second, 20*time.Millisecond,
				"%d of %d ran: waiters were not woken by releases", ws.count(t, "enter"), tasks)
			stop(t, a, b)
			s := ws.check(t)
			assert.Equal(t, tasks, s.Sections)
			assert.Equal(t, 2, ws.pids(t), "both worker processes must have run tasks")
			assert.Zero(t, ws.count(t, "dup"), "no task gave up waiting")
		})
	}
}

// TestKilledSlotHolderWhileCopiesWait: a worker holding both slots of a
// key is SIGKILLed while copies of the key wait in another worker, under
// Wait (whose waiters would otherwise try again once a minute, and no
// release comes to wake them) and under Retry: no copy runs while the
// killed holder lived, every copy runs once its slots ran out, never more
// than two at once.
func TestKilledSlotHolderWhileCopiesWait(t *testing.T) {
	for _, eng := range []string{"file", "redis"} {
		for _, policy := range []string{"wait", "retry"} {
			t.Run(eng+"/"+policy, func(t *testing.T) {
				t.Parallel()
				ws := newWorkerSetup(t, eng)
				const lease, copies = 2 * time.Second, 4
				victimQueue, queue := ws.queue+"-victim", ws.queue
				env := []string{envLimit + "=2", envRetryDelay + "=holder"}
				victim := ws.start(t, policy, time.Hour, lease, append(env, envQueue+"="+victimQueue)...)
				enqueueTo(t, ws, victimQueue, 2, `{"id": 21}`)
				require.Eventually(t, func() bool { return ws.count(t, "enter") == 2 }, time.Minute, 20*time.Millisecond, "the victim did not take both slots")
				survivor := ws.start(t, policy, 50*time.Millisecond, lease, env...)
				enqueueTo(t, ws, queue, copies, `{"id": 21}`)
				if policy == "retry" {
					require.Eventually(t, func() bool { return ws.count(t, "dup") >= copies }, time.Minute, 20*time.Millisecond, "copies were not refused")
				} else {
					in := asynq.NewInspector(asynq.RedisClientOpt{Addr: ws.redis.Addr})
					defer in.Close()
					require.Eventually(t, func() bool {
						q, err := in.GetQueueInfo(queue)
						return err == nil && q.Active == copies
					}, time.Minute, 20*time.Millisecond, "copies did not start waiting")
				}
				require.Equal(t, 2, ws.count(t, "enter"), "a copy ran while both slots were held")
				require.NoError(t, victim.Process.Signal(syscall.SIGKILL))
				_ = victim.Wait()
				runs, err := locktest.OpenSectionLog(ws.log)
				require.NoError(t, err)
				require.NoError(t, runs.Line("killed 0"))
				require.NoError(t, runs.Close())
				// Well under the minute a Wait waiter would otherwise sleep.
				require.Eventually(t, func() bool { return ws.count(t, "enter") == 2+copies && ws.idle(t) }, 45*time.Second, 20*time.Millisecond,
					"%d of %d copies ran after the holder was killed", ws.count(t, "enter")-2, copies)
				stop(t, survivor)
				raw, err := os.ReadFile(ws.log)
				require.NoError(t, err)
				log := string(raw)
				killed := strings.Index(log, "\nkilled ")
				require.Positive(t, killed)
				assert.Equal(t, 2, strings.Count(log[:killed], "enter "), "copies ran before the holder was killed")
				s := ws.checkLimit(t, 2)
				assert.Equal(t, 2+copies, s.Sections)
				if policy == "wait" {
					assert.Zero(t, ws.count(t, "dup"), "a waiter gave up")
				}
			})
		}
	}
}

func enqueueTo(t *testing.T, ws *workerSetup, queue string, n int, payload string) {
	c := asynq.NewClient(asynq.RedisClientOpt{Addr: ws.redis.Addr})
	defer c.Close()
	for range n {
		_, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(queue), asynq.MaxRetry(3))
		require.NoError(t, err)
	}
}

// TestManyWaitersLeaveNothingBehind: 300 tasks of one key of two slots
// wait under Wait in one middleware that hears releases over Redis: they
// all run, two at most at once, and once they have, no goroutine and no
// subscription is left.
func TestManyWaitersLeaveNothingBehind(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "pubsub")
	rdb := srv.Client(t)
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			l := eng(srv)
			before := goleak.IgnoreCurrent()
			mw, err := middleware.New(l, middleware.WithRule("job", middleware.Rule{Template: "job-{{.id}}", Policy: middleware.Wait,
				MaxWait: time.Minute, WaitInterval: time.Minute, Lease: 2 * time.Second, Limit: 2}),
				middleware.WithPrefix(srv.Prefix+name+":"), middleware.WithRedisClient(rdb))
			require.NoError(t, err)
			var running, most atomic.Int32
			h := mw(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(2 * time.Millisecond)
				running.Add(-1)
				return nil
			}))
			const n = 300
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- h.ProcessTask(context.Background(), asynq.NewTask("job", []byte(`{"id":1}`)))
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			assert.EqualValues(t, 2, most.Load())
			chans, err := rdb.PubSubChannels(context.Background(), "joblock:released:*").Result()
			require.NoError(t, err)
			assert.Empty(t, chans)
			goleak.VerifyNone(t, before)
		})
	}
}
