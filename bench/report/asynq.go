package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"
)

// asynqSetup is one way of running the throughput benchmark's tasks.
type asynqSetup struct {
	name string
	// locker opens the engine for one measurement (nil: no middleware) and
	// says how to get rid of it.
	locker func() (lock.Locker, func(), error)
	// keys is how many distinct keys the tasks use; 0 means one per task.
	keys int
	// floor, instead of an engine, is a hand-written middleware doing the
	// least a lock of its kind must do per task: what no design goes below.
	floor func() (asynq.MiddlewareFunc, func(), error)
	// goal, if not 0, is the ratio to asynq alone the setup should reach,
	// and bound names the floor that bounds it: a goal above its floor's
	// ratio is out of reach on the machine of the run.
	goal  float64
	bound string
}

// tmpfsParent holds the report's directories on tmpfs; it is removed
// when the report ends, if nothing is left in it.
const tmpfsParent = "/dev/shm/joblock-bench"

// The floors that bound the goals.
const (
	recordFloorName  = "floor: a record read and rewritten under flock before and after each task, files kept open, no middleware, 100 keys"
	guardedFloorName = "floor: a new key's record linked in whole, released by a compare-and-set under flock, no middleware, tmpfs"
	guardedDefault   = "floor: a new key's record linked in whole, released by a compare-and-set under flock, no middleware, the default directory"
	redisFloorName   = "floor: a fencing token and the holder set in one script (SET NX PX, TIME, the key's counter read and written), compare-and-delete, no middleware"
)

