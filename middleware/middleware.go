package middleware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is put before every task's key unless WithPrefix says
// otherwise.
const DefaultPrefix = "asynq:"

// DefaultMaxWait is how long a Wait policy waits unless Rule.MaxWait says
// otherwise.
const DefaultMaxWait = 10 * time.Second

// Rule is the locking configuration of a task type.
type Rule struct {
	// Key derives the lock key. Default DefaultKey, unless Template is set.
	Key KeyFunc
	// Template, when Key is nil, is parsed by New with KeyTemplate.
	Template string

	// Lease is how long the lock lasts unless renewed. It is renewed every
	// third of it while the handler runs, so it bounds how long a crashed
	// worker keeps the key blocked, not how long a task may run. Default
	// lock.DefaultLease.
	Lease time.Duration
	// MaxRunTime, if set, cancels the handler's context (cause
	// lock.ErrMaxRunTime) once it has run that long; asynq's own Timeout and
	// Deadline apply as well. Default: no limit of the middleware's own.
	MaxRunTime time.Duration
	// Window, if set, keeps the key taken after a successful run until
	// Window after the lock was obtained, so the key runs at most once per
	// Window: rate-limit slots, once-per-window jobs. A failed run frees the
	// key for its retry. Default 0: the key is freed when the handler
	// returns.
	Window time.Duration

	// Limit is how many tasks of one key may run at once, across every
	// worker that shares the lock engine: 3 with the Template
	// "import-{{.tenant_id}}" lets each tenant run three imports at a time,
	// whatever the number of servers and their Concurrency. A task beyond
	// the limit is a duplicate, and Policy decides what it does. With
	// Window, the key runs at most Limit times per Window. The engine must
	// be a lock.Limiter (both of joblock's are). Default 1: a lock.
	//
	// Under UniqueUntilAndWhileExecuting one copy waits in the queue and
	// Limit run at once; UniqueUntilExecuting, whose runs take no lock,
	// and UniqueUntilExecuted, which admits one copy, waiting or running,
	// take no Limit over 1.
	//
	// asynq's own Config.Concurrency caps the tasks one server runs, of all
	// types together, and its queue priorities only order what a server
	// takes next; neither caps a type, a tenant or a queue across servers,
	// which is what Limit does.
	Limit int

	// Policy says what a duplicate does. Default Retry.
	Policy Policy
	// MaxWait bounds a Wait policy's wait. Default DefaultMaxWait.
	MaxWait time.Duration
	// WaitInterval is the pause between a Wait policy's tries. Default
	// lock.DefaultRetryInterval.
	WaitInterval time.Duration
	// AfterWait is what a Wait policy does when MaxWait passes: Skip or
	// Retry. Default Retry.
	AfterWait Policy

	// Unique keeps copies of a task out of the queue when they are enqueued
	// through a Client (see Uniqueness for when the key is free again).
	// Default NotUnique.
	Unique Uniqueness
	// OnConflict says what Client.Enqueue does with a task whose key is
	// taken. Default Reject.
	OnConflict Conflict
	// DebounceFor is how long a task enqueued under Debounce waits before
	// it can run; every later copy replaces it and starts the wait again.
	// Required with Debounce.
	DebounceFor time.Duration
	// UniqueFor bounds how long a key stays taken for a queued task, should
	// nothing free it (a lost release), counted from when the task may
	// first run (after DebounceFor, ProcessIn or ProcessAt). Default
	// DefaultUniqueFor.
	UniqueFor time.Duration
}

// Option configures the middleware.
type Option func(*config)

type config struct {
	prefix    string
	rules     map[string]Rule
	fallback  Rule
	logger    *slog.Logger
	observer  Observer
	releaseTO time.Duration
	broker    redis.UniversalClient
}

// WithRule sets the rule for task types matching pattern: a task type, or a
// prefix ending in "*" ("export:*"). An exact match wins, then the longest
// prefix, then the default rule.
func WithRule(pattern string, r Rule) Option {
	return func(c *config) { c.rules[pattern] = r }
}

