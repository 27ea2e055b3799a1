package locktest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testManager(t *testing.T, newLocker NewLocker) {
	ctx := context.Background()
	m := lock.NewManager(newLocker(t), lock.WithDefaultTTL(5*time.Second))
	other := lock.NewManager(newLocker(t))
	key := Key(t, "k")

	first, err := m.Acquire(ctx, key, 0)
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(5*time.Second), first.ExpiresAt, 2*time.Second, "default TTL")

	renewed, err := m.Acquire(ctx, key, 10*time.Second)
	require.NoError(t, err, "acquire on a key this instance holds renews it")
	assert.Equal(t, first.Token, renewed.Token)
	assert.True(t, renewed.ExpiresAt.After(first.ExpiresAt))

	_, err = other.Acquire(ctx, key, time.Second)
	require.ErrorIs(t, err, lock.ErrNotObtained)
	require.ErrorIs(t, other.Release(ctx, key), lock.ErrNotHeld, "release by key never frees another instance's lock")

	locked, err := other.IsLocked(ctx, key)
	require.NoError(t, err)
	assert.True(t, locked)

	stats, err := m.GetStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, stats.InstanceLocks)
	assert.GreaterOrEqual(t, stats.ActiveLocks, 1)
	assert.Equal(t, stats.ActiveLocks+stats.ExpiredLocks, stats.TotalLocks)

	start := time.Now()
	_, err = other.AcquireWithWait(ctx, key, time.Second, 150*time.Millisecond, 20*time.Millisecond)
	require.ErrorIs(t, err, lock.ErrNotObtained)
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "gave up before maxWait")

	go func() {
		time.Sleep(100 * time.Millisecond)
		assert.NoError(t, m.Release(ctx, key))
	}()
	got, err := other.AcquireWithWait(ctx, key, time.Second, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, err, "waiter must get the lock once it is released")
	assert.Greater(t, got.Fence, renewed.Fence)

	require.ErrorIs(t, m.Release(ctx, key), lock.ErrNotHeld)
	stats, err = m.GetStats(ctx)
	require.NoError(t, err)
	assert.Zero(t, stats.InstanceLocks)

	// ReleaseID frees a lock by its lock_id from another instance.
	require.NoError(t, m.ReleaseID(ctx, key, got.Token))
	locked, err = m.IsLocked(ctx, key)
	require.NoError(t, err)
	assert.False(t, locked)

	// ReleaseAll frees what this instance holds and nothing else.
	mine := []string{Key(t, "a"), Key(t, "b"), Key(t, "c")}
	for _, k := range mine {
		_, err := m.Acquire(ctx, k, 10*time.Second)
		require.NoError(t, err)
	}
	theirs := Key(t, "theirs")
	_, err = other.Acquire(ctx, theirs, 10*time.Second)
	require.NoError(t, err)
	n, err := m.ReleaseAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(mine), n)
	for _, k := range mine {
		locked, err := other.IsLocked(ctx, k)
		require.NoError(t, err)
		assert.False(t, locked, k)
	}
	locked, err = m.IsLocked(ctx, theirs)
	require.NoError(t, err)
	assert.True(t, locked, "ReleaseAll freed another instance's lock")
	n, err = other.ReleaseAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	// Expired locks are counted, then cleaned up.
	short := Key(t, "short")
	_, err = m.Acquire(ctx, short, 20*time.Millisecond)
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	locked, err = m.IsLocked(ctx, short)
	require.NoError(t, err)
	assert.False(t, locked)
	_, err = m.CleanupExpiredLocks(ctx)
	require.NoError(t, err)
	_, ok, err := m.Locker().Inspect(ctx, short)
	require.NoError(t, err)
	assert.False(t, ok)
}

// process runs one JSON request through m.Process and returns the JSON
// result as a map.
func process(t *testing.T, m *lock.Manager, in string) map[string]any {
	t.Helper()
	var req lock.Request
	if err := json.Unmarshal([]byte(in), &req); err != nil {
		// Answered as serve-stdio answers a request it cannot decode.
		return map[string]any{"locked": false, "lock_id": nil, "error": err.Error()}
	}
	out, err := json.Marshal(m.Process(context.Background(), req))
	require.NoError(t, err)
	var res map[string]any
	require.NoError(t, json.Unmarshal(out, &res))
	return res
}

