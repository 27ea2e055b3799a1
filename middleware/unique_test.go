package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/testenv"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// uniqueClient is a Client on the in-process server's Redis and engine,
// with its rule and prefix.
func uniqueClient(t *testing.T, p *inProcess, l lock.Locker, rule middleware.Rule) *middleware.Client {
	c, err := middleware.NewClient(p.redis.Client(t), l, middleware.WithDefaultRule(rule), middleware.WithPrefix("srvtest:"))
	require.NoError(t, err)
	return c
}

func (p *inProcess) inspector(t *testing.T) *asynq.Inspector {
	in := asynq.NewInspector(asynq.RedisClientOpt{Addr: p.redis.Addr})
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// waiting lists the tasks of queue that have not run.
func (p *inProcess) waiting(t *testing.T, queue string) []*asynq.TaskInfo {
	in := p.inspector(t)
	pending, err := in.ListPendingTasks(queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	require.NoError(t, err)
	scheduled, err := in.ListScheduledTasks(queue)
	require.NoError(t, err)
	return append(pending, scheduled...)
}

// gate is a handler that reports each task it starts and holds it until
// told, failing the tasks whose payload says "fail".
type gate struct {
	started chan string
	release chan struct{}
	running atomic.Int32
	most    atomic.Int32
}

func newGate() *gate { return &gate{started: make(chan string, 100), release: make(chan struct{})} }

func (g *gate) handle(ctx context.Context, t *asynq.Task) error {
	n := g.running.Add(1)
	defer g.running.Add(-1)
	for m := g.most.Load(); n > m && !g.most.CompareAndSwap(m, n); m = g.most.Load() {
	}
	g.started <- string(t.Payload())
	<-g.release
	if strings.Contains(string(t.Payload()), "fail") {
		return errors.New("the task failed")
	}
	return nil
}

func (g *gate) wait(t *testing.T) string {
	select {
	case p := <-g.started:
		return p
	case <-time.After(20 * time.Second):
		t.Fatal("no task started")
	}
	return ""
}

func TestUniqueConflicts(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, l := startInProcess(t, eng, middleware.Rule{}, func(context.Context, *asynq.Task) error { return nil })
			// No server works this queue: what is enqueued stays there.
			idle := "idle-" + p.queue
			rule := func(c middleware.Conflict) middleware.Rule {
				return middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted, OnConflict: c, DebounceFor: time.Hour}
			}
			enqueue := func(c *middleware.Client, payload string) (*asynq.TaskInfo, error) {
				return c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(idle))
			}
			queuedOf := func(id int) []*asynq.TaskInfo {
				var out []*asynq.TaskInfo
				for _, ti := range p.waiting(t, idle) {
					var v struct{ ID int }
					require.NoError(t, json.Unmarshal(ti.Payload, &v))
					if v.ID == id {
						out = append(out, ti)
					}
				}
				return out
			}

			t.Run("reject", func(t *testing.T) {
				c := uniqueClient(t, p, l, rule(middleware.Reject))
				first, err := enqueue(c, `{"id":1,"v":"a"}`)
				require.NoError(t, err)
				_, err = enqueue(c, `{"id":1,"v":"b"}`)
				require.ErrorIs(t, err, asynq.ErrDuplicateTask, "existing code that checks asynq's error keeps working")
				var dup *middleware.DuplicateTaskError
				require.ErrorAs(t, err, &dup)
				assert.Equal(t, first.ID, dup.TaskID)
				_, err = enqueue(c, `{"id":2,"v":"c"}`)
				require.NoError(t, err, "another key is free")
				assert.Len(t, queuedOf(1), 1)
			})
			t.Run("ignore", func(t *testing.T) {
				c := uniqueClient(t, p, l, rule(middleware.Ignore))
				first, err := enqueue(c, `{"id":3,"v":"a"}`)
				require.NoError(t, err)
				again, err := enqueue(c, `{"id":3,"v":"b"}`)
				require.NoError(t, err)
				assert.Equal(t, first.ID, again.ID, "the queued task's info")
				assert.JSONEq(t, `{"id":3,"v":"a"}`, string(again.Payload))
				assert.Len(t, queuedOf(3), 1)
			})
			for id, strategy := range map[int]middleware.Conflict{4: middleware.Replace, 5: middleware.Debounce} {
				t.Run(strategy.String(), func(t *testing.T) {
					c := uniqueClient(t, p, l, rule(strategy))
					start := time.Now()
					for _, v := range []string{"a", "b", "c"} {
						_, err := enqueue(c, fmt.Sprintf(`{"id":%d,"v":%q}`, id, v))
						require.NoError(t, err)
					}
					mine := queuedOf(id)
					require.Len(t, mine, 1, "the newest copy alone is queued")
					assert.JSONEq(t, fmt.Sprintf(`{"id":%d,"v":"c"}`, id), string(mine[0].Payload), "the newest payload wins")
					if strategy == middleware.Debounce {
						assert.Equal(t, asynq.TaskStateScheduled, mine[0].State)
						// asynq keeps whole seconds.
						assert.False(t, mine[0].NextProcessAt.Before(start.Add(time.Hour).Truncate(time.Second)), "pushed back by the debounce window")
					}
				})
			}
		})
	}
}

