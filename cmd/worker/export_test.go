package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/joblock/joblock/middleware"
)

// Main is the worker's main, for tests that run the test binary as the
// worker.
var Main = main

// TraceTo makes the worker write what its handlers do into dir, for the
// crash tests: a section log per lock key (locktest.CheckHammerLog reads
// it) and tasks.log, a line per outcome: "<what> <task id> ...".
func TraceTo(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		return err
	}
	tasks, err := locktest.OpenSectionLog(filepath.Join(dir, "tasks.log"))
	if err != nil {
		return err
	}
	trace = &fileTracer{dir: dir, tasks: tasks, keys: map[string]*locktest.SectionLog{}}
	return nil
}

type fileTracer struct {
	dir   string
	tasks *locktest.SectionLog
	mu    sync.Mutex
	keys  map[string]*locktest.SectionLog
}

// KeyLog names the section log of a lock key in a trace directory.
func KeyLog(dir, key string) string {
	sum := md5.Sum([]byte(key))
	return filepath.Join(dir, "keys", hex.EncodeToString(sum[:])+".log")
}

func (f *fileTracer) sections(key string) *locktest.SectionLog {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.keys[key]; l != nil {
		return l
	}
	l, err := locktest.OpenSectionLog(KeyLog(f.dir, key))
	if err != nil {
		panic(err)
	}
	f.keys[key] = l
	return l
}

func (f *fileTracer) Handler(ctx context.Context, task *asynq.Task, what string) {
	lease, _ := lock.LeaseFromContext(ctx)
	id, _ := asynq.GetTaskID(ctx)
	switch what {
	case traceEnter:
		_ = f.tasks.Line("start %s %s %s %s", id, lease.Token, task.Type(), lease.Key)
		_ = f.sections(lease.Key).Enter(lease.Fence)
	case traceExit:
		// The lease as last renewed: its expiry is no later than the lock's.
		_ = f.sections(lease.Key).Exit(lease.Fence, lease.ExpiresAt)
		_ = f.tasks.Line("exit %s %s", id, task.Type())
	default:
		_ = f.tasks.Line("%s %s %s", what, id, lease.Key)
	}
}

func (f *fileTracer) Event(e middleware.Event) {
	switch e.Kind {
	case middleware.Duplicate:
		// The holder last: when no holder is known it says why, in words.
		_ = f.tasks.Line("dup %s %s %s %s", e.TaskID, e.Policy, e.Key, e.Holder)
	case middleware.Requeued:
		_ = f.tasks.Line("requeued %s %s", e.TaskID, e.Key)
	case middleware.Lost:
		_ = f.tasks.Line("lost %s %s", e.TaskID, e.Key)
	}
}