// testManagerProcessLimit: Process's optional limit takes slots, as many as
// it says and no more, through any number of Managers.
func testManagerProcessLimit(t *testing.T, newLocker NewLocker) {
	l := newLocker(t)
	lim, ok := l.(lock.Limiter)
	if !ok {
		t.Skipf("%T is not a lock.Limiter", l)
	}
	key := Key(t, "k")
	q, _ := json.Marshal(key)
	acquire := `{"key":` + string(q) + `,"action":"acquire","timeout":30,"limit":2}`
	var ms []*lock.Manager
	var ids []string
	for range 2 {
		m := lock.NewManager(l)
		res := process(t, m, acquire)
		require.Equal(t, true, res["locked"], res)
		ms, ids = append(ms, m), append(ids, res["lock_id"].(string))
	}
	third := lock.NewManager(l)
	res := process(t, third, acquire)
	assert.Equal(t, true, res["already_locked"])
	assert.Contains(t, ids, res["locked_by"])

	again := process(t, ms[0], acquire)
	assert.Equal(t, ids[0], again["lock_id"], "a Manager holding a slot renews it")
	slots, err := lim.InspectSlots(context.Background(), key)
	require.NoError(t, err)
	held := 0
	for _, r := range slots {
		if r.State == lock.Held {
			held++
			assert.Equal(t, 2, r.Limit)
		}
	}
	assert.Equal(t, 2, held)

	locked, err := lock.NewManager(l).IsLocked(context.Background(), key)
	require.NoError(t, err)
	assert.True(t, locked, "a key whose slots are held is locked")

	rel := process(t, ms[0], `{"key":`+string(q)+`,"action":"release"}`)
	assert.Equal(t, true, rel["released"])
	res = process(t, third, acquire)
	assert.Equal(t, true, res["locked"], "a freed slot is taken")
	for _, bad := range []struct{ limit, want string }{
		{"0", "invalid limit: 0"}, {"-3", "invalid limit: -3"}, {"1001", "invalid limit: 1001"},
		{`"2"`, "limit"}, {"2.5", "limit"},
	} {
		res := process(t, lock.NewManager(l), `{"key":`+string(q)+`,"action":"acquire","limit":`+bad.limit+`}`)
		assert.Equal(t, false, res["locked"], bad.limit)
		assert.Contains(t, res["error"], bad.want, bad.limit)
	}
}

