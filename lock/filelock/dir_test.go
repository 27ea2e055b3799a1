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
	tests := []struct {
		name       string
		mode       os.FileMode
		otherOwner bool
		viaSymlink bool
		wantErr    string // private (default); "" for accepted
		sharedErr  string // with WithSharedGroup
	}{
		{"private", 0o700, false, false, "", ""},
		{"readable by all", 0o755, false, false, "", ""},
		{"sticky and writable by all, like /tmp", os.ModeSticky | 0o777, false, false, "", ""},
		{"writable by all", 0o777, false, false, "is writable by every user (mode 0777) and has no sticky bit", "is writable by every user (mode 0777)"},
		{"writable by its group", 0o770, false, false, "is writable by its group (mode 0770)", ""},
		{"another user's", 0o700, true, false, "is owned by uid 65534, not by this process's user", ""},
		{"another user's, writable by all", 0o777, true, false, "is owned by uid 65534", "is writable by every user"},
		{"symlink to another user's", 0o777, true, true, "is owned by uid 65534", "is writable by every user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "locks")
			require.NoError(t, os.Mkdir(dir, 0o700))
			require.NoError(t, os.Chmod(dir, tt.mode))
			if tt.otherOwner {
				chownToNobody(t, dir)
			}
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

func TestLockFileOfAnotherUserInASharedStickyDirectory(t *testing.T) {
	// A sticky directory writable by all (like /tmp) is accepted, but
	// another user may plant files in it: a lock file of another user is
	// never used, counted as skipped, and left alone.
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, os.ModeSticky|0o777))
	planted := lockPath(dir, "k")
	require.NoError(t, os.WriteFile(planted, []byte(`{"lock_id":"lock_theirs","key":"k","expires_at":1,"acquired_at":1,"pid":1}`), 0o600))
	chownToNobody(t, planted)
	l := newLocker(t, dir)

	_, err := l.Obtain(ctx, "k", time.Second)
	require.ErrorIs(t, err, filelock.ErrNotLockFile)
	assert.Contains(t, err.Error(), "owned by uid 65534")
	stats, err := lock.NewManager(l).GetStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, lock.Stats{SkippedEntries: 1}, stats)
	n, err := l.Cleanup(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.FileExists(t, planted)

	shared := newLocker(t, dir, filelock.WithSharedGroup())
	lease, err := shared.Obtain(ctx, "k", time.Second)
	require.NoError(t, err, "a shared directory's files may belong to any member")
	require.NoError(t, shared.Release(ctx, lease))
}
