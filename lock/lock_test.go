package lock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		give    string
		wantErr string
	}{
		{"cache:product-123", ""},
		{"https://example.com/a?b=c&d=é", ""},
		{strings.Repeat("k", lock.MaxKeyLen), ""},
		{"", "empty key"},
		{strings.Repeat("k", lock.MaxKeyLen+1), "bytes, the limit is"},
		{"a\tb", "control character"},
		{"a\u0085b", "control character"},
		{"a\xffb", "not valid UTF-8"},
	}
	for _, tt := range tests {
		err := lock.ValidateKey(tt.give)
		if tt.wantErr == "" {
			assert.NoError(t, err, "%q", tt.give)
			continue
		}
		require.ErrorIs(t, err, lock.ErrInvalidKey, "%q", tt.give)
		assert.Contains(t, err.Error(), tt.wantErr)
	}
}

func TestValidateTTL(t *testing.T) {
	tests := []struct {
		name    string
		give    time.Duration
		wantErr string // "" for a valid TTL
	}{
		{"minimum", lock.MinTTL, ""},
		{"maximum", lock.MaxTTL, ""},
		{"zero", 0, "0s, must be positive"},
		{"negative", -time.Second, "-1s, must be positive"},
		{"under a millisecond", 999 * time.Microsecond, "999µs is under the minimum of 1ms"},
		{"a nanosecond over the maximum", lock.MaxTTL + 1, "8760h0m0.000000001s is over the maximum of 8760h0m0s"},
		{"largest duration", math.MaxInt64, "is over the maximum of 8760h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lock.ValidateTTL(tt.give)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, lock.ErrInvalidTTL)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestTTLFromSeconds(t *testing.T) {
	tests := []struct {
		name    string
		give    int64
		want    time.Duration
		wantErr string
	}{
		{"spec default", 30, 30 * time.Second, ""},
		{"maximum", 365 * 24 * 3600, lock.MaxTTL, ""},
		{"zero", 0, 0, "timeout must be a positive number of seconds, got 0"},
		{"negative", -5, 0, "got -5"},
		{"one over the maximum", 365*24*3600 + 1, 0, "timeout 31536001 s is over the maximum of 31536000 s"},
		// Each of these wrapped around when multiplied by time.Second: into
		// 290ms, 292 years and a negative duration.
		{"wraps to 290ms", 18446744074, 0, "timeout 18446744074 s is over the maximum of 31536000 s"},
		{"wraps to 292 years", 9223372036, 0, "timeout 9223372036 s is over the maximum of 31536000 s"},
		{"wraps negative", 9223372037, 0, "timeout 9223372037 s is over the maximum of 31536000 s"},
		{"largest int64", math.MaxInt64, 0, "is over the maximum of 31536000 s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lock.TTLFromSeconds(tt.give)
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
				return
			}
			require.ErrorIs(t, err, lock.ErrInvalidTTL)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Zero(t, got)
		})
	}
}

func TestErrorsMatch(t *testing.T) {
	held := fmt.Errorf("wrapped: %w", &lock.HeldError{Key: "k", Holder: "lock_a", TTL: 1500 * time.Millisecond})
	assert.ErrorIs(t, held, lock.ErrNotObtained)
	assert.NotErrorIs(t, held, lock.ErrNotHeld)
	assert.Contains(t, held.Error(), `"k" is held by lock_a for another 1.5s`)
	assert.NotErrorIs(t, held, lock.ErrRestartGrace, "a live holder")

	grace := fmt.Errorf("wrapped: %w", &lock.HeldError{Key: "k", Holder: "redis restarted 3s ago; new locks wait out the grace",
		TTL: 12 * time.Second, Reason: lock.ErrRestartGrace})
	assert.ErrorIs(t, grace, lock.ErrNotObtained)
	assert.ErrorIs(t, grace, lock.ErrRestartGrace)
	assert.Contains(t, grace.Error(), `"k" is refused for another 12s: redis restarted 3s ago; new locks wait out the grace`)

	cause := errors.New("refresh failed")
	lost := &lock.LostError{Key: "k", Err: cause}
	assert.ErrorIs(t, lost, lock.ErrLost)
	assert.ErrorIs(t, lost, cause)
}

