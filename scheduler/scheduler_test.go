package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/scheduler"
	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newFileLocker(t *testing.T, dir string) *filelock.Locker {
	t.Helper()
	l, err := filelock.New(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestAddRejectsBadJobs(t *testing.T) {
	s := scheduler.New(newFileLocker(t, t.TempDir()))
	run := func(context.Context) error { return nil }
	for _, tt := range []struct {
		name string
		job  scheduler.Job
		want string
	}{
		{"no name", scheduler.Job{Spec: "@every 1s", Run: run}, "name is empty"},
		{"bad spec", scheduler.Job{Name: "x", Spec: "every day", Run: run}, `spec "every day"`},
		// robfig/cron's parser panics on these two.
		{"zone without a schedule", scheduler.Job{Name: "x", Spec: "CRON_TZ=Europe/Berlin", Run: run}, "no schedule after CRON_TZ=Europe/Berlin"},
		{"TZ= without a schedule", scheduler.Job{Name: "x", Spec: "TZ=UTC", Run: run}, "no schedule after TZ=UTC"},
		// robfig/cron reads these two as UTC and as never.
		{"empty zone", scheduler.Job{Name: "x", Spec: "CRON_TZ= 30 3 * * *", Run: run}, "CRON_TZ= names no time zone"},
		{"never fires", scheduler.Job{Name: "x", Spec: "0 0 30 2 *", Run: run}, `spec "0 0 30 2 *": it never fires`},
		{"no run", scheduler.Job{Name: "x", Spec: "@every 1s"}, "no Run"},
		{"bad mode", scheduler.Job{Name: "x", Spec: "@every 1s", Run: run, Mode: 7}, "unknown mode"},
		{"bad lease", scheduler.Job{Name: "x", Spec: "@every 1s", Run: run, Lease: -time.Second}, "invalid ttl"},
		{"bad max run time", scheduler.Job{Name: "x", Spec: "@every 1s", Run: run, MaxRunTime: -time.Second}, "must not be negative"},
		{"bad limit", scheduler.Job{Name: "x", Spec: "@every 1s", Run: run, Mode: scheduler.ModeNoOverlap, Limit: -2}, `job "x": limit: lock: invalid limit: -2`},
		{"limit once per tick", scheduler.Job{Name: "x", Spec: "@every 1s", Run: run, Limit: 2}, "a Limit of 2 needs ModeNoOverlap"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Add(tt.job)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestStopCancelsAndWaits(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	s := scheduler.New(l, scheduler.WithSeconds())
	started := make(chan struct{}, 1)
	var sawLease atomic.Bool
	_, err := s.Add(scheduler.Job{Name: "long", Spec: "* * * * * *", Mode: scheduler.ModeNoOverlap,
		Run: func(ctx context.Context) error {
			_, ok := lock.LeaseFromContext(ctx)
			sawLease.Store(ok)
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		}})
	require.NoError(t, err)
	s.Start()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("job never started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(ctx))
	assert.True(t, sawLease.Load(), "job reads its lease from ctx")
	locked, err := lock.NewManager(l).IsLocked(context.Background(), "cron:long")
	require.NoError(t, err)
	assert.False(t, locked, "NoOverlap releases when the run ends")
	require.NoError(t, s.Stop(ctx), "second Stop is a no-op")
}

func TestStopDeadline(t *testing.T) {
	s := scheduler.New(newFileLocker(t, t.TempDir()), scheduler.WithSeconds())
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	_, err := s.Add(scheduler.Job{Name: "stubborn", Spec: "* * * * * *", Run: func(context.Context) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release // ignores its context
		return nil
	}})
	require.NoError(t, err)
	s.Start()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = s.Stop(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
}

// hostClock is a host's clock for the wrappers, set by the test.
type hostClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *hostClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *hostClock) read() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func at(t *testing.T, s string) time.Time {
	v, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return v
}

// TestWrappersOnTwoHosts: two hosts whose crons fire each tick of a
// schedule, a little apart and some late: each tick runs exactly once,
// under its own key.
func TestWrappersOnTwoHosts(t *testing.T) {
	dir := t.TempDir()
	sched, err := cron.ParseStandard("*/5 * * * *")
	require.NoError(t, err)
	var keys []string
	job := scheduler.Func(func(ctx context.Context) error {
		lease, _ := lock.LeaseFromContext(ctx)
		keys = append(keys, lease.Key)
		return nil
	})
	var hosts []cron.Job
	var clocks []*hostClock
	for range 2 {
		c := &hostClock{}
		clocks = append(clocks, c)
		hosts = append(hosts, cron.NewChain(scheduler.OncePerTick(newFileLocker(t, dir), "report", sched,
			scheduler.WithClock(c.read), scheduler.WithLocation(time.UTC))).Then(scheduler.Named("report", job)))
	}
	base := at(t, "2026-11-25T10:00:00Z")
	for tick := range 5 {
		fire := base.Add(time.Duration(tick) * 5 * time.Minute)
		clocks[0].set(fire.Add(300 * time.Millisecond))
		clocks[1].set(fire.Add(time.Duration(tick) * time.Minute)) // later and later, up to 4 min
		hosts[tick%2].Run()
		hosts[(tick+1)%2].Run()
	}
	require.Len(t, keys, 5, "each tick once: %q", keys)
	for i, k := range keys {
		assert.Equal(t, "cron:report/report@"+base.Add(time.Duration(i)*5*time.Minute).Format(time.RFC3339), k)
	}
}

func TestLateRunKeepsItsTick(t *testing.T) {
	sched, err := cron.ParseStandard("*/5 * * * *")
	require.NoError(t, err)
	tick := at(t, "2026-11-25T10:00:00Z")
	for _, late := range []time.Duration{time.Second, 6 * time.Second, 4 * time.Minute, 4*time.Minute + 59*time.Second} {
		t.Run(late.String(), func(t *testing.T) {
			dir := t.TempDir()
			var ran []string
			run := func(host time.Time) {
				wrapped := scheduler.OncePerTick(newFileLocker(t, dir), "report", sched,
					scheduler.WithClock(func() time.Time { return host }), scheduler.WithLocation(time.UTC))(
					scheduler.Named("r", scheduler.Func(func(ctx context.Context) error {
						lease, _ := lock.LeaseFromContext(ctx)
						ran = append(ran, lease.Key)
						return nil
					})))
				wrapped.Run()
			}
			run(tick.Add(late))                   // this host fired late
			run(tick.Add(200 * time.Millisecond)) // another fired on time
			assert.Equal(t, []string{"cron:report/r@2026-11-25T10:00:00Z"}, ran)
		})
	}
}

// TestTickIsTheSchedules: the tick is read in the schedule's location,
// never in the host's zone, and a run keeps its tick until the next one.
func TestTickIsTheSchedules(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)
	daily, err := cron.ParseStandard("0 3 * * *")
	require.NoError(t, err)
	tokyoNoon, err := cron.ParseStandard("CRON_TZ=Asia/Tokyo 0 12 * * *")
	require.NoError(t, err)
	every, err := cron.ParseStandard("@every 10s")
	require.NoError(t, err)
	tests := []struct {
		name  string
		sched cron.Schedule
		loc   *time.Location
		give  time.Time
		want  string
	}{
		{"UTC schedule, New York host", daily, time.UTC, at(t, "2026-11-26T03:00:00.2Z").In(ny), "2026-11-26T03:00:00Z"},
		{"UTC schedule, Tokyo host", daily, time.UTC, at(t, "2026-11-26T03:00:00.2Z").In(tokyo), "2026-11-26T03:00:00Z"},
		{"New York schedule", daily, ny, at(t, "2026-11-26T08:00:01Z"), "2026-11-26T08:00:00Z"},
		{"CRON_TZ wins over the location", tokyoNoon, ny, at(t, "2026-11-26T03:00:00Z"), "2026-11-26T03:00:00Z"},
		{"a day late keeps nothing older", daily, time.UTC, at(t, "2026-11-27T02:59:59Z"), "2026-11-26T03:00:00Z"},
		{"every 10s", every, time.UTC, at(t, "2026-11-26T03:00:19.9Z"), "2026-11-26T03:00:10Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, scheduler.Tick(tt.sched, tt.give, tt.loc).UTC().Format(time.RFC3339))
		})
	}
}

// TestDaylightSavingTime: robfig/cron runs a job scheduled in a skipped
// local hour not at all that day, and one in a repeated hour twice, at two
// different instants. Each of those instants is a tick of its own, and runs
// once across hosts.
func TestDaylightSavingTime(t *testing.T) {
	sched, err := cron.ParseStandard("CRON_TZ=America/New_York 30 1 * * *")
	require.NoError(t, err)
	dir := t.TempDir()
	runs := 0
	for _, fire := range []string{"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"} { // 01:30 EDT, then 01:30 EST
		for _, late := range []time.Duration{0, 300 * time.Millisecond, 1200 * time.Millisecond} { // hosts fire when their own clocks read 01:30
			host := at(t, fire).Add(late)
			scheduler.OncePerTick(newFileLocker(t, dir), "nightly", sched, scheduler.WithClock(func() time.Time { return host }))(
				cron.FuncJob(func() { runs++ })).Run()
		}
	}
	assert.Equal(t, 2, runs, "the repeated 01:30 is two ticks, each run once")

	spring, err := cron.ParseStandard("CRON_TZ=America/New_York 30 2 * * *")
	require.NoError(t, err)
	next := spring.Next(at(t, "2026-03-08T04:00:00Z")) // 23:00 the day before
	assert.Equal(t, "2026-03-09T06:30:00Z", next.UTC().Format(time.RFC3339), "robfig/cron skips the 02:30 that does not exist")
}

func TestCronChainKeysEachJobSeparately(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	chain := cron.NewChain(scheduler.NoOverlap(l, "global"))
	inside := make(chan struct{})
	release := make(chan struct{})
	var slowRuns, fastRuns atomic.Int32
	slow := chain.Then(cron.FuncJob(func() { slowRuns.Add(1); close(inside); <-release }))
	fast := chain.Then(scheduler.Named("fast", scheduler.Func(func(context.Context) error { fastRuns.Add(1); return nil })))
	done := make(chan struct{})
	go func() { slow.Run(); close(done) }()
	<-inside
	fast.Run() // another job of the same chain runs while slow holds its key
	slow.Run() // slow itself is still going: skipped
	close(release)
	<-done
	assert.EqualValues(t, 1, fastRuns.Load())
	assert.EqualValues(t, 1, slowRuns.Load())
}

// TestWrappersRefuseBadOptions: a wrapper, which cannot return an error,
// panics on options that would make every run fail, naming them.
func TestWrappersRefuseBadOptions(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	assert.PanicsWithValue(t, `scheduler: NoOverlap("j"): limit: lock: invalid limit: 0, want 1 to 1000 holders`,
		func() { scheduler.NoOverlap(l, "j", scheduler.WithLimit(0)) })
	assert.PanicsWithValue(t, `scheduler: OncePerTick("j"): a Limit of 3 needs ModeNoOverlap: under once-per-tick alone each tick runs once`,
		func() { scheduler.OncePerTick(l, "j", nil, scheduler.WithLimit(3)) })
	assert.PanicsWithValue(t, `scheduler: NoOverlap("j"): lease: lock: invalid ttl: a lease of 10ms is under the minimum of 100ms (it is renewed every third of it)`,
		func() { scheduler.NoOverlap(l, "j", scheduler.WithLease(10*time.Millisecond)) })
	assert.NotPanics(t, func() { scheduler.NoOverlap(l, "j", scheduler.WithLimit(3)) })
}

// TestCronChainRefusesJobsOfOneName: two jobs that would get the same key
// (closures of one function literal) make the wrapper panic, naming
// scheduler.Named, rather than keying them by the order they were added,
// which another host may not share.
func TestCronChainRefusesJobsOfOneName(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	chain := cron.NewChain(scheduler.OncePerTick(l, "mail", nil))
	var panicked []any
	for _, what := range []string{"invoices", "emails"} {
		func() {
			defer func() { panicked = append(panicked, recover()) }()
			chain.Then(scheduler.Func(func(context.Context) error { return send(what) })) // one literal, two jobs
		}()
	}
	require.Len(t, panicked, 2)
	assert.Nil(t, panicked[0])
	msg, _ := panicked[1].(string)
	assert.Regexp(t, `^scheduler: two jobs wrapped by "mail" are both named "github.com/joblock/joblock/scheduler_test.TestCronChainRefusesJobsOfOneName.func\S+" `+
		`\(closures of one function literal, or method values of one method\): give each a name of its own with scheduler.Named$`, msg)
	assert.NotPanics(t, func() {
		for _, what := range []string{"invoices", "emails"} {
			chain.Then(scheduler.Named(what, scheduler.Func(func(context.Context) error { return send(what) })))
		}
	})
}

func send(string) error { return nil }

// TestFailuresAreLoggedWithoutALogger: without WithLogger, a failed run is
// logged on slog's default logger, and a run that went well is not.
func TestFailuresAreLoggedWithoutALogger(t *testing.T) {
	logs := &syncBuffer{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	l := newFileLocker(t, t.TempDir())
	wrap := scheduler.NoOverlap(l, "jobs")
	wrap(scheduler.Named("fine", scheduler.Func(func(context.Context) error { return nil }))).Run()
	wrap(scheduler.Named("broken", scheduler.Func(func(context.Context) error { return errors.New("disk full") }))).Run()
	assert.Contains(t, logs.String(), `level=ERROR msg="joblock: run failed" job=jobs mode=no-overlap key=cron:jobs/broken err="disk full"`)
	assert.NotContains(t, logs.String(), "fine")
}

// recorder is a cron.Logger that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Info(string, ...any) {}

func (r *recorder) Error(err error, msg string, kv ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprint(err, msg, kv))
}

func TestPanicReachesCronRecoverAndFreesTheKey(t *testing.T) {
	for name, l := range testLockers(t) {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{}
			job := cron.NewChain(cron.Recover(rec), scheduler.NoOverlap(l, "nightly")).Then(
				scheduler.Named("boom", cron.FuncJob(func() { panic("boom") })))
			job.Run()
			require.Len(t, rec.errors, 1, "the panic did not reach cron.Recover")
			assert.Contains(t, rec.errors[0], "boom")
			assert.Contains(t, rec.errors[0], "TestPanicReachesCronRecoverAndFreesTheKey", "the stack is the panic's own")
			locked, err := lock.NewManager(l).IsLocked(context.Background(), "cron:nightly/boom")
			require.NoError(t, err)
			assert.False(t, locked, "the panicking job kept its lock")
		})
	}
}

// testLockers returns a locker on each engine. The Redis was started for
// the test, so no holder predates it: no restart grace.
func testLockers(t *testing.T) map[string]lock.Locker {
	srv := redistest.New(t)
	return map[string]lock.Locker{
		"file":  newFileLocker(t, t.TempDir()),
		"redis": redislock.New(srv.Client(t), redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(0)),
	}
}

// TestRunWaitsOutARestartGrace: a run refused because the Redis of the
// locks has just restarted is not skipped (no other run is known to hold
// the key): it runs, once, when the grace ends.
func TestRunWaitsOutARestartGrace(t *testing.T) {
	for _, mode := range []scheduler.Mode{scheduler.ModeOncePerTick, scheduler.ModeNoOverlap, scheduler.ModeOncePerTick | scheduler.ModeNoOverlap} {
		t.Run(mode.String(), func(t *testing.T) {
			srv := redistest.Start(t)
			c := srv.Client(t)
			const grace = 2 * time.Second
			l := redislock.New(c, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(grace))
			logs := &syncBuffer{}
			log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			var runs []int // the server's uptime at each run, in seconds
			job := func(ctx context.Context) error {
				info, err := c.InfoMap(ctx, "server").Result()
				require.NoError(t, err)
				up, err := strconv.Atoi(info["Server"]["uptime_in_seconds"])
				require.NoError(t, err)
				runs = append(runs, up)
				return nil
			}
			s := scheduler.New(l, scheduler.WithLogger(log), scheduler.WithLocation(time.UTC))
			id, err := s.Add(scheduler.Job{Name: "report", Spec: "@every 1h", Mode: mode, Run: job})
			require.NoError(t, err)
			srv.Restart(t) // the grace starts over
			// Run as cron would run it.
			require.NoError(t, s.Cron().Entry(id).Job.(scheduler.ContextJob).RunContext(context.Background()))
			require.Len(t, runs, 1, "one run")
			assert.Greater(t, runs[0], 2, "run before the server had been up for the grace (an uptime in whole seconds above it)")
			assert.Contains(t, logs.String(), "run waits: the lock engine holds new locks back for a while")
			assert.Contains(t, logs.String(), "ago; new locks wait out the 2s grace")
		})
	}
}

// syncBuffer is a log that a test reads while the scheduler writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestOncePerTickAndNoOverlap(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	clock := &hostClock{}
	logs := &syncBuffer{}
	s := scheduler.New(l, scheduler.WithClock(clock.read), scheduler.WithLocation(time.UTC),
		scheduler.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	inside := make(chan string, 3)
	release := make(chan struct{})
	id, err := s.Add(scheduler.Job{Name: "daily", Spec: "0 3 * * *", Mode: scheduler.ModeOncePerTick | scheduler.ModeNoOverlap,
		Run: func(ctx context.Context) error {
			lease, _ := lock.LeaseFromContext(ctx)
			inside <- lease.Key
			<-release
			return nil
		}})
	require.NoError(t, err)
	// What the scheduler's cron runs at each tick, driven at chosen times.
	job := s.Cron().Entry(id).WrappedJob
	base := at(t, "2026-11-26T03:00:00Z")
	clock.set(base)
	done := make(chan struct{})
	go func() { job.Run(); close(done) }()
	assert.Equal(t, "cron:daily", <-inside, "the run holds the job's key while it runs")
	clock.set(base.Add(24 * time.Hour))
	job.Run() // the next day's tick, while the first run goes on: skipped
	assert.Contains(t, logs.String(), "level=WARN msg=\"joblock: tick skipped: the previous run is still going\"")
	close(release)
	<-done
	clock.set(base.Add(48 * time.Hour))
	job.Run()
	assert.Equal(t, "cron:daily", <-inside, "the tick after runs")
	assert.Empty(t, inside, "the skipped tick ran")
	locked, err := lock.NewManager(l).IsLocked(context.Background(), "cron:daily@2026-11-27T03:00:00Z")
	require.NoError(t, err)
	assert.True(t, locked, "the skipped tick stays taken, so no other host runs it")
}

// TestLimit: a daily job that may run two days' ticks at once, on two
// hosts sharing the engine: the third tick while two runs go is skipped
// with a warning, and the fourth, once one has ended, runs.
func TestLimit(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	clock := &hostClock{}
	logs := &syncBuffer{}
	type run struct {
		at   time.Time
		done chan struct{}
	}
	inside := make(chan run, 4)
	var jobs []cron.Job
	for range 2 {
		s := scheduler.New(l, scheduler.WithClock(clock.read), scheduler.WithLocation(time.UTC),
			scheduler.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
		id, err := s.Add(scheduler.Job{Name: "daily", Spec: "0 3 * * *", Mode: scheduler.ModeOncePerTick | scheduler.ModeNoOverlap, Limit: 2,
			Run: func(ctx context.Context) error {
				r := run{at: clock.read(), done: make(chan struct{})}
				inside <- r
				<-r.done
				return nil
			}})
		require.NoError(t, err)
		jobs = append(jobs, s.Cron().Entry(id).WrappedJob)
	}
	base := at(t, "2026-11-26T03:00:00Z")
	var wg sync.WaitGroup
	var runs []run
	for day := range 2 {
		clock.set(base.Add(time.Duration(day) * 24 * time.Hour))
		wg.Add(1)
		go func() { defer wg.Done(); jobs[day].Run() }() // each host runs one day's tick
		r := <-inside
		assert.Equal(t, clock.read(), r.at)
		runs = append(runs, r)
	}
	clock.set(base.Add(48 * time.Hour))
	jobs[0].Run() // two runs going: skipped
	assert.Contains(t, logs.String(), `level=WARN msg="joblock: tick skipped: 2 runs are still going (the limit)"`)
	assert.Empty(t, inside)

	close(runs[0].done)
	require.Eventually(t, func() bool {
		slots, err := l.InspectSlots(context.Background(), "cron:daily")
		require.NoError(t, err)
		held := 0
		for _, r := range slots {
			if r.State == lock.Held {
				held++
			}
		}
		return held == 1 // the ended run's slot is free
	}, 5*time.Second, 5*time.Millisecond)
	clock.set(base.Add(72 * time.Hour))
	wg.Add(1)
	go func() { defer wg.Done(); jobs[1].Run() }()
	r := <-inside
	assert.Equal(t, base.Add(72*time.Hour), r.at, "the fourth tick, with a slot free, runs")
	close(r.done)
	close(runs[1].done)
	wg.Wait()
}

func TestLostLockCancelsJob(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	causes := make(chan error, 1)
	job := scheduler.NoOverlap(l, "sync", scheduler.WithLease(300*time.Millisecond))(scheduler.Func(func(ctx context.Context) error {
		lease, _ := lock.LeaseFromContext(ctx)
		// An operator frees the lock while the job runs.
		require.NoError(t, l.Release(context.Background(), lease))
		select {
		case <-ctx.Done():
			causes <- context.Cause(ctx)
		case <-time.After(10 * time.Second):
			causes <- nil
		}
		return nil
	}))
	job.Run()
	require.ErrorIs(t, <-causes, lock.ErrLost, "the job's ctx must be cancelled when its lock is lost")
}
