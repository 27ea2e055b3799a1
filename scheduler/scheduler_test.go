package scheduler_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
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
		{"no run", scheduler.Job{Name: "x", Spec: "@every 1s"}, "no Run"},
		{"bad mode", scheduler.Job{Name: "x", Spec: "@every 1s", Run: run, Mode: 7}, "unknown mode"},
		{"bad ttl", scheduler.Job{Name: "x", Spec: "@every 1s", Run: run, TTL: -time.Second}, "invalid ttl"},
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

func TestWrappersOnAPlainCron(t *testing.T) {
	dir := t.TempDir()
	sched, err := cron.ParseStandard("@every 1s")
	require.NoError(t, err)
	var runs atomic.Int32
	job := scheduler.Func(func(context.Context) error { runs.Add(1); return nil })
	// Two "hosts" with their own cron and locker: each tick runs once.
	var crons []*cron.Cron
	for range 2 {
		l := newFileLocker(t, dir)
		c := cron.New()
		c.Schedule(sched, cron.NewChain(scheduler.OncePerTick(l, "report", sched)).Then(job))
		c.Start()
		crons = append(crons, c)
	}
	time.Sleep(3500 * time.Millisecond)
	for _, c := range crons {
		<-c.Stop().Done()
	}
	assert.InDelta(t, 3, runs.Load(), 1, "two crons, one run per tick")
}

func TestPanickingJobReleasesItsLock(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	wrapped := scheduler.NoOverlap(l, "boom")(scheduler.Func(func(context.Context) error { panic("boom") }))
	wrapped.Run()
	locked, err := lock.NewManager(l).IsLocked(context.Background(), "cron:boom")
	require.NoError(t, err)
	assert.False(t, locked)
}

func TestLostLockCancelsJob(t *testing.T) {
	l := newFileLocker(t, t.TempDir())
	causes := make(chan error, 1)
	job := scheduler.NoOverlap(l, "sync", scheduler.WithTTL(300*time.Millisecond))(scheduler.Func(func(ctx context.Context) error {
		lease, _ := lock.LeaseFromContext(ctx)
		// An operator frees the lock while the job runs.
		require.NoError(t, l.Release(context.Background(), lease))
		select {
		case <-ctx.Done():
			causes <- context.Cause(ctx)
		case <-time.After(5 * time.Second):
			causes <- nil
		}
		return nil
	}))
	job.Run()
	require.ErrorIs(t, <-causes, lock.ErrLost, "the job's ctx must be cancelled when its lock is lost")
}
