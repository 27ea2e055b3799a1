package middleware_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// overlap tracks how many handlers run at once.
type overlap struct {
	running, most atomic.Int32
}

func (o *overlap) enter() {
	n := o.running.Add(1)
	for m := o.most.Load(); n > m && !o.most.CompareAndSwap(m, n); m = o.most.Load() {
	}
}

func (o *overlap) exit() { o.running.Add(-1) }

// events collects the middleware's events of some kinds.
type eventLog struct {
	mu sync.Mutex
	ev []middleware.Event
}

func (l *eventLog) observe(e middleware.Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) count(k middleware.EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.ev {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func (l *eventLog) kinds() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.ev {
		out = append(out, e.Kind.String()+" "+e.TaskID)
	}
	return out
}

func withObserver(l *eventLog) serverOption {
	return func(*redistest.Server) middleware.Option { return middleware.WithObserver(l.observe) }
}

// TestUniqueUntilExecutedRetryAndNewCopy: a task that failed frees its
// key, so a new copy can be enqueued while the retry runs; the two never
// run at once.
func TestUniqueUntilExecutedRetryAndNewCopy(t *testing.T) {
	t.Parallel()
	var o overlap
	var events eventLog
	release := make(chan struct{})
	retrying := make(chan struct{}, 1)
	ran := make(chan string, 10)
	rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted, Lease: 5 * time.Second}
	p, l := startInProcess(t, redisEngine(t), rule, func(ctx context.Context, task *asynq.Task) error {
		o.enter()
		defer o.exit()
		if n, _ := asynq.GetRetryCount(ctx); n == 0 && string(task.Payload()) == `{"id":1,"v":"A"}` {
			return errors.New("the first attempt fails")
		}
		if string(task.Payload()) == `{"id":1,"v":"A"}` {
			retrying <- struct{}{}
			<-release
		}
		ran <- string(task.Payload())
		return nil
	}, withObserver(&events))
	c := uniqueClient(t, p, l, rule)
	_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":"A"}`)), asynq.Queue(p.queue), asynq.MaxRetry(3))
	require.NoError(t, err)
	<-retrying
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":"B"}`)), asynq.Queue(p.queue))
	require.NoError(t, err, "the failed task freed its key")
	require.Eventually(t, func() bool { return events.count(middleware.Duplicate) >= 1 }, 30*time.Second, 10*time.Millisecond,
		"B was not picked up and refused while A's retry ran: events %v", events.kinds())
	assert.Empty(t, ran, "B ran while A's retry did")
	close(release)
	assert.Equal(t, `{"id":1,"v":"A"}`, <-ran)
	assert.Equal(t, `{"id":1,"v":"B"}`, <-ran)
	assert.Zero(t, p.settled(t))
	assert.EqualValues(t, 1, o.most.Load(), "two runs of one key at once")
}