func TestUniqueModes(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testUniqueModes(t, eng)
		})
	}
}

func testUniqueModes(t *testing.T, eng func(*redistest.Server) lock.Locker) {
	for _, mode := range []middleware.Uniqueness{middleware.UniqueUntilExecuting, middleware.UniqueUntilExecuted, middleware.UniqueUntilAndWhileExecuting} {
		t.Run(mode.String(), func(t *testing.T) {
			g := newGate()
			rule := middleware.Rule{Template: "job-{{.id}}", Unique: mode, Lease: 5 * time.Second}
			p, l := startInProcess(t, eng, rule, g.handle)
			c := uniqueClient(t, p, l, rule)
			enqueue := func(payload string) error {
				_, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(p.queue), asynq.MaxRetry(0))
				return err
			}
			require.NoError(t, enqueue(`{"id":1,"n":"first"}`))
			assert.Equal(t, `{"id":1,"n":"first"}`, g.wait(t))
			// The first runs. A second copy:
			err := enqueue(`{"id":1,"n":"second"}`)
			switch mode {
			case middleware.UniqueUntilExecuted:
				require.ErrorIs(t, err, asynq.ErrDuplicateTask, "taken until the first has run")
				close(g.release)
				assert.Zero(t, p.settled(t))
				require.NoError(t, enqueue(`{"id":1,"n":"after"}`), "free once the first finished")
				assert.Equal(t, `{"id":1,"n":"after"}`, g.wait(t))
				assert.Zero(t, p.settled(t))
			case middleware.UniqueUntilExecuting:
				require.NoError(t, err, "free the moment the first started")
				assert.Equal(t, `{"id":1,"n":"second"}`, g.wait(t), "runs are not kept apart")
				assert.EqualValues(t, 2, g.running.Load())
				close(g.release)
				assert.Zero(t, p.settled(t))
			case middleware.UniqueUntilAndWhileExecuting:
				require.NoError(t, err, "free for one queued copy the moment the first started")
				require.ErrorIs(t, enqueue(`{"id":1,"n":"third"}`), asynq.ErrDuplicateTask, "one queued copy at most")
				close(g.release)
				assert.Equal(t, `{"id":1,"n":"second"}`, g.wait(t), "the queued copy runs after the first")
				assert.Zero(t, p.settled(t))
				assert.EqualValues(t, 1, g.most.Load(), "runs kept apart")
			}
		})
	}
}

