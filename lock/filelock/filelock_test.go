package filelock_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a host whose wall clock can be stepped apart from its boot
// clock.
type fakeClock struct {
	mu     sync.Mutex
	wall   time.Time
	boot   time.Duration
	bootID string
}

func newFakeClock(bootID string) *fakeClock {
	return &fakeClock{wall: time.Now(), boot: time.Hour, bootID: bootID}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *fakeClock) Boot() (string, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bootID, c.boot
}

// advance moves real time forward: both clocks.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.wall = c.wall.Add(d)
	c.boot += d
	c.mu.Unlock()
}

// step moves only the wall clock, as an NTP step or an operator would.
func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	c.wall = c.wall.Add(d)
	c.mu.Unlock()
}

func lockPath(dir, key string) string {
	sum := md5.Sum([]byte(key))
	return filepath.Join(dir, hex.EncodeToString(sum[:])+".lock")
}

func TestWallClockStepDoesNotMoveExpiry(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	a := newLocker(t, dir, filelock.WithClock(clk))
	b := newLocker(t, dir, filelock.WithClock(clk))

	lease, err := a.Obtain(ctx, "job", 10*time.Second)
	require.NoError(t, err)

	clk.step(time.Hour)
	_, err = b.Obtain(ctx, "job", time.Second)
	require.ErrorIs(t, err, lock.ErrNotObtained, "a forward wall-clock step freed a live lock")

	clk.step(-2 * time.Hour)
	clk.advance(11 * time.Second)
	next, err := b.Obtain(ctx, "job", time.Second)
	require.NoError(t, err, "a backward wall-clock step kept an expired lock held")
	assert.Greater(t, next.Fence, lease.Fence)
	require.ErrorIs(t, a.Release(ctx, lease), lock.ErrNotHeld)
}

func TestOtherBootJudgedByWallClock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	before := newFakeClock("boot-a")
	after := newFakeClock("boot-b") // same host after a reboot: boot clock restarted
	after.boot = time.Second
	_, err := newLocker(t, dir, filelock.WithClock(before)).Obtain(ctx, "job", 10*time.Second)
	require.NoError(t, err)

	l := newLocker(t, dir, filelock.WithClock(after))
	_, err = l.Obtain(ctx, "job", time.Second)
	require.ErrorIs(t, err, lock.ErrNotObtained, "record from another boot still has 10s by the wall clock")
	after.advance(11 * time.Second)
	_, err = l.Obtain(ctx, "job", time.Second)
	require.NoError(t, err)
}

func TestFileFormat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := newLocker(t, dir)
	key := `https://example.com/product?id=123&"x"`
	lease, err := l.Obtain(ctx, key, 30*time.Second)
	require.NoError(t, err)

	raw, err := os.ReadFile(lockPath(dir, key))
	require.NoError(t, err, "lock file must be named md5(key).lock")
	var rec map[string]any
	require.NoError(t, json.Unmarshal(raw, &rec), "lock file must be JSON: %s", raw)
	assert.Equal(t, lease.Token, rec["lock_id"])
	assert.Equal(t, key, rec["key"])
	assert.InDelta(t, time.Now().Add(30*time.Second).Unix(), rec["expires_at"], 2)
	assert.InDelta(t, time.Now().Unix(), rec["acquired_at"], 2)
	assert.EqualValues(t, os.Getpid(), rec["pid"])
	assert.EqualValues(t, lease.Fence, rec["fence"])
	assert.Equal(t, "held", rec["state"])

	require.NoError(t, l.Release(ctx, lease))
	raw, err = os.ReadFile(lockPath(dir, key))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &rec), "released file must stay valid JSON: %q", raw)
	assert.Equal(t, "released", rec["state"])
	assert.LessOrEqual(t, rec["expires_at"], float64(time.Now().Unix()), "a released lock must look expired to the PHP implementation")

	// process() reports the expiry the file holds, rounded up like it.
	res := lock.NewManager(l).Process(ctx, lock.Request{Key: key, Action: lock.ActionAcquire})
	require.True(t, res.Locked, res.Error)
	raw, err = os.ReadFile(lockPath(dir, key))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &rec))
	assert.EqualValues(t, rec["expires_at"], *res.ExpiresAt)
	assert.EqualValues(t, (int64(rec["expires_at_ms"].(float64))+999)/1000, *res.ExpiresAt)
}

func TestPHPWrittenFile(t *testing.T) {
	// Files as the PHP LockManager writes them: json_encode's output, which
	// escapes "/" and non-ASCII characters, with the spec's five fields.
	ctx := context.Background()
	now := time.Now().Unix()
	tests := []struct {
		name      string
		key       string
		body      string
		wantHeld  bool
		wantOwner string
		wantPID   int
	}{
		{"live", "php-live", fmt.Sprintf(`{"lock_id":"lock_abc123_12345","key":"php-live","expires_at":%d,"acquired_at":%d,"pid":12345}`, now+60, now), true, "lock_abc123_12345", 12345},
		{"live, escaped by json_encode", "https://example.com/ü",
			fmt.Sprintf(`{"lock_id":"lock_abc123_12345","key":"https:\/\/example.com\/\u00fc","expires_at":%d,"acquired_at":%d,"pid":12345}`, now+60, now), true, "lock_abc123_12345", 12345},
		{"expired", "php-expired", fmt.Sprintf(`{"lock_id":"lock_xyz789_67890","key":"php-expired","expires_at":%d,"acquired_at":%d,"pid":67890}`, now-60, now-90), false, "", 67890},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := newLocker(t, dir)
			require.NoError(t, os.WriteFile(lockPath(dir, tt.key), []byte(tt.body), 0o600))

			rec, ok, err := l.Inspect(ctx, tt.key)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, tt.key, rec.Key)
			assert.Equal(t, tt.wantPID, rec.PID)
			lease, err := l.Obtain(ctx, tt.key, time.Second)
			if tt.wantHeld {
				var held *lock.HeldError
				require.ErrorAs(t, err, &held)
				assert.Equal(t, tt.wantOwner, held.Holder)
				assert.Equal(t, lock.Held, rec.State)
				return
			}
			require.NoError(t, err, "an expired PHP lock is taken over")
			assert.NotZero(t, lease.Fence)
			assert.Equal(t, lock.Expired, rec.State)
		})
	}
}

