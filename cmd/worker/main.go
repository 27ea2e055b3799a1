// Command worker is an asynq worker whose tasks run under joblock locks:
// the LockManager spec's use cases (cache regeneration, CDN invalidation,
// job dedup, API rate-limit slot, export prevention) as task types, and its
// distributed cron (a daily cleanup, a periodic lock cleanup, a cache
// warm-up) on the scheduler.
//
//	worker -demo                                   # nothing to install: try it
//	worker -redis-url redis://127.0.0.1:6379/0     # file engine, one host
//	worker -engine redis                           # Redis engine, many hosts
//
// Run worker -h for every flag; each has an environment variable too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/middleware"
	"github.com/joblock/joblock/scheduler"
	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type config struct {
	engine      engine.Config
	queues      string
	concurrency int
	lease       time.Duration
	httpAddr    string
	role        string
	lockDirSet  bool
	demo        bool
	runFor      time.Duration
	logLevel    string
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDur(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.engine.Bind(fs)
	fs.StringVar(&c.queues, "queues", envStr("JOBLOCK_QUEUES", "default=1"), "asynq queues and priorities, name=weight,... [JOBLOCK_QUEUES]")
	fs.IntVar(&c.concurrency, "concurrency", envInt("JOBLOCK_CONCURRENCY", 10), "tasks run at once [JOBLOCK_CONCURRENCY]")
	fs.DurationVar(&c.lease, "lease", envDur("JOBLOCK_LEASE", lock.DefaultLease), "lease of task locks, renewed every third of it while a task runs: how long a crashed worker keeps a key blocked [JOBLOCK_LEASE]")
	fs.StringVar(&c.httpAddr, "http", envStr("JOBLOCK_HTTP", "127.0.0.1:8080"), "address of /healthz, /metrics and /locks; empty disables [JOBLOCK_HTTP]")
	fs.StringVar(&c.role, "role", envStr("JOBLOCK_ROLE", "all"), "worker (asynq tasks), scheduler (cron jobs, each tick once across every scheduler) or all [JOBLOCK_ROLE]")
	fs.BoolVar(&c.demo, "demo", false, "in-process Redis, file engine, a producer of duplicate bursts and a live summary")
	fs.DurationVar(&c.runFor, "run-for", 0, "stop after this long (0: until SIGTERM or SIGINT)")
	fs.StringVar(&c.logLevel, "log-level", envStr("JOBLOCK_LOG_LEVEL", "info"), "debug, info, warn or error [JOBLOCK_LOG_LEVEL]")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.lockDirSet = flagSet(fs, "lock-dir") || os.Getenv("JOBLOCK_LOCK_DIR") != ""
	if c.demo && !flagSet(fs, "log-level") && os.Getenv("JOBLOCK_LOG_LEVEL") == "" {
		c.logLevel = "warn" // the summary is the demo's output
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.concurrency < 1 {
		return c, fmt.Errorf("-concurrency must be at least 1, not %d", c.concurrency)
	}
	if err := lock.ValidateTTL(c.lease); err != nil {
		return c, fmt.Errorf("-lease: %w", err)
	}
	switch c.role {
	case "all", "worker", "scheduler":
	default:
		return c, fmt.Errorf("-role must be worker, scheduler or all, not %q", c.role)
	}
	return c, nil
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

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	log, err := newLogger(cfg.logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	if err := serve(ctx, cfg, log, stdout); err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 1
	}
	return 0
}

// serve runs the worker until ctx ends (or -run-for passes), then shuts
// down: asynq first (running tasks finish or are cancelled, releasing their
// locks), then the cron, then whatever the manager still holds.
func serve(ctx context.Context, cfg config, log *slog.Logger, stdout io.Writer) error {
	if cfg.runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.runFor)
		defer cancel()
	}
	if cfg.demo {
		mr, err := miniredis.Run()
		if err != nil {
			return fmt.Errorf("demo: start in-process Redis: %w", err)
		}
		defer mr.Close()
		cfg.engine.RedisURL = "redis://" + mr.Addr()
		cfg.engine.Engine = engine.File
		if !cfg.lockDirSet {
			// Its own directory, so the demo never meets a real worker's locks.
			dir, err := os.MkdirTemp("", "joblock-demo-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			cfg.engine.Dir = dir
		}
		stopClock := miniredisClock(mr)
		defer stopClock()
		log.Info("demo: in-process Redis (miniredis) for asynq, file engine for locks", "redis", mr.Addr())
	}
	queues, err := parseQueues(cfg.queues)
	if err != nil {
		return err
	}

	rdb, err := cfg.engine.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := engine.Ping(ctx, rdb, cfg.engine.RedisURL); err != nil {
		return fmt.Errorf("asynq needs Redis: %w", err)
	}
	locker, closeLocker, err := cfg.engine.Open(ctx)
	if err != nil {
		return err
	}
	defer closeLocker()
	log.Info("lock engine", "engine", cfg.engine.Engine, "detail", cfg.engine.Describe())
	manager := lock.NewManager(locker)

	met := newMetrics(manager)
	tally := newTally(met)
	cases := useCases(cfg.lease)
	mw, err := newMiddleware(locker, rdb, cases, log, met, tally)
	if err != nil {
		return err
	}
	mux := asynq.NewServeMux()
	mux.Use(mw)
	for _, u := range cases {
		mux.Handle(u.Type, u.handler(log, tally, rdb))
	}
	redisOpt := asynq.RedisClientOpt{Addr: rdb.Options().Addr, Password: rdb.Options().Password, DB: rdb.Options().DB, Username: rdb.Options().Username}
	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency:     cfg.concurrency,
		Queues:          queues,
		IsFailure:       middleware.IsFailure(nil),
		RetryDelayFunc:  middleware.RetryDelayFunc(nil),
		ShutdownTimeout: 10 * time.Second,
		Logger:          asynqLogger{log},
		LogLevel:        asynqLevel(cfg.demo),
	})
	stopServer := func() {
		if cfg.role != "scheduler" {
			srv.Shutdown() // waits for running tasks; their locks are released as they return
		}
	}
	if cfg.role != "scheduler" {
		if err := srv.Start(mux); err != nil {
			return fmt.Errorf("start asynq server: %w", err)
		}
		log.Info("worker started", "queues", queues, "concurrency", cfg.concurrency)
	}
	var sched *scheduler.Scheduler
	if cfg.role != "worker" {
		enq := asynq.NewClient(redisOpt)
		defer enq.Close()
		if sched, err = startCron(locker, manager, log, tally, enq, redisOpt, rdb, queues, cfg.demo); err != nil {
			stopServer()
			return err
		}
		log.Info("scheduler started: each tick runs once across every scheduler sharing the lock engine")
	}
	var httpSrv *http.Server
	if cfg.httpAddr != "" {
		ln, err := net.Listen("tcp", cfg.httpAddr)
		switch {
		case err != nil && cfg.demo:
			// The demo must run anywhere; its summary does not need HTTP.
			log.Warn("demo: http disabled", "err", err)
		case err != nil:
			stopServer()
			return fmt.Errorf("http: %w", err)
		default:
			httpSrv = &http.Server{Handler: httpHandler(manager, met), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = httpSrv.Serve(ln) }()
			log.Info("http listening", "addr", ln.Addr().String(), "paths", "/healthz /metrics /locks")
		}
	}
	var demoDone chan struct{}
	if cfg.demo {
		demoDone = make(chan struct{})
		go func() {
			defer close(demoDone)
			runDemo(ctx, redisOpt, cases, tally, stdout, log)
		}()
	}

	<-ctx.Done()
	log.Info("shutting down")
	if demoDone != nil {
		<-demoDone
	}
	stopServer()
	if sched != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sched.Stop(sctx); err != nil {
			log.Warn("cron jobs still running at shutdown", "err", err)
		}
		cancel()
	}
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := manager.ReleaseAll(rctx); err != nil || n > 0 {
		log.Info("released remaining locks", "count", n, "err", err)
	}
	if httpSrv != nil {
		_ = httpSrv.Shutdown(rctx)
	}
	log.Info("worker stopped")
	return nil
}