// TestUniqueKeyFreedWhenTaskWillNotRun: a key is never blocked by a task
// that will not run: deleted through asynq's Inspector, archived after its
// retries, or failed (until-executed frees the key on failure).
func TestUniqueKeyFreedWhenTaskWillNotRun(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted}
			p, l := startInProcess(t, eng, rule, func(_ context.Context, task *asynq.Task) error {
				return errors.New("always fails")
			})
			c := uniqueClient(t, p, l, rule)
			idle := asynq.Queue("idle-" + p.queue)
			deleted, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1}`)), idle)
			require.NoError(t, err)
			require.NoError(t, p.inspector(t).DeleteTask("idle-"+p.queue, deleted.ID))
			_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":1}`)), idle)
			require.NoError(t, err, "the deleted task's key stayed blocked")

			_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":2}`)), asynq.Queue(p.queue), asynq.MaxRetry(1))
			require.NoError(t, err)
			assert.Equal(t, 1, p.settled(t), "failed twice, then archived")
			_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":2}`)), asynq.Queue(p.queue), asynq.MaxRetry(0))
			require.NoError(t, err, "the archived task's key stayed blocked")
		})
	}
}

// TestUniqueAndAsynqUnique: asynq's own Unique on the same tasks does not
// interfere: each refuses what it should, and a refusal by asynq leaves
// our key free.
func TestUniqueAndAsynqUnique(t *testing.T) {
	rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted}
	p, l := startInProcess(t, fileEngine(t), rule, func(context.Context, *asynq.Task) error { return nil })
	c := uniqueClient(t, p, l, rule)
	idle := asynq.Queue("idle-" + p.queue)
	// asynq's Unique keys on type, payload and queue; ours on the id.
	_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1}`)), idle, asynq.Unique(time.Hour))
	require.NoError(t, err)
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"other":true}`)), idle, asynq.Unique(time.Hour))
	require.ErrorIs(t, err, asynq.ErrDuplicateTask, "ours refuses a payload asynq's would let through")

	// A task enqueued around our Client holds asynq's lock, not ours.
	_, err = p.client.Enqueue(asynq.NewTask("job", []byte(`{"id":2}`)), idle, asynq.Unique(time.Hour))
	require.NoError(t, err)
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":2}`)), idle, asynq.Unique(time.Hour))
	require.ErrorIs(t, err, asynq.ErrDuplicateTask, "asynq's refuses what it should")
	var ours *middleware.DuplicateTaskError
	require.False(t, errors.As(err, &ours), "the refusal was asynq's")
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":2,"v":2}`)), idle, asynq.Unique(time.Hour))
	require.NoError(t, err, "asynq's refusal left our key free")
}

func TestUniqueWorkerKilledMidTask(t *testing.T) {
	for _, eng := range []string{"file", "redis"} {
		t.Run(eng, func(t *testing.T) {
			t.Parallel()
			ws := newWorkerSetup(t, eng)
			const lease = 2 * time.Second
			c := killedMidTask(t, ws, "unique", middleware.UniqueUntilExecuted, `{"id":3}`, lease)
			_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":3}`)), asynq.Queue(ws.queue))
			require.ErrorIs(t, err, asynq.ErrDuplicateTask, "taken until the dead run's lease ends")
			// Free within one lease; 5 leases are generous against a loaded
			// machine.
			require.Eventually(t, func() bool {
				_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":3}`)), asynq.Queue(ws.queue))
				return err == nil
			}, 5*lease, 50*time.Millisecond, "the killed worker's task kept its key")
		})
	}
}

// killedMidTask starts a worker process of the given kind, enqueues payload
// through a Client of the given mode, SIGKILLs the worker once the task
// has entered its handler, and returns the Client.
func killedMidTask(t *testing.T, ws *workerSetup, kind string, mode middleware.Uniqueness, payload string, lease time.Duration) *middleware.Client {
	t.Helper()
	victim := ws.start(t, kind, time.Hour, lease)
	c, err := middleware.NewClient(ws.redis.Client(t), ws.locker(t),
		middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}", Unique: mode}),
		middleware.WithPrefix("mwtest:"))
	require.NoError(t, err)
	_, err = c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(ws.queue))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ws.count(t, "enter") == 1 }, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, victim.Process.Signal(syscall.SIGKILL))
	_ = victim.Wait()
	return c
}

// Environment of an enqueuer child process.
const (
	envEnqueuer = "JOBLOCK_MW_ENQUEUER" // its name
	envCount    = "JOBLOCK_MW_COUNT"
)

