package main_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	worker "github.com/joblock/joblock/cmd/worker"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/testenv"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// taskTypes are the worker's use cases, with payloads whose keys collide.
var taskTypes = []struct {
	typ     string
	payload func(round, i int) string
	copies  int
}{
	{"cache:regenerate", func(r, i int) string { return fmt.Sprintf(`{"key":"product-%d"}`, i) }, 3},
	{"cdn:invalidate", func(r, i int) string { return fmt.Sprintf(`{"url":"https://cdn.example.com/%d.png"}`, i) }, 3},
	{"job:process", func(r, i int) string { return fmt.Sprintf(`{"job_id":%d}`, 100*r+i) }, 3},
	{"export:user", func(r, i int) string { return fmt.Sprintf(`{"user_id":%d}`, i) }, 2},
	{"api:call", func(r, i int) string { return fmt.Sprintf(`{"endpoint":"/v1/rates/%d"}`, r) }, 1},
}

// TestCrashMatrix storms two workers with every task type, SIGKILLs a
// worker while a task of each type runs (starting a new one each time),
// and restarts Redis mid-storm: asynq's, which keeps its data, and on the
// redis engine the locks' own, which keeps nothing. Afterwards every task
// either did its work exactly once or was a duplicate of a task that did,
// nothing was archived but the duplicates the export rule refuses, and no
// two runs of a key overlapped.
func TestCrashMatrix(t *testing.T) {
	testenv.Soak(t, "waits up to two minutes for asynq to recover the tasks of killed workers")
	for _, engine := range []string{"file", "redis"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			testCrashMatrix(t, engine)
		})
	}
}