// TestUniqueAttemptsOfOneTaskNeverOverlap: asynq starts the next attempt
// of a task whose handler overran its Timeout while that handler still
// runs; the attempts share the task's ID, and with it its unique key, but
// never run at once: the next attempt is refused as a duplicate.
func TestUniqueAttemptsOfOneTaskNeverOverlap(t *testing.T) {
	t.Parallel()
	var o overlap
	var runs atomic.Int32
	var events eventLog
	rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted, Lease: 5 * time.Second}
	p, l := startInProcess(t, fileEngine(t), rule, func(ctx context.Context, _ *asynq.Task) error {
		o.enter()
		defer o.exit()
		runs.Add(1)
		time.Sleep(3500 * time.Millisecond) // past its Timeout, ignoring ctx
		return ctx.Err()
	}, withSendBack(t), withObserver(&events))
	c := uniqueClient(t, p, l, rule)
	// asynq keeps Timeout in whole seconds, and on a loaded machine may
	// count a second gone before the handler is even called.
	_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1}`)), asynq.Queue(p.queue), asynq.Timeout(2*time.Second), asynq.MaxRetry(1))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return events.count(middleware.Duplicate) >= 1 && runs.Load() >= 2 }, 30*time.Second, 10*time.Millisecond,
		"asynq did not start an attempt while the first ran, or none ran after it: %d runs, events %v", runs.Load(), events.kinds())
	// Shutdown gives up on a handler still asleep after a second; wait for
	// it here, or it outlives the test and goleak finds it when this test
	// ends last.
	p.server.Shutdown()
	require.Eventually(t, func() bool { return o.running.Load() == 0 }, 10*time.Second, 10*time.Millisecond, "a handler still runs")
	assert.EqualValues(t, 1, o.most.Load(), "attempts of one task ran at once")
}

// TestUniqueUntilExecutedAcrossQueues: copies of a task in two queues are
// both enqueued (uniqueness is per queue, as asynq's), but never run at
// once: runs of a key are kept apart whatever the queue.
func TestUniqueUntilExecutedAcrossQueues(t *testing.T) {
	t.Parallel()
	var o overlap
	var runs atomic.Int32
	rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted, Lease: 5 * time.Second}
	p, l := startInProcess(t, redisEngine(t), rule, func(context.Context, *asynq.Task) error {
		o.enter()
		defer o.exit()
		runs.Add(1)
		time.Sleep(300 * time.Millisecond)
		return nil
	})
	c := uniqueClient(t, p, l, rule)
	for _, q := range []string{p.queue, p.otherQueue()} {
		_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1}`)), asynq.Queue(q))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return runs.Load() == 2 }, 30*time.Second, 10*time.Millisecond)
	assert.EqualValues(t, 1, o.most.Load(), "copies in two queues ran at once")
}

// TestUniqueReplaceWhileWaitingForTurn: under UniqueUntilAndWhileExecuting
// a task picked up by a worker but waiting for its turn still holds its
// queued place: a newer copy replaces it, and it completes without running.
func TestUniqueReplaceWhileWaitingForTurn(t *testing.T) {
	t.Parallel()
	g := newGate()
	var events eventLog
	rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilAndWhileExecuting, OnConflict: middleware.Replace,
		Policy: middleware.Wait, MaxWait: time.Minute, Lease: 5 * time.Second}
	p, l := startInProcess(t, fileEngine(t), rule, g.handle, withObserver(&events))
	c := uniqueClient(t, p, l, rule)
	in := p.inspector(t)
	active := func(n int) func() bool {
		return func() bool {
			tasks, err := in.ListActiveTasks(p.queue)
			return err == nil && len(tasks) == n
		}
	}
	enqueue := func(v string) {
		_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":"`+v+`"}`)), asynq.Queue(p.queue))
		require.NoError(t, err)
	}
	enqueue("X")
	assert.Equal(t, `{"id":1,"v":"X"}`, g.wait(t))
	enqueue("A")
	require.Eventually(t, active(2), 20*time.Second, 10*time.Millisecond, "A was not picked up")
	enqueue("B") // replaces A, which waits for its turn
	require.Eventually(t, active(3), 20*time.Second, 10*time.Millisecond, "B was not picked up")
	enqueue("C") // replaces B
	close(g.release)
	assert.Equal(t, `{"id":1,"v":"C"}`, g.wait(t), "only the newest copy runs after X")
	assert.Zero(t, p.settled(t))
	assert.Empty(t, g.started, "a replaced copy ran")
	assert.Equal(t, 2, events.count(middleware.Replaced))
	assert.Empty(t, heldKeys(t, l), "keys or marks left behind")
}

// TestUniqueSentBackCopyKeepsTheKey: a duplicate with no retries left is
// sent back as a copy, which holds the task's unique key in its place: a
// third copy is refused, and the copy is handed the key.
func TestUniqueSentBackCopyKeepsTheKey(t *testing.T) {
	t.Parallel()
	g := newGate()
	var events eventLog
	rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilAndWhileExecuting, Lease: 5 * time.Second}
	p, l := startInProcess(t, redisEngine(t), rule, g.handle, withSendBack(t), withObserver(&events))
	c := uniqueClient(t, p, l, rule)
	enqueue := func(v string) error {
		_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":"`+v+`"}`)), asynq.Queue(p.queue), asynq.MaxRetry(0))
		return err
	}
	require.NoError(t, enqueue("X"))
	assert.Equal(t, `{"id":1,"v":"X"}`, g.wait(t))
	require.NoError(t, enqueue("A"))
	require.Eventually(t, func() bool { return events.count(middleware.Requeued) == 1 }, 20*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, enqueue("C"), asynq.ErrDuplicateTask, "A's copy holds the key")
	close(g.release)
	assert.Equal(t, `{"id":1,"v":"A"}`, g.wait(t))
	assert.Zero(t, p.settled(t))
	assert.Equal(t, 1, events.count(middleware.HandedOff), "the copy was not handed the key")
}

