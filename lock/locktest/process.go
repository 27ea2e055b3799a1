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

	"github.com/joblock/joblock/internal/testenv"
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
	envLimit    = "JOBLOCK_LOCKTEST_LIMIT"
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
	if n, _ := strconv.Atoi(os.Getenv(envLimit)); n > 1 {
		lim, ok := l.(lock.Limiter)
		if !ok {
			return fmt.Errorf("a limit of %d needs a lock.Limiter, not %T", n, l)
		}
		l = limited{Limiter: lim, n: n}
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
	cmd.Env = testenv.ChildEnviron(env...)
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
	MaxInside     int // the most sections inside at once, counting the entering one
}

// RunHammer starts procs copies of the test binary (see ChildMain) that
// hammer one key with ttl for d, plus env for the engine, then checks the
// shared log: no two sections overlap unless a holder outlived its TTL,
// fencing tokens strictly increase, and no release succeeded after another
// holder had taken over. It fails t on any violation.
func RunHammer(t *testing.T, procs int, ttl, d time.Duration, env ...string) HammerSummary {
	return RunHammerLimit(t, procs, 1, ttl, d, env...)
}

// RunHammerLimit is RunHammer on a key that admits limit holders (the
// engine must be a lock.Limiter): never more than limit sections at once
// among holders within their TTL. With a limit over one it also requires
// that limit sections were once inside together, so that a run that never
// filled the slots cannot pass for one that kept them from overfilling:
// on a loaded machine one run of d may not get there, so it runs the
// hammer again, up to hammerRuns times, checking every run.
func RunHammerLimit(t *testing.T, procs, limit int, ttl, d time.Duration, env ...string) HammerSummary {
	t.Helper()
	env = append(env, envLimit+"="+strconv.Itoa(limit))
	var s HammerSummary
	for run := 1; ; run++ {
		var err error
		s, err = CheckHammerLogLimit(runHammer(t, "hammer", procs, ttl, d, env...), limit)
		require.NoError(t, err, "the engine let more holders in than the key admits")
		assert.Equal(t, procs, s.Processes, "every process must have held the lock")
		// Only sections whose holders kept their leases are checked; a few
		// run late on a loaded machine, but a run where most did checked
		// little.
		assert.Greater(t, s.Sections-s.Late, s.Sections/2, "most sections outlived their TTL: too few checked to prove anything")
		if limit == 1 || s.MaxInside == limit {
			return s
		}
		if run == hammerRuns {
			t.Fatalf("%d runs of %s with %d processes on %d slots, and never more than %d inside at once: %+v",
				run, d, procs, limit, s.MaxInside, s)
		}
		t.Logf("run %d: at most %d of %d slots held at once; running again", run, s.MaxInside, limit)
	}
}

// hammerRuns is how many runs RunHammerLimit makes at most to see every
// slot of a key held at once.
const hammerRuns = 3

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
// SectionLog and returns every violation it finds, joined. A section
// counts only if its "held" line says its lease still ran when its exit
// was written; a section without one (its process died inside, or its
// lease ran out) is not checked, neither as the one entering nor as one
// inside. Two counted sections that overlap in the log held their leases
// at one instant, whatever the order their writers were scheduled in, so
// every violation reported is one the lock allowed.
func CheckHammerLog(log string) (HammerSummary, error) { return CheckHammerLogLimit(log, 1) }