// flaky is an engine whose renewals fail on cue with a transient error,
// which a real engine cannot be made to do.
type flaky struct {
	lock.Locker
	fail atomic.Bool
}

var errReset = errors.New("connection reset")

func (f *flaky) Refresh(ctx context.Context, l lock.Lease, ttl time.Duration) (lock.Lease, error) {
	if f.fail.Load() {
		return lock.Lease{}, errReset
	}
	return f.Locker.Refresh(ctx, l, ttl)
}

func newEngine(t *testing.T) *filelock.Locker {
	t.Helper()
	l, err := filelock.New(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestRenewerCancelsAMarginBeforeTheLeaseRunsOut(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	f := &flaky{Locker: engine}
	const ttl, margin = 1500 * time.Millisecond, 500 * time.Millisecond
	lease, err := engine.Obtain(ctx, "k", ttl)
	require.NoError(t, err)
	f.fail.Store(true)
	workCtx, held := lock.NewRenewer(f).Hold(ctx, lease, ttl, margin)
	<-workCtx.Done()
	cancelled := time.Now()
	// The lease has not run out: nobody else can take the key yet.
	_, err = engine.Obtain(ctx, "k", time.Second)
	var h *lock.HeldError
	require.ErrorAs(t, err, &h, "the work was told only after the lock could be taken")
	got, lost := held.Stop()
	require.ErrorIs(t, lost, lock.ErrLost)
	require.ErrorIs(t, lost, errReset, "the loss names the renewal error")
	require.ErrorIs(t, context.Cause(workCtx), lock.ErrLost)
	assert.Equal(t, lease.Token, got.Token)
	next, err := lock.ObtainWait(ctx, engine, "k", time.Second, lock.Wait{MaxWait: 5 * time.Second, Interval: time.Millisecond})
	require.NoError(t, err)
	// Generous against a loaded machine: the gap is the margin minus how
	// late the renewer and this goroutine were woken.
	assert.GreaterOrEqual(t, time.Since(cancelled), margin/2, "cancelled too close to the lease's end")
	assert.Greater(t, next.Fence, lease.Fence)
}

func TestRenewerNoticesALockTakenAway(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	lease, err := engine.Obtain(ctx, "k", 300*time.Millisecond)
	require.NoError(t, err)
	workCtx, held := lock.NewRenewer(engine).Hold(ctx, lease, 300*time.Millisecond, 0)
	require.NoError(t, engine.Release(ctx, lease), "an operator frees the lock")
	<-workCtx.Done()
	_, lost := held.Stop()
	require.ErrorIs(t, lost, lock.ErrLost)
	require.ErrorIs(t, lost, lock.ErrNotHeld)
}

func TestRenewerKeepsRenewingAfterItsParentEnds(t *testing.T) {
	engine := newEngine(t)
	parent, cancel := context.WithCancel(context.Background())
	// Renewed every ttl/3: a renewal may come up to 2*ttl/3 late, on a
	// loaded machine, before the lease could run out.
	const ttl = 450 * time.Millisecond
	lease, err := engine.Obtain(parent, "k", ttl)
	require.NoError(t, err)
	workCtx, held := lock.NewRenewer(engine).Hold(parent, lease, ttl, 0)
	cancel()
	<-workCtx.Done()
	require.NotErrorIs(t, context.Cause(workCtx), lock.ErrLost)
	// Work that ignores its context still holds its lock until it returns.
	time.Sleep(3 * ttl)
	_, err = engine.Obtain(context.Background(), "k", ttl)
	require.ErrorIs(t, err, lock.ErrNotObtained)
	renewed, lost := held.Stop()
	require.NoError(t, lost)
	assert.True(t, renewed.ExpiresAt.After(lease.ExpiresAt), "the lease was renewed")
	require.NoError(t, engine.Release(context.Background(), renewed))
}

// renewerLoops counts the goroutines running a Renewer's loop.
func renewerLoops() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "lock.(*Renewer).loop(")
}

