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
// Run worker -h for every flag; most have an environment variable too.
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
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/buildinfo"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/middleware"
	"github.com/joblock/joblock/scheduler"
	"github.com/redis/go-redis/v9"

	// Zone names in CRON_TZ= work on hosts and images without a zone
	// database.
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level [JOBLOCK_LOG_LEVEL] %q: %w", level, err)
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
	switch {
	case cfg.version:
		fmt.Fprintln(stdout, buildinfo.String("worker"))
		return 0
	case cfg.healthcheck:
		if err := healthcheck(ctx, cfg.httpAddr, stdout); err != nil {
			fmt.Fprintln(stderr, "worker:", err)
			return 1
		}
		return 0
	}
	log, err := newLogger(cfg.logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	// Before anything connects: a taken port is a setting to change.
	ln, err := listenHTTP(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	// go-redis logs (Sentinel switches, pool trouble) go to the same log.
	redis.SetLogger(redisLogger{log})
	if err := serve(ctx, cfg, ln, log, stdout); err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 1
	}
	return 0
}

// redisLogger sends go-redis's logs to slog.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.InfoContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

// startDemo points cfg at an in-process Redis and, unless -lock-dir was
// given, a lock directory of the demo's own. stop undoes it.
func startDemo(cfg *config, log *slog.Logger) (stop func(), err error) {
	mr, err := miniredis.Run()
	if err != nil {
		return nil, fmt.Errorf("demo: start in-process Redis: %w", err)
	}
	cfg.engine.RedisURL = "redis://" + mr.Addr()
	cfg.engine.Engine = engine.File
	dir := ""
	if !cfg.lockDirSet {
		// Its own directory, so the demo never meets a real worker's locks.
		if dir, err = os.MkdirTemp("", "joblock-demo-"); err != nil {
			mr.Close()
			return nil, err
		}
		cfg.engine.Dir = dir
	}
	// The summary counts the tasks the demo enqueues; the warm-up would add
	// cache tasks of its own.
	cfg.schedules[jobCacheWarmup] = scheduleOff
	stopClock := miniredisClock(mr)
	log.Info("demo: in-process Redis (miniredis) for asynq, file engine for locks", "redis", mr.Addr())
	return func() {
		stopClock()
		mr.Close()
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}, nil
}

