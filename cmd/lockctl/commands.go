package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
)

// env is one command's invocation.
type env struct {
	name           string
	args           []string
	stdin          io.Reader
	stdout, stderr io.Writer

	fs      *flag.FlagSet
	engine  engine.Config
	jsonOut bool
	ttl     time.Duration
	wait    time.Duration
	limit   int
}

type command func(ctx context.Context, e *env) error

var commands = map[string]command{
	"acquire":     cmdAcquire,
	"release":     cmdRelease,
	"status":      cmdStatus,
	"list":        cmdList,
	"stats":       cmdStats,
	"cleanup":     cmdCleanup,
	"run":         cmdRun,
	"serve-stdio": cmdServeStdio,
}

// flags prepares the command's flag set; withTTL adds -ttl and -wait.
func (e *env) flags(withTTL bool) *flag.FlagSet {
	e.fs = flag.NewFlagSet("lockctl "+e.name, flag.ContinueOnError)
	e.fs.SetOutput(io.Discard)
	e.engine.Bind(e.fs, "redis engine")
	e.fs.BoolVar(&e.jsonOut, "json", false, "JSON output")
	if withTTL {
		e.fs.DurationVar(&e.ttl, "ttl", lock.DefaultTTL, "lock TTL")
		e.fs.DurationVar(&e.wait, "wait", 0, "wait up to this long for a held key")
		e.limitFlag()
	}
	return e.fs
}

// limitFlag adds -limit, checked by parse.
func (e *env) limitFlag() {
	e.fs.IntVar(&e.limit, "limit", 1, "how many holders KEY admits, 1 to 1000: take one of its slots")
}

// parse parses flags and checks the number of positional arguments.
func (e *env) parse(nargs int, names string) error {
	if err := e.fs.Parse(e.args); errors.Is(err, flag.ErrHelp) {
		// Asked for help: the whole usage, on stdout, and success.
		fmt.Fprint(e.stdout, usage)
		return fail(exitOK, "")
	} else if err != nil {
		return fail(exitUsage, "%s: %v (see lockctl help)", e.name, err)
	}
	if nargs >= 0 && e.fs.NArg() != nargs {
		return fail(exitUsage, "%s: want %s, got %d argument(s) (see lockctl help)", e.name, names, e.fs.NArg())
	}
	if e.fs.Lookup("ttl") != nil {
		if err := lock.ValidateTTL(e.ttl); err != nil {
			return fail(exitUsage, "%s: -ttl: %v", e.name, err)
		}
	}
	if e.fs.Lookup("limit") != nil {
		if err := lock.ValidateLimit(e.limit); err != nil {
			return fail(exitUsage, "%s: -limit: %v", e.name, err)
		}
	}
	if e.wait < 0 {
		return fail(exitUsage, "%s: -wait must not be negative, got %s", e.name, e.wait)
	}
	if err := e.engine.Check(false); err != nil {
		return fail(exitUsage, "%s: %v", e.name, err)
	}
	return nil
}

// start parses a command's flags and its nargs positional arguments
// (described by names for the usage error) and opens the engine. The
// returned function closes the engine.
func (e *env) start(ctx context.Context, withTTL bool, nargs int, names string) (lock.Locker, func(), error) {
	e.flags(withTTL)
	if err := e.parse(nargs, names); err != nil {
		return nil, nil, err
	}
	return e.open(ctx)
}

func (e *env) open(ctx context.Context) (lock.Locker, func(), error) {
	l, closeFn, err := e.engine.Open(ctx)
	if err != nil {
		return nil, nil, err
	}
	return l, func() { _ = closeFn() }, nil
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	return enc.Encode(v)
}

// heldOrFail maps an engine error to an exit code.
func heldOrFail(err error) error {
	var held *lock.HeldError
	if errors.As(err, &held) {
		return fail(exitHeld, "%v", err)
	}
	return err
}

func cmdAcquire(ctx context.Context, e *env) error {
	l, closeFn, err := e.start(ctx, true, 1, "KEY")
	if err != nil {
		return err
	}
	defer closeFn()
	lease, err := lock.ObtainLimitWait(ctx, l, e.fs.Arg(0), e.limit, e.ttl, lock.Wait{MaxWait: e.wait, Jitter: 0.2})
	if e.jsonOut {
		if perr := e.printJSON(lock.AcquireResult(lease, err)); perr != nil {
			return perr
		}
		if err != nil {
			return &exitErr{code: codeOf(heldOrFail(err)), err: errors.New("")}
		}
		return nil
	}
	if err != nil {
		return heldOrFail(err)
	}
	fmt.Fprintln(e.stdout, lease.Token)
	return nil
}

func codeOf(err error) int {
	var ee *exitErr
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitError
}

func cmdRelease(ctx context.Context, e *env) error {
	l, closeFn, err := e.start(ctx, false, 2, "KEY LOCK_ID")
	if err != nil {
		return err
	}
	defer closeFn()
	key, id := e.fs.Arg(0), e.fs.Arg(1)
	err = l.Release(ctx, lock.Lease{Key: key, Token: id})
	if e.jsonOut {
		if perr := e.printJSON(lock.ReleaseResult(id, err)); perr != nil {
			return perr
		}
	}
	if errors.Is(err, lock.ErrNotHeld) {
		return fail(exitNotHeld, "%s does not hold %q (released already, expired, or taken over)", id, key)
	}
	return err
}