// WithDefaultRule sets the rule for task types no WithRule matches.
// Default: the zero Rule (default key, TTL, strategy and policy).
func WithDefaultRule(r Rule) Option {
	return func(c *config) { c.fallback = r }
}

// WithPrefix sets the prefix of every lock key. Default DefaultPrefix.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithLogger logs each decision the middleware makes (debug for routine
// ones, warn for lost locks and engine errors). Default: no logging.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithObserver calls o for every Event. Default: none.
func WithObserver(o Observer) Option { return func(c *config) { c.observer = o } }

// WithReleaseTimeout bounds the release made after the handler returns,
// which runs even when the handler's context was cancelled. Default
// lock.DefaultReleaseTimeout.
func WithReleaseTimeout(d time.Duration) Option { return func(c *config) { c.releaseTO = d } }

// WithRedisClient gives the middleware the Redis that the asynq server
// works on (the caller keeps it and closes it). With it:
//
//   - a duplicate sent back under Retry is handed the key when its holder
//     releases it: the oldest one waiting is moved to pending at once,
//     rather than coming back on its retry timer;
//   - a duplicate waiting under Wait, in any process, tries again the
//     moment the holder releases the key (a release is published on
//     Redis), rather than at its next WaitInterval;
//   - a duplicate under Retry whose task has no retries left (asynq would
//     archive it, whatever IsFailure says) is enqueued again as a new task
//     that comes back when the holder is due to finish. Without it such a
//     duplicate waits for the key inside its handler, for as long as the
//     task may run.
//
// Default: none.
func WithRedisClient(c redis.UniversalClient) Option { return func(cfg *config) { cfg.broker = c } }

// rule is a Rule ready to use.
type rule struct {
	Rule
	pattern string
	opts    []lock.RunOption
	simple  *fieldTemplate // Template, when it is text and fields only
}

type middleware struct {
	locker    lock.Locker
	releaseTO time.Duration
	renewer   *lock.Renewer
	prefix    string
	exact     map[string]*rule
	prefixes  []*rule // longest first
	fallback  *rule
	log       *slog.Logger
	observe   Observer
	broker    redis.UniversalClient // nil without WithRedisClient
	client    *asynq.Client         // likewise
	inspect   *asynq.Inspector      // likewise
	releases  releases              // likewise
}

// New returns asynq middleware that runs each task under a lock on a key
// derived from the task, as the rule for its type says. It returns an error
// for a rule whose key template does not parse or whose settings make no
// sense; nothing is checked later that could be checked here.
func New(locker lock.Locker, opts ...Option) (asynq.MiddlewareFunc, error) {
	m, err := newMiddleware(locker, opts)
	if err != nil {
		return nil, err
	}
	return m.wrap, nil
}