func TestRenewerUsesOneGoroutineForManyLeases(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	r := lock.NewRenewer(engine)
	require.Eventually(t, func() bool { return renewerLoops() == 0 }, 5*time.Second, 10*time.Millisecond,
		"renewers of earlier tests still running")
	var helds []*lock.Renewal
	for i := range 100 {
		lease, err := engine.Obtain(ctx, fmt.Sprint("k", i), time.Minute)
		require.NoError(t, err)
		_, h := r.Hold(ctx, lease, time.Minute, 0)
		helds = append(helds, h)
	}
	assert.Equal(t, 1, renewerLoops(), "one renewer goroutine for every lease")
	for _, h := range helds {
		_, lost := h.Stop()
		require.NoError(t, lost)
	}
	require.Eventually(t, func() bool { return renewerLoops() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the renewer's goroutine outlived its last lease")
}

// The renewer sleeps until its first lease falls due; a shorter lease held
// after a longer one is due first and must wake it.
func TestRenewerRenewsAShortLeaseHeldAfterALongOne(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	r := lock.NewRenewer(engine)
	long, err := engine.Obtain(ctx, "long", time.Hour)
	require.NoError(t, err)
	_, heldLong := r.Hold(ctx, long, time.Hour, 0)
	const ttl = 450 * time.Millisecond
	short, err := engine.Obtain(ctx, "short", ttl)
	require.NoError(t, err)
	workCtx, heldShort := r.Hold(ctx, short, ttl, 0)
	time.Sleep(3 * ttl)
	require.NoError(t, workCtx.Err(), "the short lease was not renewed")
	_, err = engine.Obtain(ctx, "short", ttl)
	require.ErrorIs(t, err, lock.ErrNotObtained)
	renewed, lost := heldShort.Stop()
	require.NoError(t, lost)
	assert.True(t, renewed.ExpiresAt.After(short.ExpiresAt), "the short lease was renewed")
	_, lost = heldLong.Stop()
	require.NoError(t, lost)
	require.NoError(t, engine.Release(ctx, renewed))
	require.NoError(t, engine.Release(ctx, long))
}

// A lease obtained a while before it is held has less than a third of its
// length before the work would be told it is lost: its first renewal comes
// before that point, not a third of the lease after Hold.
func TestRenewerRenewsALeaseHeldLate(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	const ttl = 1200 * time.Millisecond
	lease, err := engine.Obtain(ctx, "k", ttl)
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond) // 700ms left, margin 400ms: 300ms to renew in
	workCtx, held := lock.NewRenewer(engine).Hold(ctx, lease, ttl, 0)
	time.Sleep(ttl)
	renewed, lost := held.Stop()
	require.NoError(t, context.Cause(workCtx))
	require.NoError(t, lost)
	assert.True(t, renewed.ExpiresAt.After(lease.ExpiresAt), "the lease was renewed")
	require.NoError(t, engine.Release(ctx, renewed))
}

func TestRunReleasesOnPanic(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	m := lock.NewManager(engine)
	func() {
		defer func() {
			assert.Equal(t, "boom", recover(), "the panic goes on after the release")
		}()
		_ = m.Do(ctx, "k", func(context.Context) error { panic("boom") })
	}()
	locked, err := m.IsLocked(ctx, "k")
	require.NoError(t, err)
	assert.False(t, locked, "a panicking job left its lock held")
}

func TestRunWindow(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	r := lock.NewRenewer(engine)
	const window = 2 * time.Second
	out, err := r.Run(ctx, "slot", func(context.Context) error { return nil }, lock.WithWindow(window))
	require.NoError(t, err)
	require.NoError(t, out.Lost)
	assert.True(t, out.Kept)
	rec, ok, err := engine.Inspect(ctx, "slot")
	require.NoError(t, err)
	require.True(t, ok, "the slot is kept after a successful run")
	assert.LessOrEqual(t, rec.TTL, window, "kept until the window's end, not for a whole lease")
	_, err = r.Run(ctx, "slot", func(context.Context) error { return nil })
	require.ErrorIs(t, err, lock.ErrNotObtained, "once per window")

	boom := errors.New("boom")
	out, err = r.Run(ctx, "other", func(context.Context) error { return boom }, lock.WithWindow(window))
	require.ErrorIs(t, err, boom)
	assert.False(t, out.Kept)
	_, ok, err = engine.Inspect(ctx, "other")
	require.NoError(t, err)
	assert.False(t, ok, "a failed run frees the key for its retry")
}

func TestRunMaxRunTime(t *testing.T) {
	engine := newEngine(t)
	out, err := lock.NewRenewer(engine).Run(context.Background(), "k", func(ctx context.Context) error {
		<-ctx.Done()
		return context.Cause(ctx)
	}, lock.WithMaxRunTime(50*time.Millisecond))
	require.ErrorIs(t, err, lock.ErrMaxRunTime)
	require.NoError(t, out.Lost, "running out of time is not losing the lock")
	assert.True(t, out.Ran)
}

func TestLeaseFromContextFollowsRenewals(t *testing.T) {
	engine := newEngine(t)
	const lease = 150 * time.Millisecond
	_, err := lock.NewRenewer(engine).Run(context.Background(), "k", func(ctx context.Context) error {
		first, ok := lock.LeaseFromContext(ctx)
		require.True(t, ok)
		require.Eventually(t, func() bool {
			now, _ := lock.LeaseFromContext(ctx)
			return now.ExpiresAt.After(first.ExpiresAt)
		}, 5*time.Second, 5*time.Millisecond, "renewals do not show in the context's lease")
		now, _ := lock.LeaseFromContext(ctx)
		assert.Equal(t, first.Fence, now.Fence)
		assert.Equal(t, first.Token, now.Token)
		return nil
	}, lock.WithLease(lease))
	require.NoError(t, err)
}

func TestRunRejectsBadOptions(t *testing.T) {
	r := lock.NewRenewer(newEngine(t))
	for _, tt := range []struct {
		opt  lock.RunOption
		want string
	}{
		{lock.WithLease(0), "lease: lock: invalid ttl: 0s, must be positive"},
		{lock.WithLease(30 * time.Millisecond), "lease: lock: invalid ttl: a lease of 30ms is under the minimum of 100ms"},
		{lock.WithMaxRunTime(-1), "maximum run time -1ns must not be negative"},
		{lock.WithWindow(-time.Second), "window: lock: invalid ttl: a window of -1s, must not be negative"},
		{lock.WithWindow(lock.MaxTTL + time.Second), "window: lock: invalid ttl: a window of 8760h0m1s is over the maximum"},
		{lock.WithLimit(0), "lock: invalid limit: 0"},
	} {
		out, err := r.Run(context.Background(), "k", func(context.Context) error { return nil }, tt.opt)
		require.ErrorContains(t, err, tt.want)
		assert.False(t, out.Ran)
	}
	_, ok, err := r.Locker().Inspect(context.Background(), "k")
	require.NoError(t, err)
	assert.False(t, ok, "a refused Run took the key")
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunWithHeldLease(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	r := lock.NewRenewer(engine)
	// Taken earlier, with a long TTL, by another process.
	taken, err := engine.Obtain(ctx, "k", time.Hour)
	require.NoError(t, err)
	out, err := r.Run(ctx, "k", func(ctx context.Context) error {
		lease, _ := lock.LeaseFromContext(ctx)
		assert.Equal(t, taken.Token, lease.Token, "the same lease, not a new one")
		rec, ok, err := engine.Inspect(ctx, "k")
		require.NoError(t, err)
		require.True(t, ok)
		assert.LessOrEqual(t, rec.TTL, time.Minute, "refreshed to the lease, no longer the hour it was taken for")
		return nil
	}, lock.WithHeldLease(taken), lock.WithLease(time.Minute))
	require.NoError(t, err)
	require.True(t, out.Ran)
	_, ok, err := engine.Inspect(ctx, "k")
	require.NoError(t, err)
	assert.False(t, ok, "released at the end")

	out, err = r.Run(ctx, "k", func(context.Context) error { return nil }, lock.WithHeldLease(taken))
	require.ErrorIs(t, err, lock.ErrNotHeld, "a lease no longer held")
	assert.False(t, out.Ran)
}

// TestRunWaitWakesOnRelease: a Run waiting for a key that another Run of
// the same Renewer releases tries again at once, not at its next interval.
func TestRunWaitWakesOnRelease(t *testing.T) {
	ctx := context.Background()
	r := lock.NewRenewer(newEngine(t))
	holding, release := make(chan struct{}), make(chan struct{})
	go func() {
		_, err := r.Run(ctx, "k", func(context.Context) error {
			close(holding)
			<-release
			return nil
		})
		assert.NoError(t, err)
	}()
	<-holding
	got := make(chan error, 1)
	waiting := make(chan struct{})
	go func() {
		_, err := r.Run(ctx, "k", func(context.Context) error { return nil },
			lock.WithWait(lock.Wait{MaxWait: 10 * time.Minute, Interval: 5 * time.Minute}),
			lock.OnWait(func(string) func() { close(waiting); return func() {} }))
		got <- err
	}()
	<-waiting // it tried once and waits
	close(release)
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(time.Minute): // far less than the 5 min interval
		t.Fatal("the waiter was not woken by the release")
	}
}

// tries counts an engine's Obtains.
type tries struct {
	lock.Locker
	n atomic.Int32
}

// Obtain counts a try once it has an answer, so that a test that sees the
// count go up knows that try is over.
func (c *tries) Obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	defer c.n.Add(1)
	return c.Locker.Obtain(ctx, key, ttl)
}