// serve runs the worker until ctx ends (or -run-for passes), serving HTTP
// on ln unless it is nil, then shuts down: /readyz turns unready, asynq
// stops (running tasks finish or are cancelled, releasing their locks),
// then the cron, then whatever the manager still holds, and HTTP last.
func serve(ctx context.Context, cfg config, ln net.Listener, log *slog.Logger, stdout io.Writer) error {
	if ln != nil {
		defer ln.Close() // on the way out before HTTP started; harmless after
	}
	if cfg.runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.runFor)
		defer cancel()
	}
	if cfg.demo {
		stop, err := startDemo(&cfg, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	queues, err := parseQueues(cfg.queues)
	if err != nil {
		return err
	}

	// One client for everything on this Redis: asynq's server, client and
	// inspector, the lock engine (unless its locks have a Redis of their
	// own) and the handlers.
	rdb, err := cfg.engine.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := cfg.engine.Ping(ctx, rdb); err != nil {
		if ctx.Err() != nil {
			return stoppedConnecting(ctx, log)
		}
		return fmt.Errorf("asynq needs Redis: %w", err)
	}
	log.Info("redis", "url", engine.Redact(cfg.engine.RedisURL))
	lockRDB, err := lockRedis(ctx, cfg.engine, rdb, log)
	if err != nil {
		if ctx.Err() != nil {
			return stoppedConnecting(ctx, log)
		}
		return err
	}
	if lockRDB != nil && lockRDB != rdb {
		defer lockRDB.Close()
	}
	locker, closeLocker, err := cfg.engine.OpenWith(lockRDB)
	if err != nil {
		return err
	}
	defer closeLocker()
	log.Info("lock engine", "engine", cfg.engine.Engine, "detail", cfg.engine.Describe())
	manager := lock.NewManager(locker)

	met := newMetrics(manager)
	tally := newTally(met)
	cases := useCases(cfg.lease)
	mw, err := newMiddleware(locker, rdb, cases, log, met)
	if err != nil {
		return err
	}
	isFailure := middleware.IsFailure(nil)
	mux := asynq.NewServeMux()
	mux.Use(tally.middleware, mw)
	for _, u := range cases {
		mux.Handle(u.Type, markRan(u.handler(log, tally, rdb)))
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:     cfg.concurrency,
		Queues:          queues,
		IsFailure:       isFailure,
		RetryDelayFunc:  middleware.RetryDelayFunc(nil),
		ShutdownTimeout: 10 * time.Second,
		// A duplicate handed a released key is moved to pending; an idle
		// worker picks it up this soon (asynq's default is a second).
		TaskCheckInterval: 100 * time.Millisecond,
		Logger:            asynqLogger{log},
		LogLevel:          asynqLevel(cfg.demo),
	})
	// Both share rdb, which closes with it; asynq refuses to close them.
	enq := asynq.NewClientFromRedisClient(rdb)
	inspector := asynq.NewInspectorFromRedisClient(rdb)

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
		if sched, err = startCron(cronDeps{locker: locker, manager: manager, log: log, tally: tally, enq: enq,
			inspector: inspector, rdb: rdb, queues: queues}, cfg.schedules, cfg.scheduleLoc, cfg.demo); err != nil {
			stopServer()
			return err
		}
		log.Info("scheduler started: each tick runs once across every scheduler sharing the lock engine")
	}
	st := &status{manager: manager, met: met, adminToken: cfg.adminToken, checks: []check{
		{name: "asynq_broker", run: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		{name: "lock_engine", run: lockCheck(locker, fileDir(cfg.engine))},
	}}
	stopHTTP := startHTTP(ln, st, log)
	var demoDone chan struct{}
	if cfg.demo {
		demoDone = make(chan struct{})
		go func() {
			defer close(demoDone)
			runDemo(ctx, enq, cases, tally, stdout, log)
		}()
	}

	<-ctx.Done()
	st.stopping.Store(true)
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
	stopHTTP(rctx)
	log.Info("worker stopped")
	return nil
}

// stoppedConnecting logs that the worker was stopped (a signal, or
// -run-for) while it waited for Redis to answer, which is no failure, and
// returns nil.
func stoppedConnecting(ctx context.Context, log *slog.Logger) error {
	log.Info("stopped before Redis answered", "why", context.Cause(ctx))
	return nil
}

// lockRedis returns the client of the Redis engine's locks: rdb, unless
// they have a Redis of their own (-lock-redis-url, other than
// -redis-url), whose new client the caller closes. For the file engine it
// returns nil.
func lockRedis(ctx context.Context, c engine.Config, rdb redis.UniversalClient, log *slog.Logger) (redis.UniversalClient, error) {
	switch {
	case c.Engine != engine.Redis:
		return nil, nil
	case c.LockRedisURL == "" || c.LockRedisURL == c.RedisURL:
		return rdb, nil // one client per server
	}
	lrdb, err := c.LockRedisClient()
	if err != nil {
		return nil, err
	}
	if err := c.PingLock(ctx, lrdb); err != nil {
		_ = lrdb.Close()
		return nil, fmt.Errorf("the redis engine needs its Redis: %w", err)
	}
	log.Info("redis of the locks", "url", engine.Redact(c.LockRedisURL))
	return lrdb, nil
}

// fileDir returns the file engine's directory, or "" for another engine.
func fileDir(c engine.Config) string {
	if c.Engine == engine.File {
		return c.Dir
	}
	return ""
}

// listenHTTP opens the listener of cfg.httpAddr, or returns nil when
// there is none. The demo runs on without HTTP when the address is taken.
func listenHTTP(cfg config, log *slog.Logger) (net.Listener, error) {
	if cfg.httpAddr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.httpAddr)
	switch {
	case err != nil && cfg.demo:
		// The demo must run anywhere; its summary does not need HTTP.
		log.Warn("demo: http disabled", "err", err)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("-http [JOBLOCK_HTTP] %s: %w", cfg.httpAddr, err)
	}
	return ln, nil
}

