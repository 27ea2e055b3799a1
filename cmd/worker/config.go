package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
)

type config struct {
	engine      engine.Config
	queues      string
	concurrency int
	lease       time.Duration
	httpAddr    string
	role        string
	lockDirSet  bool
	graceSet    bool // -restart-grace or JOBLOCK_RESTART_GRACE given
	demo        bool
	runFor      time.Duration
	logLevel    string
	schedules   schedules
	scheduleTZ  string
	scheduleLoc *time.Location // scheduleTZ, loaded by check
	adminToken  string
	container   bool
	healthcheck bool
	version     bool
}

// envContainer is set by the project's image: the worker runs in a
// container, whose /tmp no other replica sees.
const envContainer = "JOBLOCK_IN_CONTAINER"

// envDefaults reads flag defaults from environment variables and keeps
// each value that does not parse, so that it is reported naming the flag
// and the variable instead of silently giving way to the default.
type envDefaults struct{ errs []envError }

type envError struct {
	flag string // the flag that overrides the variable; "" if none does
	err  error
}

func (e *envDefaults) fail(flag string, err error) { e.errs = append(e.errs, envError{flag, err}) }

func (e *envDefaults) str(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (e *envDefaults) int(flag, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.fail(flag, fmt.Errorf("-%s [%s]: %q is not a whole number", flag, name, v))
		return def
	}
	return n
}

func (e *envDefaults) duration(flag, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		hint := "such as 15s or 2m"
		if _, nerr := strconv.Atoi(v); nerr == nil {
			hint = "it needs a unit, as in " + v + "s"
		}
		e.fail(flag, fmt.Errorf("-%s [%s]: %q is not a duration: %s", flag, name, v, hint))
		return def
	}
	return d
}

// boolean reads a variable that no flag overrides: 1 or 0, true or false.
func (e *envDefaults) boolean(name string) bool {
	v := os.Getenv(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail("", fmt.Errorf("%s: %q is neither 1 nor 0 (true or false)", name, v))
	}
	return b
}

// err returns the first value that did not parse, leaving out those of
// variables whose flag fs set: the flag wins over them.
func (e *envDefaults) err(fs *flag.FlagSet) error {
	for _, ee := range e.errs {
		if ee.flag == "" || !flagSet(fs, ee.flag) {
			return ee.err
		}
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var env envDefaults
	c := config{schedules: defaultSchedules()}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.engine.Bind(fs, "Redis for asynq (always), and for the redis engine's locks unless -lock-redis-url is set")
	fs.StringVar(&c.queues, "queues", env.str("JOBLOCK_QUEUES", "default=1"), "asynq queues and priorities, name=weight,... [JOBLOCK_QUEUES]")
	fs.IntVar(&c.concurrency, "concurrency", env.int("concurrency", "JOBLOCK_CONCURRENCY", 10), "tasks run at once [JOBLOCK_CONCURRENCY]")
	fs.DurationVar(&c.lease, "lease", env.duration("lease", "JOBLOCK_LEASE", lock.DefaultLease), "lease of task locks, renewed every third of it while a task runs: how long a crashed worker keeps a key blocked [JOBLOCK_LEASE]")
	fs.StringVar(&c.httpAddr, "http", env.str("JOBLOCK_HTTP", "127.0.0.1:8080"), "address of /healthz, /readyz, /metrics and /locks; empty disables [JOBLOCK_HTTP]")
	fs.StringVar(&c.role, "role", env.str("JOBLOCK_ROLE", "all"), "worker (asynq tasks), scheduler (cron jobs, each tick once across every scheduler) or all; "+
		"every worker and scheduler sharing the queues must use the same -engine [JOBLOCK_ROLE]")
	fs.BoolVar(&c.demo, "demo", false, "in-process Redis, file engine, a producer of duplicate bursts and a live summary")
	fs.DurationVar(&c.runFor, "run-for", 0, "stop after this long (0: until SIGTERM or SIGINT)")
	fs.StringVar(&c.logLevel, "log-level", env.str("JOBLOCK_LOG_LEVEL", "info"), "debug, info, warn or error [JOBLOCK_LOG_LEVEL]")
	fs.BoolVar(&c.healthcheck, "healthcheck", false, "ask the worker at -http for /healthz, print the answer, exit 0 if healthy, else 1 (for container healthchecks)")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	sf := scheduleFlag{c.schedules}
	if v := os.Getenv("JOBLOCK_SCHEDULES"); v != "" {
		if err := sf.Set(v); err != nil {
			env.fail("", fmt.Errorf("JOBLOCK_SCHEDULES: %w", err))
		}
	}
	fs.Var(sf, "schedule", "a cron job's schedule, `NAME=SPEC`, repeatable (or several joined by ';'): SPEC is cron (\"30 3 * * *\", \"CRON_TZ=Europe/Berlin 30 3 * * *\"), a descriptor (\"@every 10m\", at least 1s) or off [JOBLOCK_SCHEDULES]")
	fs.StringVar(&c.scheduleTZ, "schedule-tz", env.str("JOBLOCK_SCHEDULE_TZ", "UTC"), "time `ZONE` of the schedules without CRON_TZ=: UTC by default, so that schedulers in every zone agree; Local is this host's zone [JOBLOCK_SCHEDULE_TZ]")
	c.container = env.boolean(envContainer)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case c.version:
		return c, nil
	case c.healthcheck:
		return c, checkHTTPAddr(c.httpAddr) // all it uses
	}
	if err := env.err(fs); err != nil {
		return c, err
	}
	c.adminToken = os.Getenv("JOBLOCK_ADMIN_TOKEN")
	c.lockDirSet = flagSet(fs, "lock-dir") || os.Getenv("JOBLOCK_LOCK_DIR") != ""
	c.graceSet = flagSet(fs, "restart-grace") || os.Getenv("JOBLOCK_RESTART_GRACE") != ""
	if c.demo && !flagSet(fs, "log-level") && os.Getenv("JOBLOCK_LOG_LEVEL") == "" {
		c.logLevel = "warn" // the summary is the demo's output
	}
	return c, c.check(fs)
}

