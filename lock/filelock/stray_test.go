package filelock_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// plant puts something that is not a lock file where key's lock file goes.
type plant struct {
	key  string
	what string // what the error and the Skipped record say it is
	make func(t *testing.T, path string)
}

var plants = []plant{
	{"stray-symlink", "a symlink", func(t *testing.T, path string) {
		target := filepath.Join(t.TempDir(), "elsewhere.lock")
		require.NoError(t, os.WriteFile(target, []byte(`{"lock_id":"lock_x","key":"stray-symlink","expires_at":1}`), 0o600))
		require.NoError(t, os.Symlink(target, path))
	}},
	{"stray-dangling-symlink", "a symlink", func(t *testing.T, path string) {
		require.NoError(t, os.Symlink("/nonexistent/x.lock", path))
	}},
	{"stray-directory", "a directory", func(t *testing.T, path string) {
		require.NoError(t, os.Mkdir(path, 0o700))
	}},
	{"stray-fifo", "a fifo", func(t *testing.T, path string) {
		require.NoError(t, syscall.Mkfifo(path, 0o600))
	}},
	{"stray-socket", "a socket", func(t *testing.T, path string) {
		ln, err := net.Listen("unix", path)
		require.NoError(t, err)
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		require.NoError(t, ln.Close())
	}},
	{"stray-hard-link", "a file with 2 hard links", func(t *testing.T, path string) {
		other := filepath.Join(t.TempDir(), "other")
		require.NoError(t, os.WriteFile(other, nil, 0o600))
		require.NoError(t, os.Link(other, path))
	}},
}

// requireSkippedAndKept checks that l's directory holds no lock record but
// one entry the engine will not use, path: GetStats counts it as skipped
// and Cleanup leaves it in place.
func requireSkippedAndKept(t *testing.T, l *filelock.Locker, path string) {
	t.Helper()
	ctx := context.Background()
	stats, err := lock.NewManager(l).GetStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, lock.Stats{SkippedEntries: 1}, stats)
	n, err := l.Cleanup(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.FileExists(t, path)
}

func TestStrayEntriesAreSkippedAndCounted(t *testing.T) {
	// Five expired records and one of every kind of stray entry: Cleanup
	// removes the five, Scan and GetStats count the strays, and nothing
	// fails.
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	l := newLocker(t, dir, filelock.WithClock(clk))
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		_, err := l.Obtain(ctx, k, time.Second)
		require.NoError(t, err)
	}
	clk.advance(2 * time.Second)
	for _, p := range plants {
		p.make(t, lockPath(dir, p.key))
	}

	var notes []string
	require.NoError(t, l.Scan(ctx, func(r lock.Record) bool {
		if r.State == lock.Skipped {
			notes = append(notes, r.Note)
		}
		return true
	}))
	require.Len(t, notes, len(plants))
	for _, p := range plants {
		name := filepath.Base(lockPath(dir, p.key))
		assert.Contains(t, notes, name+" is "+p.what+", not a lock file", p.key)
	}

	stats, err := lock.NewManager(l).GetStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, lock.Stats{TotalLocks: 5, ExpiredLocks: 5, SkippedEntries: len(plants)}, stats)

	n, err := l.Cleanup(ctx)
	require.NoError(t, err, "a stray entry must not stop cleanup")
	assert.Equal(t, 5, n)
	for _, p := range plants {
		_, err := os.Lstat(lockPath(dir, p.key))
		assert.NoError(t, err, "cleanup must leave %s alone", p.key)
	}
}

func TestStrayEntryRefusedByEveryOperation(t *testing.T) {
	ctx := context.Background()
	for _, p := range plants {
		t.Run(p.key, func(t *testing.T) {
			dir := t.TempDir()
			l := newLocker(t, dir)
			path := lockPath(dir, p.key)
			p.make(t, path)
			lease := lock.Lease{Key: p.key, Token: "lock_x"}
			for op, err := range map[string]error{
				"obtain":  errOf(l.Obtain(ctx, p.key, time.Second)),
				"refresh": errOf(l.Refresh(ctx, lease, time.Second)),
				"release": l.Release(ctx, lease),
				"inspect": errOf3(l.Inspect(ctx, p.key)),
			} {
				require.ErrorIs(t, err, filelock.ErrNotLockFile, op)
				assert.NotErrorIs(t, err, lock.ErrNotObtained, op)
				assert.Contains(t, err.Error(), path+" is "+p.what, op)
				assert.Contains(t, err.Error(), "remove it", op)
			}
			_, err := os.Lstat(path)
			assert.NoError(t, err, "the entry is left alone")
		})
	}
}

func errOf[T any](_ T, err error) error { return err }

func errOf3[T, U any](_ T, _ U, err error) error { return err }

func TestOversizedFileCountsAsCorrupt(t *testing.T) {
	// A valid live record followed by a megabyte of spaces: not a lock
	// record however it starts. It is read no further than 16 KiB, held for
	// the corrupt-file grace, then taken over and cut down.
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCorruptGrace(2*time.Second))
	path := lockPath(dir, "big")
	body := `{"lock_id":"lock_forged","key":"big","expires_at":` + unixIn(time.Hour) + `}` + strings.Repeat(" ", 1<<20)
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))

	_, err := l.Obtain(ctx, "big", time.Second)
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	assert.Contains(t, held.Holder, "unreadable lock file")
	assert.LessOrEqual(t, held.TTL, 2*time.Second)
	rec, ok, err := l.Inspect(ctx, "big")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Contains(t, rec.Note, "over 16384 bytes")

	clk.advance(3 * time.Second)
	lease, err := l.Obtain(ctx, "big", time.Second)
	require.NoError(t, err, "an oversized file past its grace counts as expired")
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Less(t, st.Size(), int64(1024), "the takeover cuts the file down to one record")
	require.NoError(t, l.Release(ctx, lease))
}

func TestCorruptGraceRunsFromTheLastChange(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		mtime    time.Duration // set on the file, from now
		step     time.Duration // wall clock step after the file is written
		wantHeld bool
	}{
		{"fresh file", 0, 0, true},
		{"mtime a year ahead: still only the grace", 365 * 24 * time.Hour, 0, true},
		{"mtime a year back: still the grace", -365 * 24 * time.Hour, 0, true},
		// The file was written an hour "in the future" of a clock since
		// stepped back: nobody has been writing it for an hour.
		{"clock stepped back an hour since", 0, -time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newFakeClock("boot-a")
			l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCorruptGrace(2*time.Second))
			path := lockPath(dir, "k")
			require.NoError(t, os.WriteFile(path, []byte("garbage"), 0o600))
			when := time.Now().Add(tt.mtime)
			require.NoError(t, os.Chtimes(path, when, when))
			clk.step(tt.step)

			_, err := l.Obtain(ctx, "k", time.Second)
			if !tt.wantHeld {
				require.NoError(t, err)
				return
			}
			var held *lock.HeldError
			require.ErrorAs(t, err, &held)
			assert.LessOrEqual(t, held.TTL, 2*time.Second, "the grace is at most WithCorruptGrace")
			clk.advance(3 * time.Second)
			_, err = l.Obtain(ctx, "k", time.Second)
			require.NoError(t, err, "an unreadable file past its grace counts as expired")
		})
	}
}

// unixIn is the unix time d from now, as a JSON number.
func unixIn(d time.Duration) string { return strconv.FormatInt(time.Now().Add(d).Unix(), 10) }
