package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unsafe"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/redis/go-redis/v9"
)

// Uniqueness says which copies of a task a Client keeps out of the queue,
// and when the task's key is free again.
type Uniqueness int

const (
	// NotUnique: every task is enqueued; the middleware keeps runs of a key
	// apart (sidekiq-unique-jobs' while_executing, Laravel's
	// WithoutOverlapping). The default.
	NotUnique Uniqueness = iota
	// UniqueUntilExecuting: at most one task per key waits in the queue;
	// its key is free again the moment it starts, and runs are not kept
	// apart (until_executing; Laravel's ShouldBeUniqueUntilProcessing).
	UniqueUntilExecuting
	// UniqueUntilExecuted: at most one task per key, waiting or running;
	// its key is free again when it finishes, successfully or not, so its
	// retry or a new task can go (until_executed; Laravel's
	// ShouldBeUnique). A crashed run frees the key within one lease. As
	// under every rule, the task's lock keeps runs of the key apart,
	// across queues, and refuses an attempt that asynq starts while an
	// earlier attempt of the same task overruns.
	UniqueUntilExecuted
	// UniqueUntilAndWhileExecuting: at most one task per key waits in the
	// queue and at most one runs (Rule.Limit runs, if set): the key is free
	// for a new copy the moment the queued one starts, and that copy waits
	// its turn to run (until_and_while_executing). A failed task's retry,
	// and a task enqueued around the Client, run as any task does.
	UniqueUntilAndWhileExecuting
)

func (u Uniqueness) String() string {
	switch u {
	case NotUnique:
		return "not-unique"
	case UniqueUntilExecuting:
		return "until-executing"
	case UniqueUntilExecuted:
		return "until-executed"
	case UniqueUntilAndWhileExecuting:
		return "until-and-while-executing"
	}
	return fmt.Sprintf("Uniqueness(%d)", int(u))
}

// Conflict says what Client.Enqueue does with a task whose key is taken by
// a task still in the queue.
type Conflict int

const (
	// Reject returns a *DuplicateTaskError, which matches
	// asynq.ErrDuplicateTask. The default.
	Reject Conflict = iota
	// Ignore enqueues nothing and returns the queued task's info.
	Ignore
	// Replace deletes the queued task and enqueues the new one: the newest
	// payload wins. Under UniqueUntilAndWhileExecuting a copy that a
	// worker picked up but that still waits for its turn to run is
	// replaced too (it completes without running: the Replaced event). A
	// running task is never replaced: under UniqueUntilExecuted the new one
	// is then rejected.
	Replace
	// Debounce replaces the queued task with the new one and makes it wait
	// Rule.DebounceFor before it can run, so a burst of copies runs once,
	// after the burst.
	Debounce
)

func (c Conflict) String() string {
	switch c {
	case Reject:
		return "reject"
	case Ignore:
		return "ignore"
	case Replace:
		return "replace"
	case Debounce:
		return "debounce"
	}
	return fmt.Sprintf("Conflict(%d)", int(c))
}

// DefaultUniqueFor is how long a key stays taken for a queued task unless
// Rule.UniqueFor says otherwise.
const DefaultUniqueFor = 24 * time.Hour

// DuplicateTaskError is Client.Enqueue's refusal of a task whose key is
// taken. It matches asynq.ErrDuplicateTask, as asynq's own Unique does.
type DuplicateTaskError struct {
	TaskType string
	Key      string
	// TaskID is the ID of the queued or running task that holds the key.
	// The message leaves it out: a task's first ID is also the lock id of
	// its unique key.
	TaskID string
}

func (e *DuplicateTaskError) Error() string {
	return fmt.Sprintf("middleware: task %q not enqueued: key %q is taken by a task queued or running", e.TaskType, e.Key)
}

// Is makes a *DuplicateTaskError match asynq.ErrDuplicateTask.
func (e *DuplicateTaskError) Is(target error) bool { return target == asynq.ErrDuplicateTask }

