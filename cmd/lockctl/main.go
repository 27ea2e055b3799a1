// Command lockctl uses joblock's lock engines from the shell, crontab and
// other languages.
//
//	lockctl run nightly-export -- ./export.sh
//	id=$(lockctl acquire cache:product-1) && ... && lockctl release cache:product-1 "$id"
//	echo '{"key":"abc","action":"acquire"}' | lockctl serve-stdio
//
// Run lockctl help for commands, flags and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/joblock/joblock/internal/buildinfo"
)

// Exit codes, stable for scripts.
const (
	exitOK       = 0
	exitError    = 1 // the engine or the system failed
	exitUsage    = 2 // bad command line
	exitHeld     = 3 // the key is held by someone else
	exitNotHeld  = 4 // the lock is not held (release, status)
	exitLockLost = 5 // run: the lock was lost while COMMAND ran
)

const usage = `lockctl: joblock's locks from the shell, cron and other languages.

Usage:
  lockctl version                        the version this binary was built from
  lockctl acquire [flags] KEY            take KEY, print its lock id
  lockctl release [flags] KEY LOCK_ID    release the lock with that id (any process may)
  lockctl status  [flags] KEY            who holds KEY and for how long (each slot's
                                         holder, for a key taken with -limit)
  lockctl list    [flags] [-all]         the locks stats counts: held and expired
                                         (-all: also released records, which the file
                                         engine keeps so that a key reuses its file), and
                                         entries skipped as not lock records (stray
                                         symlinks, directories, ...)
  lockctl stats   [flags]                total (held + expired), active, expired and
                                         instance locks
  lockctl cleanup [flags]                remove expired and released records
  lockctl run     [flags] KEY -- COMMAND [ARG...]
                                         run COMMAND under KEY, renewing the lock while it
                                         runs and releasing it when it exits; every flag
                                         goes before KEY (lockctl run -engine redis KEY -- ...)
  lockctl serve-stdio [flags]            read the LockManager spec's JSON requests, one per
                                         line, and write its JSON results, one per line
                                         (an acquire may add "limit": N, as -limit does)

Flags (every command; environment variables give the defaults):
  -engine file|redis   lock engine [JOBLOCK_ENGINE, default file]
  -lock-dir DIR        file engine directory, private to this user [JOBLOCK_LOCK_DIR,
                       default /dev/shm/joblock-UID on a tmpfs, else /tmp/joblock-UID]
  -shared-group        file engine: let the users of the directory's group share it
                       (setgid group-writable directory of this process's group,
                       files 0660) [JOBLOCK_SHARED_GROUP=1]
  -redis-url URL       Redis engine server [JOBLOCK_REDIS_URL, default redis://127.0.0.1:6379/0]:
                       redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS),
                       redis-sentinel://[:PASSWORD@]S1[:PORT],S2.../DB?master_name=NAME,
                       redis-cluster://[:PASSWORD@]N1[:PORT],N2...
  -lock-redis-url URL  the locks' Redis when not -redis-url's, as a worker with the
                       same setting uses it [JOBLOCK_LOCK_REDIS_URL]
  -restart-grace D     after a Redis node starts, no new lock on it for D, so that
                       holders of locks a restart lost learn of it first; at least
                       the longest lease of any holder; 0 disables
                       [JOBLOCK_RESTART_GRACE, default 15s]
  -redis-ca FILE       TLS: CAs to trust instead of the system's [JOBLOCK_REDIS_CA]
  -redis-cert FILE     TLS: client certificate [JOBLOCK_REDIS_CERT]
  -redis-key FILE      TLS: client certificate's key [JOBLOCK_REDIS_KEY]
  -redis-password-file FILE
                       Redis's password, read from FILE; wins over the URL's
                       [JOBLOCK_REDIS_PASSWORD_FILE; or the password itself in
                       JOBLOCK_REDIS_PASSWORD]. A password in the URL must be
                       percent-encoded ('#' as %23, '@' as %40, '/' as %2F, ...).
                       Sentinels' own password, if any: JOBLOCK_REDIS_SENTINEL_PASSWORD
  -prefix P            Redis engine key prefix [JOBLOCK_PREFIX, default joblock:]
  -json                JSON output instead of text (acquire, release, status,
                       list, stats, cleanup; serve-stdio always speaks JSON)

acquire:
  -ttl D               lock TTL, 1ms to 8760h (365 days) (default 30s): the lock lasts
                       this long, then expires
  -wait D              wait up to D for a held key (default 0: do not wait)
  -limit N             KEY admits N holders (1 to 1000, default 1): take one of its
                       slots, released with its lock id as any lock; every holder of
                       KEY must give the same N
run:
  -lease D             lock lease (default 15s, at least 100ms), renewed every D/3 while COMMAND runs:
                       how long a crashed run keeps KEY blocked, not how long it may run
  -max-run-time D      stop COMMAND after D (default 0: no limit)
  -kill-after D        when COMMAND is stopped (lock lost, -max-run-time, lockctl told
                       to stop), its process group gets SIGTERM, then SIGKILL D later
                       (default 10s); on Linux COMMAND is killed if lockctl dies
  -window D            after COMMAND succeeds keep KEY taken until D after it was
                       obtained, so KEY runs at most once per D (default 0: release)
  -wait D              wait up to D for a held key (default 0: do not wait)
  -on-held exit|wait   when KEY is held: exit 3 (default), or wait (up to -wait if set)
  -limit N             let N runs of KEY go at once, across hosts (default 1): a
                       crontab line with -limit 2 runs at most two copies anywhere

Exit codes:
  0  success (run: COMMAND's own exit code is passed through)
  1  error: engine or system failure, message on stderr
  2  usage error
  3  the key is held by someone else (with -limit: all its slots are)
  4  the lock is not held: release of a lock id that no longer holds the key,
     or status of a free key
  5  run: the lock was lost while COMMAND ran (COMMAND was sent SIGTERM)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitError carries an exit code with its message.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }

func fail(code int, format string, args ...any) error {
	return &exitErr{code: code, err: fmt.Errorf(format, args...)}
}

func runMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "version" || args[0] == "-version" || args[0] == "--version") {
		fmt.Fprintln(stdout, buildinfo.String("lockctl"))
		return exitOK
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "lockctl: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	err := cmd(ctx, &env{args: args[1:], stdin: stdin, stdout: stdout, stderr: stderr, name: args[0]})
	if err == nil {
		return exitOK
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		if ee.err.Error() != "" {
			fmt.Fprintln(stderr, "lockctl:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "lockctl:", err)
	return exitError
}
