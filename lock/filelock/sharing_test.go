package filelock_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
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