// TestWaitOutlastingTheTaskTimeoutIsNotLost: a duplicate whose wait for
// the key is ended by its own asynq Timeout is a duplicate still: not an
// engine failure, never archived, and it runs once the holder is done.
func TestWaitOutlastingTheTaskTimeoutIsNotLost(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		maxRetry int
		opts     []serverOption
	}{
		{"no retries left, sent back", 0, []serverOption{withSendBack(t)}},
		{"retries left", 1, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate()
			var events eventLog
			rule := middleware.Rule{Template: "job-{{.id}}", Policy: middleware.Wait, MaxWait: time.Minute, Lease: 5 * time.Second}
			p, _ := startInProcess(t, fileEngine(t), rule, g.handle, append(tt.opts, withObserver(&events))...)
			p.enqueue(t, `{"id":1,"v":"holder"}`)
			assert.Equal(t, `{"id":1,"v":"holder"}`, g.wait(t))
			p.enqueue(t, `{"id":1,"v":"dup"}`, asynq.Timeout(2*time.Second), asynq.MaxRetry(tt.maxRetry)) // whole seconds, as asynq keeps it
			require.Eventually(t, func() bool { return events.count(middleware.Duplicate) == 1 }, 20*time.Second, 10*time.Millisecond)
			close(g.release)
			assert.Equal(t, `{"id":1,"v":"dup"}`, g.wait(t))
			assert.Zero(t, p.settled(t), "the duplicate was archived")
			assert.Zero(t, events.count(middleware.Error), "a wait cut short is not an engine failure")
		})
	}
}

// TestReusedTaskIDIsSentBackAgain: a task ID used again, after an earlier
// task of that ID was sent back and its copy archived, is sent back under
// a new copy ID and runs.
func TestReusedTaskIDIsSentBackAgain(t *testing.T) {
	t.Parallel()
	g := newGate()
	var events eventLog
	rule := middleware.Rule{Template: "job-{{.id}}", Lease: 5 * time.Second}
	p, _ := startInProcess(t, fileEngine(t), rule, g.handle, withSendBack(t), withObserver(&events))
	for i, v := range []string{"monday-fail", "tuesday"} { // "fail": the gate fails it
		p.enqueue(t, `{"id":1,"v":"holder"}`)
		assert.Equal(t, `{"id":1,"v":"holder"}`, g.wait(t))
		p.enqueue(t, `{"id":1,"v":"`+v+`"}`, asynq.TaskID("sync-user-7"), asynq.MaxRetry(0))
		require.Eventually(t, func() bool { return events.count(middleware.Requeued) == i+1 }, 20*time.Second, 10*time.Millisecond)
		g.release <- struct{}{} // the holder
		assert.Equal(t, `{"id":1,"v":"`+v+`"}`, g.wait(t), "the copy runs")
		g.release <- struct{}{}
		assert.Equal(t, 1, p.settled(t)) // monday's copy failed and was archived; tuesday's did not
	}
}

