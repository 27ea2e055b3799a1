package filelock_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireIOError checks that err is a real error naming path, never a
// disguised "already locked".
func requireIOError(t *testing.T, err error, target error, path string) {
	t.Helper()
	require.Error(t, err)
	assert.NotErrorIs(t, err, lock.ErrNotObtained)
	assert.ErrorIs(t, err, target)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "filelock:")
}

func TestNewRejectsUnusableDirectory(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))

	t.Run("missing parent", func(t *testing.T) {
		dir := filepath.Join(base, "missing", "locks")
		_, err := filelock.New(dir)
		requireIOError(t, err, fs.ErrNotExist, dir)
	})
	t.Run("a file where the directory should be", func(t *testing.T) {
		_, err := filelock.New(file)
		require.Error(t, err)
		assert.Contains(t, err.Error(), file)
		assert.Contains(t, err.Error(), "not a directory")
	})
	t.Run("empty path", func(t *testing.T) {
		_, err := filelock.New("")
		require.Error(t, err)
	})
	t.Run("missing directory is created", func(t *testing.T) {
		dir := filepath.Join(base, "new")
		l, err := filelock.New(dir)
		require.NoError(t, err)
		require.NoError(t, l.Close())
		assert.DirExists(t, dir)
	})
}

func TestDirectoryRemovedAfterNew(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks")
	l := newLocker(t, dir)
	require.NoError(t, os.RemoveAll(dir))
	_, err := l.Obtain(context.Background(), "k", time.Second)
	requireIOError(t, err, fs.ErrNotExist, dir)
	_, err = l.Cleanup(context.Background())
	requireIOError(t, err, fs.ErrNotExist, dir)
}
