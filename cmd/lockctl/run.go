package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/joblock/joblock/lock"
)

// forever stands in for "no limit" on a wait.
const forever = 100 * 365 * 24 * time.Hour

func cmdRun(ctx context.Context, e *env) error {
	fs := e.flags(false)
	lease := fs.Duration("lease", lock.DefaultLease, "lock lease, renewed every third of it while COMMAND runs")
	maxRun := fs.Duration("max-run-time", 0, "stop COMMAND (SIGTERM) after this long; 0: no limit")
	window := fs.Duration("window", 0, "after COMMAND succeeds, keep KEY taken until this long after it was obtained")
	killAfter := fs.Duration("kill-after", 10*time.Second, "after SIGTERM, SIGKILL COMMAND's process group this long later")
	fs.DurationVar(&e.wait, "wait", 0, "wait up to this long for a held key")
	onHeld := fs.String("on-held", "exit", "exit or wait")
	e.limitFlag()
	if err := e.parse(-1, ""); err != nil {
		return err
	}
	key, argv, err := splitRun(fs.Args())
	if err != nil {
		return err
	}
	w := lock.Wait{MaxWait: e.wait, Jitter: 0.2}
	switch *onHeld {
	case "exit":
	case "wait":
		if w.MaxWait == 0 {
			w.MaxWait = forever
		}
	default:
		return fail(exitUsage, "run: -on-held must be exit or wait, not %q", *onHeld)
	}
	if err := lock.ValidateLease(*lease); err != nil {
		return fail(exitUsage, "run: -lease: %v", err)
	}
	if *killAfter <= 0 {
		return fail(exitUsage, "run: -kill-after must be positive, got %s", *killAfter)
	}
	if *maxRun < 0 {
		return fail(exitUsage, "run: -max-run-time must not be negative, got %s", *maxRun)
	}
	if err := lock.ValidateWindow(*window); err != nil {
		return fail(exitUsage, "run: -window: %v", err)
	}

	l, closeFn, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	var code int
	out, runErr := lock.NewRenewer(l).Run(ctx, key, func(ctx context.Context) error {
		lease, _ := lock.LeaseFromContext(ctx)
		var err error
		code, err = runCommand(ctx, e, argv, lease, *killAfter)
		if errors.Is(context.Cause(ctx), lock.ErrMaxRunTime) {
			fmt.Fprintf(e.stderr, "lockctl: %s ran longer than -max-run-time %s and was sent SIGTERM\n", argv[0], *maxRun)
		}
		if err == nil && code != 0 {
			err = &exitErr{code: code, err: errors.New("")}
		}
		return err
	}, lock.WithLease(*lease), lock.WithMaxRunTime(*maxRun), lock.WithWindow(*window), lock.WithWait(w), lock.WithLimit(e.limit))
	if !out.Ran {
		if errors.Is(runErr, lock.ErrNotObtained) {
			return fail(exitHeld, "not running %s: %v", argv[0], runErr)
		}
		return runErr
	}
	if out.ReleaseErr != nil {
		fmt.Fprintf(e.stderr, "lockctl: release %q: %v (the lock ends with its lease)\n", key, out.ReleaseErr)
	}
	var ee *exitErr
	switch {
	case runErr != nil && !errors.As(runErr, &ee):
		return runErr
	case out.Lost != nil:
		return fail(exitLockLost, "lock on %q lost while %s ran: %v", key, argv[0], out.Lost)
	}
	return runErr
}

// splitRun splits run's arguments after its flags, KEY -- COMMAND
// [ARG...], into KEY and COMMAND [ARG...]. The flag package stops at KEY,
// so a flag after it would otherwise become the command: that, and
// anything else between KEY and --, is a usage error.
func splitRun(args []string) (key string, argv []string, err error) {
	const want = "want lockctl run [flags] KEY -- COMMAND [ARG...], flags before KEY (see lockctl help)"
	switch {
	case len(args) == 0:
		return "", nil, fail(exitUsage, "run: no KEY: %s", want)
	case len(args) > 1 && strings.HasPrefix(args[1], "-") && args[1] != "--":
		return "", nil, fail(exitUsage, "run: flag %s after KEY %q: %s", args[1], args[0], want)
	case len(args) < 2 || args[1] != "--":
		return "", nil, fail(exitUsage, "run: no -- after KEY %q: %s", args[0], want)
	case len(args) < 3:
		return "", nil, fail(exitUsage, "run: no COMMAND after --: %s", want)
	}
	return args[0], args[2:], nil
}

// runCommand runs argv with the lease in its environment, in a process
// group of its own, and returns its exit code (128+signal if a signal
// ended it). When ctx ends (lock lost, -max-run-time, lockctl told to
// stop) the group gets SIGTERM, then SIGKILL after killAfter. On Linux the
// kernel kills COMMAND if lockctl dies.
func runCommand(ctx context.Context, e *env, argv []string, lease lock.Lease, killAfter time.Duration) (int, error) {
	// The parent-death signal follows the thread that started the child.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = e.stdin, e.stdout, e.stderr
	c.SysProcAttr = commandAttr()
	c.Env = append(os.Environ(),
		"JOBLOCK_KEY="+lease.Key,
		"JOBLOCK_LOCK_ID="+lease.Token,
		"JOBLOCK_FENCE="+strconv.FormatUint(lease.Fence, 10))
	if err := c.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = signalGroup(c.Process, syscall.SIGTERM)
		kill := time.NewTimer(killAfter)
		select {
		case err = <-done:
		case <-kill.C:
			fmt.Fprintf(e.stderr, "lockctl: %s still running %s after SIGTERM: sending SIGKILL\n", argv[0], killAfter)
			_ = signalGroup(c.Process, syscall.SIGKILL)
			err = <-done
		}
		kill.Stop()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	return 0, err
}
