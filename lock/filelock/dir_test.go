package filelock_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nobody is a uid no test process runs as.
const nobody = 65534

// chownToNobody gives path to another user, or skips the test where this
// process may not (only root may give files away).
func chownToNobody(t *testing.T, path string) {
	t.Helper()
	if err := os.Lchown(path, nobody, nobody); err != nil {
		t.Skipf("cannot give %s to another user here (%v): the ownership checks need root", path, err)
	}
}

func TestNewChecksWhoCanChangeTheDirectory(t *testing.T) {
	// This process's effective group is the one a shared directory must
	// belong to; "group" below is that group, "nogroup" another.
	group := os.Getegid()
	tests := []struct {
		name       string
		mode       os.FileMode
		uid, gid   int // -1: this process's
		viaSymlink bool
		wantErr    string // private (default); "" for accepted
		sharedErr  string // with WithSharedGroup
	}{
		{"private", 0o700, -1, -1, false, "", "has no setgid bit"},
		{"readable by all", 0o755, -1, -1, false, "", "has no setgid bit"},
		{"sticky and writable by all, like /tmp", os.ModeSticky | 0o777, -1, -1, false,
			"is writable by every user (mode 1777)", "is writable by every user (mode 1777)"},
		{"writable by all", 0o777, -1, -1, false, "is writable by every user (mode 0777)", "is writable by every user (mode 0777)"},
		{"writable by its group", 0o770, -1, -1, false, "is writable by its group (mode 0770)", "has no setgid bit"},
		{"a group's, setgid", os.ModeSetgid | 0o770, -1, -1, false, "is writable by its group (mode 2770)", ""},
		{"another user's", 0o700, nobody, nobody, false, "is owned by uid 65534, not by this process's user", "belongs to group 65534, not to this process's effective group"},
		{"another member's, setgid", os.ModeSetgid | 0o770, nobody, group, false, "is owned by uid 65534", ""},
		{"another user's, sticky and writable by all: a squatter", os.ModeSticky | 0o777, nobody, nobody, false,
			"is owned by uid 65534", "is writable by every user (mode 1777)"},
		{"another group's, setgid and sticky", os.ModeSetgid | os.ModeSticky | 0o770, nobody, nobody, false,
			"is owned by uid 65534", "belongs to group 65534"},
		{"symlink to one's own", 0o700, -1, -1, true, "is a symlink", "is a symlink"},
		{"symlink to another user's", 0o777, nobody, nobody, true, "is a symlink", "is a symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "locks")
			require.NoError(t, os.Mkdir(dir, 0o700))
			if tt.uid >= 0 || tt.gid >= 0 {
				if err := os.Lchown(dir, tt.uid, tt.gid); err != nil {
					t.Skipf("cannot give %s to another user here (%v): the ownership checks need root", dir, err)
				}
			}
			require.NoError(t, os.Chmod(dir, tt.mode))
			path := dir
			if tt.viaSymlink {
				path = filepath.Join(t.TempDir(), "link")
				require.NoError(t, os.Symlink(dir, path))
			}
			for _, c := range []struct {
				opts    []filelock.Option
				wantErr string
			}{{nil, tt.wantErr}, {[]filelock.Option{filelock.WithSharedGroup()}, tt.sharedErr}} {
				l, err := filelock.New(path, c.opts...)
				if c.wantErr == "" {
					require.NoError(t, err, "shared: %t", len(c.opts) > 0)
					require.NoError(t, l.Close())
					continue
				}
				require.ErrorIs(t, err, filelock.ErrUnsafeDir, "shared: %t", len(c.opts) > 0)
				assert.Contains(t, err.Error(), path)
				assert.Contains(t, err.Error(), c.wantErr)
			}
		})
	}
}

func TestSquattedDirectoryErrorSaysWhatToDo(t *testing.T) {
	// Another user made the directory first: the fix is to remove it or
	// use another, never to share it with them.
	dir := filepath.Join(t.TempDir(), "locks")
	require.NoError(t, os.Mkdir(dir, 0o700))
	chownToNobody(t, dir)
	_, err := filelock.New(dir)
	require.ErrorIs(t, err, filelock.ErrUnsafeDir)
	assert.Contains(t, err.Error(), "remove it if nothing of theirs uses it, or use another directory")
	assert.NotContains(t, err.Error(), "WithSharedGroup")
}

func TestSymlinkSwappedInAfterNewIsNotFollowed(t *testing.T) {
	// New opened the directory; someone then moves it away and puts a
	// symlink to a directory of their choosing at its path. The Locker
	// never follows it.
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "locks")
	l := newLocker(t, dir)
	moved := filepath.Join(base, "moved")
	require.NoError(t, os.Rename(dir, moved))
	elsewhere := t.TempDir()
	require.NoError(t, os.Symlink(elsewhere, dir))

	// It refuses, rather than lock in a directory nobody else sees now.
	_, err := l.Obtain(ctx, "k", time.Minute)
	require.ErrorIs(t, err, filelock.ErrDirMoved)
	assert.NoFileExists(t, lockPath(elsewhere, "k"), "the lock file followed the symlink")
	assert.NoFileExists(t, lockPath(moved, "k"))
}

