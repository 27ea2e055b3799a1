package locktest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Environment of a child process started by the cross-process tests.
const (
	envMode     = "JOBLOCK_LOCKTEST_CHILD"
	envKey      = "JOBLOCK_LOCKTEST_KEY"
	envLog      = "JOBLOCK_LOCKTEST_LOG"
	envTTL      = "JOBLOCK_LOCKTEST_TTL"
	envDuration = "JOBLOCK_LOCKTEST_DURATION"
)

// ChildMain runs this process as a cross-process test child when the
// environment asks for one, and then exits; otherwise it returns at once.
// Call it first thing in TestMain, with a function that opens the engine
// under test from the environment the parent passed to RunHammer or
// RunKilledHolder.
func ChildMain(open func() (lock.Locker, error)) {
	mode := os.Getenv(envMode)
	if mode == "" {
		return
	}
	if err := child(mode, open); err != nil {
		fmt.Fprintln(os.Stderr, "locktest child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func child(mode string, open func() (lock.Locker, error)) error {
	var l lock.Locker = unlocked{}
	if mode != "hammer-unlocked" {
		var err error
		if l, err = open(); err != nil {
			return err
		}
	}
	ttl, err := time.ParseDuration(os.Getenv(envTTL))
	if err != nil {
		return err
	}
	key := os.Getenv(envKey)
	ctx := context.Background()
	switch mode {
	case "hammer", "hammer-unlocked":
		d, err := time.ParseDuration(os.Getenv(envDuration))
		if err != nil {
			return err
		}
		return hammer(ctx, l, key, os.Getenv(envLog), ttl, d)
	case "hold":
		lease, err := l.Obtain(ctx, key, ttl)
		if err != nil {
			return err
		}
		fmt.Printf("held %s %d\n", lease.Token, lease.Fence)
		time.Sleep(time.Hour)
		return nil
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// hammer takes key over and over until d has passed, logging each critical
// section to the shared log. Most holders release; some abandon the lock to
// expiry, some release only after their TTL has run out.
func hammer(ctx context.Context, l lock.Locker, key, logPath string, ttl, d time.Duration) error {
	log, err := OpenSectionLog(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		// Read before Obtain, so start+ttl is no later than the lease's end.
		start := time.Now()
		lease, err := l.Obtain(ctx, key, ttl)
		if errors.Is(err, lock.ErrNotObtained) {
			time.Sleep(time.Duration(rand.Int64N(int64(300 * time.Microsecond))))
			continue
		}
		if err != nil {
			return err
		}
		if err := log.Enter(lease.Fence); err != nil {
			return err
		}
		time.Sleep(time.Duration(rand.Int64N(int64(ttl / 20))))
		if err := log.Exit(lease.Fence, start.Add(ttl)); err != nil {
			return err
		}
		switch r := rand.IntN(10); {
		case r == 0: // abandon: leave it to expire
			continue
		case r == 1: // release late, after the TTL ran out
			time.Sleep(ttl + ttl/2)
		}
		if err := log.Releasing(lease.Fence); err != nil {
			return err
		}
		err = l.Release(ctx, lease)
		if err != nil && !errors.Is(err, lock.ErrNotHeld) {
			return err
		}
		if err := log.Released(lease.Fence, err == nil); err != nil {
			return err
		}
	}
	return nil
}

// unlocked is a Locker that grants every Obtain: a hammer run on it must
// make the checker report overlaps, which shows the checker can see them.
type unlocked struct{ lock.Locker }

func (unlocked) Obtain(_ context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	return lock.Lease{Key: key, Token: "unlocked", Fence: uint64(time.Now().UnixNano()), ExpiresAt: time.Now().Add(ttl)}, nil
}

func (unlocked) Release(context.Context, lock.Lease) error { return nil }

func childCmd(t *testing.T, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// HammerSummary counts what the cross-process hammer did.
type HammerSummary struct {
	Sections      int // critical sections entered
	Late          int // sections whose holder outlived its TTL (not checked for overlap)
	Abandoned     int // locks left to expire
	LateRejected  int // releases refused because the lease was gone
	Processes     int // processes that held the lock at least once
	MaxFence      uint64
	LateReleaseOK int // late releases that still succeeded (nobody had taken over)
}

// RunHammer starts procs copies of the test binary (see ChildMain) that
// hammer one key with ttl for d, plus env for the engine, then checks the
// shared log: no two sections overlap unless a holder outlived its TTL,
// fencing tokens strictly increase, and no release succeeded after another
// holder had taken over. It fails t on any violation.
func RunHammer(t *testing.T, procs int, ttl, d time.Duration, env ...string) HammerSummary {
	t.Helper()
	s, err := CheckHammerLog(runHammer(t, "hammer", procs, ttl, d, env...))
	require.NoError(t, err, "the engine broke mutual exclusion")
	assert.Equal(t, procs, s.Processes, "every process must have held the lock")
	return s
}

// runHammer runs the hammer children in mode and returns their log.
func runHammer(t *testing.T, mode string, procs int, ttl, d time.Duration, env ...string) string {
	t.Helper()
	logPath := t.TempDir() + "/hammer.log"
	key := Key(t, "hammer")
	cmds := make([]*exec.Cmd, procs)
	for i := range cmds {
		cmds[i] = childCmd(t, append(env, envMode+"="+mode, envKey+"="+key, envLog+"="+logPath,
			envTTL+"="+ttl.String(), envDuration+"="+d.String())...)
		require.NoError(t, cmds[i].Start())
	}
	for i, c := range cmds {
		require.NoError(t, c.Wait(), "hammer process %d", i)
	}
	raw, err := os.ReadFile(logPath)
	require.NoError(t, err)
	return string(raw)
}

type section struct {
	enter, exit int
	held        bool // the lease still ran when the exit was written
}

// CheckHammerLog checks a log of critical sections written with a
// SectionLog and returns every violation it finds, joined. A section is
// checked for overlap only if its "held" line says its lease still ran
// when its exit was written; a section without one (its process died
// inside) is not.
func CheckHammerLog(log string) (HammerSummary, error) {
	var (
		s        HammerSummary
		errs     []error
		sections = map[uint64]*section{}
		enters   []uint64
		pids     = map[string]bool{}
		lines    = strings.Split(strings.TrimSpace(log), "\n")
		fences   = make([]uint64, len(lines))
	)
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) < 3 {
			return s, fmt.Errorf("line %d: malformed %q", i, line)
		}
		fence, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return s, fmt.Errorf("line %d: %w", i, err)
		}
		fences[i] = fence
		pids[f[len(f)-1]] = true
		sec := sections[fence]
		switch f[0] {
		case "enter":
			if sec != nil {
				errs = append(errs, fmt.Errorf("line %d: fencing token %d handed out twice", i, fence))
				continue
			}
			sections[fence] = &section{enter: i, exit: -1}
			enters = append(enters, fence)
		case "exit", "held":
			if sec == nil {
				return s, fmt.Errorf("line %d: %s without enter", i, f[0])
			}
			if f[0] == "exit" {
				sec.exit = i
			} else {
				sec.held = sec.exit >= 0 && f[2] == "true"
			}
		}
	}
	var last uint64
	for i, fence := range enters {
		sec := sections[fence]
		s.Sections++
		s.MaxFence = max(s.MaxFence, fence)
		if !sec.held {
			s.Late++
			continue
		}
		// Fencing tokens of in-TTL holders strictly increase in log order.
		if fence <= last {
			errs = append(errs, fmt.Errorf("line %d: fencing token %d after %d", sec.enter, fence, last))
		}
		last = fence
		// Nobody may enter while an in-TTL holder is inside.
		for _, other := range enters[i+1:] {
			if o := sections[other]; o.enter < sec.exit {
				errs = append(errs, fmt.Errorf("section %d (lines %d-%d) overlapped by %d entering at line %d", fence, sec.enter, sec.exit, other, o.enter))
			}
		}
	}
	// A release that succeeded must not come after someone else entered.
	releasing := map[uint64]int{}
	for i, line := range lines {
		fence := fences[i]
		switch f := strings.Fields(line); f[0] {
		case "releasing":
			releasing[fence] = i
		case "released":
			if sections[fence] == nil {
				return s, fmt.Errorf("line %d: released without enter", i)
			}
			if f[2] != "true" {
				s.LateRejected++
				continue
			}
			if sec := sections[fence]; sec != nil && !sec.held {
				s.LateReleaseOK++
			}
			for _, other := range enters {
				o := sections[other]
				if other != fence && o.enter > sections[fence].enter && o.enter < releasing[fence] {
					errs = append(errs, fmt.Errorf("line %d: release of %d succeeded after %d took over at line %d", i, fence, other, o.enter))
				}
			}
		}
	}
	s.Abandoned = len(sections) - len(releasing)
	s.Processes = len(pids)
	return s, errors.Join(errs...)
}

// RunKilledHolder starts a test-binary child that obtains key for ttl and
// is then killed with SIGKILL. It checks that the key stays held by the
// dead child until its TTL, then becomes free and is never stuck.
func RunKilledHolder(t *testing.T, l lock.Locker, ttl time.Duration, env ...string) {
	t.Helper()
	ctx := context.Background()
	key := Key(t, "killed")
	cmd := childCmd(t, append(env, envMode+"=hold", envKey+"="+key, envTTL+"="+ttl.String())...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "child did not report holding the lock")
	obtained := time.Now()
	f := strings.Fields(line)
	require.Len(t, f, 3)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	_, err = l.Obtain(ctx, key, ttl)
	var held *lock.HeldError
	require.ErrorAs(t, err, &held, "a killed holder's lock must last until its TTL")
	assert.Equal(t, f[1], held.Holder)

	lease, err := lock.ObtainWait(ctx, l, key, ttl, lock.Wait{MaxWait: 3 * ttl, Interval: 10 * time.Millisecond})
	require.NoError(t, err, "the lock of a killed holder is stuck")
	assert.GreaterOrEqual(t, time.Since(obtained), ttl-50*time.Millisecond, "freed before its TTL")
	fence, _ := strconv.ParseUint(f[2], 10, 64)
	assert.Greater(t, lease.Fence, fence)
	require.NoError(t, l.Release(ctx, lease))
}
