// Package locktest is the conformance suite every joblock engine must pass.
// An engine's tests call Run with a function that returns lockers sharing
// one store, as separate processes would:
//
//	func TestConformance(t *testing.T) {
//		dir := t.TempDir()
//		locktest.Run(t, func(t *testing.T) lock.Locker {
//			l, err := filelock.New(dir)
//			require.NoError(t, err)
//			return l
//		})
//	}
//
// Each subtest uses keys of its own, so the store may be shared with other
// tests, but Cleanup must be safe to run on it at any time.
package locktest

import (
	"context"
	"crypto/rand"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// NewLocker returns a locker on the store under test. Lockers returned by
// one Run share that store.
type NewLocker func(t *testing.T) lock.Locker

// Option adjusts Run.
type Option func(*options)

type options struct {
	noRealTime string
	limit      int
}

// WithoutRealTimeExpiry skips, saying reason, the tests that need the
// store's TTLs to run out in real time (expiry, takeover, renewal), for a
// store that only emulates them.
func WithoutRealTimeExpiry(reason string) Option {
	return func(o *options) { o.noRealTime = reason }
}

// WithLimit runs the suite on keys that admit n holders (lock.Limiter):
// every obtain takes one of n slots, and the tests of exclusion expect n
// holders where a lock admits one. The Manager's tests, which are about
// the single-holder LockManager API, do not run. Default 1.
func WithLimit(n int) Option { return func(o *options) { o.limit = n } }

// Run runs every conformance test as a subtest of t.
func Run(t *testing.T, newLocker NewLocker, opts ...Option) {
	o := options{limit: 1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.limit > 1 {
		plain := newLocker
		newLocker = func(t *testing.T) lock.Locker {
			l, ok := plain(t).(lock.Limiter)
			require.True(t, ok, "the engine is not a lock.Limiter")
			return limited{Limiter: l, n: o.limit}
		}
	}
	n := o.limit
	tests := []struct {
		name     string
		fn       func(*testing.T, NewLocker)
		realTime bool
		single   bool // of the single-holder API only
	}{
		{"InvalidInput", testInvalidInput, false, false},
		{"ObtainRelease", testObtainRelease, false, false},
		{"Contention", func(t *testing.T, nl NewLocker) { testContention(t, nl, n) }, false, false},
		{"ExpiryTakeover", func(t *testing.T, nl NewLocker) { testExpiryTakeover(t, nl, n) }, true, false},
		{"Refresh", testRefresh, true, false},
		{"LateOrForeignRelease", testLateOrForeignRelease, false, false},
		{"ContextCancelled", testContextCancelled, false, false},
		{"FencingMonotonic", testFencingMonotonic, true, false},
		{"MixedLimits", testMixedLimits, false, true},
		{"ManyGoroutines", func(t *testing.T, nl NewLocker) { testManyGoroutines(t, nl, n) }, false, false},
		{"ScanCleanup", testScanCleanup, true, false},
		{"Manager", testManager, true, true},
		{"ManagerProcess", testManagerProcess, false, true},
		{"ManagerProcessLimit", testManagerProcessLimit, false, true},
		{"ManagerDo", testManagerDo, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.realTime && o.noRealTime != "" {
				t.Skip(o.noRealTime)
			}
			if tt.single && n > 1 {
				t.Skip("the Manager is the single-holder LockManager API")
			}
			tt.fn(t, newLocker)
		})
	}
}

// limited is a Limiter seen as a Locker whose every key admits n holders:
// Obtain takes one of n slots, Inspect shows the first slot held.
type limited struct {
	lock.Limiter
	n int
}

func (l limited) Obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	return l.ObtainLimit(ctx, key, l.n, ttl)
}

func (l limited) Inspect(ctx context.Context, key string) (lock.Record, bool, error) {
	recs, err := l.InspectSlots(ctx, key)
	if err != nil {
		return lock.Record{}, false, err
	}
	for _, r := range recs {
		if r.State == lock.Held {
			return r, true, nil
		}
	}
	if len(recs) > 0 {
		return recs[0], true, nil
	}
	return lock.Record{}, false, nil
}

// Key returns a key unique to this test and run.
func Key(t testing.TB, name string) string {
	return "locktest:" + t.Name() + ":" + rand.Text()[:8] + ":" + name
}