// enqueuerMain enqueues envCount tasks over 10 keys with the Replace
// strategy, logging each enqueue it made.
func enqueuerMain() error {
	cfg := engine.FromEnv()
	locker, closeLocker, err := cfg.Open(context.Background())
	if err != nil {
		return err
	}
	defer closeLocker()
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedis)})
	defer rdb.Close()
	c, err := middleware.NewClient(rdb, locker, middleware.WithPrefix("mwtest:"),
		middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted, OnConflict: middleware.Replace}))
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(os.Getenv(envLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	n, _ := strconv.Atoi(os.Getenv(envCount))
	name := os.Getenv(envEnqueuer)
	for i := range n {
		payload := fmt.Sprintf(`{"id":%d,"by":%q,"seq":%d}`, i%10, name, i)
		if _, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(os.Getenv(envQueue))); err != nil {
			return err
		}
		if _, err := fmt.Fprintln(logf, payload); err != nil {
			return err
		}
	}
	return nil
}

// TestUniqueReplaceAcrossEnqueuers: two processes enqueue 1,000 tasks each
// over 10 keys, replacing: at no moment is more than one task of a key
// queued, and each key ends with the newest payload.
func TestUniqueReplaceAcrossEnqueuers(t *testing.T) {
	for _, eng := range []string{"file", "redis"} {
		t.Run(eng, func(t *testing.T) {
			t.Parallel()
			ws := newWorkerSetup(t, eng)
			var cmds []*exec.Cmd
			for _, name := range []string{"a", "b"} {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(testenv.ChildEnviron(ws.engine.Env()...), envChild+"=enqueuer", envEnqueuer+"="+name,
					envCount+"=1000", envRedis+"="+ws.redis.Addr, envQueue+"="+ws.queue, envLog+"="+ws.log)
				cmd.Stderr = os.Stderr
				require.NoError(t, cmd.Start())
				cmds = append(cmds, cmd)
			}
			var done atomic.Int32
			var wg sync.WaitGroup
			for _, cmd := range cmds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					assert.NoError(t, cmd.Wait())
					done.Add(1)
				}()
			}
			in := asynq.NewInspector(asynq.RedisClientOpt{Addr: ws.redis.Addr})
			defer in.Close()
			samples, most := 0, 0
			for done.Load() < 2 {
				tasks, err := in.ListPendingTasks(ws.queue, asynq.PageSize(100))
				if err == nil {
					perKey := map[float64]int{}
					for _, ti := range tasks {
						var p struct{ ID float64 }
						require.NoError(t, json.Unmarshal(ti.Payload, &p))
						perKey[p.ID]++
						most = max(most, perKey[p.ID])
					}
					samples++
				}
			}
			wg.Wait()
			assert.Equal(t, 1, most, "more than one task of a key queued at once (%d samples)", samples)
			tasks, err := in.ListPendingTasks(ws.queue, asynq.PageSize(100))
			require.NoError(t, err)
			require.Len(t, tasks, 10, "one task per key at the end")
			raw, err := os.ReadFile(ws.log)
			require.NoError(t, err)
			lastOf := map[string]string{} // enqueuer and key -> its last payload
			for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
				var p struct {
					ID int
					By string
				}
				require.NoError(t, json.Unmarshal([]byte(line), &p))
				lastOf[p.By+strconv.Itoa(p.ID)] = line
			}
			for _, ti := range tasks {
				var p struct{ ID int }
				require.NoError(t, json.Unmarshal(ti.Payload, &p))
				k := strconv.Itoa(p.ID)
				assert.Contains(t, []string{lastOf["a"+k], lastOf["b"+k]}, string(ti.Payload),
					"key %d ended with an older payload", p.ID)
			}
			t.Logf("%d samples of the queue taken while enqueuing", samples)
		})
	}
}