func TestMD5CollisionContends(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := newLocker(t, dir)
	// Plant another key's live record in "mine"'s file, as an md5
	// collision would.
	other, err := l.Obtain(ctx, "other", time.Minute)
	require.NoError(t, err)
	raw, err := os.ReadFile(lockPath(dir, "other"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(lockPath(dir, "mine"), raw, 0o644))

	_, err = l.Obtain(ctx, "mine", time.Second)
	require.ErrorIs(t, err, lock.ErrNotObtained, "a colliding key must contend, never share")
	// The planted record's holder cannot release or refresh "mine".
	require.ErrorIs(t, l.Release(ctx, lock.Lease{Key: "mine", Token: other.Token}), lock.ErrNotHeld)
}

func TestUnreadableFileGrace(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		give string
	}{
		{"empty", ""},
		{"half written", `{"lock_id":"lock_x","ke`},
		{"not a lock", `{"hello":"world"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newFakeClock("boot-a")
			l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCorruptGrace(2*time.Second))
			require.NoError(t, os.WriteFile(lockPath(dir, "k"), []byte(tt.give), 0o644))

			_, err := l.Obtain(ctx, "k", time.Second)
			require.ErrorIs(t, err, lock.ErrNotObtained, "an unreadable file may be mid-write: held for the grace")
			locked, err := lock.NewManager(l).IsLocked(ctx, "k")
			require.NoError(t, err)
			assert.True(t, locked)
			n, err := l.Cleanup(ctx)
			require.NoError(t, err)
			assert.Zero(t, n, "cleanup removed a file within its grace")

			clk.advance(3 * time.Second)
			lease, err := l.Obtain(ctx, "k", time.Second)
			require.NoError(t, err, "an unreadable file past its grace counts as expired")
			assert.NotZero(t, lease.Fence)
		})
	}
}

func TestUnreadableFileCleanedAfterGrace(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCorruptGrace(time.Second))
	require.NoError(t, os.WriteFile(lockPath(dir, "k"), []byte("garbage"), 0o644))
	clk.advance(2 * time.Second)
	n, err := l.Cleanup(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.NoFileExists(t, lockPath(dir, "k"))
}

func TestHotKeyKeepsItsInode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := newLocker(t, dir)
	inode := func() uint64 {
		st, err := os.Stat(lockPath(dir, "hot"))
		require.NoError(t, err)
		return st.Sys().(*syscall.Stat_t).Ino
	}
	lease, err := l.Obtain(ctx, "hot", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))
	first := inode()
	for range 200 {
		lease, err := l.Obtain(ctx, "hot", time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, lease))
	}
	assert.Equal(t, first, inode(), "a reused key must rewrite its file in place")
	// A second process-like Locker with its own descriptors agrees.
	other := newLocker(t, dir)
	lease, err = other.Obtain(ctx, "hot", time.Second)
	require.NoError(t, err)
	require.NoError(t, other.Release(ctx, lease))
	assert.Equal(t, first, inode())
}

func TestCleanupAge(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCleanupAge(time.Minute))
	lease, err := l.Obtain(ctx, "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))
	n, err := l.Cleanup(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "released less than the cleanup age ago")
	clk.advance(2 * time.Minute)
	n, err = l.Cleanup(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	next, err := l.Obtain(ctx, "k", time.Second)
	require.NoError(t, err)
	assert.Greater(t, next.Fence, lease.Fence, "fencing must go on above a removed file's token")
}

func TestCleanupRacesWithObtain(t *testing.T) {
	// Cleanup removes files while other lockers obtain and release the same
	// keys: no obtain may fail with an error and no live lock may vanish.
	ctx := context.Background()
	dir := t.TempDir()
	keys := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	var obtained atomic.Int64
	stop := make(chan struct{})
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i := range 4 {
		l := newLocker(t, dir)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last = map[string]uint64{}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[(n+i)%len(keys)]
				lease, err := l.Obtain(ctx, key, time.Second)
				if err != nil {
					assert.ErrorIs(t, err, lock.ErrNotObtained)
					continue
				}
				obtained.Add(1)
				assert.Greater(t, lease.Fence, last[key])
				last[key] = lease.Fence
				rec, ok, err := l.Inspect(ctx, key)
				assert.NoError(t, err)
				assert.True(t, ok && rec.Token == lease.Token, "live lock vanished")
				assert.NoError(t, l.Release(ctx, lease))
			}
		}()
	}
	cl := newLocker(t, dir)
	// Run Cleanup until it has removed files behind the obtainers' backs a
	// few times and they went on obtaining after that: on a busy machine
	// the goroutines may not have started by the time a fixed number of
	// Cleanup calls is over. The deadline only ends a run that cannot make
	// progress; it asserts nothing about speed.
	removed := 0
	deadline := time.Now().Add(time.Minute)
	for removed < 20 || obtained.Load() < 400 {
		require.True(t, time.Now().Before(deadline),
			"no progress in a minute: cleanup removed %d, %d obtains", removed, obtained.Load())
		n, err := cl.Cleanup(ctx)
		require.NoError(t, err)
		removed += n
		if n == 0 {
			runtime.Gosched()
		}
	}
}