func testInvalidInput(t *testing.T, newLocker NewLocker) {
	l := newLocker(t)
	ctx := context.Background()
	keys := []struct {
		name string
		give string
	}{
		{"empty", ""},
		{"too long", strings.Repeat("k", lock.MaxKeyLen+1)},
		{"newline", "a\nb"},
		{"nul", "a\x00b"},
		{"invalid utf8", "a\xffb"},
	}
	for _, tt := range keys {
		t.Run("key "+tt.name, func(t *testing.T) {
			_, err := l.Obtain(ctx, tt.give, time.Second)
			require.ErrorIs(t, err, lock.ErrInvalidKey)
			assert.NotErrorIs(t, err, lock.ErrNotObtained)
		})
	}
	ttls := []struct {
		name string
		give time.Duration
	}{
		{"zero", 0},
		{"negative", -time.Second},
		{"under a millisecond", 500 * time.Microsecond},
		{"over the maximum", lock.MaxTTL + time.Millisecond},
		{"largest duration", 1<<63 - 1},
	}
	for _, tt := range ttls {
		t.Run("ttl "+tt.name, func(t *testing.T) {
			key := Key(t, "k")
			_, err := l.Obtain(ctx, key, tt.give)
			require.ErrorIs(t, err, lock.ErrInvalidTTL)
			_, ok, err := l.Inspect(ctx, key)
			require.NoError(t, err)
			assert.False(t, ok, "a rejected obtain must leave nothing held")
		})
	}
	t.Run("refresh with a ttl over the maximum", func(t *testing.T) {
		key := Key(t, "k")
		lease, err := l.Obtain(ctx, key, time.Minute)
		require.NoError(t, err)
		_, err = l.Refresh(ctx, lease, lock.MaxTTL+time.Millisecond)
		require.ErrorIs(t, err, lock.ErrInvalidTTL)
		rec, ok, err := l.Inspect(ctx, key)
		require.NoError(t, err)
		require.True(t, ok, "a rejected refresh must leave the lease held")
		assert.LessOrEqual(t, rec.TTL, time.Minute, "a rejected refresh must not extend the lease")
		require.NoError(t, l.Release(ctx, lease))
	})
	if lim, ok := l.(limited); ok {
		for _, n := range []int{0, -1, lock.MaxLimit + 1} {
			t.Run("limit "+strconv.Itoa(n), func(t *testing.T) {
				key := Key(t, "k")
				_, err := lim.ObtainLimit(ctx, key, n, time.Second)
				require.ErrorIs(t, err, lock.ErrInvalidLimit)
				assert.ErrorContains(t, err, strconv.Itoa(n))
				assert.NotErrorIs(t, err, lock.ErrNotObtained)
				slots, err := lim.InspectSlots(ctx, key)
				require.NoError(t, err)
				assert.Empty(t, slots, "a rejected obtain must leave nothing held")
			})
		}
	}
	t.Run("longest key works", func(t *testing.T) {
		key := Key(t, "")
		key += strings.Repeat("é", (lock.MaxKeyLen-len(key))/2)
		lease, err := l.Obtain(ctx, key, time.Second)
		require.NoError(t, err)
		rec, ok, err := l.Inspect(ctx, key)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, key, rec.Key)
		require.NoError(t, l.Release(ctx, lease))
	})
}

func testObtainRelease(t *testing.T, newLocker NewLocker) {
	l := newLocker(t)
	ctx := context.Background()
	key := Key(t, "special chars: /?&=#%\"'\\ ü 日本")
	before := time.Now()
	lease, err := l.Obtain(ctx, key, 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, key, lease.Key)
	assert.GreaterOrEqual(t, len(lease.Token), 16, "owner token too short to be unguessable")
	assert.NotZero(t, lease.Fence)
	assert.WithinDuration(t, before.Add(10*time.Second), lease.ExpiresAt, 2*time.Second)

	rec, ok, err := l.Inspect(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, lock.Held, rec.State)
	assert.Equal(t, key, rec.Key)
	assert.Equal(t, lease.Token, rec.Token)
	assert.Equal(t, lease.Fence, rec.Fence)
	assert.Greater(t, rec.TTL, 8*time.Second)

	require.NoError(t, l.Release(ctx, lease))
	if rec, ok, err := l.Inspect(ctx, key); assert.NoError(t, err) && ok {
		assert.NotEqual(t, lock.Held, rec.State, "released lock still held")
	}

	again, err := l.Obtain(ctx, key, time.Second)
	require.NoError(t, err, "a released key must be free")
	assert.Greater(t, again.Fence, lease.Fence)
	assert.NotEqual(t, lease.Token, again.Token)
	require.NoError(t, l.Release(ctx, again))
}

