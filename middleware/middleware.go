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
)

// DefaultPrefix is put before every task's key unless WithPrefix says
// otherwise.
const DefaultPrefix = "asynq:"

// DefaultTTL is a rule's lock TTL when it sets none. Locks are renewed
// every TTL/3 while the handler runs, so the TTL bounds how long a crashed
// worker's lock outlives it, not how long a task may run.
const DefaultTTL = 30 * time.Second

// Rule is the locking configuration of a task type.
type Rule struct {
	// Key derives the lock key. Default DefaultKey, unless Template is set.
	Key KeyFunc
	// Template, when Key is nil, is parsed by New with KeyTemplate.
	Template string
	// TTL of the lock. Default DefaultTTL.
	TTL time.Duration
	// Strategy says how long the lock is kept. Default HoldWhileRunning.
	Strategy Strategy
	// Policy says what a duplicate does. Default Retry.
	Policy Policy
	// MaxWait bounds a Wait policy's wait. Default 10s.
	MaxWait time.Duration
	// WaitInterval is the pause between a Wait policy's tries. Default
	// 100ms.
	WaitInterval time.Duration
	// AfterWait is what a Wait policy does when MaxWait passes: Skip or
	// Retry. Default Retry.
	AfterWait Policy
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
// which runs even when the handler's context was cancelled. Default 5s.
func WithReleaseTimeout(d time.Duration) Option { return func(c *config) { c.releaseTO = d } }

// rule is a Rule ready to use.
type rule struct {
	Rule
	pattern string
}

type middleware struct {
	locker    lock.Locker
	prefix    string
	exact     map[string]*rule
	prefixes  []*rule // longest first
	fallback  *rule
	log       *slog.Logger
	observe   Observer
	releaseTO time.Duration
}

// New returns asynq middleware that runs each task under a lock on a key
// derived from the task, as the rule for its type says. It returns an error
// for a rule whose key template does not parse or whose settings make no
// sense; nothing is checked later that could be checked here.
func New(locker lock.Locker, opts ...Option) (asynq.MiddlewareFunc, error) {
	if locker == nil {
		return nil, errors.New("middleware: locker is nil")
	}
	cfg := config{prefix: DefaultPrefix, rules: map[string]Rule{}, releaseTO: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	m := &middleware{locker: locker, prefix: cfg.prefix, exact: map[string]*rule{}, log: cfg.logger,
		observe: cfg.observer, releaseTO: cfg.releaseTO}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if m.fallback, err = compile("default rule", cfg.fallback); err != nil {
		return nil, err
	}
	for pattern, r := range cfg.rules {
		cr, err := compile(pattern, r)
		if err != nil {
			return nil, err
		}
		if p, ok := strings.CutSuffix(pattern, "*"); ok {
			cr.pattern = p
			m.prefixes = append(m.prefixes, cr)
		} else {
			m.exact[pattern] = cr
		}
	}
	sort.Slice(m.prefixes, func(i, j int) bool { return len(m.prefixes[i].pattern) > len(m.prefixes[j].pattern) })
	return m.wrap, nil
}

func compile(name string, r Rule) (*rule, error) {
	if r.Key == nil && r.Template != "" {
		k, err := KeyTemplate(r.Template)
		if err != nil {
			return nil, fmt.Errorf("middleware: rule %q: %w", name, err)
		}
		r.Key = k
	}
	if r.Key == nil {
		r.Key = DefaultKey
	}
	if r.TTL == 0 {
		r.TTL = DefaultTTL
	}
	if err := lock.ValidateTTL(r.TTL); err != nil {
		return nil, fmt.Errorf("middleware: rule %q: %w", name, err)
	}
	if r.MaxWait == 0 {
		r.MaxWait = 10 * time.Second
	}
	if r.WaitInterval == 0 {
		r.WaitInterval = lock.DefaultRetryInterval
	}
	if r.Policy < Retry || r.Policy > Fail {
		return nil, fmt.Errorf("middleware: rule %q: unknown policy %v", name, r.Policy)
	}
	if r.AfterWait != Retry && r.AfterWait != Skip {
		return nil, fmt.Errorf("middleware: rule %q: AfterWait must be Skip or Retry, not %v", name, r.AfterWait)
	}
	if r.Strategy != HoldWhileRunning && r.Strategy != HoldUntilTTL {
		return nil, fmt.Errorf("middleware: rule %q: unknown strategy %d", name, r.Strategy)
	}
	return &rule{Rule: r, pattern: name}, nil
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