// TestRunWaitWokenByWake: a Run waiting for a key released by another
// process (another Renewer here) tries again when Wake says so, as often
// as it says so, and OnWait brackets its waiting.
func TestRunWaitWokenByWake(t *testing.T) {
	ctx := context.Background()
	engine := newEngine(t)
	holder, err := engine.Obtain(ctx, "k", time.Minute) // the other process
	require.NoError(t, err)
	counted := &tries{Locker: engine}
	r := lock.NewRenewer(counted)
	waiting, stopped := make(chan struct{}), make(chan struct{})
	got := make(chan error, 1)
	go func() {
		_, err := r.Run(ctx, "k", func(context.Context) error { return nil },
			lock.WithWait(lock.Wait{MaxWait: 10 * time.Minute, Interval: 5 * time.Minute}),
			lock.OnWait(func(key string) func() {
				assert.Equal(t, "k", key)
				close(waiting)
				return func() { close(stopped) }
			}))
		got <- err
	}()
	<-waiting
	require.EqualValues(t, 1, counted.n.Load(), "one try before waiting")
	r.Wake("k") // a false alarm: still held
	require.Eventually(t, func() bool { return counted.n.Load() == 2 }, time.Minute, time.Millisecond, "Wake did not make it try again")
	require.NoError(t, engine.Release(ctx, holder))
	select {
	case <-got:
		t.Fatal("obtained without being woken")
	case <-time.After(50 * time.Millisecond):
	}
	r.Wake("k") // the release, heard of
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(time.Minute): // far less than the 5 min interval
		t.Fatal("the waiter was not woken a second time")
	}
	<-stopped
	assert.EqualValues(t, 3, counted.n.Load())
}