func asynqSection(ctx context.Context, o options, rdb *redis.Client) error {
	defaultDir := engine.DefaultDir()
	fileIn := func(parent string) func() (lock.Locker, func(), error) {
		return func() (lock.Locker, func(), error) {
			if err := os.MkdirAll(parent, 0o700); err != nil {
				return nil, nil, err
			}
			dir, err := os.MkdirTemp(parent, "bench-")
			if err != nil {
				return nil, nil, err
			}
			l, err := filelock.New(dir)
			if err != nil {
				return nil, nil, err
			}
			return l, func() { _ = l.Close(); _ = os.RemoveAll(dir) }, nil
		}
	}
	redisEngine := func() (lock.Locker, func(), error) {
		prefix := "joblockbench:" + rand.Text()[:8] + ":"
		return redislock.New(rdb, redislock.WithPrefix(prefix)), func() { deleteRedisPrefix(ctx, rdb, prefix) }, nil
	}
	setups := []asynqSetup{
		{name: "no middleware"},
		{name: "file engine, 100 keys reused", locker: fileIn(defaultDir), keys: 100, goal: 0.95, bound: recordFloorName},
		{name: "file engine, a new key per task, tmpfs (/dev/shm)", locker: fileIn(tmpfsParent), goal: 0.90, bound: guardedFloorName},
		{name: fmt.Sprintf("file engine, a new key per task, default directory (%s, %s)", defaultDir, fsType(defaultDir)), locker: fileIn(defaultDir),
			goal: 0.75, bound: guardedDefault},
		{name: "Redis engine, a new key per task", locker: redisEngine, goal: 0.85, bound: redisFloorName},
		{name: "the middleware over an engine that does nothing (its own cost)", locker: func() (lock.Locker, func(), error) { return nopLocker{}, func() {}, nil }},
		{name: recordFloorName, floor: recordFloor(defaultDir), keys: 100},
		{name: "floor: the spec's create-write-close-unlink per task, no middleware, tmpfs", floor: specFloor(tmpfsParent)},
		{name: guardedFloorName, floor: guardedFloor(tmpfsParent)},
		{name: guardedDefault, floor: guardedFloor(defaultDir)},
		{name: "floor: SET NX PX + compare-and-delete EVAL per task, no fencing token, no middleware", floor: redisFloor(rdb)},
		{name: redisFloorName, floor: fencedFloor(rdb)},
	}
	names := make([]string, len(setups))
	byName := map[string]asynqSetup{}
	for i, s := range setups {
		names[i], byName[s.name] = s.name, s
	}
	redisPID := serverPID(ctx, rdb)
	fmt.Printf("\n### asynq throughput\n\nA trivial handler, concurrency 10, %d tasks per measurement, real Redis. "+
		"After one unmeasured run of every setup, every run of a setup sits between two runs without middleware, one just before and one just after it; "+
		"its ratio is the median over the rounds of its rate over the mean of those two. Rates and CPU are medians over the rounds. "+
		"CPU is this process's and the Redis server's together, per task: what the middleware costs on a machine whose cores are all busy.\n", o.tasks)
	// One unmeasured run of every setup first: the first server of a
	// process, and the first run of each setup, pay for warming up what
	// every later one reuses (measured, the first round's ratios came out
	// lowest without it).
	var duplicates int64
	for _, s := range setups {
		if _, _, err := asynqRun(ctx, o, rdb, s, redisPID, &duplicates); err != nil {
			return fmt.Errorf("%s, warming up: %w", s.name, err)
		}
	}
	cpu := map[string]*measurement{}
	ms, ratios, err := bracket(o.asynqRuns, names[0], names[1:], func(name string) (float64, error) {
		var rate float64
		var perTask time.Duration
		var err error
		pprof.Do(ctx, pprof.Labels("setup", name), func(ctx context.Context) {
			rate, perTask, err = asynqRun(ctx, o, rdb, byName[name], redisPID, &duplicates)
		})
		if cpu[name] == nil {
			cpu[name] = &measurement{name: name}
		}
		cpu[name].values = append(cpu[name].values, perTask.Seconds()*1e6)
		return rate, err
	})
	if err != nil {
		return err
	}
	if o.raw {
		for i, m := range ms {
			fmt.Fprintf(os.Stderr, "%-40.40s %v\n", m.name, m.values)
			fmt.Fprintf(os.Stderr, "%-40.40s %v\n", "  CPU µs/task", cpu[m.name].values)
			if i > 0 {
				fmt.Fprintf(os.Stderr, "%-40.40s %v\n", "  ratios", ratios[i-1].values)
			}
		}
	}
	baseCPU := cpu[ms[0].name].median()
	ratioOf := map[string]float64{ms[0].name: 1}
	roundsOf := map[string][]float64{}
	table("setup", "tasks/s", "vs no middleware", "CPU µs/task", "CPU added")
	for i, m := range ms {
		if i > 0 {
			ratioOf[m.name], roundsOf[m.name] = ratios[i-1].median(), ratios[i-1].values
		}
		c := cpu[m.name].median()
		row(m.name, thousands(m.median()), fmt.Sprintf("%.2fx", ratioOf[m.name]), fmt.Sprintf("%.0f", c), fmt.Sprintf("%+.0f", c-baseCPU))
	}
	if redisPID == 0 {
		fmt.Println("\n(The Redis server is not on this machine: CPU counts this process only.)")
	}
	fmt.Printf("\nTasks the middleware found with their key held by another task and sent back as duplicates, over every run of every setup with the middleware: %d.\n", duplicates)
	goals(setups, ratioOf, roundsOf)
	return nil
}

// goals prints each goal beside what its setup and the floor that bounds
// it measured in this run. A floor does per task less than any design
// that keeps the lock's guarantees, without the middleware: a goal above
// its floor's ratio is out of reach of every design on this machine.
func goals(setups []asynqSetup, ratioOf map[string]float64, roundsOf map[string][]float64) {
	fmt.Printf("\n#### Against the goals\n\nEach goal is a ratio to asynq alone, as in the table above, from the same run; " +
		"the last column counts the rounds whose own ratio (as -raw prints it) reached the goal, of the setup and of its floor.\n")
	table("setup", "goal", "measured", "its floor", "verdict", "rounds at the goal")
	for _, s := range setups {
		if s.goal == 0 {
			continue
		}
		got, floor := ratioOf[s.name], ratioOf[s.bound]
		row(s.name, fmt.Sprintf("%.2fx", s.goal), fmt.Sprintf("%.2fx", got), fmt.Sprintf("%.2fx (%s)", floor, strings.TrimPrefix(s.bound, "floor: ")),
			verdict(s.goal, got, floor), fmt.Sprintf("%s; floor %s", atGoal(s.goal, roundsOf[s.name]), atGoal(s.goal, roundsOf[s.bound])))
	}
}