// startHTTP serves st on ln, if any, and returns the function that stops
// it.
func startHTTP(ln net.Listener, st *status, log *slog.Logger) (stop func(context.Context)) {
	if ln == nil {
		return func(context.Context) {}
	}
	srv := &http.Server{Handler: st.handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	log.Info("http listening", "addr", ln.Addr().String(), "paths", "/healthz /readyz /metrics /locks",
		"lock_ids", st.adminToken != "")
	return func(ctx context.Context) {
		_ = srv.Shutdown(ctx)
		<-done
	}
}

func newMiddleware(locker lock.Locker, rdb redis.UniversalClient, cases []useCase, log *slog.Logger, met *metrics) (asynq.MiddlewareFunc, error) {
	opts := []middleware.Option{
		middleware.WithLogger(log),
		middleware.WithRedisClient(rdb), // duplicates asynq would archive are sent back instead
		middleware.WithObserver(func(e middleware.Event) {
			met.observe(e)
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

// cronDeps is what the worker's cron jobs use.
type cronDeps struct {
	locker    lock.Locker
	manager   *lock.Manager
	log       *slog.Logger
	tally     *tally
	enq       *asynq.Client
	inspector *asynq.Inspector
	rdb       redis.UniversalClient
	queues    map[string]int
}

// startCron runs the spec's distributed cron on the configured schedules,
// read in loc unless they say CRON_TZ=: a daily cleanup (archived
// duplicates, and a report), a cleanup of expired lock records, and a
// cache warm-up task enqueued for the workers; each tick on one scheduler
// only. A job whose schedule is "off" is left out.
func startCron(d cronDeps, sched schedules, loc *time.Location, demo bool) (*scheduler.Scheduler, error) {
	log := d.log
	if demo {
		log = slog.New(skipCounter{Handler: log.Handler(), t: d.tally})
	}
	s := scheduler.New(d.locker, scheduler.WithLogger(log), scheduler.WithLocation(loc))
	run := map[string]func(ctx context.Context) error{
		jobDailyCleanup: func(ctx context.Context) error {
			n, err := deleteArchivedDuplicates(ctx, d.inspector, d.rdb, d.queues)
			if err != nil {
				return err
			}
			st, err := d.manager.GetStats(ctx)
			if err != nil {
				return err
			}
			log.InfoContext(ctx, "daily cleanup", "archived_duplicates_deleted", n,
				"active_locks", st.ActiveLocks, "expired_locks", st.ExpiredLocks)
			return nil
		},
		jobLockCleanup: func(ctx context.Context) error {
			n, err := d.manager.CleanupExpiredLocks(ctx)
			log.InfoContext(ctx, "cleaned up expired locks", "count", n)
			return err
		},
		jobCacheWarmup: scheduler.EnqueueJob(d.enq, asynq.NewTask(TypeCacheRegenerate, []byte(`{"key":"homepage"}`))),
	}
	var jobs []scheduler.Job
	now := time.Now().In(loc) // a spec without CRON_TZ= is read in now's zone
	for _, name := range sched.jobNames() {
		spec := sched[name]
		if spec == scheduleOff {
			log.Info("cron job off", "job", name)
			continue
		}
		jobs = append(jobs, scheduler.Job{Name: name, Spec: spec, Run: run[name]})
		if cs, err := scheduler.ParseStandard(spec); err == nil { // parsed once already by schedules.set
			log.Info("cron job", "job", name, "spec", spec, "next", scheduler.Aligned(cs).Next(now).UTC().Format(time.RFC3339))
		}
	}
	if demo {
		jobs = append(jobs, demoCronJobs(d.tally)...)
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
func deleteArchivedDuplicates(ctx context.Context, in *asynq.Inspector, rdb redis.UniversalClient, queues map[string]int) (int, error) {
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