func newMiddleware(locker lock.Locker, rdb redis.UniversalClient, cases []useCase, log *slog.Logger, met *metrics, t *tally) (asynq.MiddlewareFunc, error) {
	opts := []middleware.Option{
		middleware.WithLogger(log),
		middleware.WithRedisClient(rdb), // duplicates asynq would archive are sent back instead
		middleware.WithObserver(func(e middleware.Event) {
			met.observe(e)
			t.observe(e)
			if trace != nil {
				trace.Event(e)
			}
		}),
	}
	for _, u := range cases {
		opts = append(opts, middleware.WithRule(u.Type, u.Rule))
	}
	return middleware.New(locker, opts...)
}

// startCron runs the spec's distributed cron: a daily cleanup (archived
// duplicates, and a report), a cleanup of
// expired lock records every 5 minutes, and a periodic cache warm-up task
// enqueued for the workers; each tick on one scheduler only.
func startCron(locker lock.Locker, m *lock.Manager, log *slog.Logger, t *tally, enq *asynq.Client, redisOpt asynq.RedisClientOpt, rdb redis.UniversalClient, queues map[string]int, demo bool) (*scheduler.Scheduler, error) {
	if demo {
		log = slog.New(skipCounter{Handler: log.Handler(), t: t})
	}
	s := scheduler.New(locker, scheduler.WithLogger(log))
	jobs := []scheduler.Job{
		{Name: "daily-cleanup", Spec: "@daily", Run: func(ctx context.Context) error {
			n, err := deleteArchivedDuplicates(ctx, redisOpt, rdb, queues)
			if err != nil {
				return err
			}
			st, err := m.GetStats(ctx)
			if err != nil {
				return err
			}
			log.InfoContext(ctx, "daily cleanup", "archived_duplicates_deleted", n,
				"active_locks", st.ActiveLocks, "expired_locks", st.ExpiredLocks)
			return nil
		}},
		{Name: "lock-cleanup", Spec: "@every 5m", Run: func(ctx context.Context) error {
			n, err := m.CleanupExpiredLocks(ctx)
			log.InfoContext(ctx, "cleaned up expired locks", "count", n)
			return err
		}},
		{Name: "cache-warmup", Spec: "@every 1m", Run: scheduler.EnqueueJob(enq,
			asynq.NewTask(TypeCacheRegenerate, []byte(`{"key":"homepage"}`)))},
	}
	if demo {
		jobs = append(jobs, demoCronJobs(t)...)
	}
	for _, j := range jobs {
		if _, err := s.Add(j); err != nil {
			return nil, err
		}
	}
	s.Start()
	return s, nil
}