func TestSharedDirectoryFilesGetTheSharedMode(t *testing.T) {
	// A lock file an older version left 0644 in a shared directory is made
	// 0660 on its next use; in a private one, 0600.
	ctx := context.Background()
	tests := []struct {
		name string
		opts []filelock.Option
		mode os.FileMode // of the directory
		want os.FileMode
	}{
		{"private", nil, 0o700, 0o600},
		{"shared", []filelock.Option{filelock.WithSharedGroup()}, os.ModeSetgid | 0o770, 0o660},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.Chmod(dir, tt.mode))
			l := newLocker(t, dir, tt.opts...)
			lease, err := l.Obtain(ctx, "k", time.Minute)
			require.NoError(t, err)
			require.NoError(t, os.Chmod(lockPath(dir, "k"), 0o644))
			require.NoError(t, l.Release(ctx, lease))
			st, err := os.Stat(lockPath(dir, "k"))
			require.NoError(t, err)
			assert.Equal(t, tt.want, st.Mode())
		})
	}
}

func TestUnsafeDirectoryErrorSaysHowToFixIt(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o777))
	_, err := filelock.New(dir)
	require.ErrorIs(t, err, filelock.ErrUnsafeDir)
	assert.Contains(t, err.Error(), "chmod 0700 "+dir)
}

func TestNewCreatesAPrivateDirectory(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	ctx := context.Background()
	tests := []struct {
		name     string
		opts     []filelock.Option
		wantDir  os.FileMode
		wantFile os.FileMode
	}{
		{"private", nil, os.ModeDir | 0o700, 0o600},
		{"shared group", []filelock.Option{filelock.WithSharedGroup()}, os.ModeDir | os.ModeSetgid | 0o770, 0o660},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "locks")
			l := newLocker(t, dir, tt.opts...)
			lease, err := l.Obtain(ctx, "k", time.Second)
			require.NoError(t, err)
			st, err := os.Stat(dir)
			require.NoError(t, err)
			assert.Equal(t, tt.wantDir, st.Mode())
			for _, f := range []string{lockPath(dir, "k"), filepath.Join(dir, ".fence")} {
				st, err := os.Stat(f)
				require.NoError(t, err)
				assert.Equal(t, tt.wantFile, st.Mode(), f)
			}
			require.NoError(t, l.Release(ctx, lease))
		})
	}
}

func TestLockFileOfAnotherUser(t *testing.T) {
	// A lock file of another user (planted by root) is never used in a
	// private directory: counted as skipped, and left alone. In a shared
	// directory files of any member are used.
	ctx := context.Background()
	dir := t.TempDir()
	planted := lockPath(dir, "k")
	require.NoError(t, os.WriteFile(planted, []byte(`{"lock_id":"lock_theirs","key":"k","expires_at":1,"acquired_at":1,"pid":1}`), 0o600))
	chownToNobody(t, planted)
	l := newLocker(t, dir)

	_, err := l.Obtain(ctx, "k", time.Second)
	require.ErrorIs(t, err, filelock.ErrNotLockFile)
	assert.Contains(t, err.Error(), "owned by uid 65534")
	requireSkippedAndKept(t, l, planted)

	require.NoError(t, os.Chmod(dir, os.ModeSetgid|0o770))
	shared := newLocker(t, dir, filelock.WithSharedGroup())
	lease, err := shared.Obtain(ctx, "k", time.Second)
	require.NoError(t, err, "a shared directory's files may belong to any member")
	require.NoError(t, shared.Release(ctx, lease))
}

// TestDirectoryRenamedAway: a Locker works through the directory it
// opened, so once the directory is renamed away, processes started since
// lock in a new directory at the path; the old Locker must then neither
// renew its leases (they are lost) nor grant new ones.
func TestDirectoryRenamedAway(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "locks")
	old, err := filelock.New(dir)
	require.NoError(t, err)
	defer old.Close()
	lease, err := old.Obtain(ctx, "report", time.Minute)
	require.NoError(t, err)

	require.NoError(t, os.Rename(dir, dir+".old"))
	fresh, err := filelock.New(dir)
	require.NoError(t, err)
	defer fresh.Close()
	_, err = fresh.Obtain(ctx, "report", time.Minute)
	require.NoError(t, err, "a process started since sees an empty directory")

	_, err = old.Refresh(ctx, lease, time.Minute)
	require.ErrorIs(t, err, lock.ErrNotHeld)
	require.ErrorIs(t, err, filelock.ErrDirMoved)
	require.ErrorContains(t, err, dir+" is no longer the directory this process opened")
	time.Sleep(20 * time.Millisecond) // past the Obtain check's reuse
	_, err = old.Obtain(ctx, "other", time.Minute)
	require.ErrorIs(t, err, filelock.ErrDirMoved)
	_, err = old.ObtainLimit(ctx, "pool", 2, time.Minute)
	require.ErrorIs(t, err, filelock.ErrDirMoved)
}