// printed is x as the tables print it, to two decimals.
func printed(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 2, 64), 64)
	return v
}

// atGoal says how many of rounds reached goal; the rounds' ratios are
// compared as -raw prints them, in full.
func atGoal(goal float64, rounds []float64) string {
	n := 0
	for _, r := range rounds {
		if r >= goal {
			n++
		}
	}
	return fmt.Sprintf("%d of %d", n, len(rounds))
}

// verdict says whether a setup that measured got met goal, and if not,
// whether its floor, which measured floor, leaves the goal within reach.
func verdict(goal, got, floor float64) string {
	// Compared as printed, to two decimals, so that the verdict never
	// contradicts the figures beside it.
	goal, got, floor = printed(goal), printed(got), printed(floor)
	switch {
	case got >= goal:
		return "met"
	case floor < goal:
		return "not met; out of reach here, its floor is below the goal"
	default:
		return "not met, though its floor reaches the goal"
	}
}

// serverPID is the Redis server's process id when it runs on this machine,
// else 0.
func serverPID(ctx context.Context, rdb *redis.Client) int {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
				return pid
			}
		}
	}
	return 0
}

// cpuTime is the CPU this process and, if pid is not 0, process pid have
// used so far.
func cpuTime(pid int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if pid == 0 {
		return d
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return d
	}
	// Fields after the command's closing parenthesis; utime and stime are
	// the 12th and 13th of them, in clock ticks (100 per second on Linux).
	rest := b[bytes.LastIndexByte(b, ')')+1:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return d
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return d + time.Duration(u+s)*10*time.Millisecond
}

// asynqRun enqueues o.tasks tasks, then times a real asynq server (and the
// middleware, if the setup has an engine) handling all of them.
// Tasks the middleware sent back as duplicates are added to *duplicates.
func asynqRun(ctx context.Context, o options, rdb *redis.Client, s asynqSetup, redisPID int, duplicates *int64) (rate float64, cpuPerTask time.Duration, err error) {
	queue := "bench-" + rand.Text()[:10]
	defer deleteQueue(ctx, rdb, queue) // last, after the server is shut down
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range o.tasks {
		id := i
		if s.keys > 0 {
			id = i % s.keys
		}
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("job", []byte(`{"id":`+strconv.Itoa(id)+`}`)), asynq.Queue(queue)); err != nil {
			return 0, 0, err
		}
	}
	var done atomic.Int64
	all := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("job", func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(o.tasks) {
			close(all)
		}
		return nil
	})
	if s.floor != nil {
		mw, closeFn, err := s.floor()
		if err != nil {
			return 0, 0, err
		}
		defer closeFn()
		mux.Use(mw)
	}
	if s.locker != nil {
		l, closeFn, err := s.locker()
		if err != nil {
			return 0, 0, err
		}
		defer closeFn()
		var dups atomic.Int64
		defer func() { *duplicates += dups.Load() }()
		mw, err := middleware.New(l, middleware.WithDefaultRule(middleware.Rule{Template: "job-{{.id}}"}), middleware.WithObserver(func(e middleware.Event) {
			if e.Kind == middleware.Duplicate {
				dups.Add(1)
			}
		}))
		if err != nil {
			return 0, 0, err
		}
		mux.Use(mw)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 10, Queues: map[string]int{queue: 1}, LogLevel: asynq.FatalLevel})
	start, cpu0 := time.Now(), cpuTime(redisPID)
	if err := srv.Start(mux); err != nil {
		return 0, 0, err
	}
	defer srv.Shutdown() // before the engine is closed and the queue deleted, on every path
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		return 0, 0, fmt.Errorf("only %d of %d tasks ran", done.Load(), o.tasks)
	}
	elapsed, cpu := time.Since(start), cpuTime(redisPID)-cpu0
	return float64(o.tasks) / elapsed.Seconds(), cpu / time.Duration(o.tasks), nil
}

