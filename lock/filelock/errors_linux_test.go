package filelock_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// denyWrites makes dir refuse new files: by mode bits for an ordinary user,
// and with the immutable attribute for root, whom mode bits do not stop.
func denyWrites(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		require.NoError(t, os.Chmod(dir, 0o555))
		t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
		return
	}
	out, err := exec.Command("chattr", "+i", dir).CombinedOutput()
	if err != nil {
		t.Skipf("running as root and chattr +i is unavailable here (%v: %s)", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })
}

// mountTmpfs mounts a small tmpfs at a new directory, or skips the test
// where this process may not mount.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func TestReadOnlyFilesystem(t *testing.T) {
	// A read-only bind mount of a tmpfs: one path writable, one not, both
	// showing the same files.
	rw := mountTmpfs(t, "size=1m")
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
	dir := mountTmpfs(t, "size=64k")
	l := newLocker(t, dir)
	ctx := context.Background()
	// Fill the filesystem, then ask for a lock on a key never seen.
	f, err := os.Create(dir + "/filler")
	require.NoError(t, err)
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	require.NoError(t, f.Close())
	_, err = l.Obtain(ctx, "new key", time.Second)
	requireIOError(t, err, syscall.ENOSPC, dir)
	require.False(t, strings.Contains(err.Error(), "held"))
}