// TestReleaseWakesOneWaiter: a release wakes the longest waiting Run
// only, so that three waiters make one try each per release, not three;
// and a woken waiter that gives up passes its wake-up on.
func TestReleaseWakesOneWaiter(t *testing.T) {
	ctx := context.Background()
	counted := &tries{Locker: newEngine(t)}
	r := lock.NewRenewer(counted)
	w := lock.WithWait(lock.Wait{MaxWait: 10 * time.Minute, Interval: 5 * time.Minute})
	holding, release := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = r.Run(ctx, "k", func(context.Context) error { close(holding); <-release; return nil })
	}()
	<-holding
	ran := make(chan int, 3)
	done := make(chan struct{}, 3)
	cancelFirst, stop := context.WithCancel(ctx)
	defer stop()
	for i := range 3 {
		wctx := ctx
		if i == 0 {
			wctx = cancelFirst
		}
		go func() {
			_, err := r.Run(wctx, "k", func(context.Context) error { ran <- i; return nil }, w)
			if err != nil {
				ran <- -1
			}
			done <- struct{}{}
		}()
		require.Eventually(t, func() bool { return counted.n.Load() == int32(2+i) }, time.Minute, time.Millisecond, "waiter %d did not try", i)
	}
	stop() // waiter 0, the longest waiting, gives up: nothing to pass on yet
	assert.Equal(t, -1, <-ran)
	<-done
	close(release)
	assert.Equal(t, 1, <-ran, "the longest waiting of the others runs")
	<-done
	assert.Equal(t, 2, <-ran, "its release wakes the last")
	<-done
	assert.EqualValues(t, 6, counted.n.Load(), "1 holder + 3 first tries + 1 try per release")
}