// TestUniqueUntilAndWhileRunsEveryAttempt: under
// UniqueUntilAndWhileExecuting a task whose key is no longer its own when
// its turn comes still runs unless a newer copy replaced it: a failed
// task's retry (its first attempt took the turn and freed the key), and a
// task enqueued with asynq's own client (it never had the key). Both were
// completed without running, as if replaced.
func TestUniqueUntilAndWhileRunsEveryAttempt(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var events eventLog
			var mu sync.Mutex
			runs := map[string]int{}
			rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilAndWhileExecuting}
			p, l := startInProcess(t, eng, rule, func(_ context.Context, task *asynq.Task) error {
				mu.Lock()
				defer mu.Unlock()
				runs[string(task.Payload())]++
				if string(task.Payload()) == `{"id":1}` && runs[`{"id":1}`] == 1 {
					return errors.New("the first attempt fails")
				}
				return nil
			}, withObserver(&events))
			c := uniqueClient(t, p, l, rule)
			_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1}`)), asynq.Queue(p.queue), asynq.MaxRetry(3))
			require.NoError(t, err)
			p.enqueue(t, `{"id":2}`) // asynq's own client
			assert.Zero(t, p.settled(t))
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, map[string]int{`{"id":1}`: 2, `{"id":2}`: 1}, runs)
			assert.Zero(t, events.count(middleware.Replaced))
			assert.Empty(t, heldKeys(t, l), "keys or marks left behind")
		})
	}
}

// TestUniqueReplaceRacingWorkers: 300 copies of one key enqueued with
// Replace, one after another, while a server that polls every
// millisecond picks them up as they come: replaces race workers that
// just took the task. No copy runs twice, runs are kept apart where the
// mode says so, and the newest copy accepted always runs.
func TestUniqueReplaceRacingWorkers(t *testing.T) {
	for name, eng := range engines(t) {
		for _, mode := range []middleware.Uniqueness{middleware.UniqueUntilExecuting, middleware.UniqueUntilExecuted, middleware.UniqueUntilAndWhileExecuting} {
			t.Run(name+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				var o overlap
				var mu sync.Mutex
				ran := map[string]int{}
				rule := middleware.Rule{Template: "job-{{.id}}", Unique: mode, OnConflict: middleware.Replace, Lease: 2 * time.Second,
					Policy: middleware.Wait, MaxWait: time.Minute}
				srv := redistest.New(t)
				srv.RequireReal(t, "asynq")
				l := eng(srv)
				queue := "q" + rand.Text()[:8]
				mw, err := middleware.New(l, middleware.WithDefaultRule(rule), middleware.WithPrefix("srvtest:"), middleware.WithRedisClient(srv.Client(t)))
				require.NoError(t, err)
				mux := asynq.NewServeMux()
				mux.Use(mw)
				mux.HandleFunc("job", func(ctx context.Context, task *asynq.Task) error {
					o.enter()
					defer o.exit()
					time.Sleep(3 * time.Millisecond) // long enough for a replace to meet it running
					mu.Lock()
					defer mu.Unlock()
					ran[string(task.Payload())]++
					return nil
				})
				server := asynq.NewServer(asynq.RedisClientOpt{Addr: srv.Addr}, asynq.Config{Concurrency: 10, Queues: map[string]int{queue: 1},
					IsFailure: middleware.IsFailure(nil), RetryDelayFunc: middleware.RetryDelayFunc(nil),
					TaskCheckInterval: time.Millisecond, DelayedTaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.FatalLevel})
				require.NoError(t, server.Start(mux))
				defer server.Shutdown()
				c, err := middleware.NewClient(srv.Client(t), l, middleware.WithDefaultRule(rule), middleware.WithPrefix("srvtest:"))
				require.NoError(t, err)

				var newest string
				rejected := 0
				for i := range 300 {
					payload := fmt.Sprintf(`{"id":1,"n":%d}`, i)
					_, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(queue))
					if errors.Is(err, asynq.ErrDuplicateTask) && mode == middleware.UniqueUntilExecuted {
						rejected++ // a copy runs
						continue
					}
					require.NoError(t, err)
					newest = payload
				}
				in := asynq.NewInspector(asynq.RedisClientOpt{Addr: srv.Addr})
				defer in.Close()
				require.Eventually(t, func() bool {
					q, err := in.GetQueueInfo(queue)
					return err == nil && q.Pending+q.Active+q.Scheduled+q.Retry == 0
				}, time.Minute, 10*time.Millisecond)
				mu.Lock()
				defer mu.Unlock()
				for payload, n := range ran {
					assert.Equal(t, 1, n, "%s ran %d times", payload, n)
				}
				assert.Equal(t, 1, ran[newest], "the newest copy accepted did not run")
				if mode != middleware.UniqueUntilExecuting {
					assert.EqualValues(t, 1, o.most.Load(), "runs of the key overlapped")
				}
				t.Logf("%d of 300 ran, %d rejected while a copy ran, %d at most at once", len(ran), rejected, o.most.Load())
			})
		}
	}
}