func checkUnique(r *Rule) error {
	if r.Unique < NotUnique || r.Unique > UniqueUntilAndWhileExecuting {
		return fmt.Errorf("unknown uniqueness %v", r.Unique)
	}
	if r.OnConflict < Reject || r.OnConflict > Debounce {
		return fmt.Errorf("unknown conflict strategy %v", r.OnConflict)
	}
	if r.UniqueFor == 0 {
		r.UniqueFor = DefaultUniqueFor
	}
	if err := lock.ValidateTTL(r.UniqueFor); err != nil {
		return fmt.Errorf("UniqueFor: %w", err)
	}
	if r.OnConflict == Debounce && r.DebounceFor <= 0 {
		return fmt.Errorf("the Debounce strategy needs a positive DebounceFor, not %s", r.DebounceFor)
	}
	return nil
}

// uniqueKey is the lock key that a queued task of key holds in queue.
func (m *middleware) uniqueKey(queue, key string) string {
	return m.prefix + "unique:" + queueEscaper.Replace(queue) + ":" + strings.TrimPrefix(key, m.prefix)
}

// queueEscaper writes a queue name with no ':' in it, so that the ':'
// after it in a unique key ends it: queue "a:b" with key "c" and queue "a"
// with key "b:c" get two unique keys, not one.
var queueEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// resentBase is the ID a task was first enqueued under, before the
// middleware sent it back (see requeue): the holder of its unique key.
func resentBase(id string) string {
	if i := strings.LastIndex(id, resentSep); i >= 0 {
		return id[:i]
	}
	return id
}

// queueKey carries the queue a task is enqueued to, for keys derived at
// enqueue time, when asynq's context has none.
type queueKey struct{}

// QueueName returns the queue of the task whose key is being derived: in
// the handler, asynq's; in Client.Enqueue, the one it enqueues to. Custom
// KeyFuncs that use the queue should read it here.
func QueueName(ctx context.Context) string {
	if q, ok := ctx.Value(queueKey{}).(string); ok {
		return q
	}
	q, _ := asynq.GetQueueName(ctx)
	return q
}

// Client enqueues asynq tasks under the same Rules as the middleware:
// tasks whose rule is Unique are kept out of the queue while their key is
// taken, and the middleware frees the key at the moment the rule says.
type Client struct {
	m       *middleware
	client  *asynq.Client
	inspect *asynq.Inspector
}

// NewClient returns a Client on rdb, the Redis the asynq servers work on
// (the caller keeps it and closes it), taking keys on locker, the engine
// the workers' middleware uses, with the same options as New (WithRule,
// WithDefaultRule, WithPrefix, ...). It returns New's errors.
func NewClient(rdb redis.UniversalClient, locker lock.Locker, opts ...Option) (*Client, error) {
	if rdb == nil {
		return nil, errors.New("middleware: redis client is nil")
	}
	m, err := newMiddleware(locker, opts)
	if err != nil {
		return nil, err
	}
	return &Client{m: m, client: asynq.NewClientFromRedisClient(rdb), inspect: asynq.NewInspectorFromRedisClient(rdb)}, nil
}

// Enqueue is EnqueueContext with a background context.
func (c *Client) Enqueue(task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	return c.EnqueueContext(context.Background(), task, opts...)
}

// EnqueueContext enqueues task as asynq.Client.EnqueueContext does, except
// for a task whose rule is Unique: it is enqueued only if its key is free
// (or was taken by a task that no longer waits to run: deleted, archived,
// completed, past its deadline (archived then), lost), under a task ID
// the Client chooses; a taken key is handled as the rule's OnConflict
// says. The task's own options (asynq.NewTask's) apply as asynq applies
// them, before opts. Enqueuers of one key, in any process sharing the
// engine, take turns, so at most one copy is queued. It blocks for the
// enqueue and, under contention, for its turn.
//
// It returns a *DuplicateTaskError (matching asynq.ErrDuplicateTask) for a
// rejected task, asynq's errors, and the key derivation's errors, which
// name the task type and the field.
func (c *Client) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	r := c.m.ruleFor(task.Type())
	if r.Unique == NotUnique {
		return c.client.EnqueueContext(ctx, task, opts...)
	}
	// What asynq will apply: the task's own options, then these.
	opts = append(taskOptions(task), opts...)
	queue := "default"
	for _, o := range opts {
		switch o.Type() {
		case asynq.QueueOpt:
			queue, _ = o.Value().(string)
		case asynq.TaskIDOpt:
			return nil, fmt.Errorf("middleware: task %q: its rule is unique, so the Client chooses its task ID; drop asynq.TaskID", task.Type())
		}
	}
	key, err := c.m.key(context.WithValue(ctx, queueKey{}, queue), r, task)
	if err != nil {
		return nil, err
	}
	e := enqueue{c: c, r: r, task: task, opts: opts, queue: queue, key: c.m.uniqueKey(queue, key)}
	// One enqueuer of the key at a time, in every process: what it sees of
	// the key and the queue stays true until it has enqueued.
	_, err = c.m.renewer.Run(ctx, e.key+enqueueSuffix, e.run,
		lock.WithLease(10*time.Second), lock.WithWait(lock.Wait{MaxWait: time.Minute, Interval: 2 * time.Millisecond, Jitter: 0.5}))
	if err != nil {
		return nil, err
	}
	return e.info, nil
}

