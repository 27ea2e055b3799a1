package scheduler_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/joblock/joblock/scheduler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Environment of a scheduler child process.
const (
	envChild  = "JOBLOCK_SCHED_CHILD" // "tick", "overlap" or "enqueue"
	envRedis  = "JOBLOCK_SCHED_REDIS"
	envOffset = "JOBLOCK_SCHED_OFFSET"
	envLog    = "JOBLOCK_SCHED_LOG"
	envFor    = "JOBLOCK_SCHED_FOR"
	envQueue  = "JOBLOCK_SCHED_QUEUE"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		if err := childMain(mode); err != nil {
			fmt.Fprintln(os.Stderr, "scheduler child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// childMain is one scheduler process: a host whose clock is off by
// envOffset, running one job for envFor.
func childMain(mode string) error {
	cfg := engine.FromEnv()
	locker, closeLocker, err := cfg.Open(context.Background())
	if err != nil {
		return err
	}
	defer closeLocker()
	offset, _ := time.ParseDuration(os.Getenv(envOffset))
	runFor, _ := time.ParseDuration(os.Getenv(envFor))
	runs, err := locktest.OpenSectionLog(os.Getenv(envLog))
	if err != nil {
		return err
	}
	defer runs.Close()
	write := func(format string, args ...any) { _ = runs.Line(format, args...) }
	slogf, err := os.OpenFile(os.Getenv(envLog)+".slog", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(slogf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := scheduler.New(locker, scheduler.WithClock(func() time.Time { return time.Now().Add(offset) }), scheduler.WithLogger(logger))
	job := scheduler.Job{Name: "report", Spec: "@every 1s"}
	switch mode {
	case "tick":
		job.Run = func(ctx context.Context) error {
			// The tick as this host sees it, by plain rounding of its own
			// clock (cron fired when it read the tick), not by Tick: the
			// check must not trust the code it checks.
			write("tick %s", time.Now().Add(offset).Round(time.Second).UTC().Format(time.RFC3339))
			return nil
		}
	case "overlap":
		job.Mode = scheduler.ModeNoOverlap
		job.TTL = 3 * time.Second
		job.Run = func(ctx context.Context) error {
			lease, _ := lock.LeaseFromContext(ctx)
			_ = runs.Enter(lease.Fence)
			time.Sleep(1500 * time.Millisecond) // slower than the interval
			return runs.Exit(lease.Fence, lease.ExpiresAt)
		}
	case "enqueue":
		client := asynq.NewClient(asynq.RedisClientOpt{Addr: os.Getenv(envRedis)})
		defer client.Close()
		enqueue := scheduler.EnqueueJob(client, asynq.NewTask("report", nil), asynq.Queue(os.Getenv(envQueue)))
		job.Run = func(ctx context.Context) error {
			if err := enqueue(ctx); err != nil {
				return err
			}
			write("enq %s", time.Now().Add(offset).Round(time.Second).UTC().Format(time.RFC3339))
			return nil
		}
	}
	if _, err := s.Add(job); err != nil {
		return err
	}
	s.Start()
	time.Sleep(runFor)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Stop(ctx)
}

type hosts struct {
	redis  *redistest.Server
	engine engine.Config
	log    string
	queue  string
}

func newHosts(t *testing.T, kind string) *hosts {
	srv := redistest.New(t)
	return &hosts{
		redis:  srv,
		engine: engine.Config{Engine: kind, Dir: t.TempDir(), RedisURL: "redis://" + srv.Addr, Prefix: srv.Prefix},
		log:    t.TempDir() + "/runs.log",
		queue:  "q" + rand.Text()[:8],
	}
}

// run starts one child per clock offset and waits for all of them.
func (h *hosts) run(t *testing.T, mode string, runFor time.Duration, offsets ...time.Duration) []string {
	var cmds []*exec.Cmd
	for _, off := range offsets {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(append(os.Environ(), h.engine.Env()...), envChild+"="+mode, envRedis+"="+h.redis.Addr,
			envOffset+"="+off.String(), envLog+"="+h.log, envFor+"="+runFor.String(), envQueue+"="+h.queue)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		require.NoError(t, c.Wait())
	}
	raw, err := os.ReadFile(h.log)
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(raw)), "\n")
}

// skews are three hosts' clock offsets: one behind, one right, one ahead.
var skews = []time.Duration{-400 * time.Millisecond, 0, 350 * time.Millisecond}

func TestEachTickOnceAcrossSkewedProcesses(t *testing.T) {
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			h := newHosts(t, engine)
			lines := h.run(t, "tick", 10*time.Second, skews...)
			perTick := map[string]int{}
			pids := map[string]bool{}
			for _, l := range lines {
				f := strings.Fields(l)
				require.Len(t, f, 3, l)
				perTick[f[1]]++
				pids[f[2]] = true
			}
			for tick, n := range perTick {
				assert.Equal(t, 1, n, "tick %s ran %d times", tick, n)
			}
			assert.GreaterOrEqual(t, len(perTick), 8, "too few ticks in 10s")
			slogs, err := os.ReadFile(h.log + ".slog")
			require.NoError(t, err)
			skipped := strings.Count(string(slogs), "run skipped: taken elsewhere")
			t.Logf("%d ticks run by %d processes, %d runs skipped as taken", len(perTick), len(pids), skipped)
			assert.GreaterOrEqual(t, skipped, len(perTick), "the other processes never contended for the ticks")
		})
	}
}

func TestNoOverlapAcrossProcesses(t *testing.T) {
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			h := newHosts(t, engine)
			if engine == "redis" {
				h.redis.RequireReal(t, "a cross-process hammer on the Redis engine")
			}
			lines := h.run(t, "overlap", 7*time.Second, skews...)
			s, err := locktest.CheckHammerLog(strings.Join(lines, "\n"))
			require.NoError(t, err, "a NoOverlap job overlapped itself")
			assert.GreaterOrEqual(t, s.Sections, 3)
		})
	}
}

func TestAsynqHAEnqueuesEachTickOnce(t *testing.T) {
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			h := newHosts(t, engine)
			h.redis.RequireReal(t, "asynq")
			lines := h.run(t, "enqueue", 6*time.Second, skews...)
			keys := map[string]bool{}
			for _, l := range lines {
				f := strings.Fields(l)
				require.False(t, keys[f[1]], "tick %s enqueued twice", f[1])
				keys[f[1]] = true
			}
			in := asynq.NewInspector(asynq.RedisClientOpt{Addr: h.redis.Addr})
			defer in.Close()
			tasks, err := in.ListPendingTasks(h.queue, asynq.PageSize(1000))
			require.NoError(t, err)
			assert.Len(t, tasks, len(lines), "asynq holds tasks no run logged")
			assert.Len(t, tasks, len(keys), "asynq holds a different number of tasks than ticks")
			assert.GreaterOrEqual(t, len(tasks), 4)
		})
	}
}