func TestAcquireResultRoundsExpiryUp(t *testing.T) {
	tests := []struct {
		name string
		give time.Time
		want int64
	}{
		{"whole second", time.Unix(1700000000, 0), 1700000000},
		{"a millisecond past", time.UnixMilli(1700000000001), 1700000001},
		{"a nanosecond past", time.Unix(1700000000, 1), 1700000001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := lock.AcquireResult(lock.Lease{Token: "lock_a", ExpiresAt: tt.give}, nil)
			require.True(t, res.Locked)
			require.NotNil(t, res.ExpiresAt)
			assert.Equal(t, tt.want, *res.ExpiresAt)
		})
	}
}

func TestRequestTimeoutDecoding(t *testing.T) {
	tests := []struct {
		give    string
		want    int // 0: no timeout
		wantErr string
	}{
		{`{"key":"k","action":"acquire"}`, 0, ""},
		{`{"key":"k","action":"acquire","timeout":null}`, 0, ""},
		{`{"key":"k","action":"acquire","timeout":30}`, 30, ""},
		{`{"key":"k","action":"acquire","timeout":30.0}`, 30, ""},
		{`{"key":"k","action":"acquire","timeout":3e1}`, 30, ""},
		{`{"key":"k","action":"acquire","timeout":31536000}`, 31536000, ""},
		{`{"key":"k","action":"acquire","timeout":0}`, 0, "timeout must be a positive number of seconds, got 0"},
		{`{"key":"k","action":"acquire","timeout":-1e999}`, 0, "timeout must be a positive number of seconds, got -1e999"},
		{`{"key":"k","action":"acquire","timeout":1.5}`, 0, "timeout 1.5 is not a whole number of seconds"},
		{`{"key":"k","action":"acquire","timeout":"30"}`, 0, `timeout must be a number of seconds, got "30"`},
		{`{"key":"k","action":"acquire","timeout":true}`, 0, "timeout must be a number of seconds, got true"},
		{`{"key":"k","action":"acquire","timeout":18446744074}`, 0, "timeout 18446744074 s is over the maximum of 31536000 s"},
		{`{"key":"k","action":"acquire","timeout":9223372036}`, 0, "timeout 9223372036 s is over the maximum of 31536000 s"},
		{`{"key":"k","action":"acquire","timeout":9223372037}`, 0, "timeout 9223372037 s is over the maximum of 31536000 s"},
		{`{"key":"k","action":"acquire","timeout":99999999999999999999}`, 0, "timeout 99999999999999999999 s is over the maximum"},
		{`{"key":"k","action":"acquire","timeout":1e999}`, 0, "timeout 1e999 s is over the maximum"},
		{`{"key":"k","action":"acquire","timeout":3.1536001e7}`, 0, "timeout 3.1536001e7 s is over the maximum"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			var req lock.Request
			err := json.Unmarshal([]byte(tt.give), &req)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, lock.ErrInvalidTTL)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "k", req.Key)
			assert.Equal(t, lock.ActionAcquire, req.Action)
			if tt.want == 0 {
				assert.Nil(t, req.Timeout)
				return
			}
			require.NotNil(t, req.Timeout)
			assert.Equal(t, tt.want, *req.Timeout)
		})
	}
}

