package main

import (
	"context"
	"sync"
	"time"

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
			Help: "Tasks whose key was held, by the policy applied."}, []string{"task", "policy"}),
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

// tally counts, per task type, what the demo summary shows, and feeds the
// handler-side counters to the metrics.
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

func (t *tally) observe(e middleware.Event) {
	if e.Kind == middleware.Duplicate {
		t.duplicate(e.TaskType)
	}
}

func (t *tally) get(typ string) (runs, dups int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.runs[typ], t.dups[typ]
}