// TestUniqueUntilAndWhileExecutingWithLimit: one copy of a key waits in
// the queue and Limit copies run at once: two run, a third is accepted
// and waits for a slot (holding the key), a fourth is rejected, and the
// third runs when a slot frees, never three at once.
func TestUniqueUntilAndWhileExecutingWithLimit(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := newGate()
			rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilAndWhileExecuting, Limit: 2, Lease: 5 * time.Second}
			p, l := startInProcess(t, eng, rule, g.handle)
			c := uniqueClient(t, p, l, rule)
			enqueue := func(payload string) error {
				_, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(p.queue))
				return err
			}
			require.NoError(t, enqueue(`{"id":1,"n":1}`))
			assert.Equal(t, `{"id":1,"n":1}`, g.wait(t))
			require.NoError(t, enqueue(`{"id":1,"n":2}`), "free the moment the first started")
			assert.Equal(t, `{"id":1,"n":2}`, g.wait(t), "a second slot")
			require.NoError(t, enqueue(`{"id":1,"n":3}`), "free the moment the second started")
			require.ErrorIs(t, enqueue(`{"id":1,"n":4}`), asynq.ErrDuplicateTask, "the third waits for a slot, holding the key")
			close(g.release)
			assert.Equal(t, `{"id":1,"n":3}`, g.wait(t), "the third runs when a slot frees")
			assert.Zero(t, p.settled(t))
			assert.EqualValues(t, 2, g.most.Load(), "never more than the limit at once")
		})
	}
}

// TestUniqueForCountsFromWhenTheTaskMayRun: a task that may not run before
// a debounce, ProcessIn or ProcessAt keeps its key for UniqueFor after
// that, not from its enqueue: a key that ran out first let a second copy
// into the queue while the first still waited.
func TestUniqueForCountsFromWhenTheTaskMayRun(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, l := startInProcess(t, eng, middleware.Rule{}, func(context.Context, *asynq.Task) error { return nil })
			idle := "idle-" + p.queue // no server works it: tasks stay
			const uniqueFor = 200 * time.Millisecond
			for _, tt := range []struct {
				name string
				rule middleware.Rule
				opt  asynq.Option
			}{
				{"debounce", middleware.Rule{OnConflict: middleware.Debounce, DebounceFor: time.Hour}, nil},
				{"process in", middleware.Rule{}, asynq.ProcessIn(time.Hour)},
				{"process at", middleware.Rule{}, asynq.ProcessAt(time.Now().Add(time.Hour))},
			} {
				t.Run(tt.name, func(t *testing.T) {
					rule := tt.rule
					rule.Template, rule.Unique, rule.UniqueFor = "job-{{.id}}-"+tt.name, middleware.UniqueUntilExecuted, uniqueFor
					c := uniqueClient(t, p, l, rule)
					enqueue := func(v string) error {
						opts := []asynq.Option{asynq.Queue(idle)}
						if tt.opt != nil {
							opts = append(opts, tt.opt)
						}
						_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":"`+v+`"}`)), opts...)
						return err
					}
					require.NoError(t, enqueue("a"))
					time.Sleep(2 * uniqueFor) // past UniqueFor from the enqueue
					err := enqueue("b")
					if rule.OnConflict == middleware.Reject {
						require.ErrorIs(t, err, asynq.ErrDuplicateTask, "the first still waits to run")
					} else {
						require.NoError(t, err)
					}
					var mine []string
					for _, ti := range p.waiting(t, idle) {
						if strings.Contains(string(ti.Payload), `"v"`) && strings.HasPrefix(ti.Type, "job") {
							mine = append(mine, string(ti.Payload))
						}
					}
					want := map[middleware.Conflict]string{middleware.Reject: "a", middleware.Debounce: "b"}[rule.OnConflict]
					assert.Equal(t, []string{`{"id":1,"v":"` + want + `"}`}, mine, "one copy of the key waits")
					for _, ti := range p.waiting(t, idle) {
						require.NoError(t, p.inspector(t).DeleteTask(idle, ti.ID))
					}
				})
			}
		})
	}
}

