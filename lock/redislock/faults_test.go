package redislock_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCrossProcessHammer(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the cross-process hammer")
	s := locktest.RunHammer(t, 4, 60*time.Millisecond, 3*time.Second, envAddr+"="+srv.Addr, envPrefix+"="+srv.Prefix)
	t.Logf("%+v", s)
	assert.Greater(t, s.Sections, 60, "too few critical sections to prove anything")
	assert.Positive(t, s.Abandoned)
	assert.Positive(t, s.LateRejected)
}

func TestKilledHolderFreesAfterTTL(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "TTL expiry in real time")
	l := redislock.New(srv.Client(t), redislock.WithPrefix(srv.Prefix), noGrace)
	locktest.RunKilledHolder(t, l, time.Second, envAddr+"="+srv.Addr, envPrefix+"="+srv.Prefix)
}

func TestCrossProcessHammerLimitThree(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the cross-process hammer")
	s := locktest.RunHammerLimit(t, 8, 3, 60*time.Millisecond, 3*time.Second, envAddr+"="+srv.Addr, envPrefix+"="+srv.Prefix)
	t.Logf("%+v", s)
	assert.Greater(t, s.Sections, 60, "too few critical sections to prove anything")
}

func TestCrossProcessHammerLimitThreeOnCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	s := locktest.RunHammerLimit(t, 8, 3, 60*time.Millisecond, 3*time.Second, envCluster+"="+strings.Join(cl.Addrs, ","))
	t.Logf("%+v", s)
	assert.Greater(t, s.Sections, 60, "too few critical sections to prove anything")
}

func TestKilledSlotHolderFreesAfterTTL(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "TTL expiry in real time")
	l := redislock.New(srv.Client(t), redislock.WithPrefix(srv.Prefix), noGrace)
	locktest.RunKilledSlotHolder(t, l, 3, time.Second, envAddr+"="+srv.Addr, envPrefix+"="+srv.Prefix)
}

func TestRedisRestartMidHold(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), noGrace)
	m := lock.NewManager(l)
	ctx := context.Background()

	var lease lock.Lease
	err := m.Do(ctx, "job", func(fctx context.Context) error {
		rec, ok, err := l.Inspect(ctx, "job")
		require.NoError(t, err)
		require.True(t, ok)
		lease = lock.Lease{Key: "job", Token: rec.Token}
		srv.Stop()

		_, err = l.Refresh(ctx, lease, time.Second)
		require.Error(t, err)
		assert.NotErrorIs(t, err, lock.ErrNotHeld, "Redis down is an error, not a verdict")
		err = l.Release(ctx, lease)
		require.Error(t, err)
		assert.NotErrorIs(t, err, lock.ErrNotHeld)

		select {
		case <-fctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("fn's ctx was not cancelled although renewals failed past the TTL")
		}
		require.ErrorIs(t, context.Cause(fctx), lock.ErrLost)
		srv.Restart(t)
		return fctx.Err()
	}, lock.WithLease(300*time.Millisecond))
	require.ErrorIs(t, err, lock.ErrLost)
	require.ErrorIs(t, err, context.Canceled)

	// The restarted server is empty: the old lease is not held and the key
	// is free.
	require.ErrorIs(t, l.Release(ctx, lease), lock.ErrNotHeld)
	_, err = l.Obtain(ctx, "job", time.Second)
	require.NoError(t, err)
}

func TestRedisUnreachable(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	l := redislock.New(c, noGrace)
	_, err := l.Obtain(context.Background(), "job", time.Second)
	require.Error(t, err)
	assert.NotErrorIs(t, err, lock.ErrNotObtained, "an unreachable Redis must not read as 'already locked'")
	assert.Contains(t, err.Error(), "redislock:")
	assert.Contains(t, err.Error(), addr)

	locked, err := lock.NewManager(l).IsLocked(context.Background(), "job")
	require.Error(t, err)
	assert.False(t, locked)
}

// faultyScripter injects what a real Redis cannot be made to do on cue: a
// script runner that hangs until the caller's deadline, or fails.
type faultyScripter struct {
	redis.Scripter
	hang  atomic.Bool
	fail  atomic.Bool
	calls atomic.Int32
}

var errInjected = errors.New("injected fault")

func (f *faultyScripter) fault(ctx context.Context) *redis.Cmd {
	f.calls.Add(1)
	cmd := redis.NewCmd(ctx)
	switch {
	case f.hang.Load():
		<-ctx.Done()
		cmd.SetErr(ctx.Err())
	case f.fail.Load():
		cmd.SetErr(errInjected)
	default:
		return nil
	}
	return cmd
}

func (f *faultyScripter) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if cmd := f.fault(ctx); cmd != nil {
		return cmd
	}
	return f.Scripter.EvalSha(ctx, sha, keys, args...)
}

func (f *faultyScripter) Eval(ctx context.Context, src string, keys []string, args ...any) *redis.Cmd {
	if cmd := f.fault(ctx); cmd != nil {
		return cmd
	}
	return f.Scripter.Eval(ctx, src, keys, args...)
}