// taskOptions returns the options task was made with (asynq.NewTask's),
// which asynq applies before Enqueue's own. asynq has no accessor for
// them, so they are read from its unexported field; were that field to
// change, a test fails (TestUniqueTaskOwnOptions).
func taskOptions(task *asynq.Task) []asynq.Option {
	f := reflect.ValueOf(task).Elem().FieldByName("opts")
	if !f.IsValid() || f.Type() != reflect.TypeFor[[]asynq.Option]() || f.Len() == 0 {
		return nil
	}
	own := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().([]asynq.Option)
	return own[:len(own):len(own)]
}

// enqueue is one Client.EnqueueContext of a unique task.
type enqueue struct {
	c     *Client
	r     *rule
	task  *asynq.Task
	opts  []asynq.Option
	queue string
	key   string
	info  *asynq.TaskInfo
}

func (e *enqueue) run(ctx context.Context) error {
	l := e.c.m.locker
	rec, ok, err := l.Inspect(ctx, e.key)
	if err != nil {
		return err
	}
	if ok && rec.State == lock.Held {
		done, err := e.conflict(ctx, rec.Token)
		if done || err != nil {
			return err
		}
		// The queued copy may be gone (Replace, Debounce): the new one goes
		// in even if ctx ends now, or neither would be queued.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), enqueueTimeout)
		defer cancel()
	}
	lease, err := l.Obtain(ctx, e.key, e.uniqueFor())
	if err != nil {
		return err
	}
	opts := append(e.opts[:len(e.opts):len(e.opts)], asynq.Queue(e.queue), asynq.TaskID(lease.Token))
	if e.r.OnConflict == Debounce {
		opts = append(opts, asynq.ProcessIn(e.r.DebounceFor))
	}
	e.info, err = e.c.client.EnqueueContext(ctx, e.task, opts...)
	if err != nil {
		// Nothing was queued (asynq's own Unique, say): the key is free.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.m.releaseTO)
		defer cancel()
		_ = l.Release(rctx, lease)
	}
	return err
}

// enqueueTimeout bounds the enqueue of a task that replaces a deleted
// copy, which its caller's context no longer cuts short.
const enqueueTimeout = 10 * time.Second

// uniqueFor is how long the key is taken for the task: UniqueFor from the
// moment the task may first run, which a debounce, ProcessIn or ProcessAt
// puts off; a key that ran out first would let a second copy in while
// the first still waits.
func (e *enqueue) uniqueFor() time.Duration {
	var delay time.Duration
	for _, o := range e.opts { // asynq keeps the last one given
		switch o.Type() {
		case asynq.ProcessInOpt:
			delay, _ = o.Value().(time.Duration)
		case asynq.ProcessAtOpt:
			at, _ := o.Value().(time.Time)
			delay = time.Until(at)
		}
	}
	if e.r.OnConflict == Debounce {
		delay = e.r.DebounceFor
	}
	return min(max(delay, 0)+e.r.UniqueFor, lock.MaxTTL)
}