func testManagerProcess(t *testing.T, newLocker NewLocker) {
	ctx := context.Background()
	m := lock.NewManager(newLocker(t))
	other := lock.NewManager(newLocker(t))
	key := Key(t, "k")

	do := func(m *lock.Manager, in string) map[string]any { t.Helper(); return process(t, m, in) }
	q, _ := json.Marshal(key)

	acq := do(m, `{"key":`+string(q)+`,"action":"acquire","timeout":30}`)
	assert.Equal(t, true, acq["locked"])
	assert.Equal(t, false, acq["already_locked"])
	id, _ := acq["lock_id"].(string)
	assert.NotEmpty(t, id)
	exp, _ := acq["expires_at"].(float64)
	assert.InDelta(t, time.Now().Add(30*time.Second).Unix(), exp, 2)
	assert.NotContains(t, acq, "locked_by")
	assert.NotContains(t, acq, "released")

	held := do(other, `{"key":`+string(q)+`,"action":"acquire"}`)
	assert.Equal(t, map[string]any{
		"locked": false, "lock_id": nil, "expires_at": nil,
		"already_locked": true, "locked_by": id,
	}, held)

	notMine := do(other, `{"key":`+string(q)+`,"action":"release"}`)
	assert.Equal(t, false, notMine["released"])
	assert.NotEmpty(t, notMine["error"])

	rel := do(m, `{"key":`+string(q)+`,"action":"release"}`)
	assert.Equal(t, map[string]any{
		"locked": false, "lock_id": id, "expires_at": nil,
		"already_locked": false, "released": true,
	}, rel)

	// A lock taken by one instance is released by another with its lock_id.
	acq = do(m, `{"key":`+string(q)+`,"action":"acquire","timeout":5}`)
	id, _ = acq["lock_id"].(string)
	idq, _ := json.Marshal(id)
	rel = do(other, `{"key":`+string(q)+`,"action":"release","lock_id":`+string(idq)+`}`)
	assert.Equal(t, true, rel["released"])

	for _, tt := range []struct {
		name, give, want string
	}{
		{"missing key", `{"action":"acquire"}`, "key is required"},
		{"missing action", `{"key":"x"}`, "action is required"},
		{"unknown action", `{"key":"x","action":"steal"}`, `unknown action "steal"`},
		{"zero timeout", `{"key":KEY,"action":"acquire","timeout":0}`, "timeout must be a positive number of seconds, got 0"},
		{"negative timeout", `{"key":KEY,"action":"acquire","timeout":-30}`, "got -30"},
		{"timeout over a year", `{"key":KEY,"action":"acquire","timeout":31536001}`, "timeout 31536001 s is over the maximum of 31536000 s"},
		// Each wrapped around as a time.Duration: 290ms, 292 years, negative.
		{"timeout 18446744074", `{"key":KEY,"action":"acquire","timeout":18446744074}`, "timeout 18446744074 s is over the maximum"},
		{"timeout 9223372036", `{"key":KEY,"action":"acquire","timeout":9223372036}`, "timeout 9223372036 s is over the maximum"},
		{"timeout 9223372037", `{"key":KEY,"action":"acquire","timeout":9223372037}`, "timeout 9223372037 s is over the maximum"},
		{"bad key", `{"key":"a\nb","action":"acquire"}`, "invalid key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := Key(t, "k")
			q, _ := json.Marshal(key)
			res := do(m, strings.ReplaceAll(tt.give, "KEY", string(q)))
			assert.Contains(t, res["error"], tt.want)
			assert.Equal(t, false, res["locked"])
			assert.Nil(t, res["lock_id"])
			locked, err := m.IsLocked(ctx, key)
			require.NoError(t, err)
			assert.False(t, locked, "a refused request must leave nothing held")
		})
	}
	t.Run("timeout set in Go over the maximum", func(t *testing.T) {
		key := Key(t, "k")
		for _, secs := range []int{0, -1, 31536001, 18446744074, 9223372036, 9223372037} {
			res := m.Process(ctx, lock.Request{Key: key, Action: lock.ActionAcquire, Timeout: &secs})
			assert.False(t, res.Locked, "%d", secs)
			assert.Contains(t, res.Error, "invalid ttl: timeout", "%d", secs)
		}
		locked, err := m.IsLocked(ctx, key)
		require.NoError(t, err)
		assert.False(t, locked)
	})
	t.Run("manager with an invalid default TTL", func(t *testing.T) {
		bad := lock.NewManager(newLocker(t), lock.WithDefaultTTL(-time.Second))
		_, err := bad.Acquire(ctx, Key(t, "k"), 0)
		require.ErrorIs(t, err, lock.ErrInvalidTTL)
		assert.Contains(t, err.Error(), "-1s, must be positive")
		_, err = bad.AcquireWithWait(ctx, Key(t, "k"), lock.MaxTTL+time.Second, time.Second, 0)
		require.ErrorIs(t, err, lock.ErrInvalidTTL)
		assert.Contains(t, err.Error(), "over the maximum of 8760h0m0s")
	})
}