func TestRequestDecodingAlone(t *testing.T) {
	// encoding/json checks the whole input first; called directly, the
	// decoder does so itself.
	var req lock.Request
	require.EqualError(t, req.UnmarshalJSON([]byte(`{"key":"k","action":"acquire"} {}`)), "lock: data after the request object")
}

func TestRequestDecoding(t *testing.T) {
	n := func(i int) *int { return &i }
	tests := []struct {
		give    string
		want    lock.Request
		wantErr string
	}{
		{`{"key":"abc123","action":"acquire","timeout":30}`, lock.Request{Key: "abc123", Action: "acquire", Timeout: n(30)}, ""},
		{`{"key":"abc123","action":"release"}`, lock.Request{Key: "abc123", Action: "release"}, ""},
		{`{"key":"abc123","action":"release","lock_id":"lock_x"}`, lock.Request{Key: "abc123", Action: "release", LockID: "lock_x"}, ""},
		{`{"key":"pool","action":"acquire","limit":2}`, lock.Request{Key: "pool", Action: "acquire", Limit: n(2)}, ""},
		{`{"key":"k","action":"acquire","timeout":null,"lock_id":null,"limit":null}`, lock.Request{Key: "k", Action: "acquire"}, ""},
		{` { "key" : "caf\u00e9 ☕" , "action" : "acquire" } `, lock.Request{Key: "café ☕", Action: "acquire"}, ""},
		{`{}`, lock.Request{}, ""},
		{`null`, lock.Request{}, ""},
		{`{"key":"k","action":"acquire","ttl":300}`, lock.Request{},
			`lock: unknown field "ttl" in request: the fields are key, action, timeout, lock_id and limit`},
		{`{"KEY":"k","action":"acquire"}`, lock.Request{},
			`lock: unknown field "KEY" in request: the fields are key, action, timeout, lock_id and limit`},
		{`{"key":"k","action":"acquire","z":1,"expires_at":1}`, lock.Request{},
			`lock: unknown field "expires_at" in request: the fields are key, action, timeout, lock_id and limit`},
		{"{\"key\":\"a\xffb\",\"action\":\"acquire\"}", lock.Request{}, `lock: request is not valid UTF-8: byte 0xff at offset 9`},
		{"{\"key\":\"k\",\"action\":\"acquire\",\"\xfe\":1}", lock.Request{}, `lock: request is not valid UTF-8: byte 0xfe at offset 31`},
		{`{"key":1,"action":"acquire"}`, lock.Request{},
			`lock: request field "key": json: cannot unmarshal number into Go value of type string`},
		{`{"key":"k","action":"acquire","limit":"2"}`, lock.Request{}, `lock: invalid limit: limit must be a number of holders, got "2"`},
		{`{"key":"k","action":"acquire","limit":true}`, lock.Request{}, `lock: invalid limit: limit must be a number of holders, got true`},
		{`{"key":"pool","action":"acquire","limit":2.0}`, lock.Request{Key: "pool", Action: "acquire", Limit: n(2)}, ""},
		{`{"key":"pool","action":"acquire","limit":1e3}`, lock.Request{Key: "pool", Action: "acquire", Limit: n(1000)}, ""},
		{`{"key":"k","action":"acquire","limit":2.5}`, lock.Request{}, `lock: invalid limit: limit 2.5 is not a whole number of holders`},
		{`{"key":"k","action":"acquire","limit":1e400}`, lock.Request{}, `lock: invalid limit: 1e400, want 1 to 1000 holders`},
		{`{"key":"k","action":"acquire","limit":0}`, lock.Request{}, `lock: invalid limit: 0, want 1 to 1000 holders`},
		{`{"key":"a","key":"b","action":"acquire"}`, lock.Request{}, `lock: field "key" appears twice in the request`},
		{`{"key":"k","action":"acquire","timeout":"30"}`, lock.Request{}, `lock: invalid ttl: timeout must be a number of seconds, got "30"`},
		{`["key","k"]`, lock.Request{}, "lock: request is not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			var req lock.Request
			err := json.Unmarshal([]byte(tt.give), &req)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, req)
		})
	}
}