// conflict handles a key held by the task with ID holder. done says the
// enqueue is over (rejected or ignored); otherwise the key has been freed
// and the new task may take it.
func (e *enqueue) conflict(ctx context.Context, holder string) (done bool, err error) {
	info, err := e.liveCopy(holder)
	if err != nil {
		return true, err
	}
	if info != nil {
		switch e.r.OnConflict {
		case Reject:
			return true, &DuplicateTaskError{TaskType: e.task.Type(), Key: e.key, TaskID: info.ID}
		case Ignore:
			e.info = info
			return true, nil
		}
		// Replace, Debounce: the queued copy goes.
		if info, err = e.remove(info); err != nil {
			return true, fmt.Errorf("middleware: replace task %s: %w", holder, err)
		}
		if info != nil && e.r.Unique == UniqueUntilExecuted {
			// It runs, and holds the key until it ends.
			return true, &DuplicateTaskError{TaskType: e.task.Type(), Key: e.key, TaskID: info.ID}
		}
		// Deleted; or, under UniqueUntilAndWhileExecuting, picked up by a
		// worker but still waiting for its turn (it holds the key until its
		// turn comes): a mark, left before its key is taken, makes it
		// complete without running when its turn comes.
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.m.releaseTO)
	defer cancel()
	var mark *lock.Lease
	if info != nil && e.r.Unique == UniqueUntilAndWhileExecuting {
		l, err := e.c.m.locker.Obtain(rctx, replacedKey(e.key, holder), e.r.UniqueFor)
		if err != nil && !errors.Is(err, lock.ErrNotObtained) { // a mark left already
			return true, err
		}
		if err == nil {
			mark = &l
		}
	}
	err = e.c.m.locker.Release(rctx, lock.Lease{Key: e.key, Token: holder})
	switch {
	case errors.Is(err, lock.ErrNotHeld):
		if mark != nil {
			// Its turn came meanwhile, and it runs: no mark for it.
			_ = e.c.m.locker.Release(rctx, *mark)
		}
	case err != nil:
		return true, err
	}
	return false, nil
}

// remove deletes the task of info from the queue and returns nil; or, if
// a worker has it (it runs, or waits for its turn), its info. A task that
// changes state meanwhile is looked at again: one that started cannot be
// deleted, and one that ran to its end since is gone.
func (e *enqueue) remove(info *asynq.TaskInfo) (*asynq.TaskInfo, error) {
	for range 5 {
		switch info.State {
		case asynq.TaskStateActive:
			return info, nil
		case asynq.TaskStateArchived, asynq.TaskStateCompleted:
			return nil, nil
		}
		err := e.c.inspect.DeleteTask(e.queue, info.ID)
		if err == nil || errors.Is(err, asynq.ErrTaskNotFound) {
			return nil, nil
		}
		next, gerr := e.c.inspect.GetTaskInfo(e.queue, info.ID)
		switch {
		case errors.Is(gerr, asynq.ErrTaskNotFound):
			return nil, nil
		case gerr != nil:
			return nil, err
		}
		info = next
	}
	return nil, fmt.Errorf("task %s keeps changing state", info.ID)
}

// replacedKey is the key of the mark a Replace or Debounce leaves for a
// task that a worker picked up but that waits for its turn, whose unique
// key is uniqueKey and whose first ID is holder: its turn comes, its key
// is gone, and the mark says why. As long as enqueueSuffix, so that
// checkUniqueKey covers it.
func replacedKey(uniqueKey, holder string) string {
	sum := sha256.Sum256([]byte(holder))
	return uniqueKey + "#" + hex.EncodeToString(sum[:4])[:len(enqueueSuffix)-1]
}

// maxResent bounds the copies of a task the middleware may have sent back
// (see resentID) that liveCopy looks for.
const maxResent = 20

// liveCopy returns the task that holds the key under holder's ID and may
// still run: the task itself, or the copy the middleware sent back in its
// place (holder~resent-N); nil when none may run (deleted, archived,
// completed, past its deadline, or never enqueued).
func (e *enqueue) liveCopy(holder string) (*asynq.TaskInfo, error) {
	id := holder
	for range maxResent {
		info, err := e.c.inspect.GetTaskInfo(e.queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		case err != nil:
			return nil, err
		case info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateCompleted:
		case pastDeadline(info):
			// asynq fails such a task when it dequeues it, without running
			// it, retry after retry until it archives it: it does so now,
			// so that the task neither holds the key nor counts as queued.
			if info.State != asynq.TaskStateActive {
				_ = e.c.inspect.ArchiveTask(e.queue, info.ID)
			}
		default:
			return info, nil
		}
		if err != nil && id != holder {
			return nil, nil // the chain of copies ends here
		}
		id = resentID(id)
	}
	return nil, nil
}

// pastDeadline reports whether info's task has a deadline that has
// passed: asynq will not run it again.
func pastDeadline(info *asynq.TaskInfo) bool {
	return !info.Deadline.IsZero() && !time.Now().Before(info.Deadline)
}