func TestSlowScriptRunnerHonoursDeadline(t *testing.T) {
	srv := redistest.New(t)
	f := &faultyScripter{Scripter: srv.Client(t)}
	l := redislock.New(f, redislock.WithPrefix(srv.Prefix), noGrace)
	f.hang.Store(true)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := l.Obtain(ctx, "job", time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, lock.ErrNotObtained)
	// Twenty times the deadline: generous against a loaded machine, and
	// still far from the hang it would be without one.
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestFailingRefreshCancelsDo(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "TTL expiry in real time")
	c := srv.Client(t)
	f := &faultyScripter{Scripter: c}
	l := redislock.New(f, redislock.WithPrefix(srv.Prefix), noGrace)
	direct := redislock.New(c, redislock.WithPrefix(srv.Prefix), noGrace)
	ctx := context.Background()

	err := lock.NewManager(l).Do(ctx, "job", func(fctx context.Context) error {
		f.fail.Store(true) // every renewal and the release fail from here on
		<-fctx.Done()
		// Told before the lease ran out: the key is still held in Redis.
		_, err := direct.Obtain(ctx, "job", time.Second)
		require.ErrorIs(t, err, lock.ErrNotObtained)
		return nil
	}, lock.WithLease(900*time.Millisecond))
	require.ErrorIs(t, err, lock.ErrLost)
	require.ErrorIs(t, err, errInjected, "the loss names the renewal error")
	assert.Greater(t, f.calls.Load(), int32(2), "renewal was not retried before giving up")
}

func TestFencingSurvivesRestartFromSnapshot(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), noGrace)
	ctx := context.Background()
	pair := func() uint64 {
		lease, err := l.Obtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, lease))
		return lease.Fence
	}
	pair()
	require.NoError(t, c.Save(ctx).Err(), "snapshot")
	var last uint64
	for range 50 { // handed out after the snapshot: lost by the restart
		last = pair()
	}
	srv.Restart(t) // from the snapshot, which holds an older counter
	n, err := c.Exists(ctx, srv.Prefix+"{job}:fence").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the restart must have brought back the snapshot's counter")
	assert.Greater(t, pair(), last, "a token handed out again after a restart")
}

func TestScanNeedsAScanningClient(t *testing.T) {
	srv := redistest.New(t)
	l := redislock.New(&faultyScripter{Scripter: srv.Client(t)})
	err := l.Scan(context.Background(), func(lock.Record) bool { return true })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "SCAN")
}

func TestFenceCounterExpiresAndStaysMonotonic(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the fencing counter's expiry")
	c := srv.Client(t)
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), redislock.WithFenceRetention(time.Second), noGrace)
	ctx := context.Background()
	first, err := l.Obtain(ctx, "job", 100*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, first))
	counter := srv.Prefix + "{job}:fence"
	n, err := c.Exists(ctx, counter).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	require.Eventually(t, func() bool { return c.Exists(ctx, counter).Val() == 0 }, 5*time.Second, 50*time.Millisecond,
		"fencing counter of an idle key must not stay forever")
	second, err := l.Obtain(ctx, "job", time.Second)
	require.NoError(t, err)
	assert.Greater(t, second.Fence, first.Fence, "a forgotten counter must restart above its old tokens")
}

// TestRestartWithoutPersistenceTellsTheHolder: Redis restarts empty while
// work holds a lock; the next renewal finds the lock gone and cancels the
// work with lock.ErrLost.
func TestRestartWithoutPersistenceTellsTheHolder(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), noGrace)
	err := lock.NewManager(l).Do(context.Background(), "job", func(ctx context.Context) error {
		srv.Restart(t) // empty: the lock is gone
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(10 * time.Second):
			return errors.New("the holder was never told")
		}
	}, lock.WithLease(600*time.Millisecond))
	require.ErrorIs(t, err, lock.ErrLost)
	require.ErrorIs(t, err, lock.ErrNotHeld, "a renewal found the lock gone")
}

// TestScanSkipsKeysOfAnotherType: keys under the prefix that someone else
// made, of another type than the engine's, are reported as Skipped and
// counted, never an error that stops Scan, and are left alone.
func TestScanSkipsKeysOfAnotherType(t *testing.T) {
	srv := redistest.New(t)
	c := srv.Client(t)
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(0))
	ctx := context.Background()
	lease, err := l.Obtain(ctx, "real", time.Minute)
	require.NoError(t, err)
	require.NoError(t, c.HSet(ctx, srv.Prefix+"{hash}", "a", "b").Err())
	require.NoError(t, c.Set(ctx, srv.Prefix+"{text}:slots", "hello", time.Minute).Err())
	var held, skipped []string
	require.NoError(t, l.Scan(ctx, func(r lock.Record) bool {
		switch r.State {
		case lock.Held:
			held = append(held, r.Key)
		case lock.Skipped:
			skipped = append(skipped, r.Note)
		}
		return true
	}))
	assert.Equal(t, []string{"real"}, held)
	require.Len(t, skipped, 2)
	slices.Sort(skipped)
	// Each note names the key and passes on the server's WRONGTYPE; where
	// in its words the server puts that differs (miniredis wraps an error
	// raised inside a script as a script error).
	for i, key := range []string{"{hash}", "{text}:slots"} {
		assert.True(t, strings.HasPrefix(skipped[i], srv.Prefix+key+" is not a lock record: "), skipped[i])
		assert.Contains(t, skipped[i], "WRONGTYPE")
		assert.True(t, strings.HasSuffix(skipped[i], " (left alone)"), skipped[i])
	}
	stats, err := lock.NewManager(l).GetStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, stats.ActiveLocks)
	assert.Equal(t, 2, stats.SkippedEntries)
	n, err := c.Exists(ctx, srv.Prefix+"{hash}", srv.Prefix+"{text}:slots").Result()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "left alone")
	require.NoError(t, l.Release(ctx, lease))
}