// TestWaitTriesAgainWhenTheHolderLeaseEnds: a holder that dies releases
// nothing, so no release wakes its waiters: a waiter whose interval is
// long still takes the key (a lock, or a slot) when the dead holder's
// lease runs out, on its second try, not an interval later.
func TestWaitTriesAgainWhenTheHolderLeaseEnds(t *testing.T) {
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			engine := newEngine(t)
			counted := &tries{Locker: engine}
			ctx := context.Background()
			for range limit { // holders that die: never released nor renewed
				_, err := engine.ObtainLimit(ctx, "k", limit, 200*time.Millisecond)
				require.NoError(t, err)
			}
			// Far less than the hour-long interval: only a failing test waits
			// for it.
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			var obtain lock.Locker = counted
			if limit > 1 {
				obtain = limitTries{counted, engine}
			}
			lease, err := lock.ObtainLimitWait(ctx, obtain, "k", limit, time.Second, lock.Wait{MaxWait: 2 * time.Hour, Interval: time.Hour})
			require.NoError(t, err, "the waiter slept through the end of the dead holder's lease")
			assert.EqualValues(t, 2, counted.n.Load(), "one try refused, one at the end of the lease")
			require.NoError(t, engine.Release(context.Background(), lease))
		})
	}
}

// limitTries counts ObtainLimit's tries in tries.
type limitTries struct {
	*tries
	l lock.Limiter
}

func (c limitTries) ObtainLimit(ctx context.Context, key string, limit int, ttl time.Duration) (lock.Lease, error) {
	defer c.n.Add(1)
	return c.l.ObtainLimit(ctx, key, limit, ttl)
}

func (c limitTries) InspectSlots(ctx context.Context, key string) ([]lock.Record, error) {
	return c.l.InspectSlots(ctx, key)
}

// A Manager holding a slot of a key does not renew it for a request that
// asks another limit: that request is refused as held, naming the limit
// the slot was taken with, and the slot is renewed for its own limit.
func TestManagerRenewsOnlyForTheSameLimit(t *testing.T) {
	ctx := context.Background()
	m := lock.NewManager(newEngine(t))
	n := func(v int) *int { return &v }
	first := m.Process(ctx, lock.Request{Key: "pool", Action: lock.ActionAcquire, Limit: n(3)})
	require.True(t, first.Locked, first.Error)

	for _, limit := range []*int{n(2), nil} {
		res := m.Process(ctx, lock.Request{Key: "pool", Action: lock.ActionAcquire, Limit: limit})
		require.False(t, res.Locked)
		require.True(t, res.AlreadyLocked)
		require.Equal(t, first.LockID, &res.LockedBy)
		require.Contains(t, res.Error, "with a limit of 3")
	}
	_, err := m.Acquire(ctx, "pool", time.Second)
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	require.Equal(t, 3, held.HeldLimit)

	again := m.Process(ctx, lock.Request{Key: "pool", Action: lock.ActionAcquire, Limit: n(3)})
	require.True(t, again.Locked, again.Error)
	require.Equal(t, first.LockID, again.LockID)
}