// TestUniqueKeyFreedPastTheTaskDeadline: a queued task whose deadline has
// passed will never run (asynq fails it when it dequeues it, without
// calling the handler, retry after retry), so it does not keep its key:
// the next copy is enqueued and the dead one archived, leaving one task
// of the key queued.
func TestUniqueKeyFreedPastTheTaskDeadline(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, l := startInProcess(t, eng, middleware.Rule{}, func(context.Context, *asynq.Task) error { return nil })
			idle := "idle-" + p.queue // no server works it: tasks stay
			for _, mode := range []middleware.Uniqueness{middleware.UniqueUntilExecuting, middleware.UniqueUntilExecuted, middleware.UniqueUntilAndWhileExecuting} {
				t.Run(mode.String(), func(t *testing.T) {
					c := uniqueClient(t, p, l, middleware.Rule{Template: "job-{{.id}}", Unique: mode})
					payload := `{"id":"` + mode.String() + `"}`
					dead, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(idle), asynq.Deadline(time.Now().Add(-time.Minute)))
					require.NoError(t, err)
					next, err := c.Enqueue(asynq.NewTask("job", []byte(payload)), asynq.Queue(idle))
					require.NoError(t, err, "a task past its deadline kept the key")
					var queued []string
					for _, ti := range p.waiting(t, idle) {
						if string(ti.Payload) == payload {
							queued = append(queued, ti.ID)
						}
					}
					assert.Equal(t, []string{next.ID}, queued, "one task of the key queued")
					info, err := p.inspector(t).GetTaskInfo(idle, dead.ID)
					require.NoError(t, err)
					assert.Equal(t, asynq.TaskStateArchived, info.State)
				})
			}
		})
	}
}

// cancelAtRelease cancels a context when the unique key of the task that
// a Replace deletes is freed: between that task's deletion and the
// enqueue of its replacement.
type cancelAtRelease struct {
	lock.Locker
	cancel context.CancelFunc
}

func (c cancelAtRelease) Release(ctx context.Context, lease lock.Lease) error {
	err := c.Locker.Release(ctx, lease)
	if !strings.HasSuffix(lease.Key, "#enqueue") {
		c.cancel()
	}
	return err
}

// TestUniqueReplaceSurvivesACancelledEnqueue: a Replace whose context ends
// once it has deleted the queued copy still enqueues the new one: the
// caller gave up, but the queue must not be left with neither.
func TestUniqueReplaceSurvivesACancelledEnqueue(t *testing.T) {
	for name, eng := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, l := startInProcess(t, eng, middleware.Rule{}, func(context.Context, *asynq.Task) error { return nil })
			idle := "idle-" + p.queue // no server works it: tasks stay
			for _, strategy := range []middleware.Conflict{middleware.Replace, middleware.Debounce} {
				t.Run(strategy.String(), func(t *testing.T) {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					rule := middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted, OnConflict: strategy, DebounceFor: time.Hour}
					c, err := middleware.NewClient(p.redis.Client(t), cancelAtRelease{l, cancel}, middleware.WithDefaultRule(rule),
						middleware.WithPrefix("srvtest:"))
					require.NoError(t, err)
					old := `{"id":"` + strategy.String() + `","v":"old"}`
					_, err = c.Enqueue(asynq.NewTask("job", []byte(old)), asynq.Queue(idle))
					require.NoError(t, err)
					require.NoError(t, ctx.Err(), "nothing was replaced yet")
					newest := `{"id":"` + strategy.String() + `","v":"new"}`
					_, err = c.EnqueueContext(ctx, asynq.NewTask("job", []byte(newest)), asynq.Queue(idle))
					require.Error(t, ctx.Err(), "the context ended during the replace")
					require.NoError(t, err, "the old copy was deleted: the new one must be queued")
					var queued []string
					for _, ti := range p.waiting(t, idle) {
						if strings.Contains(string(ti.Payload), `"`+strategy.String()+`"`) {
							queued = append(queued, string(ti.Payload))
						}
					}
					assert.Equal(t, []string{newest}, queued)
				})
			}
		})
	}
}

