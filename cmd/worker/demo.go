package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/scheduler"
)

// burst is how many identical tasks the demo enqueues per use case and
// round.
const burst = 5

// demoCron is the task type the demo's cron job is counted under.
const demoCron = "cron:demo"

// miniredisClock makes the in-process Redis expire keys as time passes.
func miniredisClock(m *miniredis.Miniredis) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return func() { close(done); <-finished }
}

// demoCronJobs is the spec's distributed cron as two replicas would run
// it: the same job scheduled twice, each tick run once.
func demoCronJobs(t *tally) []scheduler.Job {
	run := func(context.Context) error { t.executed(demoCron); return nil }
	return []scheduler.Job{
		{Name: "demo-report", Spec: "@every 2s", Run: run},
		{Name: "demo-report", Spec: "@every 2s", Run: run},
	}
}

// skipCounter counts the demo cron job's "another process took this
// tick" skips, which
// only the scheduler's log sees.
type skipCounter struct {
	slog.Handler
	t    *tally
	demo bool // the logger is the demo job's
}

func (s skipCounter) Handle(ctx context.Context, r slog.Record) error {
	if s.demo && strings.Contains(r.Message, "another process took this tick") {
		s.t.duplicate(demoCron)
	}
	if !s.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return s.Handler.Handle(ctx, r)
}

func (s skipCounter) Enabled(context.Context, slog.Level) bool { return true }

func (s skipCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	demo := s.demo
	for _, a := range attrs {
		if a.Key == "job" && a.Value.String() == "demo-report" {
			demo = true
		}
	}
	return skipCounter{Handler: s.Handler.WithAttrs(attrs), t: s.t, demo: demo}
}

func (s skipCounter) WithGroup(g string) slog.Handler {
	return skipCounter{Handler: s.Handler.WithGroup(g), t: s.t, demo: s.demo}
}

// runDemo enqueues a burst of identical tasks per use case every two
// seconds and prints what ran and what was deduplicated, until ctx ends.
func runDemo(ctx context.Context, client *asynq.Client, cases []useCase, t *tally, out io.Writer, log *slog.Logger) {
	enqueued := map[string]int{}
	start := time.Now()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for round := 1; ; round++ {
		for _, u := range cases {
			if u.DemoEvery > 1 && (round-1)%u.DemoEvery != 0 {
				continue
			}
			payload, _ := json.Marshal(u.Payload(round))
			for range burst {
				if _, err := client.EnqueueContext(ctx, asynq.NewTask(u.Type, payload), asynq.MaxRetry(5)); err != nil {
					if ctx.Err() == nil {
						log.Warn("demo: enqueue failed", "task", u.Type, "err", err)
					}
					continue
				}
				enqueued[u.Type]++
			}
		}
		select {
		case <-ctx.Done():
			printSummary(out, cases, enqueued, t, time.Since(start))
			return
		case <-tick.C:
			printSummary(out, cases, enqueued, t, time.Since(start))
		}
	}
}

// printSummary shows each task once: executed, deduplicated, or pending
// (queued, running, or sent back to wait for its key).
func printSummary(out io.Writer, cases []useCase, enqueued map[string]int, t *tally, elapsed time.Duration) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	var slower []string
	for _, u := range cases {
		if u.DemoEvery > 1 {
			slower = append(slower, fmt.Sprintf("%s every %ds", u.Type, 2*u.DemoEvery))
		}
	}
	every := "every 2s"
	if len(slower) > 0 {
		every += " (" + strings.Join(slower, ", ") + ")"
	}
	fmt.Fprintf(out, "\njoblock demo, %s: bursts of %d identical tasks %s (Ctrl-C to stop)\n", elapsed.Round(time.Second), burst, every)
	fmt.Fprintln(w, "use case\ttask type\tenqueued\texecuted\tdeduplicated\tpending\t")
	for _, u := range cases {
		runs, dups := t.get(u.Type)
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t\n", u.Name, u.Type, enqueued[u.Type], runs, dups, enqueued[u.Type]-runs-dups)
	}
	runs, dups := t.get(demoCron)
	fmt.Fprintf(w, "distributed cron (2 replicas, ticks)\t%s\t-\t%d\t%d\t-\t\n", "@every 2s", runs, dups)
	_ = w.Flush()
}
