package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/joblock/joblock/lock"
)

// forever stands in for "no limit" on a wait.
const forever = 100 * 365 * 24 * time.Hour

func cmdRun(ctx context.Context, e *env) error {
	fs := e.flags(true)
	onHeld := fs.String("on-held", "exit", "exit or wait")
	once := fs.Bool("once-per-window", false, "keep the lock until its TTL after success")
	if err := e.parse(-1, ""); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 1 && rest[1] == "--" {
		rest = append(rest[:1:1], rest[2:]...)
	}
	if len(rest) < 2 {
		return fail(exitUsage, "run: want KEY -- COMMAND [ARG...] (see lockctl help)")
	}
	key, argv := rest[0], rest[1:]
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

	l, closeFn, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	lease, err := lock.ObtainWait(ctx, l, key, e.ttl, w)
	if err != nil {
		if errors.Is(err, lock.ErrNotObtained) {
			return fail(exitHeld, "not running %s: %v", argv[0], err)
		}
		return err
	}

	workCtx, stop := lock.KeepAlive(ctx, l, lease, e.ttl)
	code, runErr := runCommand(workCtx, e, argv, lease)
	lost := context.Cause(workCtx)
	lease = stop()

	if runErr == nil && code == 0 && *once && !errors.Is(lost, lock.ErrLost) {
		return nil // the lock stays until its TTL: one run per window
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.Release(rctx, lease); err != nil && !errors.Is(err, lock.ErrNotHeld) {
		fmt.Fprintf(e.stderr, "lockctl: release %q: %v (the lock ends at its TTL)\n", key, err)
	}
	switch {
	case runErr != nil:
		return runErr
	case errors.Is(lost, lock.ErrLost):
		return fail(exitLockLost, "lock on %q lost while %s ran: %v", key, argv[0], lost)
	case code != 0:
		return &exitErr{code: code, err: errors.New("")}
	}
	return nil
}

// runCommand runs argv with the lease in its environment, sending it
// SIGTERM when ctx ends (lock lost, or lockctl told to stop), and returns
// its exit code (128+signal if a signal ended it).
func runCommand(ctx context.Context, e *env, argv []string, lease lock.Lease) (int, error) {
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = e.stdin, e.stdout, e.stderr
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
		_ = c.Process.Signal(syscall.SIGTERM)
		err = <-done
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