func testContention(t *testing.T, newLocker NewLocker, limit int) {
	a, b := newLocker(t), newLocker(t)
	ctx := context.Background()
	key := Key(t, "k")
	lease, err := a.Obtain(ctx, key, 5*time.Second)
	require.NoError(t, err)
	for range limit - 1 {
		more, err := b.Obtain(ctx, key, 10*time.Second)
		require.NoError(t, err, "the key admits %d holders", limit)
		defer func() { assert.NoError(t, b.Release(ctx, more)) }()
	}
	for _, l := range []lock.Locker{a, b} {
		_, err = l.Obtain(ctx, key, 5*time.Second)
		require.ErrorIs(t, err, lock.ErrNotObtained)
		var held *lock.HeldError
		require.ErrorAs(t, err, &held)
		assert.Equal(t, key, held.Key)
		assert.Equal(t, lease.Token, held.Holder, "the holder whose lease ends first")
		assert.Greater(t, held.TTL, 3*time.Second)
		assert.LessOrEqual(t, held.TTL, 5*time.Second)
	}
	require.NoError(t, a.Release(ctx, lease))
}

func testExpiryTakeover(t *testing.T, newLocker NewLocker, limit int) {
	ctx := context.Background()
	key := Key(t, "k")
	first := newLocker(t)
	old, err := first.Obtain(ctx, key, 100*time.Millisecond)
	require.NoError(t, err)
	for range limit - 1 { // every slot taken, and left to expire
		_, err := first.Obtain(ctx, key, 100*time.Millisecond)
		require.NoError(t, err)
	}
	time.Sleep(150 * time.Millisecond)

	if rec, ok, err := first.Inspect(ctx, key); assert.NoError(t, err) && ok {
		assert.Equal(t, lock.Expired, rec.State)
	}

	const contenders = 8
	lockers := make([]lock.Locker, contenders)
	for i := range lockers {
		lockers[i] = newLocker(t)
	}
	var wg sync.WaitGroup
	var winners atomic.Int32
	leases := make(chan lock.Lease, contenders)
	start := make(chan struct{})
	for _, l := range lockers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			lease, err := l.Obtain(ctx, key, 10*time.Second)
			if err == nil {
				winners.Add(1)
				leases <- lease
				return
			}
			assert.ErrorIs(t, err, lock.ErrNotObtained)
		}()
	}
	close(start)
	wg.Wait()
	require.EqualValues(t, limit, winners.Load(), "exactly as many contenders as the key admits must take over")
	winner := <-leases
	assert.Greater(t, winner.Fence, old.Fence)
	for range limit - 1 {
		other := <-leases
		assert.NotEqual(t, winner.Fence, other.Fence)
		require.NoError(t, first.Release(ctx, other))
	}

	_, err = first.Refresh(ctx, old, time.Second)
	require.ErrorIs(t, err, lock.ErrNotHeld, "refresh of a taken-over lease")
	require.ErrorIs(t, first.Release(ctx, old), lock.ErrNotHeld, "late release")
	rec, ok, err := first.Inspect(ctx, key)
	require.NoError(t, err)
	require.True(t, ok, "a late release removed the next holder's lock")
	assert.Equal(t, winner.Token, rec.Token)
	assert.Equal(t, lock.Held, rec.State)
	require.NoError(t, first.Release(ctx, winner))
}

func testRefresh(t *testing.T, newLocker NewLocker) {
	l, other := newLocker(t), newLocker(t)
	ctx := context.Background()
	key := Key(t, "k")
	lease, err := l.Obtain(ctx, key, 700*time.Millisecond)
	require.NoError(t, err)
	refreshed, err := other.Refresh(ctx, lease, 3*time.Second)
	require.NoError(t, err, "any locker may refresh with the right lease")
	assert.Equal(t, lease.Token, refreshed.Token)
	assert.Equal(t, lease.Fence, refreshed.Fence, "refresh keeps the fencing token")
	assert.True(t, refreshed.ExpiresAt.After(lease.ExpiresAt))

	time.Sleep(900 * time.Millisecond)
	rec, ok, err := other.Inspect(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, lock.Held, rec.State, "refreshed lock expired at its first TTL")
	assert.Equal(t, lease.Token, rec.Token)

	forged := refreshed
	forged.Token = "lock_forged"
	_, err = l.Refresh(ctx, forged, time.Hour)
	require.ErrorIs(t, err, lock.ErrNotHeld)

	_, err = l.Refresh(ctx, refreshed, 0)
	require.ErrorIs(t, err, lock.ErrInvalidTTL)

	require.NoError(t, l.Release(ctx, refreshed))
	_, err = l.Refresh(ctx, refreshed, time.Second)
	require.ErrorIs(t, err, lock.ErrNotHeld, "refresh after release")
	_, err = l.Refresh(ctx, lock.Lease{Key: Key(t, "never"), Token: "lock_x"}, time.Second)
	require.ErrorIs(t, err, lock.ErrNotHeld, "refresh of a key never locked")
}