func testCrashMatrix(t *testing.T, engine string) {
	// asynq's Redis keeps its data across the restart (AOF, fsync always):
	// what a restart without persistence loses, queued tasks included, no
	// lock could save.
	srv := redistest.Start(t, redistest.WithArgs("--appendonly", "yes", "--appendfsync", "always"))
	traceDir := t.TempDir()
	env := []string{"JOBLOCK_REDIS_URL=redis://" + srv.Addr, "JOBLOCK_ENGINE=" + engine, "JOBLOCK_LOCK_DIR=" + t.TempDir(),
		"JOBLOCK_PREFIX=" + srv.Prefix, "JOBLOCK_ROLE=worker", "JOBLOCK_LEASE=2s", envTrace + "=" + traceDir}
	var locks *redistest.Server
	if engine == "redis" {
		// The locks have a Redis of their own, without persistence: its
		// restart forgets every lock, and the restart grace (the longest
		// lease of the worker's rules, api:call's 3s) keeps new holders
		// out until the old ones have been told.
		locks = redistest.Start(t)
		env = append(env, "JOBLOCK_LOCK_REDIS_URL=redis://"+locks.Addr, "JOBLOCK_RESTART_GRACE=3s")
	}
	workers := []*workerProc{startWorker(t, env), startWorker(t, env)}
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr})
	defer client.Close()

	enqueued := map[string]string{} // task id -> type
	stormDone := make(chan error, 1)
	go func() {
		defer close(stormDone)
		for round := range 24 {
			for _, tt := range taskTypes {
				for i := range 2 {
					for range tt.copies {
						info, err := client.Enqueue(asynq.NewTask(tt.typ, []byte(tt.payload(round, i))), asynq.MaxRetry(3))
						if err != nil {
							// Redis is restarting: the enqueue failed, nothing is owed.
							continue
						}
						enqueued[info.ID] = tt.typ
					}
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()

	tr := &trace{dir: traceDir}
	// runner waits until a worker runs a task of type typ, and returns it.
	runner := func(typ string) int {
		var victim int
		require.Eventually(t, func() bool {
			running := tr.running(t)
			for i, w := range workers {
				if running[w.cmd.Process.Pid][typ] > 0 {
					victim = i
					return true
				}
			}
			return false
		}, time.Minute, 20*time.Millisecond, "no worker ran a %s task", typ)
		return victim
	}
	for _, tt := range taskTypes {
		victim := runner(tt.typ)
		w := workers[victim]
		require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
		_ = w.cmd.Wait()
		t.Logf("killed worker %d while it ran %s", w.cmd.Process.Pid, tt.typ)
		workers[victim] = startWorker(t, env)
		switch {
		case tt.typ == "job:process":
			srv.Restart(t) // mid-storm, with the workers running
			t.Log("restarted asynq's Redis")
		case (tt.typ == "cdn:invalidate" || tt.typ == "api:call") && locks != nil:
			// While an export runs, for a second: the copies of its task
			// keep coming, and one would take its key before the export's
			// next renewal told it the lock was gone, but for the grace.
			runner("export:user")
			locks.Restart(t) // empty: every lock held is gone
			t.Log("restarted the locks' Redis while an export ran")
		}
	}
	<-stormDone

	in := asynq.NewInspector(asynq.RedisClientOpt{Addr: srv.Addr})
	defer in.Close()
	require.Eventually(t, func() bool {
		q, err := in.GetQueueInfo("default")
		return err == nil && q.Pending+q.Active+q.Scheduled+q.Retry == 0
	}, 3*time.Minute, 500*time.Millisecond, "tasks never settled")
	for _, w := range workers {
		require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, w.cmd.Wait(), "SIGTERM must end the worker with exit code 0")
	}
	archived, err := in.ListArchivedTasks("default", asynq.PageSize(1000))
	require.NoError(t, err)

	tr.check(t, enqueued, archived)
	if locks != nil {
		graced, lost := tr.count(t, "dup", "new locks wait out the"), tr.count(t, "lost", "")
		t.Logf("%d tasks refused by the restart grace, %d runs told their lock was lost", graced, lost)
		assert.Positive(t, graced, "no task met the restart grace: did the locks' Redis restart?")
	}
}

// count counts the lines about what, containing text.
func (tr *trace) count(t *testing.T, what, text string) int {
	n := 0
	for _, f := range tr.lines(t) {
		if f[0] == what && strings.Contains(strings.Join(f, " "), text) {
			n++
		}
	}
	return n
}

// trace reads what traced workers wrote (see worker.TraceTo).
type trace struct{ dir string }

func (tr *trace) lines(t *testing.T) [][]string {
	f, err := os.Open(filepath.Join(tr.dir, "tasks.log"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, strings.Fields(sc.Text()))
	}
	return out
}

// running counts, per worker pid and task type, the handlers that entered
// and have not left.
func (tr *trace) running(t *testing.T) map[int]map[string]int {
	open := map[int]map[string]int{}
	for _, f := range tr.lines(t) {
		var pid int
		_, _ = fmt.Sscan(f[len(f)-1], &pid)
		if open[pid] == nil {
			open[pid] = map[string]int{}
		}
		switch f[0] {
		case "start":
			open[pid][f[3]]++
		case "exit":
			open[pid][f[2]]--
		}
	}
	return open
}

// check holds the trace to the crash matrix's promise.
func (tr *trace) check(t *testing.T, enqueued map[string]string, archived []*asynq.TaskInfo) {
	holderTask := map[string]string{} // lock id -> task id
	committed := map[string]int{}
	done := map[string]bool{}     // the task's work is done, by it or for it
	dupOf := map[string]string{}  // task id -> the holder's lock id, for dropped duplicates
	dropped := map[string]int{}   // task id -> the line of its last drop
	dupKey := map[string]string{} // task id -> its key, for dropped duplicates
	keyDone := map[string][]int{} // key -> the lines its work was done on
	resent := map[string]string{} // task id -> its copy's id
	keys := map[string]bool{}
	for i, f := range tr.lines(t) {
		switch f[0] {
		case "start":
			holderTask[f[2]] = f[1]
			keys[f[4]] = true
		case "committed":
			committed[f[1]]++
			done[f[1]] = true
			keyDone[f[2]] = append(keyDone[f[2]], i)
		case "task-done", "key-done":
			done[f[1]] = true
			keyDone[f[2]] = append(keyDone[f[2]], i)
		case "dup": // dup <task id> <policy> <key> <holder...>
			if f[2] == "skip" || f[2] == "fail" {
				dupOf[f[1]], dropped[f[1]], dupKey[f[1]] = strings.Join(f[4:], " "), i, f[3]
			}
		case "requeued":
			resent[f[1]] = resentCopy(f[1])
		}
	}
	// doneAfter: the key's work was done after the given line.
	doneAfter := func(key string, line int) bool {
		lines := keyDone[key]
		return len(lines) > 0 && lines[len(lines)-1] > line
	}
	finished := func(id string) bool {
		for range 10 { // a task sent back runs as its copy
			if done[id] {
				return true
			}
			copyID, ok := resent[id]
			if !ok {
				return false
			}
			id = copyID
		}
		return false
	}
	// covered: the task's work was done, by it or by the holder it was a
	// duplicate of (itself perhaps a duplicate of another, after a crash).
	var covered func(id string, depth int) bool
	covered = func(id string, depth int) bool {
		if finished(id) {
			return true
		}
		holder, isDup := dupOf[id]
		if !isDup || depth >= 20 {
			return false
		}
		holderID, started := holderTask[holder]
		if !started {
			// The holder's worker died after taking the lock and before
			// its handler began: asynq runs that task again, which does
			// the key's work.
			return doneAfter(dupKey[id], dropped[id])
		}
		return covered(holderID, depth+1)
	}
	var lost []string
	var ran, dups int
	for id, typ := range enqueued {
		assert.LessOrEqual(t, committed[id], 1, "task %s (%s) did its work twice", id, typ)
		switch {
		case finished(id):
			ran++
		case covered(id, 0):
			dups++
		default:
			lost = append(lost, fmt.Sprintf("%s (%s, duplicate of %q)", id, typ, dupOf[id]))
		}
	}
	assert.Empty(t, lost, "tasks that neither did their work nor were duplicates of a task that did")
	for _, a := range archived {
		assert.True(t, a.Type == "export:user" && dupOf[a.ID] != "" && covered(a.ID, 0),
			"archived %s %s (%s) is not a refused duplicate of a finished export", a.Type, a.ID, a.LastErr)
	}
	var sections int
	for key := range keys {
		raw, err := os.ReadFile(worker.KeyLog(tr.dir, key))
		require.NoError(t, err)
		s, err := locktest.CheckHammerLog(string(raw))
		require.NoError(t, err, "runs of %s overlapped", key)
		sections += s.Sections
	}
	t.Logf("%d tasks: %d did their work, %d were duplicates of one that did; %d archived duplicates; %d critical sections over %d keys",
		len(enqueued), ran, dups, len(archived), sections, len(keys))
	assert.Positive(t, dups, "the storm made no duplicates")
}

// resentCopy is the ID the middleware gives the copy of a task it sends
// back.
func resentCopy(id string) string {
	base, n := id, 0
	if i := strings.LastIndex(id, "~resent-"); i >= 0 {
		if _, err := fmt.Sscan(id[i+len("~resent-"):], &n); err == nil {
			base = id[:i]
		}
	}
	return fmt.Sprintf("%s~resent-%d", base, n+1)
}
