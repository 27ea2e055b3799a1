package filelock_test

import (
	"context"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/fsfault"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestReadOnlyFilesystem(t *testing.T) {
	// A read-only bind mount of a tmpfs: one path writable, one not, both
	// showing the same files.
	rw := fsfault.Tmpfs(t, "size=1m")
	ro := t.TempDir()
	require.NoError(t, unix.Mount(rw, ro, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
	writer := newLocker(t, rw)
	reader := newLocker(t, ro)
	ctx := context.Background()
	lease, err := writer.Obtain(ctx, "existing", time.Minute)
	require.NoError(t, err)
	require.NoError(t, unix.Mount("", ro, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""))

	_, err = filelock.New(ro)
	requireIOError(t, err, syscall.EROFS, ro)
	_, err = reader.Obtain(ctx, "new key", time.Second)
	requireIOError(t, err, syscall.EROFS, ro)
	_, err = reader.Obtain(ctx, "existing", time.Second)
	requireIOError(t, err, syscall.EROFS, ro)
	_, err = reader.Refresh(ctx, lease, time.Minute)
	requireIOError(t, err, syscall.EROFS, ro)
	require.ErrorIs(t, reader.Release(ctx, lease), syscall.EROFS)
	require.NoError(t, writer.Release(ctx, lease), "the lock is untouched")
}

func TestFullDisk(t *testing.T) {
	dir := fsfault.Tmpfs(t, "size=64k")
	l := newLocker(t, dir)
	ctx := context.Background()
	// Fill the filesystem, then ask for a lock on a key never seen.
	filler := fsfault.Fill(t, dir)
	_, err := l.Obtain(ctx, "new key", time.Second)
	requireIOError(t, err, syscall.ENOSPC, dir)
	require.False(t, strings.Contains(err.Error(), "held"))
	_, err = os.Lstat(lockPath(dir, "new key"))
	require.ErrorIs(t, err, fs.ErrNotExist, "a failed create left a file behind")

	// Once there is room again the key is free, to this Locker and to one
	// that never saw the failure: no "unknown" holder of an empty file.
	require.NoError(t, os.Remove(filler))
	for _, l := range []*filelock.Locker{l, newLocker(t, dir)} {
		lease, err := l.Obtain(ctx, "new key", time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, lease))
	}
}

func TestFullDiskKeepsUsedKeys(t *testing.T) {
	// A key whose file exists needs no new file: a Locker that never saw
	// it (another process) rewrites it in place on a full disk.
	dir := fsfault.Tmpfs(t, "size=64k")
	ctx := context.Background()
	first := newLocker(t, dir)
	lease, err := first.Obtain(ctx, "plain", time.Minute)
	require.NoError(t, err)
	require.NoError(t, first.Release(ctx, lease))
	fsfault.Fill(t, dir)

	l := newLocker(t, dir)
	lease, err = l.Obtain(ctx, "plain", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))
	_, err = l.Obtain(ctx, "new key", time.Second)
	requireIOError(t, err, syscall.ENOSPC, dir)
}

func TestFullDiskCannotTearARecord(t *testing.T) {
	// Slots files grow with every slot: on a full disk the slot that does
	// not fit is refused, and the file still reads whole.
	dir := fsfault.Tmpfs(t, "size=64k")
	l := newLocker(t, dir)
	ctx := context.Background()
	_, err := l.ObtainLimit(ctx, "k", 1000, time.Minute)
	require.NoError(t, err)
	fsfault.Fill(t, dir)
	taken := 1
	for ; taken < 1000; taken++ {
		if _, err = l.ObtainLimit(ctx, "k", 1000, time.Minute); err != nil {
			break
		}
	}
	requireIOError(t, err, syscall.ENOSPC, dir)
	assert.NotErrorIs(t, err, lock.ErrNotObtained)
	slots, err := l.InspectSlots(ctx, "k")
	require.NoError(t, err, "the slots file was torn")
	assert.Len(t, slots, taken)
	assert.Greater(t, taken, 2, "the file grew within its first page before the disk stopped it")
}

func TestPermissionDenied(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(t, dir)
	ctx := context.Background()
	lease, err := l.Obtain(ctx, "existing", time.Second)
	require.NoError(t, err)
	fsfault.DenyNewFiles(t, dir)

	_, err = filelock.New(dir)
	requireIOError(t, err, fs.ErrPermission, dir)
	_, err = l.Obtain(ctx, "new key", time.Second)
	requireIOError(t, err, fs.ErrPermission, dir)
	_, err = l.Refresh(ctx, lease, time.Second)
	require.NoError(t, err, "an existing lock file stays usable")
}
