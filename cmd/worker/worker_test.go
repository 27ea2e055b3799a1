package main_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	worker "github.com/joblock/joblock/cmd/worker"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// envAsWorker makes the test binary run as the worker, so the tests drive
// real worker processes without building one inside their time budget.
const envAsWorker = "JOBLOCK_TEST_AS_WORKER"

// envTrace makes such a worker trace its handlers into a directory (see
// worker.TraceTo).
const envTrace = "JOBLOCK_TEST_TRACE"

func TestMain(m *testing.M) {
	if os.Getenv(envAsWorker) == "1" {
		if dir := os.Getenv(envTrace); dir != "" {
			if err := worker.TraceTo(dir); err != nil {
				panic(err)
			}
		}
		worker.Main()
		return
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestTwoWorkersEndToEnd(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the worker")
	cfg := engine.Config{Engine: engine.Redis, RedisURL: "redis://" + srv.Addr, Prefix: srv.Prefix}
	env := append(cfg.Env(), "JOBLOCK_ROLE=worker")
	a := startWorker(t, env)
	b := startWorker(t, env)
	ws := []*workerProc{a, b}
	assert.Contains(t, a.logs.String(), "coordinates processes on every host")
	requireCleanStart(t, a)
	code, h := a.health(t, "/healthz")
	assert.Equal(t, 200, code)
	assert.Equal(t, health{Status: "ok", Checks: map[string]string{"asynq_broker": "ok", "lock_engine": "ok"}}, h)

	client := asynqClient(t, cfg)
	_, err := client.Enqueue(asynq.NewTask("export:user", []byte(`{"user_id": 42}`)))
	require.NoError(t, err)
	// The export runs for a second: /locks shows its lock meanwhile.
	require.Eventually(t, func() bool {
		return strings.Contains(a.get(t, "/locks"), "export-user-42") || strings.Contains(b.get(t, "/locks"), "export-user-42")
	}, 10*time.Second, 20*time.Millisecond, "/locks never showed the running export's lock")
	requireDeduplicated(t, client, ws, "product-123", 20)
	assert.Contains(t, a.get(t, "/metrics"), "joblock_locks_active")

	for _, w := range ws {
		w.stop(t)
		assert.Contains(t, w.logs.String(), "worker stopped")
	}
	var left []string
	require.NoError(t, redislock.New(srv.Client(t), redislock.WithPrefix(srv.Prefix)).Scan(context.Background(), func(r lock.Record) bool {
		left = append(left, r.Key)
		return true
	}))
	assert.Empty(t, left, "locks left behind after shutdown")
}

func TestDemoNeedsNothing(t *testing.T) {
	out, err := workerCmd(nil, "-demo", "-run-for", "5s", "-http", "127.0.0.1:0", "-lock-dir", t.TempDir()).CombinedOutput()
	require.NoError(t, err, string(out))
	for _, want := range []string{"joblock demo", "cache regeneration", "CDN invalidation", "job dedup", "API rate-limit slot", "export prevention", "distributed cron"} {
		assert.Contains(t, string(out), want)
	}
	last := string(out)[strings.LastIndex(string(out), "joblock demo"):]
	rows := regexp.MustCompile(`(?m)^\s*(.+?)\s+(\w+:\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(-?\d+)\s*$`).FindAllStringSubmatch(last, -1)
	require.Len(t, rows, 5, "one row per use case:\n%s", last)
	for _, r := range rows {
		n := make([]int, 4)
		for i := range n {
			n[i], _ = strconv.Atoi(r[3+i])
		}
		enqueued, executed, dups, pending := n[0], n[1], n[2], n[3]
		// Each task counts once: a Retry that sends a task back does not
		// count it again, so executed + deduplicated never exceeds enqueued.
		assert.LessOrEqual(t, executed+dups, enqueued, "%s counted a task twice:\n%s", r[1], last)
		assert.Equal(t, enqueued-executed-dups, pending, r[0])
		assert.Positive(t, enqueued, r[0])
		if r[2] == "cache:regenerate" {
			assert.Positive(t, dups, "no duplicate deduplicated:\n%s", last)
		}
	}
}

func TestNoRedisExitsAtOnce(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	start := time.Now()
	_, stderr, code := runWorker(t, nil, "-redis-url", "redis://"+addr, "-http", "")
	assert.Equal(t, 1, code)
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Contains(t, stderr, addr, "names the address it tried")
	assert.Contains(t, stderr, "redis-server", "says how to start Redis")
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"concurrency", nil, []string{"-concurrency", "0"}, "-concurrency [JOBLOCK_CONCURRENCY] must be at least 1"},
		{"lease", nil, []string{"-lease", "0s"}, "-lease [JOBLOCK_LEASE]"},
		{"queues", nil, []string{"-queues", "x"}, `-queues [JOBLOCK_QUEUES]: queue "x"`},
		{"extra argument", nil, []string{"extra"}, `unexpected arguments ["extra"]`},
		{"log level", nil, []string{"-log-level", "loud"}, `-log-level [JOBLOCK_LOG_LEVEL] "loud"`},
		{"role", nil, []string{"-role", "boss"}, `-role [JOBLOCK_ROLE] must be worker, scheduler or all, not "boss"`},
		// The engine name is checked before anything connects: the Redis
		// URL here would fail.
		{"engine", nil, []string{"-engine", "etcd"}, `-engine [JOBLOCK_ENGINE]: unknown lock engine "etcd"`},
		{"redis URL", nil, []string{"-redis-url", "http://h"}, `-redis-url [JOBLOCK_REDIS_URL] http://h: unknown scheme "http"`},
		{"CA without TLS", []string{"JOBLOCK_REDIS_CA=/nope"}, nil, "-redis-ca [JOBLOCK_REDIS_CA] is set but -redis-url is not a TLS URL"},
		{"schedule name", nil, []string{"-schedule", "nightly=@daily"}, `invalid value "nightly=@daily" for flag -schedule: schedule "nightly=@daily": want NAME=SPEC with NAME one of cache-warmup, daily-cleanup, lock-cleanup`},
		{"schedule spec", nil, []string{"-schedule", "daily-cleanup=0 25 * * *"}, `invalid value "daily-cleanup=0 25 * * *" for flag -schedule: schedule of daily-cleanup: "0 25 * * *": end of range (25) above maximum (23)`},
		{"schedule zone", []string{"JOBLOCK_SCHEDULES=daily-cleanup=CRON_TZ=Mars/Olympus 0 3 * * *"}, nil, `JOBLOCK_SCHEDULES: schedule of daily-cleanup: "CRON_TZ=Mars/Olympus 0 3 * * *": provided bad location Mars/Olympus`},
		{"short admin token", []string{"JOBLOCK_ADMIN_TOKEN=hunter2"}, nil, "JOBLOCK_ADMIN_TOKEN is 7 characters: use at least 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{"JOBLOCK_REDIS_URL=redis://127.0.0.1:1/0"}, tt.env...)
			_, stderr, code := runWorker(t, env, append([]string{"-http", ""}, tt.args...)...)
			assert.Equal(t, 2, code, stderr)
			assert.Contains(t, stderr, "worker: "+tt.want)
			assert.NotContains(t, stderr, "redis unreachable", "a bad setting is reported before connecting")
		})
	}
}

func TestVersion(t *testing.T) {
	out, _, code := runWorker(t, nil, "-version")
	assert.Equal(t, 0, code)
	assert.Regexp(t, `^worker \S+ .*go1\.\d+`, out)
}

func TestContainerRefusesPrivateLockDir(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the worker")
	_, stderr, code := runWorker(t, []string{"JOBLOCK_IN_CONTAINER=1", "JOBLOCK_REDIS_URL=redis://" + srv.Addr}, "-http", "")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "replicas would not coordinate")
	assert.Contains(t, stderr, "JOBLOCK_ENGINE=redis")

	// A directory the operator chose (a shared volume) is accepted.
	w := startWorker(t, []string{"JOBLOCK_IN_CONTAINER=1", "JOBLOCK_REDIS_URL=redis://" + srv.Addr, "JOBLOCK_LOCK_DIR=" + t.TempDir(), "JOBLOCK_ROLE=worker"})
	w.stop(t)
}