// check reports a configuration that cannot work before anything
// connects, naming the flag and environment variable at fault.
func (c *config) check(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.concurrency < 1 {
		return fmt.Errorf("-concurrency [JOBLOCK_CONCURRENCY] must be at least 1, not %d", c.concurrency)
	}
	if err := lock.ValidateLease(c.lease); err != nil {
		return fmt.Errorf("-lease [JOBLOCK_LEASE]: %w", err)
	}
	if err := checkHTTPAddr(c.httpAddr); err != nil {
		return err
	}
	switch c.role {
	case "all", "worker", "scheduler":
	default:
		return fmt.Errorf("-role [JOBLOCK_ROLE] must be worker, scheduler or all, not %q", c.role)
	}
	if _, err := parseQueues(c.queues); err != nil {
		return fmt.Errorf("-queues [JOBLOCK_QUEUES]: %w", err)
	}
	loc, err := time.LoadLocation(c.scheduleTZ)
	if err != nil || c.scheduleTZ == "" {
		return fmt.Errorf("-schedule-tz [JOBLOCK_SCHEDULE_TZ] %q: not a time zone: want UTC, Local or a name such as Europe/Berlin", c.scheduleTZ)
	}
	c.scheduleLoc = loc
	if c.adminToken != "" && len(c.adminToken) < minAdminToken {
		return fmt.Errorf("JOBLOCK_ADMIN_TOKEN is %d characters: use at least %d (e.g. openssl rand -hex 32)", len(c.adminToken), minAdminToken)
	}
	if strings.ContainsFunc(c.adminToken, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		// No request could present it: HTTP strips the white space around
		// a header's value and refuses control characters in it.
		return errors.New("JOBLOCK_ADMIN_TOKEN holds white space or a control character (a line break from a file?): use letters and digits (e.g. openssl rand -hex 32)")
	}
	if c.demo {
		return nil // its own Redis and lock directory
	}
	if c.container && c.engine.Engine == engine.File && !c.lockDirSet {
		return fmt.Errorf("in a container (%s=1) the file engine's default directory %s is private to this container, so replicas would not coordinate: "+
			"set JOBLOCK_ENGINE=redis, or JOBLOCK_LOCK_DIR to a volume every replica mounts (file-engine replicas coordinate only on one host)", envContainer, c.engine.Dir)
	}
	if err := c.checkGrace(); err != nil {
		return err
	}
	return c.engine.Check(true)
}

// checkGrace makes the restart grace at least the longest lease this
// worker's locks are held by, unless it was set: then it must be, or 0.
func (c *config) checkGrace() error {
	longest, whose := c.longestLease()
	switch g := c.engine.RestartGrace; {
	case !c.graceSet:
		c.engine.RestartGrace = max(g, longest)
	case g > 0 && g < longest:
		return fmt.Errorf("-restart-grace [JOBLOCK_RESTART_GRACE] %s is shorter than %s, the lease of %s: "+
			"after a Redis restart a new lock could be granted while a holder from before still runs; use at least %s (or 0 to disable it)", g, longest, whose, longest)
	}
	return nil
}

// longestLease returns the longest lease this worker's locks are held by
// while work runs, and whose it is.
func (c *config) longestLease() (time.Duration, string) {
	var longest time.Duration
	var whose string
	if c.role != "worker" {
		longest, whose = lock.DefaultLease, "the cron jobs"
	}
	for _, u := range useCases(c.lease) {
		if lease := cmp.Or(u.Rule.Lease, lock.DefaultLease); lease > longest {
			longest, whose = lease, u.Type+" tasks"
		}
	}
	return longest, whose
}

// checkHTTPAddr reports an -http address that cannot be listened on,
// whatever the host: not HOST:PORT, or a port out of range. "" (no HTTP)
// is fine.
func checkHTTPAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-http [JOBLOCK_HTTP] %q: want HOST:PORT, such as 127.0.0.1:8080 (or empty for no HTTP)", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("-http [JOBLOCK_HTTP] %q: the port must be a number from 0 to 65535", addr)
	}
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func parseQueues(s string) (map[string]int, error) {
	q := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		name, weight, ok := strings.Cut(strings.TrimSpace(part), "=")
		w, err := strconv.Atoi(weight)
		if !ok || name == "" || err != nil || w < 1 {
			return nil, fmt.Errorf("queue %q: want name=weight with weight >= 1", part)
		}
		q[name] = w
	}
	return q, nil
}