// newMiddleware builds what New and NewClient share: the rules, compiled.
func newMiddleware(locker lock.Locker, opts []Option) (*middleware, error) {
	if locker == nil {
		return nil, errors.New("middleware: locker is nil")
	}
	cfg := config{prefix: DefaultPrefix, rules: map[string]Rule{}, releaseTO: lock.DefaultReleaseTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.releaseTO <= 0 {
		return nil, fmt.Errorf("middleware: release timeout %s must be positive", cfg.releaseTO)
	}
	m := &middleware{locker: locker, renewer: lock.NewRenewer(locker), prefix: cfg.prefix, exact: map[string]*rule{}, log: cfg.logger,
		observe: cfg.observer, releaseTO: cfg.releaseTO}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.broker != nil {
		m.broker = cfg.broker
		m.client = asynq.NewClientFromRedisClient(cfg.broker)
		m.inspect = asynq.NewInspectorFromRedisClient(cfg.broker)
	}
	var err error
	if m.fallback, err = compile("default rule", cfg.fallback, locker, cfg.releaseTO); err != nil {
		return nil, err
	}
	m.listenIfWaiting(m.fallback)
	for pattern, r := range cfg.rules {
		cr, err := compile(pattern, r, locker, cfg.releaseTO)
		if err != nil {
			return nil, err
		}
		m.listenIfWaiting(cr)
		if p, ok := strings.CutSuffix(pattern, "*"); ok {
			cr.pattern = p
			m.prefixes = append(m.prefixes, cr)
		} else {
			m.exact[pattern] = cr
		}
	}
	sort.Slice(m.prefixes, func(i, j int) bool { return len(m.prefixes[i].pattern) > len(m.prefixes[j].pattern) })
	return m, nil
}

func compile(name string, r Rule, locker lock.Locker, releaseTO time.Duration) (*rule, error) {
	fail := func(format string, args ...any) (*rule, error) {
		return nil, fmt.Errorf("middleware: rule %q: "+format, append([]any{name}, args...)...)
	}
	var simple *fieldTemplate
	if r.Key == nil && r.Template != "" {
		k, ft, err := compileTemplate(r.Template)
		if err != nil {
			return fail("%w", err)
		}
		r.Key, simple = k, ft
	}
	if r.Key == nil {
		r.Key = DefaultKey
	}
	if r.Lease == 0 {
		r.Lease = lock.DefaultLease
	}
	if err := lock.ValidateLease(r.Lease); err != nil {
		return fail("lease: %w", err)
	}
	if r.MaxRunTime < 0 {
		return fail("MaxRunTime %s must not be negative", r.MaxRunTime)
	}
	if err := lock.ValidateWindow(r.Window); err != nil {
		return fail("Window: %w", err)
	}
	if r.MaxWait == 0 {
		r.MaxWait = DefaultMaxWait
	}
	if r.WaitInterval == 0 {
		r.WaitInterval = lock.DefaultRetryInterval
	}
	if r.MaxWait < 0 || r.WaitInterval < 0 {
		return fail("MaxWait %s and WaitInterval %s must not be negative", r.MaxWait, r.WaitInterval)
	}
	if r.Policy < Retry || r.Policy > Fail {
		return fail("unknown policy %v", r.Policy)
	}
	if r.AfterWait != Retry && r.AfterWait != Skip {
		return fail("AfterWait must be Skip or Retry, not %v", r.AfterWait)
	}
	if err := checkUnique(&r); err != nil {
		return fail("%w", err)
	}
	if r.Limit == 0 {
		r.Limit = 1
	}
	if err := lock.ValidateLimit(r.Limit); err != nil {
		return fail("Limit: %w", err)
	}
	if r.Limit > 1 {
		if _, ok := locker.(lock.Limiter); !ok {
			return fail("a Limit of %d needs an engine that is a lock.Limiter, not %T", r.Limit, locker)
		}
		switch r.Unique {
		case UniqueUntilExecuted:
			return fail("a Limit of %d with %v: a task that keeps its key while it runs runs one at a time", r.Limit, r.Unique)
		case UniqueUntilExecuting:
			// Its runs take no lock at all, so nothing would count them.
			return fail("a Limit of %d with %v, whose runs are not kept apart: %v keeps one copy waiting and runs %d at once",
				r.Limit, r.Unique, UniqueUntilAndWhileExecuting, r.Limit)
		}
	}
	cr := &rule{Rule: r, pattern: name, simple: simple, opts: []lock.RunOption{lock.WithLease(r.Lease), lock.WithMaxRunTime(r.MaxRunTime),
		lock.WithWindow(r.Window), lock.WithReleaseTimeout(releaseTO), lock.WithLimit(r.Limit)}}
	return cr, nil
}

// listenIfWaiting makes a Wait rule's waiting runs hear of releases in
// other processes, given asynq's Redis.
func (m *middleware) listenIfWaiting(r *rule) {
	if m.broker != nil && r.Policy == Wait {
		r.opts = append(r.opts, lock.OnWait(m.listen))
	}
}

func (m *middleware) ruleFor(taskType string) *rule {
	if r, ok := m.exact[taskType]; ok {
		return r
	}
	for _, r := range m.prefixes {
		if strings.HasPrefix(taskType, r.pattern) {
			return r
		}
	}
	return m.fallback
}

func (m *middleware) emit(e Event) {
	if m.observe != nil {
		m.observe(e)
	}
}

func (m *middleware) wrap(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		return m.process(ctx, t, next)
	})
}
