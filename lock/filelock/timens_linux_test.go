package filelock_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/testenv"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// envTimeNS names the lock directory of a child started in a time
// namespace of its own.
const envTimeNS = "JOBLOCK_FILELOCK_TIMENS_DIR"

// bootShift is how far the child's boot clock runs ahead: 27 hours.
const bootShift = 100_000

// timeNSReport is what the child saw.
type timeNSReport struct {
	Uptime    float64       `json:"uptime"`     // its boot clock, in seconds
	HeldBy    string        `json:"held_by"`    // holder of the parent's key, "" if it took it
	HeldFor   time.Duration `json:"held_for"`   // how long it judged that lock to have left
	ChildTTL  time.Duration `json:"child_ttl"`  // the TTL it gave its own lock
	Cleaned   int           `json:"cleaned"`    // records its Cleanup removed
	ObtainErr string        `json:"obtain_err"` // any other error
}

// envTimeNSStep, with envTimeNS, asks a child in a time namespace of its
// own for one step of TestReusedTimeNamespaceID: "take" the key "ns" for
// 30s, or "try" it; either way it reports its namespace and what it got.
const envTimeNSStep = "JOBLOCK_FILELOCK_TIMENS_STEP"

// stepReport is what a step child saw.
type stepReport struct {
	NS     string `json:"ns"`      // its time namespace, as /proc/self/ns/time names it
	Token  string `json:"token"`   // the lease it got, if any
	HeldBy string `json:"held_by"` // who held the key, if it was refused
	Err    string `json:"err"`
}

func timeNSStep(dir, step string) {
	var r stepReport
	r.NS, _ = os.Readlink("/proc/self/ns/time")
	l, err := filelock.New(dir)
	if err == nil {
		defer l.Close()
		var lease lock.Lease
		lease, err = l.Obtain(context.Background(), "ns", 30*time.Second)
		r.Token = lease.Token
		var held *lock.HeldError
		if errors.As(err, &held) {
			r.HeldBy, err = held.Holder, nil
		}
	}
	if err != nil {
		r.Err = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

// runTimeNSChild serves TestTimeNamespace's child: it runs Cleanup, tries
// the parent's live key and takes one of its own, then reports.
func runTimeNSChild() bool {
	dir := os.Getenv(envTimeNS)
	if dir == "" {
		return false
	}
	if step := os.Getenv(envTimeNSStep); step != "" {
		timeNSStep(dir, step)
		return true
	}
	var r timeNSReport
	if err := timeNSChild(dir, &r); err != nil {
		r.ObtainErr = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	return true
}

func timeNSChild(dir string, r *timeNSReport) error {
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return err
	}
	if r.Uptime, err = strconv.ParseFloat(strings.Fields(string(up))[0], 64); err != nil {
		return err
	}
	l, err := filelock.New(dir)
	if err != nil {
		return err
	}
	defer l.Close()
	ctx := context.Background()
	if r.Cleaned, err = l.Cleanup(ctx); err != nil {
		return err
	}
	_, err = l.Obtain(ctx, "parent", 30*time.Second)
	var held *lock.HeldError
	switch {
	case errors.As(err, &held):
		r.HeldBy, r.HeldFor = held.Holder, held.TTL
	case err != nil:
		return err
	}
	r.ChildTTL = 30 * time.Second
	if _, err := l.Obtain(ctx, "child", r.ChildTTL); err != nil {
		return fmt.Errorf("child key: %w", err)
	}
	return nil
}

// requireTimeNS skips t where this process cannot make a time namespace.
func requireTimeNS(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("unshare", "--time", "--boottime", "1", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot create a time namespace here (unshare --time: %v %s)", err, bytes.TrimSpace(out))
	}
}

// inTimeNS runs this test binary as a child with env, in a time namespace
// of its own whose boot clock is shift seconds ahead, and decodes the JSON
// report it prints into r.
func inTimeNS(t *testing.T, shift int, r any, env ...string) {
	t.Helper()
	cmd := exec.Command("unshare", "--time", "--boottime", strconv.Itoa(shift), os.Args[0], "-test.run=^$")
	cmd.Env = testenv.ChildEnviron(env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(out, r), "%s", out)
}

func uptime(t *testing.T) float64 {
	up, err := os.ReadFile("/proc/uptime")
	require.NoError(t, err)
	f, err := strconv.ParseFloat(strings.Fields(string(up))[0], 64)
	require.NoError(t, err)
	return f
}

func TestTimeNamespaceFallsBackToTheWallClock(t *testing.T) {
	// A process whose boot clock is 27 h ahead, in a time namespace of its
	// own, shares the boot id with this one. It must neither take over this
	// process's live lock, nor clean it up, nor write a lock that looks 27 h
	// long from here.
	requireTimeNS(t)
	ctx := context.Background()
	dir := t.TempDir()
	l := newLocker(t, dir)
	lease, err := l.Obtain(ctx, "parent", 30*time.Second)
	require.NoError(t, err)

	var r timeNSReport
	inTimeNS(t, bootShift, &r, envTimeNS+"="+dir)
	require.Empty(t, r.ObtainErr)
	require.Greater(t, r.Uptime-uptime(t), float64(bootShift-1000), "the child's boot clock was not shifted")

	assert.Equal(t, lease.Token, r.HeldBy, "the child took over a live lock")
	assert.LessOrEqual(t, r.HeldFor, 30*time.Second)
	assert.Zero(t, r.Cleaned, "the child's cleanup removed a live lock")
	rec, ok, err := l.Inspect(ctx, "child")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, lock.Held, rec.State)
	assert.LessOrEqual(t, rec.TTL, r.ChildTTL, "the child's lock looks longer here than it is")
	require.NoError(t, l.Release(ctx, lease), "the parent's lease must still be its own")
}

func TestReusedTimeNamespaceID(t *testing.T) {
	// A time namespace's id is reused as soon as the namespace is gone, by
	// the next one, whatever its offsets. A process in a namespace whose
	// boot clock is 27 h behind takes a key for 30s and exits; one in the
	// next namespace, clock 27 h ahead, very likely under the same id, must
	// still find the key held, not 27 h expired.
	requireTimeNS(t)
	dir := t.TempDir()
	step := func(step string, shift int) stepReport {
		var r stepReport
		inTimeNS(t, shift, &r, envTimeNS+"="+dir, envTimeNSStep+"="+step)
		require.Empty(t, r.Err)
		return r
	}
	took := step("take", 1)
	require.NotEmpty(t, took.Token)
	tried := step("try", 2*bootShift)
	if tried.NS != took.NS {
		t.Logf("the namespace id was not reused (%s, then %s): the check holds all the same", took.NS, tried.NS)
	}
	assert.Empty(t, tried.Token, "a process whose boot clock is ahead took over a live lock")
	assert.Equal(t, took.Token, tried.HeldBy)
}

func TestBoottimeOffset(t *testing.T) {
	tests := []struct {
		give string
		want string
		ok   bool
	}{
		{"monotonic           0         0\nboottime         1000         0\n", "1000.0", true},
		{"monotonic 5 0\nboottime -3 250\n", "-3.250", true},
		{"monotonic 0 0\n", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := filelock.BoottimeOffset(tt.give)
		assert.Equal(t, tt.ok, ok, tt.give)
		assert.Equal(t, tt.want, got, tt.give)
	}
}
