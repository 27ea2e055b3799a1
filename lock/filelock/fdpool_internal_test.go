//go:build linux || darwin

package filelock

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func poolLocker(t *testing.T, dir string) *Locker {
	t.Helper()
	l, err := New(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func pooled(l *Locker) int {
	l.fds.mu.Lock()
	defer l.fds.mu.Unlock()
	return len(l.fds.byID)
}

// A descriptor kept in the pool whose file another process removed and
// replaced with a live lock must not be used: the Locker that pooled it
// sees the new holder.
func TestPooledDescriptorOfARemovedFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := poolLocker(t, dir), poolLocker(t, dir)
	lease, err := a.Obtain(ctx, "k", time.Minute)
	require.NoError(t, err)
	require.NoError(t, a.Release(ctx, lease))
	require.Equal(t, 1, pooled(a), "the released key's descriptor is pooled")

	removed, err := b.Cleanup(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, removed, "Cleanup removes the released lock file")
	held, err := b.Obtain(ctx, "k", time.Minute)
	require.NoError(t, err)

	_, err = a.Obtain(ctx, "k", time.Minute)
	var he *lock.HeldError
	require.ErrorAs(t, err, &he, "the pooled descriptor names the removed file, not the live lock")
	assert.Equal(t, held.Token, he.Holder)
	rec, ok, err := a.Inspect(ctx, "k")
	require.NoError(t, err)
	assert.True(t, ok && rec.Token == held.Token)
	assert.Error(t, a.Release(ctx, lease), "the old lease releases nothing")
	require.NoError(t, b.Release(ctx, held))
}

// The pool keeps at most fdPoolSize descriptors, and Close closes them.
func TestFDPoolIsBounded(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts descriptors in /proc/self/fd")
	}
	ctx := context.Background()
	l := poolLocker(t, t.TempDir())
	openFDs := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		return len(entries)
	}
	before := openFDs()
	for i := range 3 * fdPoolSize {
		lease, err := l.Obtain(ctx, "key-"+strconv.Itoa(i), time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, lease))
	}
	assert.Equal(t, fdPoolSize, pooled(l))
	assert.LessOrEqual(t, openFDs(), before+fdPoolSize)
	require.NoError(t, l.Close())
	assert.LessOrEqual(t, openFDs(), before, "Close closes the pooled descriptors")
}

// A pooled descriptor whose file was moved away from its name (mv, or a
// hard link elsewhere and the name removed) still has a link, but is no
// longer the key's lock file: the Locker that pooled it must see the file
// now at the path, and a holder whose file was moved loses its lock at its
// next renewal, as it did when every operation opened the path.
func TestPooledDescriptorOfAFileMovedAway(t *testing.T) {
	ctx := context.Background()
	moves := map[string]func(t *testing.T, path, aside string){
		"renamed": func(t *testing.T, path, aside string) {
			require.NoError(t, os.Rename(path, filepath.Join(aside, "k.lock.old")))
		},
		"linked and unlinked": func(t *testing.T, path, aside string) {
			require.NoError(t, os.Link(path, filepath.Join(aside, "k.lock.bak")))
			require.NoError(t, os.Remove(path))
		},
	}
	for name, move := range moves {
		t.Run(name+"/released", func(t *testing.T) {
			dir, aside := t.TempDir(), t.TempDir()
			a, b := poolLocker(t, dir), poolLocker(t, dir)
			lease, err := a.Obtain(ctx, "k", time.Minute)
			require.NoError(t, err)
			require.NoError(t, a.Release(ctx, lease))
			require.Equal(t, 1, pooled(a))
			move(t, filepath.Join(dir, idOf("k").name()), aside)
			held, err := b.Obtain(ctx, "k", time.Minute)
			require.NoError(t, err, "b creates a new file at the path")
			_, err = a.Obtain(ctx, "k", time.Minute)
			var he *lock.HeldError
			require.ErrorAs(t, err, &he, "a must see b's live lock")
			assert.Equal(t, held.Token, he.Holder)
		})
		t.Run(name+"/held", func(t *testing.T) {
			dir, aside := t.TempDir(), t.TempDir()
			a, b := poolLocker(t, dir), poolLocker(t, dir)
			lease, err := a.Obtain(ctx, "k", time.Minute)
			require.NoError(t, err)
			move(t, filepath.Join(dir, idOf("k").name()), aside)
			_, err = b.Obtain(ctx, "k", time.Minute)
			require.NoError(t, err)
			_, err = a.Refresh(ctx, lease, time.Minute)
			require.ErrorIs(t, err, lock.ErrNotHeld, "renewal of a lock whose file is no longer at the path")
		})
	}
}