func testManagerDo(t *testing.T, newLocker NewLocker) {
	ctx := context.Background()
	l := newLocker(t)
	m := lock.NewManager(l)
	key := Key(t, "k")

	t.Run("runs, renews and releases", func(t *testing.T) {
		err := m.Do(ctx, key, func(ctx context.Context) error {
			time.Sleep(400 * time.Millisecond) // longer than the lease: renewal keeps it
			require.NoError(t, ctx.Err(), "lock lost although renewals should succeed")
			_, err := newLocker(t).Obtain(context.Background(), key, time.Second)
			assert.ErrorIs(t, err, lock.ErrNotObtained)
			return nil
		}, lock.WithLease(150*time.Millisecond))
		require.NoError(t, err)
		locked, err := m.IsLocked(ctx, key)
		require.NoError(t, err)
		assert.False(t, locked, "Do must release")
	})

	t.Run("held key does not run fn", func(t *testing.T) {
		lease, err := l.Obtain(ctx, key, 5*time.Second)
		require.NoError(t, err)
		ran := false
		err = m.Do(ctx, key, func(context.Context) error { ran = true; return nil })
		require.ErrorIs(t, err, lock.ErrNotObtained)
		assert.False(t, ran)
		require.NoError(t, l.Release(ctx, lease))
	})

	t.Run("lost lock cancels fn", func(t *testing.T) {
		boom := errors.New("fn saw its ctx end")
		err := m.Do(ctx, key, func(fctx context.Context) error {
			rec, ok, err := l.Inspect(ctx, key)
			require.NoError(t, err)
			require.True(t, ok)
			// Someone frees the lock behind the holder's back (an operator,
			// or an expiry during a pause); the next renewal notices.
			require.NoError(t, l.Release(ctx, lock.Lease{Key: key, Token: rec.Token}))
			select {
			case <-fctx.Done():
				return boom
			case <-time.After(5 * time.Second):
				return nil
			}
		}, lock.WithLease(300*time.Millisecond))
		require.ErrorIs(t, err, boom)
		require.ErrorIs(t, err, lock.ErrLost)
		var lost *lock.LostError
		require.ErrorAs(t, err, &lost)
		assert.Equal(t, key, lost.Key)
	})

	t.Run("a release that finds the lock gone reports it lost", func(t *testing.T) {
		err := m.Do(ctx, key, func(fctx context.Context) error {
			lease, _ := lock.LeaseFromContext(fctx)
			return l.Release(ctx, lease) // freed before the work is done
		}, lock.WithLease(time.Minute))
		require.ErrorIs(t, err, lock.ErrLost)
		require.ErrorIs(t, err, lock.ErrNotHeld)
	})

	t.Run("fn error is returned and the lock released", func(t *testing.T) {
		boom := errors.New("boom")
		err := m.Do(ctx, key, func(context.Context) error { return boom })
		require.ErrorIs(t, err, boom)
		assert.NotErrorIs(t, err, lock.ErrLost)
		locked, err := m.IsLocked(ctx, key)
		require.NoError(t, err)
		assert.False(t, locked)
	})

	t.Run("a panic releases the lock at once and goes on", func(t *testing.T) {
		func() {
			defer func() { assert.Equal(t, "boom", recover()) }()
			_ = m.Do(ctx, key, func(context.Context) error { panic("boom") }, lock.WithLease(time.Minute))
		}()
		_, err := newLocker(t).Obtain(ctx, key, time.Second)
		require.NoError(t, err, "the panicking job's lock is still held")
	})

	t.Run("failing renewals cancel fn before another holder can take the lock", func(t *testing.T) {
		testCancelledBeforeTakeover(t, newLocker, Key(t, "renewals-fail"))
	})
}

// unreachable is an engine that obtains, then stops answering: renewals
// and releases fail with a transient error, as when the server goes away,
// which a real engine cannot be made to do on cue.
type unreachable struct{ lock.Locker }

var errRenewal = errors.New("injected: engine unreachable")

func (unreachable) Refresh(context.Context, lock.Lease, time.Duration) (lock.Lease, error) {
	return lock.Lease{}, errRenewal
}

func (unreachable) Release(context.Context, lock.Lease) error { return errRenewal }

// testCancelledBeforeTakeover runs work whose renewals all fail while
// another locker polls for the key, and checks the order: the work's
// context is cancelled, with a cause naming the renewal error, before the
// other locker obtains the key.
func testCancelledBeforeTakeover(t *testing.T, newLocker NewLocker, key string) {
	const lease, margin = 1500 * time.Millisecond, 500 * time.Millisecond
	ctx := context.Background()
	other := newLocker(t)
	var cancelled, taken time.Time
	polling := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-polling
		l, err := lock.ObtainWait(ctx, other, key, time.Second, lock.Wait{MaxWait: 10 * time.Second, Interval: time.Millisecond})
		taken = time.Now()
		if assert.NoError(t, err) {
			assert.NoError(t, other.Release(ctx, l))
		}
	}()
	err := lock.NewManager(unreachable{newLocker(t)}).Do(ctx, key, func(fctx context.Context) error {
		close(polling)
		<-fctx.Done()
		cancelled = time.Now()
		return context.Cause(fctx)
	}, lock.WithLease(lease), lock.WithMargin(margin))
	<-done
	require.ErrorIs(t, err, lock.ErrLost)
	require.ErrorIs(t, err, errRenewal)
	require.True(t, cancelled.Before(taken), "the work was told after another holder took the lock")
	// Generous against a loaded machine: the gap is the margin minus how
	// late the renewer and the polling goroutine were woken.
	assert.GreaterOrEqual(t, taken.Sub(cancelled), margin/2)
}
