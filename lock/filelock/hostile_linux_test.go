package filelock_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/testenv"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stoppedHolder starts a process that takes the flock on path and stops
// it (SIGSTOP) while it holds it, as a debugger or a job-control stop
// would. It is killed when t ends.
func stoppedHolder(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = testenv.ChildEnviron(envFlock + "=" + path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)
	require.NoError(t, cmd.Process.Signal(syscall.SIGSTOP))
}

func TestStoppedFlockHolderHangsNothing(t *testing.T) {
	// A process stopped while it holds a lock file's flock: every
	// operation on that key gives up after the busy wait, Obtain saying
	// the key is refused with no holder known, and Scan, GetStats and
	// Cleanup skip the file and count it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	clk := newFakeClock("boot-a")
	l := newLocker(t, dir, filelock.WithBusyWait(50*time.Millisecond), filelock.WithClock(clk))
	stuck, err := l.Obtain(ctx, "stuck", time.Second)
	require.NoError(t, err)
	_, err = l.Obtain(ctx, "expired", time.Second)
	require.NoError(t, err)
	clk.advance(2 * time.Second)
	stoppedHolder(t, lockPath(dir, "stuck"))

	_, err = l.Obtain(ctx, "stuck", time.Second)
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	require.ErrorIs(t, err, filelock.ErrBusy)
	assert.ErrorIs(t, err, lock.ErrNotObtained)
	assert.Contains(t, held.Holder, "busy")
	require.NoError(t, ctx.Err(), "Obtain waited for the stopped process")
	require.ErrorIs(t, l.Release(ctx, stuck), filelock.ErrBusy)
	_, err = l.Refresh(ctx, stuck, time.Second)
	require.ErrorIs(t, err, filelock.ErrBusy)

	stats, err := lock.NewManager(l).GetStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, lock.Stats{TotalLocks: 1, ExpiredLocks: 1, SkippedEntries: 1}, stats)
	var notes []string
	require.NoError(t, l.Scan(ctx, func(r lock.Record) bool {
		if r.State == lock.Skipped {
			notes = append(notes, r.Note)
		}
		return true
	}))
	require.Len(t, notes, 1)
	assert.Contains(t, notes[0], filepath.Base(lockPath(dir, "stuck"))+" is busy")
	assert.Contains(t, notes[0], "do not remove it", "a busy file may hold a live lock")
	assert.NotContains(t, notes[0], "not a lock file")
	n, err := l.Cleanup(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the expired record goes, the busy one stays")
	assert.FileExists(t, lockPath(dir, "stuck"))

	// Another key is not held up at all.
	lease, err := l.Obtain(ctx, "other", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))
}

func TestStoppedFlockHolderAndCancelledContext(t *testing.T) {
	// With a long busy wait, the caller's context still ends the wait.
	dir := t.TempDir()
	l := newLocker(t, dir, filelock.WithBusyWait(time.Hour))
	lease, err := l.Obtain(context.Background(), "k", time.Minute)
	require.NoError(t, err)
	stoppedHolder(t, lockPath(dir, "k"))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	require.ErrorIs(t, l.Release(ctx, lease), context.Canceled)
}

// asNobody runs this test binary, copied where another user can run it,
// as uid and gid 65534, with env, and returns its stdout. It skips t
// where this process may not switch users.
func asNobody(t *testing.T, env ...string) []byte {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running a process as another user needs root")
	}
	bin, err := os.MkdirTemp("", "filelock-bin-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(bin) })
	require.NoError(t, os.Chmod(bin, 0o755))
	exe := filepath.Join(bin, "filelock.test")
	src, err := os.Open(os.Args[0])
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())

	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = testenv.ChildEnviron(env...)
	cmd.Dir = bin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err)
	return out
}

func TestFilesThisUserMayNotOpenAreSkipped(t *testing.T) {
	// In a directory of user nobody: one of nobody's records is expired,
	// one is live in a file nobody may read but not write (0400), and root
	// planted a file no one but root may open (mode 000). Cleanup and
	// GetStats, run as nobody, count the live one, remove the expired
	// one, and skip the unopenable one instead of failing.
	base, err := os.MkdirTemp("", "filelock-nobody-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	dir := filepath.Join(base, "locks")
	require.NoError(t, os.Mkdir(dir, 0o700))
	now := time.Now()
	write := func(key string, expires time.Time, mode os.FileMode, owner int) {
		body := fmt.Sprintf(`{"lock_id":"lock_%s","key":%q,"expires_at":%d,"acquired_at":%d,"pid":1}`, key, key, expires.Unix()+1, now.Unix())
		path := lockPath(dir, key)
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		require.NoError(t, os.Chown(path, owner, owner))
		require.NoError(t, os.Chmod(path, mode))
	}
	write("expired", now.Add(-time.Hour), 0o600, nobody)
	write("read-only", now.Add(time.Hour), 0o400, nobody)
	write("root's", now.Add(time.Hour), 0o000, 0)
	require.NoError(t, os.Chown(dir, nobody, nobody))

	out := asNobody(t, envScan+"="+dir)
	var r scanReport
	require.NoError(t, json.Unmarshal(out, &r), "%s", out)
	require.Empty(t, r.Err)
	assert.Equal(t, 1, r.Cleaned)
	assert.Equal(t, lock.Stats{TotalLocks: 1, ActiveLocks: 1, SkippedEntries: 1}, r.Stats)
	assert.NoFileExists(t, lockPath(dir, "expired"))
	assert.FileExists(t, lockPath(dir, "root's"))
	st, err := os.Stat(lockPath(dir, "read-only"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o400), st.Mode().Perm(), "a mode stricter than the engine's is left as it is")
}
