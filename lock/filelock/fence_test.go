package filelock_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFencingTokensNeverWrap(t *testing.T) {
	ctx := context.Background()
	expired := func(fence uint64) string {
		return fmt.Sprintf(`{"lock_id":"lock_forged","key":"k","expires_at":%d,"acquired_at":1,"pid":1,"fence":%d}`,
			time.Now().Add(-time.Minute).Unix(), fence)
	}
	const maxFence = 1 << 53
	tests := []struct {
		name      string
		lockFile  string // "" for none
		floor     string // "" to leave the floor alone
		wantFence uint64 // 0: refused with ErrFenceExhausted
		wantFrom  string // the file the refusal names
	}{
		{"the largest token there is: forged, not believed", expired(math.MaxUint64), "", 1, ""},
		{"just over 2^53: forged, not believed", expired(maxFence + 1), "", 1, ""},
		{"a floor at the largest token: forged, not believed", "", "18446744073709551615\n", 1, ""},
		{"2^53, the last this engine hands out: refused", expired(maxFence), "", 0, ".lock"},
		{"one below 2^53 still works, once", expired(maxFence - 1), "", maxFence, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newFakeClock("boot-a")
			l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCorruptGrace(time.Second))
			path := lockPath(dir, "k")
			if tt.lockFile != "" {
				require.NoError(t, os.WriteFile(path, []byte(tt.lockFile), 0o600))
			}
			if tt.floor != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, ".fence"), []byte(tt.floor), 0o600))
			}
			before, _ := os.ReadFile(path)

			lease, err := l.Obtain(ctx, "k", time.Minute)
			switch {
			case tt.wantFence == maxFence:
				require.NoError(t, err)
				assert.Equal(t, tt.wantFence, lease.Fence)
				require.NoError(t, l.Release(ctx, lease))
				_, err = l.Obtain(ctx, "k", time.Minute)
				require.ErrorIs(t, err, filelock.ErrFenceExhausted, "the token after the largest must be refused, not wrapped")
			case tt.wantFence != 0:
				if tt.lockFile != "" {
					// A forged record counts as corrupt: held for the grace.
					require.ErrorIs(t, err, lock.ErrNotObtained)
					clk.advance(2 * time.Second)
					lease, err = l.Obtain(ctx, "k", time.Minute)
				}
				require.NoError(t, err)
				assert.LessOrEqual(t, lease.Fence, uint64(maxFence), "a forged token was folded into a new one")
				assert.GreaterOrEqual(t, lease.Fence, uint64(clk.Now().UnixMicro()), "tokens start above the wall clock")
			default:
				require.ErrorIs(t, err, filelock.ErrFenceExhausted)
				assert.NotErrorIs(t, err, lock.ErrNotObtained)
				assert.Contains(t, err.Error(), "9007199254740992")
				assert.Contains(t, err.Error(), tt.wantFrom)
				after, _ := os.ReadFile(path)
				assert.Equal(t, string(before), string(after), "a refused obtain writes nothing")
			}
		})
	}
}

func TestFencesStartAtTheWallClockInALostDirectory(t *testing.T) {
	// A tmpfs lock directory is gone after a reboot: its tokens restart,
	// from the wall clock in microseconds, above the old ones.
	ctx := context.Background()
	dir := t.TempDir()
	l := newLocker(t, dir)
	var old uint64
	for range 3 {
		lease, err := l.Obtain(ctx, "k", time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, lease))
		old = lease.Fence
	}
	require.NoError(t, os.RemoveAll(dir))
	lease, err := newLocker(t, dir).Obtain(ctx, "k", time.Minute)
	require.NoError(t, err)
	assert.Greater(t, lease.Fence, old)
}

func TestRecordExpiringBeyondMaxTTLIsForged(t *testing.T) {
	// A record that expires a hundred years from now was not written with
	// any TTL: it counts as corrupt, held for the grace only.
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCorruptGrace(time.Second))
	far := time.Now().AddDate(100, 0, 0)
	body := fmt.Sprintf(`{"lock_id":"lock_forever","key":"k","expires_at":%d,"acquired_at":1,"pid":1}`, far.Unix())
	require.NoError(t, os.WriteFile(lockPath(dir, "k"), []byte(body), 0o600))

	_, err := l.Obtain(ctx, "k", time.Minute)
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	assert.NotEqual(t, "lock_forever", held.Holder)
	assert.LessOrEqual(t, held.TTL, time.Second)
	clk.advance(2 * time.Second)
	_, err = l.Obtain(ctx, "k", time.Minute)
	require.NoError(t, err, "a forged record past the grace counts as expired")
}

func TestUppercaseLockFileNamesAreNotHonoured(t *testing.T) {
	// This engine names files in lowercase hex. A live record under the
	// uppercase name of a key is not that key's lock: Scan skips and
	// counts it, Cleanup leaves it, and the key is free.
	ctx := context.Background()
	dir := t.TempDir()
	l := newLocker(t, dir)
	upper := filepath.Join(dir, strings.ToUpper(strings.TrimSuffix(filepath.Base(lockPath(dir, "k")), ".lock"))+".lock")
	body := fmt.Sprintf(`{"lock_id":"lock_upper","key":"k","expires_at":%d,"acquired_at":1,"pid":1}`, time.Now().Add(time.Hour).Unix())
	require.NoError(t, os.WriteFile(upper, []byte(body), 0o600))

	requireSkippedAndKept(t, l, upper)
	lease, err := l.Obtain(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))
}

func TestCachedFloorNeverReusesARemovedToken(t *testing.T) {
	// Locker a has just read the floor (it keeps the reading for a few
	// milliseconds). Then b's Cleanup removes an expired record of key k
	// with a token far above that reading and a's wall clock. a's next
	// obtain of k, a new file now, must still get a token above the
	// removed one: Cleanup waits until no cached reading from before its
	// raise of the floor can be used.
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	a := newLocker(t, dir, filelock.WithClock(clk))
	b := newLocker(t, dir, filelock.WithClock(clk))
	for range 20 {
		_, err := a.Obtain(ctx, "warm-"+strconv.Itoa(int(clk.Now().UnixNano())), time.Minute)
		require.NoError(t, err)
		removed := uint64(clk.Now().Add(time.Hour).UnixMicro())
		body := fmt.Sprintf(`{"lock_id":"lock_old","key":"k","expires_at":1,"acquired_at":1,"pid":1,"fence":%d}`, removed)
		require.NoError(t, os.WriteFile(lockPath(dir, "k"), []byte(body), 0o600))
		n, err := b.Cleanup(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)

		lease, err := a.Obtain(ctx, "k", time.Minute)
		require.NoError(t, err)
		require.Greater(t, lease.Fence, removed, "a token of the removed record was handed out again")
		require.NoError(t, a.Release(ctx, lease))
		clk.advance(2 * time.Hour)
		_, err = b.Cleanup(ctx)
		require.NoError(t, err)
	}
}