func testLateOrForeignRelease(t *testing.T, newLocker NewLocker) {
	a, b := newLocker(t), newLocker(t)
	ctx := context.Background()
	key := Key(t, "k")
	lease, err := a.Obtain(ctx, key, 5*time.Second)
	require.NoError(t, err)

	forged := lease
	forged.Token = "lock_someone_else"
	require.ErrorIs(t, b.Release(ctx, forged), lock.ErrNotHeld)
	rec, ok, err := b.Inspect(ctx, key)
	require.NoError(t, err)
	require.True(t, ok, "a foreign release removed the lock")
	assert.Equal(t, lease.Token, rec.Token)

	// A lease rebuilt from key and lock_id alone releases it (lockctl does).
	require.NoError(t, b.Release(ctx, lock.Lease{Key: key, Token: lease.Token}))
	require.ErrorIs(t, a.Release(ctx, lease), lock.ErrNotHeld, "double release")
	require.ErrorIs(t, a.Release(ctx, lock.Lease{Key: Key(t, "never"), Token: "lock_x"}), lock.ErrNotHeld)
}

func testContextCancelled(t *testing.T, newLocker NewLocker) {
	l := newLocker(t)
	key := Key(t, "k")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := l.Obtain(ctx, key, time.Second)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, lock.ErrNotObtained)
	_, ok, err := l.Inspect(context.Background(), key)
	require.NoError(t, err)
	assert.False(t, ok)

	lease, err := l.Obtain(context.Background(), key, time.Second)
	require.NoError(t, err)
	_, err = lock.ObtainWait(ctx, l, key, time.Second, lock.Wait{MaxWait: time.Minute})
	require.ErrorIs(t, err, context.Canceled, "a waiter must stop when its ctx ends")
	require.NoError(t, l.Release(context.Background(), lease))
}

func testFencingMonotonic(t *testing.T, newLocker NewLocker) {
	lockers := []lock.Locker{newLocker(t), newLocker(t), newLocker(t)}
	ctx := context.Background()
	key := Key(t, "k")
	var last uint64
	for i := range 30 {
		l := lockers[i%len(lockers)]
		lease, err := l.Obtain(ctx, key, time.Second)
		require.NoError(t, err)
		require.Greater(t, lease.Fence, last, "round %d", i)
		last = lease.Fence
		switch i % 3 {
		case 0:
			require.NoError(t, l.Release(ctx, lease))
		case 1:
			require.NoError(t, l.Release(ctx, lease))
			_, err := l.Cleanup(ctx)
			require.NoError(t, err)
		case 2:
			// Let it expire, then clean up before the next round.
			_, err := l.Refresh(ctx, lease, time.Millisecond)
			require.NoError(t, err)
			time.Sleep(5 * time.Millisecond)
			_, err = l.Cleanup(ctx)
			require.NoError(t, err)
		}
	}
}

// testMixedLimits: holders of one key that ask different limits (a plain
// lock is a limit of 1) exclude each other: each side is refused while the
// other holds the key, with an error naming the holders' limit, and
// fencing tokens keep increasing across them.
func testMixedLimits(t *testing.T, newLocker NewLocker) {
	l, ok := newLocker(t).(lock.Limiter)
	if !ok {
		t.Skip("the engine is not a lock.Limiter")
	}
	ctx := context.Background()
	key := Key(t, "k")
	plain, err := l.Obtain(ctx, key, time.Minute)
	require.NoError(t, err)
	_, err = l.ObtainLimit(ctx, key, 2, time.Minute)
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	assert.Equal(t, 1, held.HeldLimit)
	assert.Equal(t, plain.Token, held.Holder)
	assert.ErrorContains(t, err, "with a limit of 1: every holder of a key must ask for the same limit")
	require.NoError(t, l.Release(ctx, plain))

	slot, err := l.ObtainLimit(ctx, key, 2, time.Minute)
	require.NoError(t, err)
	assert.Greater(t, slot.Fence, plain.Fence)
	_, err = l.Obtain(ctx, key, time.Minute)
	require.ErrorAs(t, err, &held)
	assert.Equal(t, 2, held.HeldLimit)
	assert.Equal(t, slot.Token, held.Holder)
	_, err = l.ObtainLimit(ctx, key, 3, time.Minute)
	require.ErrorAs(t, err, &held)
	assert.Equal(t, 2, held.HeldLimit)
	assert.ErrorIs(t, err, lock.ErrNotObtained, "a mismatch is a refusal, not an engine failure")
	require.NoError(t, l.Release(ctx, slot))

	again, err := l.Obtain(ctx, key, time.Minute)
	require.NoError(t, err, "free once the slots are gone")
	assert.Greater(t, again.Fence, slot.Fence)
	require.NoError(t, l.Release(ctx, again))
}