// deleteArchivedDuplicates removes the duplicates that the Fail policy
// archived (exports refused while another ran) once work on their key has
// completed since they were archived: the work they duplicated is done.
// Real failures, and duplicates whose work never completed, are kept.
func deleteArchivedDuplicates(ctx context.Context, opt asynq.RedisClientOpt, rdb redis.UniversalClient, queues map[string]int) (int, error) {
	in := asynq.NewInspector(opt)
	defer in.Close()
	n := 0
	for q := range queues {
		tasks, err := in.ListArchivedTasks(q, asynq.PageSize(1000))
		if err != nil {
			return n, err
		}
		for _, ti := range tasks {
			key, ok := duplicateKey(ti.LastErr)
			if !ok {
				continue
			}
			done, err := rdb.Get(ctx, completedKey(key)).Int64()
			if errors.Is(err, redis.Nil) || (err == nil && time.UnixMilli(done).Before(ti.LastFailedAt)) {
				continue // nothing completed on that key since: keep it
			}
			if err != nil {
				return n, err
			}
			if err := in.DeleteTask(q, ti.ID); err == nil {
				n++
			}
		}
	}
	return n, nil
}

// duplicateOf finds the lock key in a middleware.DuplicateError's message.
var duplicateOf = regexp.MustCompile(`is a duplicate: key ("(?:[^"\\]|\\.)*")`)

// duplicateKey returns the lock key that an archived task's last error
// says it was a duplicate of.
func duplicateKey(lastErr string) (string, bool) {
	m := duplicateOf.FindStringSubmatch(lastErr)
	if m == nil {
		return "", false
	}
	key, err := strconv.Unquote(m[1])
	return key, err == nil
}

// asynqLevel keeps asynq's warnings (such as the archiving of duplicates
// under the Fail policy) out of the demo's summary.
func asynqLevel(demo bool) asynq.LogLevel {
	if demo {
		return asynq.ErrorLevel
	}
	return asynq.WarnLevel
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error("asynq: " + fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error("asynq: " + fmt.Sprint(args...))
	os.Exit(1) // asynq expects Fatal not to return
}