func cmdStatus(ctx context.Context, e *env) error {
	l, closeFn, err := e.start(ctx, false, 1, "KEY")
	if err != nil {
		return err
	}
	defer closeFn()
	key := e.fs.Arg(0)
	rec, ok, err := l.Inspect(ctx, key)
	if err != nil {
		return err
	}
	held := ok && rec.State == lock.Held
	// A key taken with a limit has slots instead of a lock.
	var slots []lock.Record
	if lim, isLimiter := l.(lock.Limiter); isLimiter && !held {
		if slots, err = lim.InspectSlots(ctx, key); err != nil {
			return err
		}
	}
	var inUse []lock.Record
	for _, r := range slots {
		if r.State == lock.Held {
			inUse = append(inUse, r)
		}
	}
	held = held || len(inUse) > 0
	if e.jsonOut {
		out := struct {
			Key    string        `json:"key"`
			Locked bool          `json:"locked"`
			Record *lock.Record  `json:"record,omitempty"`
			Slots  []lock.Record `json:"slots,omitempty"`
		}{Key: key, Locked: held, Slots: slots}
		if ok {
			out.Record = &rec
		}
		if err := e.printJSON(out); err != nil {
			return err
		}
	} else {
		e.printStatus(key, rec, ok && rec.State == lock.Held, slots, inUse)
	}
	if !held {
		return &exitErr{code: exitNotHeld, err: errors.New("")}
	}
	return nil
}

// printStatus writes status's text: the lock's holder, or each slot's.
func (e *env) printStatus(key string, rec lock.Record, held bool, slots, inUse []lock.Record) {
	holder := func(r lock.Record) string {
		return fmt.Sprintf("held by %s (pid %d on %s) for another %s, fence %d", r.Token, r.PID, r.Host, r.TTL.Round(time.Millisecond), r.Fence)
	}
	switch {
	case held:
		fmt.Fprintf(e.stdout, "%s: %s\n", key, holder(rec))
	case len(inUse) > 0:
		fmt.Fprintf(e.stdout, "%s: %d of %d slots held\n", key, len(inUse), slots[0].Limit)
		for _, r := range inUse {
			fmt.Fprintf(e.stdout, "  slot %s\n", holder(r))
		}
	default:
		fmt.Fprintf(e.stdout, "%s: free\n", key)
	}
}

// cmdList lists the locks stats counts (held and expired); -all adds the
// released records the file engine keeps so a key's file is reused.
func cmdList(ctx context.Context, e *env) error {
	all := e.flags(false).Bool("all", false, "also released records")
	if err := e.parse(0, "no arguments"); err != nil {
		return err
	}
	l, closeFn, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	var recs []lock.Record
	err = l.Scan(ctx, func(r lock.Record) bool {
		if *all || r.State != lock.Released {
			recs = append(recs, r)
		}
		return true
	})
	if err != nil {
		return err
	}
	if e.jsonOut {
		if recs == nil {
			recs = []lock.Record{}
		}
		return e.printJSON(recs)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tSTATE\tTTL\tFENCE\tLOCK_ID\tPID\tHOST\tLIMIT")
	var skipped []string
	for _, r := range recs {
		if r.State == lock.Skipped {
			skipped = append(skipped, r.Note)
			continue
		}
		limit := "-"
		if r.Limit > 0 {
			limit = strconv.Itoa(r.Limit) // a slot of a key with a limit
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", r.Key, r.State, r.TTL.Round(time.Millisecond), r.Fence, r.Token, r.PID, r.Host, limit)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(skipped) > 0 {
		_, err := fmt.Fprintf(e.stdout, "skipped %d entries that are not lock records (left alone; remove strays by hand, never a busy file): %s\n",
			len(skipped), strings.Join(skipped, "; "))
		return err
	}
	return nil
}

func cmdStats(ctx context.Context, e *env) error {
	l, closeFn, err := e.start(ctx, false, 0, "no arguments")
	if err != nil {
		return err
	}
	defer closeFn()
	s, err := lock.NewManager(l).GetStats(ctx)
	if err != nil {
		return err
	}
	if e.jsonOut {
		return e.printJSON(s)
	}
	fmt.Fprintf(e.stdout, "total_locks     %d\nactive_locks    %d\nexpired_locks   %d\ninstance_locks  %d\n",
		s.TotalLocks, s.ActiveLocks, s.ExpiredLocks, s.InstanceLocks)
	if s.SkippedEntries > 0 {
		fmt.Fprintf(e.stdout, "skipped_entries %d (not lock records; lockctl list names them)\n", s.SkippedEntries)
	}
	return nil
}

func cmdCleanup(ctx context.Context, e *env) error {
	l, closeFn, err := e.start(ctx, false, 0, "no arguments")
	if err != nil {
		return err
	}
	defer closeFn()
	n, err := l.Cleanup(ctx)
	if err != nil {
		return err
	}
	if e.jsonOut {
		return e.printJSON(map[string]int{"cleaned": n})
	}
	fmt.Fprintf(e.stdout, "removed %d expired or released lock records\n", n)
	return nil
}