func testManyGoroutines(t *testing.T, newLocker NewLocker, limit int) {
	ctx := context.Background()
	key := Key(t, "k")
	const workers, rounds = 8, 25
	var (
		inside  atomic.Int32
		most    atomic.Int32
		mu      sync.Mutex
		fences  []uint64
		wg      sync.WaitGroup
		overlap atomic.Int32
	)
	for range workers {
		l := newLocker(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				lease, err := lock.ObtainWait(ctx, l, key, 5*time.Second, lock.Wait{MaxWait: 30 * time.Second, Interval: time.Millisecond, Jitter: 0.5})
				if !assert.NoError(t, err) {
					return
				}
				n := inside.Add(1)
				if n > int32(limit) {
					overlap.Add(1)
				}
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				mu.Lock()
				fences = append(fences, lease.Fence)
				mu.Unlock()
				if limit > 1 {
					time.Sleep(time.Millisecond) // give the others a slot beside this one
				}
				inside.Add(-1)
				if !assert.NoError(t, l.Release(ctx, lease)) {
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Zero(t, overlap.Load(), "more goroutines held the key at once than it admits")
	require.Len(t, fences, workers*rounds)
	if limit == 1 {
		for i := 1; i < len(fences); i++ {
			require.Greater(t, fences[i], fences[i-1], "fencing token went backwards at %d", i)
		}
		return
	}
	assert.Greater(t, most.Load(), int32(1), "the key never had two holders at once")
	seen := map[uint64]bool{}
	for _, f := range fences {
		require.False(t, seen[f], "fencing token %d handed out twice", f)
		seen[f] = true
	}
}

func testScanCleanup(t *testing.T, newLocker NewLocker) {
	l := newLocker(t)
	ctx := context.Background()
	live, expired, released := Key(t, "live"), Key(t, "expired"), Key(t, "released")
	liveLease, err := l.Obtain(ctx, live, 10*time.Second)
	require.NoError(t, err)
	_, err = l.Obtain(ctx, expired, 20*time.Millisecond)
	require.NoError(t, err)
	rel, err := l.Obtain(ctx, released, 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, rel))
	time.Sleep(60 * time.Millisecond)

	seen := scan(t, l)
	assert.Equal(t, lock.Held, seen[live].State)
	assert.Equal(t, liveLease.Token, seen[live].Token)
	if r, ok := seen[expired]; ok {
		assert.Equal(t, lock.Expired, r.State)
	}
	if r, ok := seen[released]; ok {
		assert.Equal(t, lock.Released, r.State)
	}

	_, err = l.Cleanup(ctx)
	require.NoError(t, err)
	seen = scan(t, l)
	assert.Contains(t, seen, live, "cleanup removed a live lock")
	assert.NotContains(t, seen, expired)
	assert.NotContains(t, seen, released)
	rec, ok, err := l.Inspect(ctx, live)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, liveLease.Token, rec.Token)
	require.NoError(t, l.Release(ctx, liveLease))

	var n int
	require.NoError(t, l.Scan(ctx, func(lock.Record) bool { n++; return false }))
	assert.LessOrEqual(t, n, 1, "Scan went on after fn returned false")
}

func scan(t *testing.T, l lock.Locker) map[string]lock.Record {
	t.Helper()
	seen := map[string]lock.Record{}
	require.NoError(t, l.Scan(context.Background(), func(r lock.Record) bool {
		if strings.HasPrefix(r.Key, "locktest:"+t.Name()+":") {
			seen[r.Key] = r
		}
		return true
	}))
	return seen
}
