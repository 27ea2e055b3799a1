package filelock_test

import (
	"context"
	"io/fs"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/fsfault"
	"github.com/joblock/joblock/lock/filelock"
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
	fsfault.Fill(t, dir)
	_, err := l.Obtain(ctx, "new key", time.Second)
	requireIOError(t, err, syscall.ENOSPC, dir)
	require.False(t, strings.Contains(err.Error(), "held"))
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
