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
	"github.com/joblock/joblock/internal/testenv"
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
	engineLocker, closeLocker, err := cfg.Open(context.Background())
	if err != nil {
		return err
	}
	defer closeLocker()
	// Leases whose expiry the section log can trust, whatever the engine.
	locker := locktest.Deadlined(engineLocker)
	offset, _ := time.ParseDuration(os.Getenv(envOffset))
	runFor, _ := time.ParseDuration(os.Getenv(envFor))
	clock := func() time.Time { return time.Now().Add(offset) }
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
	opts := []scheduler.Option{scheduler.WithLogger(logger)}
	job := scheduler.Job{Name: "report", Spec: "@every 1s"}
	switch mode {
	case "daily-utc", "daily-cron-tz", "daily-default":
		// A clock that reads 02:59:59 UTC a moment after start, so the
		// daily 03:00 UTC job fires within seconds.
		base := time.Date(2026, 11, 26, 2, 59, 59, 0, time.UTC).Add(offset)
		start := time.Now()
		clock = func() time.Time { return base.Add(time.Since(start)) }
		opts = append(opts, scheduler.WithSeconds())
		job.Spec = "CRON_TZ=Asia/Tokyo 0 0 12 * * *" // 03:00 UTC
		switch mode {
		case "daily-utc":
			job.Spec = "0 0 3 * * *"
			opts = append(opts, scheduler.WithLocation(time.UTC))
		case "daily-default":
			job.Spec = "0 0 3 * * *" // read in the Scheduler's default zone
		}
		job.Run = func(ctx context.Context) error {
			lease, _ := lock.LeaseFromContext(ctx)
			write("ran %s %s", lease.Key, time.Local)
			return nil
		}
	case "tick":
		job.Run = func(ctx context.Context) error {
			// The tick as this host sees it, by its own clock cut to the
			// second (cron fires when that clock reads the tick, never
			// before, so this holds for a run up to a second late), not by
			// Tick: the check must not trust the code it checks.
			write("tick %s", time.Now().Add(offset).Truncate(time.Second).UTC().Format(time.RFC3339))
			return nil
		}
	case "overlap":
		job.Mode = scheduler.ModeNoOverlap
		job.Lease = 3 * time.Second
		job.Run = func(ctx context.Context) error {
			lease, _ := lock.LeaseFromContext(ctx)
			_ = runs.Enter(lease.Fence)
			time.Sleep(1500 * time.Millisecond)   // slower than the interval
			lease, _ = lock.LeaseFromContext(ctx) // as last renewed, by Deadlined
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
			write("enq %s", time.Now().Add(offset).Truncate(time.Second).UTC().Format(time.RFC3339))
			return nil
		}
	}
	s := scheduler.New(locker, append(opts, scheduler.WithClock(clock))...)
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

// host is one child process: its clock's offset and its time zone.
type host struct {
	offset time.Duration
	tz     string
}

// skewed returns hosts in this machine's zone with the given clock offsets.
func skewedHosts(offsets ...time.Duration) []host {
	hs := make([]host, len(offsets))
	for i, o := range offsets {
		hs[i].offset = o
	}
	return hs
}

// run starts one child per host and waits for all of them.
func (h *hosts) run(t *testing.T, mode string, runFor time.Duration, hs []host) []string {
	var cmds []*exec.Cmd
	for _, hst := range hs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(testenv.ChildEnviron(h.engine.Env()...), envChild+"="+mode, envRedis+"="+h.redis.Addr,
			envOffset+"="+hst.offset.String(), envLog+"="+h.log, envFor+"="+runFor.String(), envQueue+"="+h.queue)
		if hst.tz != "" {
			cmd.Env = append(cmd.Env, "TZ="+hst.tz)
		}
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

// skews are three hosts whose clocks are one behind, one right, one ahead.
var skews = skewedHosts(-400*time.Millisecond, 0, 350*time.Millisecond)

func TestEachTickOnceAcrossSkewedProcesses(t *testing.T) {
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			h := newHosts(t, engine)
			lines := h.run(t, "tick", 6*time.Second, skews)
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
			assert.GreaterOrEqual(t, len(perTick), 3, "too few ticks in 6s to show anything")
			slogs, err := os.ReadFile(h.log + ".slog")
			require.NoError(t, err)
			skipped := strings.Count(string(slogs), "run skipped: another process took this tick")
			t.Logf("%d ticks run by %d processes, %d runs skipped as taken", len(perTick), len(pids), skipped)
			assert.GreaterOrEqual(t, skipped, len(perTick), "the other processes never contended for the ticks")
		})
	}
}

// TestDailyJobOnceAcrossTimeZones: three hosts in UTC, New York and Tokyo
// run a daily 03:00 UTC job, given by WithLocation, by CRON_TZ=, or by the
// Scheduler's default zone, UTC: it runs once, under one tick key.
func TestDailyJobOnceAcrossTimeZones(t *testing.T) {
	zones := []host{{tz: "UTC"}, {tz: "America/New_York", offset: 150 * time.Millisecond}, {tz: "Asia/Tokyo", offset: -200 * time.Millisecond}}
	for _, mode := range []string{"daily-utc", "daily-cron-tz", "daily-default"} {
		t.Run(mode, func(t *testing.T) {
			h := newHosts(t, "file")
			lines := h.run(t, mode, 3*time.Second, zones)
			require.Len(t, lines, 1, "the daily job ran %d times: %q", len(lines), lines)
			assert.Contains(t, lines[0], "@2026-11-26T03:00:00Z")
			// Every host fired at 03:00 UTC: the two that did not run it
			// found the tick taken.
			slogs, err := os.ReadFile(h.log + ".slog")
			require.NoError(t, err)
			assert.Equal(t, 2, strings.Count(string(slogs), "run skipped: another process took this tick"), "not every host fired at 03:00 UTC")
		})
	}
}

func TestNoOverlapAcrossProcesses(t *testing.T) {
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			h := newHosts(t, engine)
			if engine == "redis" {
				h.redis.RequireReal(t, "a cross-process hammer on the Redis engine")
			}
			lines := h.run(t, "overlap", 5*time.Second, skews)
			s, err := locktest.CheckHammerLog(strings.Join(lines, "\n"))
			require.NoError(t, err, "a NoOverlap job overlapped itself")
			assert.GreaterOrEqual(t, s.Sections-s.Late, 2, "too few runs within their lease to show anything")
		})
	}
}

func TestAsynqHAEnqueuesEachTickOnce(t *testing.T) {
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			h := newHosts(t, engine)
			h.redis.RequireReal(t, "asynq")
			lines := h.run(t, "enqueue", 4*time.Second, skews)
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
			assert.GreaterOrEqual(t, len(tasks), 2, "too few ticks to show anything")
		})
	}
}