// taskKey is the key the setups' template gives a task: its payload's id.
func taskKey(t *asynq.Task) string { return "job-" + string(t.Payload()) }

// specFloor creates, writes, closes and deletes a lock file per task, as
// the spec's LockManager does for a new key, around the handler.
func specFloor(parent string) func() (asynq.MiddlewareFunc, func(), error) {
	return func() (asynq.MiddlewareFunc, func(), error) {
		dir, cleanup, err := tempDir(parent)
		if err != nil {
			return nil, nil, err
		}
		return func(next asynq.Handler) asynq.Handler {
			return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
				path, err := specCreate(dir, taskKey(t))
				if err != nil {
					return err
				}
				defer os.Remove(path)
				return next.ProcessTask(ctx, t)
			})
		}, cleanup, nil
	}
}

// redisFloor takes and frees a key per task with SET NX PX and a
// compare-and-delete script, nothing else, around the handler.
func redisFloor(c *redis.Client) func() (asynq.MiddlewareFunc, func(), error) {
	return func() (asynq.MiddlewareFunc, func(), error) {
		prefix := "joblockbench:" + rand.Text()[:8] + ":floor:"
		return func(next asynq.Handler) asynq.Handler {
			return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
				token, key := rand.Text(), prefix+taskKey(t)
				if err := handObtain.Run(ctx, c, []string{key}, token, redisTTL.Milliseconds()).Err(); err != nil {
					return err
				}
				defer handRelease.Run(ctx, c, []string{key}, token)
				return next.ProcessTask(ctx, t)
			})
		}, func() {}, nil
	}
}

// fencedObtain takes KEYS[1] with the holder ARGV[1] for ARGV[2] ms and
// returns a fencing token above every earlier one of the key, even after
// its counter KEYS[2] was lost (the larger of the counter plus one and the
// server clock in µs), kept for ARGV[3] ms; 0 if the key is held.
var fencedObtain = redis.NewScript(`if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local t = redis.call('TIME')
local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2])) or 0
if last >= fence then
  if last >= 9007199254740991 then return redis.error_reply('fencing counter exhausted') end
  fence = last + 1
end
redis.call('SET', KEYS[2], string.format('%d', fence), 'PX', ARGV[3])
return fence`)

// fencedFloor takes and frees a key per task as a Redis lock that hands out
// fencing tokens must at the least, around the handler: one script that
// takes the key with its holder and makes the token, and a
// compare-and-delete.
func fencedFloor(c *redis.Client) func() (asynq.MiddlewareFunc, func(), error) {
	return func() (asynq.MiddlewareFunc, func(), error) {
		prefix := "joblockbench:" + rand.Text()[:8] + ":fenced:"
		return func(next asynq.Handler) asynq.Handler {
				return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
					holder, key := rand.Text()+" 1700000000000 1 h", prefix+"{"+taskKey(t)+"}"
					fence, err := fencedObtain.Run(ctx, c, []string{key, key + ":fence"}, holder, redisTTL.Milliseconds(), time.Minute.Milliseconds()).Int64()
					if err != nil {
						return err
					}
					if fence == 0 {
						return fmt.Errorf("fenced floor: %s is held", key)
					}
					defer handRelease.Run(ctx, c, []string{key}, holder)
					return next.ProcessTask(ctx, t)
				})
			}, func() {
				deleteRedisPrefix(context.Background(), c, prefix)
			}, nil
	}
}