// CheckHammerLogLimit is CheckHammerLog for a key that admits limit
// holders: no section may enter while limit sections whose holders kept
// their leases are inside. Beyond one holder, fencing tokens need only be
// distinct (concurrent holders log their entries in any order), and
// releases are not checked against later entries (another slot may have
// been free).
func CheckHammerLogLimit(log string, limit int) (HammerSummary, error) {
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
	for _, fence := range enters {
		sec := sections[fence]
		s.Sections++
		s.MaxFence = max(s.MaxFence, fence)
		if !sec.held {
			// Its writer may have been descheduled between Obtain and the
			// enter line for longer than its TTL: where its enter line
			// falls says nothing about when it held the lock.
			s.Late++
			continue
		}
		// The in-TTL holders inside when this section entered.
		var inside []uint64
		for _, other := range enters {
			if o := sections[other]; other != fence && o.held && o.enter < sec.enter && sec.enter < o.exit {
				inside = append(inside, other)
			}
		}
		s.MaxInside = max(s.MaxInside, len(inside)+1)
		if len(inside) >= limit {
			errs = append(errs, fmt.Errorf("%d entering at line %d while %d held section(s) %v were inside (the key admits %d)", fence, sec.enter, len(inside), inside, limit))
		}
		if limit > 1 {
			continue
		}
		// Fencing tokens of in-TTL holders strictly increase in log order.
		if fence <= last {
			errs = append(errs, fmt.Errorf("line %d: fencing token %d after %d", sec.enter, fence, last))
		}
		last = fence
	}
	// A release that succeeded must not come after someone else entered.
	// Only a counted section is someone else: a late one may have obtained
	// the lock before this holder did, its enter line written late.
	releasing := map[uint64]int{}
	for i, line := range lines {
		fence := fences[i]
		switch f := strings.Fields(line); f[0] {
		case "releasing":
			releasing[fence] = i
		case "released":
			if limit > 1 {
				continue
			}
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
				if other != fence && o.held && o.enter > sections[fence].enter && o.enter < releasing[fence] {
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
	lease, child := killHolder(t, l, 1, ttl, env)
	var held *lock.HeldError
	require.ErrorAs(t, lease.err, &held, "a killed holder's lock must last until its TTL")
	assert.Equal(t, child.token, held.Holder)
	child.waitFree(t, l, ttl)
}

// RunKilledSlotHolder is RunKilledHolder on a key that admits limit
// holders: the test holds the other limit-1 slots, a child holding the
// last one is SIGKILLed, and its slot stays taken until its TTL and no
// longer.
func RunKilledSlotHolder(t *testing.T, l lock.Limiter, limit int, ttl time.Duration, env ...string) {
	t.Helper()
	require.Greater(t, limit, 1)
	lim := limited{Limiter: l, n: limit}
	ctx := context.Background()
	full, child := killHolder(t, lim, limit, ttl, env)
	require.ErrorIs(t, full.err, lock.ErrNotObtained, "a killed holder's slot must last until its TTL")
	slots, err := l.InspectSlots(ctx, child.key)
	require.NoError(t, err)
	var tokens []string
	for _, r := range slots {
		if r.State == lock.Held {
			tokens = append(tokens, r.Token)
		}
	}
	assert.Len(t, tokens, limit)
	assert.Contains(t, tokens, child.token, "the killed child's slot is listed as held")
	child.waitFree(t, lim, ttl)
	for _, o := range full.others {
		require.NoError(t, l.Release(ctx, o))
	}
}

type killed struct {
	key      string
	token    string
	fence    uint64
	obtained time.Time
}

type afterKill struct {
	err    error        // the first Obtain after the kill
	others []lock.Lease // the slots this process holds
}

// killHolder starts a child that takes key, then takes limit-1 slots of it
// itself, SIGKILLs the child and tries key once more.
func killHolder(t *testing.T, l lock.Locker, limit int, ttl time.Duration, env []string) (afterKill, killed) {
	t.Helper()
	ctx := context.Background()
	key := Key(t, "killed")
	env = append(env, envMode+"=hold", envKey+"="+key, envTTL+"="+ttl.String(), envLimit+"="+strconv.Itoa(limit))
	cmd := childCmd(t, env...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "child did not report holding the lock")
	k := killed{key: key, obtained: time.Now()}
	f := strings.Fields(line)
	require.Len(t, f, 3)
	k.token = f[1]
	k.fence, err = strconv.ParseUint(f[2], 10, 64)
	require.NoError(t, err)
	var a afterKill
	// The other slots are taken with a longer TTL, so only the child's
	// can free within the test.
	for range limit - 1 {
		o, err := l.Obtain(ctx, key, 10*ttl)
		require.NoError(t, err, "a free slot")
		a.others = append(a.others, o)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	_, a.err = l.Obtain(ctx, key, ttl)
	return a, k
}

// waitFree waits for the killed child's lock to free: not before its TTL,
// and with a fencing token above the child's.
func (k killed) waitFree(t *testing.T, l lock.Locker, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	lease, err := lock.ObtainWait(ctx, l, k.key, ttl, lock.Wait{MaxWait: 3 * ttl, Interval: 10 * time.Millisecond})
	require.NoError(t, err, "the lock of a killed holder is stuck")
	assert.GreaterOrEqual(t, time.Since(k.obtained), ttl-50*time.Millisecond, "freed before its TTL")
	assert.Greater(t, lease.Fence, k.fence)
	require.NoError(t, l.Release(ctx, lease))
}