// TestUniqueTaskOwnOptions: options a task was made with
// (asynq.NewTask(type, payload, opts...)) count as asynq counts them,
// before Enqueue's own: such a task went to the default queue, whatever
// its own asynq.Queue said, and its own asynq.TaskID was overridden.
func TestUniqueTaskOwnOptions(t *testing.T) {
	p, l := startInProcess(t, fileEngine(t), middleware.Rule{}, func(context.Context, *asynq.Task) error { return nil })
	idle := "idle-" + p.queue // no server works it: tasks stay
	c := uniqueClient(t, p, l, middleware.Rule{Template: "job-{{.id}}", Unique: middleware.UniqueUntilExecuted})
	info, err := c.Enqueue(asynq.NewTask("job", []byte(`{"id":1}`), asynq.Queue(idle), asynq.MaxRetry(2)))
	require.NoError(t, err)
	assert.Equal(t, idle, info.Queue, "the task's own queue, as asynq's client does")
	assert.Equal(t, 2, info.MaxRetry)
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":2}`)), asynq.Queue(idle))
	require.ErrorIs(t, err, asynq.ErrDuplicateTask, "the same key in the same queue")
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":3}`), asynq.Queue(idle)))
	require.ErrorIs(t, err, asynq.ErrDuplicateTask)
	info, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":1,"v":4}`), asynq.Queue(idle)), asynq.Queue(p.otherQueue()))
	require.NoError(t, err, "Enqueue's queue wins, as with asynq's client, and is another queue")
	assert.Equal(t, p.otherQueue(), info.Queue)
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"id":2}`), asynq.TaskID("mine")))
	require.ErrorContains(t, err, "drop asynq.TaskID")
}

// TestUniqueAndWhileRedeliveredAfterACrash: under
// UniqueUntilAndWhileExecuting a task whose worker was SIGKILLed mid-run
// runs again when asynq redelivers it, although its first attempt freed
// its key when it took its turn (it used to complete without running, as
// if replaced).
func TestUniqueAndWhileRedeliveredAfterACrash(t *testing.T) {
	testenv.Soak(t, "waits about 70s for asynq's task lease to expire")
	for _, eng := range []string{"file", "redis"} {
		t.Run(eng, func(t *testing.T) {
			t.Parallel()
			ws := newWorkerSetup(t, eng)
			const lease = 2 * time.Second
			killedMidTask(t, ws, "unique-and-while", middleware.UniqueUntilAndWhileExecuting, `{"id":4}`, lease)
			rescuer := ws.start(t, "unique-and-while", 10*time.Millisecond, lease)
			require.Eventually(t, func() bool { return ws.count(t, "exit") == 1 && ws.idle(t) }, 150*time.Second, 200*time.Millisecond,
				"the redelivered task did not run")
			stop(t, rescuer)
			assert.Equal(t, 2, ws.count(t, "enter"), "the task ran once more, and only once")
		})
	}
}

// TestUniqueKeysOfQueuesWithColons: a queue name with ':' in it does not
// run into the key after it: queue "Q:x" with key "k" and queue "Q" with
// key "x:k" are two keys, each refusing only its own duplicates.
func TestUniqueKeysOfQueuesWithColons(t *testing.T) {
	p, l := startInProcess(t, fileEngine(t), middleware.Rule{}, func(context.Context, *asynq.Task) error { return nil })
	idle := "idle-" + p.queue // no server works it: tasks stay
	c := uniqueClient(t, p, l, middleware.Rule{Template: "{{.k}}", Unique: middleware.UniqueUntilExecuted})
	_, err := c.Enqueue(asynq.NewTask("job", []byte(`{"k":"k"}`)), asynq.Queue(idle+":x"))
	require.NoError(t, err)
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"k":"x:k"}`)), asynq.Queue(idle))
	require.NoError(t, err, "another queue and another key")
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"k":"x:k","v":2}`)), asynq.Queue(idle))
	require.ErrorIs(t, err, asynq.ErrDuplicateTask)
	_, err = c.Enqueue(asynq.NewTask("job", []byte(`{"k":"k","v":2}`)), asynq.Queue(idle+":x"))
	require.ErrorIs(t, err, asynq.ErrDuplicateTask)
}
