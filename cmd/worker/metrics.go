package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics turns middleware events into Prometheus metrics.
type metrics struct {
	reg        *prometheus.Registry
	obtained   *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	waits      *prometheus.HistogramVec
	lost       *prometheus.CounterVec
	errors     *prometheus.CounterVec
	hold       *prometheus.HistogramVec
	executed   *prometheus.CounterVec
}

func newMetrics(m *lock.Manager) *metrics {
	x := &metrics{
		reg: prometheus.NewRegistry(),
		obtained: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "joblock_obtained_total",
			Help: "Locks obtained for tasks."}, []string{"task"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "joblock_duplicates_total",
			Help: "Times a task found its key held, by the policy applied (a task that Retry sends back counts each time)."}, []string{"task", "policy"}),
		waits: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "joblock_wait_seconds",
			Help: "Time Wait policies waited for a key.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}, []string{"task", "outcome"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "joblock_lost_total",
			Help: "Locks lost while their task ran (the task's context was cancelled)."}, []string{"task"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "joblock_errors_total",
			Help: "Tasks with no usable key, and lock engine failures."}, []string{"task"}),
		hold: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "joblock_hold_seconds",
			Help: "How long tasks held their lock.", Buckets: prometheus.ExponentialBuckets(0.005, 3, 10)}, []string{"task"}),
		executed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "joblock_tasks_executed_total",
			Help: "Task handlers that ran."}, []string{"task"}),
	}
	x.reg.MustRegister(x.obtained, x.duplicates, x.waits, x.lost, x.errors, x.hold, x.executed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&statsCollector{m: m})
	return x
}

func (x *metrics) observe(e middleware.Event) {
	switch e.Kind {
	case middleware.Obtained:
		x.obtained.WithLabelValues(e.TaskType).Inc()
	case middleware.Duplicate:
		x.duplicates.WithLabelValues(e.TaskType, e.Policy.String()).Inc()
	case middleware.Waited:
		outcome := "obtained"
		if e.Err != nil {
			outcome = "timeout"
		}
		x.waits.WithLabelValues(e.TaskType, outcome).Observe(e.Duration.Seconds())
	case middleware.Lost:
		x.lost.WithLabelValues(e.TaskType).Inc()
		x.hold.WithLabelValues(e.TaskType).Observe(e.Duration.Seconds())
	case middleware.Released:
		x.hold.WithLabelValues(e.TaskType).Observe(e.Duration.Seconds())
	case middleware.Error:
		x.errors.WithLabelValues(e.TaskType).Inc()
	}
}

// statsCollector reports the engine's lock counts at scrape time.
type statsCollector struct{ m *lock.Manager }

var (
	descActive  = prometheus.NewDesc("joblock_locks_active", "Live locks in the engine.", nil, nil)
	descExpired = prometheus.NewDesc("joblock_locks_expired", "Expired lock records not yet cleaned up.", nil, nil)
)

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descActive; ch <- descExpired }

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.m.GetStats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descActive, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.ActiveLocks))
	ch <- prometheus.MustNewConstMetric(descExpired, prometheus.GaugeValue, float64(s.ExpiredLocks))
}

// tally counts, per task type, what the demo summary shows: every task
// once, as executed or deduplicated, when asynq is done with it; and feeds
// the handler-side counters to the metrics.
type tally struct {
	met  *metrics
	mu   sync.Mutex
	runs map[string]int
	dups map[string]int
}

func newTally(met *metrics) *tally {
	return &tally{met: met, runs: map[string]int{}, dups: map[string]int{}}
}

// executed counts a handler that ran.
func (t *tally) executed(typ string) {
	t.met.executed.WithLabelValues(typ).Inc()
	t.mu.Lock()
	t.runs[typ]++
	t.mu.Unlock()
}

// alreadyDone counts a task whose key was already done (a Once use case).
func (t *tally) alreadyDone(typ string) {
	t.met.duplicates.WithLabelValues(typ, "already-done").Inc()
	t.duplicate(typ)
}

func (t *tally) duplicate(typ string) {
	t.mu.Lock()
	t.dups[typ]++
	t.mu.Unlock()
}

func (t *tally) get(typ string) (runs, dups int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.runs[typ], t.dups[typ]
}

// ranKey marks, in a task's context, whether its handler ran.
type ranKey struct{}

// middleware goes outside the lock middleware: a task whose handler never
// ran is counted as deduplicated once asynq is done with it (completed,
// archived or revoked), not each time a Retry policy sends it back.
// Handlers that ran count themselves (executed or alreadyDone).
func (t *tally) middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		ran := new(atomic.Bool)
		err := next.ProcessTask(context.WithValue(ctx, ranKey{}, ran), task)
		if !ran.Load() && lastAttempt(ctx, err) {
			t.duplicate(task.Type())
		}
		return err
	})
}

// markRan wraps a handler to record, for the tally's middleware, that it
// ran.
func markRan(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if ran, ok := ctx.Value(ranKey{}).(*atomic.Bool); ok {
			ran.Store(true)
		}
		return h.ProcessTask(ctx, task)
	})
}

// lastAttempt says whether asynq will be done with a task whose handler
// returned err: it completes, is revoked, or is archived (SkipRetry, or
// its retries used up, which asynq checks before IsFailure).
func lastAttempt(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, asynq.RevokeTask) || errors.Is(err, asynq.SkipRetry) {
		return true
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && retried >= maxRetry
}