// recordFloor keeps one file per key open and, per task, reads and rewrites
// a record in it under flock before the handler and again after it: the
// least a lock whose record (owner, expiry, fencing token) outlives its
// holder can do with reused files, with no open, close, stat or check of
// any kind.
func recordFloor(parent string) func() (asynq.MiddlewareFunc, func(), error) {
	return func() (asynq.MiddlewareFunc, func(), error) {
		dir, cleanup, err := tempDir(parent)
		if err != nil {
			return nil, nil, err
		}
		type keyFile struct {
			sync.Mutex // the flock excludes other files, not this one's users
			fd         int
		}
		var mu sync.Mutex
		files := map[string]*keyFile{}
		fileOf := func(key string) (*keyFile, error) {
			mu.Lock()
			defer mu.Unlock()
			if f := files[key]; f != nil {
				return f, nil
			}
			fd, err := unix.Open(filepath.Join(dir, specName(key)), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return nil, err
			}
			files[key] = &keyFile{fd: fd}
			return files[key], nil
		}
		closeAll := func() {
			for _, f := range files {
				_ = unix.Close(f.fd)
			}
			cleanup()
		}
		return func(next asynq.Handler) asynq.Handler {
			return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
				f, err := fileOf(taskKey(t))
				if err != nil {
					return err
				}
				f.Lock()
				defer f.Unlock()
				if err := rewriteRecord(f.fd, nil); err != nil {
					return err
				}
				defer rewriteRecord(f.fd, nil)
				return next.ProcessTask(ctx, t)
			})
		}, closeAll, nil
	}
}

// guardedFloor does per task, around the handler, the system calls the
// file engine cannot do without for a new key and keep its guarantees,
// and nothing else: the record written into an unnamed file and linked
// into place whole (no reader sees it empty, a full disk leaves nothing),
// then, after the handler, a compare-and-set under flock (the file at the
// path checked to be the one held, the record read, the released record
// written) before the file is closed. No record is encoded or checked.
func guardedFloor(parent string) func() (asynq.MiddlewareFunc, func(), error) {
	return func() (asynq.MiddlewareFunc, func(), error) {
		dir, cleanup, err := tempDir(parent)
		if err != nil {
			return nil, nil, err
		}
		dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		obtain := func(name string) (int, error) {
			fd, err := unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return -1, err
			}
			if _, err = unix.Pwrite(fd, floorRecord, 0); err == nil {
				err = unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
				if err == unix.ENOENT || err == unix.EPERM { // no CAP_DAC_READ_SEARCH
					err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
				}
			}
			if err != nil {
				_ = unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}
		release := func(fd int, name string) error {
			defer unix.Close(fd)
			return rewriteRecord(fd, func() error {
				var st unix.Stat_t
				return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
			})
		}
		return func(next asynq.Handler) asynq.Handler {
				return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
					name := specName(taskKey(t))
					fd, err := obtain(name)
					if err != nil {
						return err
					}
					err = next.ProcessTask(ctx, t)
					if rerr := release(fd, name); err == nil {
						err = rerr
					}
					return err
				})
			}, func() {
				_ = unix.Close(dirfd)
				cleanup()
			}, nil
	}
}

// floorRecord is the record the floors write: a lock record of the size
// the file engine writes, encoded once.
var floorRecord = []byte(`{"lock_id":"lock_AAAAAAAAAAAAAAAAAAAAAAAAAA","key":"job-0000","acquired_at":1700000000,"acquired_at_ms":1700000000000,` +
	`"expires_at":1700000030,"expires_at_ms":1700000030000,"pid":1,"host":"h","fence":1700000000000001,"state":"held"}`)

// rewriteRecord is the floors' compare-and-set: under an exclusive flock
// of fd, check (if any), read the record and write floorRecord over it.
func rewriteRecord(fd int, check func() error) error {
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(fd, unix.LOCK_UN)
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	var buf [512]byte
	if _, err := unix.Pread(fd, buf[:], 0); err != nil {
		return err
	}
	_, err := unix.Pwrite(fd, floorRecord, 0)
	return err
}
