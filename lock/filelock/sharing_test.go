package filelock_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestManyGoroutinesNewKeysOneLocker(t *testing.T) {
	// Goroutines sharing one Locker each obtain keys nobody else ever
	// uses: every single obtain must succeed.
	const goroutines, perGoroutine = 8, 400
	ctx := context.Background()
	l := newLocker(t, t.TempDir())
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perGoroutine)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perGoroutine {
				key := fmt.Sprintf("g%d-key%d", g, i)
				lease, err := l.Obtain(ctx, key, time.Minute)
				if err != nil {
					errs <- fmt.Errorf("obtain %s: %w", key, err)
					continue
				}
				if i%2 == 0 {
					if err := l.Release(ctx, lease); err != nil {
						errs <- fmt.Errorf("release %s: %w", key, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	assert.Empty(t, failed, "%d of %d operations on free keys failed", len(failed), goroutines*perGoroutine)
}

func TestLockFileRemovedUnderLongLivedLocker(t *testing.T) {
	// An operator (or another implementation) deletes a live lock file. A
	// Locker that used the key before must see what a fresh one sees: no
	// lock.
	ctx := context.Background()
	dir := t.TempDir()
	long := newLocker(t, dir)
	old, err := long.Obtain(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.NoError(t, os.Remove(lockPath(dir, "k")))

	_, ok, err := newLocker(t, dir).Inspect(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok, "Inspect on a fresh Locker")
	// Obtain first: any other operation on the key could hide the defect.
	lease, err := long.Obtain(ctx, "k", time.Minute)
	require.NoError(t, err, "the long-lived Locker still reports the deleted lock as held")
	assert.NotEqual(t, old.Token, lease.Token)
	locked, err := lock.NewManager(long).IsLocked(ctx, "k")
	require.NoError(t, err)
	assert.True(t, locked, "IsLocked on the long-lived Locker sees its new lock")
	require.ErrorIs(t, long.Release(ctx, old), lock.ErrNotHeld, "the deleted lease must not release the new one")
	require.NoError(t, long.Release(ctx, lease))
}

func TestRacingFirstObtainsNameTheRealHolder(t *testing.T) {
	// Four Lockers (as four processes would) race for keys nobody used
	// before: each round exactly one wins, and the others are refused
	// naming the winner, never an "unknown" holder of a half-made file.
	const lockers, rounds = 4, 300
	ctx := context.Background()
	dir := t.TempDir()
	ls := make([]*filelock.Locker, lockers)
	for i := range ls {
		ls[i] = newLocker(t, dir)
	}
	for r := range rounds {
		key := fmt.Sprintf("first-%d", r)
		leases := make([]lock.Lease, lockers)
		errs := make([]error, lockers)
		var wg sync.WaitGroup
		for i, l := range ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				leases[i], errs[i] = l.Obtain(ctx, key, time.Minute)
			}()
		}
		wg.Wait()
		var winner string
		for i, err := range errs {
			if err == nil {
				require.Empty(t, winner, "round %d: two holders", r)
				winner = leases[i].Token
			}
		}
		require.NotEmpty(t, winner, "round %d: nobody won", r)
		for _, err := range errs {
			if err != nil {
				var held *lock.HeldError
				require.ErrorAs(t, err, &held, "round %d", r)
				require.Equal(t, winner, held.Holder, "round %d", r)
			}
		}
	}
}
