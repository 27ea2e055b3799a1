package main_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	worker "github.com/joblock/joblock/cmd/worker"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/secrettest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
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

// TestLocksOnARedisOfTheirOwn: with -lock-redis-url the locks live on
// their own Redis, asynq's queues on the other.
func TestLocksOnARedisOfTheirOwn(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the worker")
	locks := redistest.Start(t)
	cfg := engine.Config{Engine: engine.Redis, RedisURL: "redis://" + srv.Addr, LockRedisURL: "redis://:@" + locks.Addr + "/3", Prefix: srv.Prefix}
	w := startWorker(t, append(cfg.Env(), "JOBLOCK_ROLE=worker"))
	requireCleanStart(t, w)
	assert.Contains(t, w.logs.String(), "redis of the locks")
	assert.Contains(t, w.logs.String(), "redis engine at redis://:xxxxx@"+locks.Addr+"/3")

	client := asynqClient(t, cfg)
	_, err := client.Enqueue(asynq.NewTask("export:user", []byte(`{"user_id": 42}`)))
	require.NoError(t, err)
	held := func(c *redis.Client) []string {
		var keys []string
		require.NoError(t, redislock.New(c, redislock.WithPrefix(srv.Prefix)).Scan(context.Background(), func(r lock.Record) bool {
			keys = append(keys, r.Key)
			return true
		}))
		return keys
	}
	lockDB := redis.NewClient(&redis.Options{Addr: locks.Addr, DB: 3})
	defer lockDB.Close()
	// The export runs for a second.
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(held(lockDB), func(k string) bool { return strings.HasSuffix(k, "export-user-42") })
	}, 10*time.Second, 20*time.Millisecond, "the running export's lock is not in the locks' Redis:\n%s", w.logs)
	assert.Empty(t, held(srv.Client(t)), "a lock in asynq's Redis")
	w.stop(t)
	assert.Empty(t, held(lockDB), "locks left behind after shutdown")
}

func TestDemoNeedsNothing(t *testing.T) {
	out, err := workerCmd(nil, "-demo", "-run-for", "5s", "-http", "127.0.0.1:0", "-lock-dir", t.TempDir()).CombinedOutput()
	require.NoError(t, err, string(out))
	for _, want := range []string{"joblock demo", "cache regeneration", "CDN invalidation", "job dedup", "API rate-limit slot", "export prevention",
		"per-tenant import cap", "distributed cron"} {
		assert.Contains(t, string(out), want)
	}
	last := string(out)[strings.LastIndex(string(out), "joblock demo"):]
	rows := regexp.MustCompile(`(?m)^\s*(.+?)\s+(\w+:\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(-?\d+)\s*$`).FindAllStringSubmatch(last, -1)
	require.Len(t, rows, 6, "one row per use case:\n%s", last)
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
	// Two replicas of an @every 2s job for 5s: each tick ran once, and the
	// other replica's fire was a skip.
	cron := regexp.MustCompile(`(?m)^\s*distributed cron.*@every 2s\s+-\s+(\d+)\s+(\d+)\s+-\s*$`).FindStringSubmatch(last)
	require.NotNil(t, cron, last)
	assert.NotEqual(t, "0", cron[1], "no tick ran:\n%s", last)
	assert.NotEqual(t, "0", cron[2], "no replica's fire was counted as a skip:\n%s", last)
}

func TestNoRedisExitsAtOnce(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	start := time.Now()
	_, stderr, code := runWorker(t, nil, "-redis-url", "redis://"+addr, "-http", "")
	assert.Equal(t, 1, code)
	// The worker gives Redis one ping of at most 3s, then exits; one that
	// kept retrying would not be done in 10s, which leaves a loaded
	// machine 7s to start and stop a process.
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Contains(t, stderr, addr, "names the address it tried")
	assert.Contains(t, stderr, "redis-server", "says how to start Redis")
}

// TestStopWhileConnecting: SIGTERM while the worker waits for a Redis
// that does not answer ends it cleanly, not as "Redis unreachable".
func TestStopWhileConnecting(t *testing.T) {
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer mute.Close()
	c := workerCmd([]string{"JOBLOCK_REDIS_URL=redis://" + mute.Addr().String() + "/0"}, "-http", "")
	var stderr strings.Builder
	c.Stderr = &stderr
	require.NoError(t, c.Start())
	// A connection means the worker is waiting for Redis to answer.
	conn, err := mute.Accept()
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, c.Process.Signal(syscall.SIGTERM))
	require.NoError(t, c.Wait(), "exit status 0:\n%s", stderr.String())
	assert.Contains(t, stderr.String(), "stopped before Redis answered")
	assert.NotContains(t, stderr.String(), "unreachable")
}

func TestBadConfig(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	certs := redistest.NewTLSFiles(t)
	const pw = "Tr0ub4dor&3"
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"concurrency", nil, []string{"-concurrency", "0"}, "-concurrency [JOBLOCK_CONCURRENCY] must be at least 1"},
		{"concurrency in words", []string{"JOBLOCK_CONCURRENCY=ten"}, nil, `-concurrency [JOBLOCK_CONCURRENCY]: "ten" is not a whole number`},
		{"lease", nil, []string{"-lease", "0s"}, "-lease [JOBLOCK_LEASE]"},
		{"lease without unit", []string{"JOBLOCK_LEASE=15"}, nil, `-lease [JOBLOCK_LEASE]: "15" is not a duration: it needs a unit, as in 15s`},
		{"lease not a duration", []string{"JOBLOCK_LEASE=long"}, nil, `-lease [JOBLOCK_LEASE]: "long" is not a duration: such as 15s or 2m`},
		{"in container, yes", []string{"JOBLOCK_IN_CONTAINER=yes"}, nil, `JOBLOCK_IN_CONTAINER: "yes" is neither 1 nor 0 (true or false)`},
		{"http not an address", []string{"JOBLOCK_HTTP=notanaddr"}, nil, `-http [JOBLOCK_HTTP] "notanaddr": want HOST:PORT`},
		{"http port out of range", []string{"JOBLOCK_HTTP=127.0.0.1:99999"}, nil, `-http [JOBLOCK_HTTP] "127.0.0.1:99999": the port must be a number from 0 to 65535`},
		{"http port taken", nil, []string{"-http", taken.Addr().String()}, "-http [JOBLOCK_HTTP] " + taken.Addr().String() + ": listen tcp " + taken.Addr().String() + ": bind: address already in use"},
		{"queues", nil, []string{"-queues", "x"}, `-queues [JOBLOCK_QUEUES]: queue "x"`},
		{"prefix with a hash tag", []string{"JOBLOCK_ENGINE=redis", "JOBLOCK_PREFIX=app{1}:"}, nil, `-prefix [JOBLOCK_PREFIX]: redislock: prefix "app{1}:" holds '{' or '}'`},
		{"lease under the minimum", nil, []string{"-lease", "10ms"}, "-lease [JOBLOCK_LEASE]: lock: invalid ttl: a lease of 10ms is under the minimum of 100ms"},
		{"shared group in words", []string{"JOBLOCK_SHARED_GROUP=yes"}, nil, `-shared-group: JOBLOCK_SHARED_GROUP="yes": want 1, 0, true or false`},
		{"extra argument", nil, []string{"extra"}, `unexpected arguments ["extra"]`},
		{"log level", nil, []string{"-log-level", "loud"}, `-log-level [JOBLOCK_LOG_LEVEL] "loud"`},
		{"role", nil, []string{"-role", "boss"}, `-role [JOBLOCK_ROLE] must be worker, scheduler or all, not "boss"`},
		// The engine name is checked before anything connects: the Redis
		// URL here would fail.
		{"engine", nil, []string{"-engine", "etcd"}, `-engine [JOBLOCK_ENGINE]: unknown lock engine "etcd"`},
		{"redis URL", nil, []string{"-redis-url", "http://h"}, `-redis-url [JOBLOCK_REDIS_URL] http://h: unknown scheme "http"`},
		{"redis URL, unbalanced bracket", []string{"JOBLOCK_REDIS_URL=redis://:" + pw + "@[::1/0"}, nil, "-redis-url [JOBLOCK_REDIS_URL] redis://:xxxxx@[::1/0: unbalanced brackets"},
		{"redis URL, no host", []string{"JOBLOCK_REDIS_URL=redis://"}, nil, "-redis-url [JOBLOCK_REDIS_URL] redis://: no host"},
		{"redis URL, no host after @", []string{"JOBLOCK_REDIS_URL=redis://@"}, nil, "-redis-url [JOBLOCK_REDIS_URL] redis://@: no host"},
		{"redis URL, no host after :@", []string{"JOBLOCK_REDIS_URL=redis://:@"}, nil, "-redis-url [JOBLOCK_REDIS_URL] redis://:xxxxx@: no host"},
		{"redis URL, bad escape in the options", []string{"JOBLOCK_REDIS_URL=redis://127.0.0.1:1/0?foo=%zz"}, nil, "-redis-url [JOBLOCK_REDIS_URL] redis://(unparseable URL): the options after '?' do not parse"},
		{"redis URL, '#' in the password", []string{"JOBLOCK_REDIS_URL=redis://:" + pw + "#@127.0.0.1:6390/0"}, nil, "-redis-url [JOBLOCK_REDIS_URL] redis://:xxxxx@127.0.0.1:6390/0: a '#' in it"},
		{"CA without TLS", []string{"JOBLOCK_REDIS_CA=/nope"}, nil, "-redis-ca [JOBLOCK_REDIS_CA] is set but -redis-url is not a TLS URL"},
		{"certificate and key that do not match", []string{"JOBLOCK_REDIS_URL=rediss://127.0.0.1:1/0", "JOBLOCK_REDIS_CERT=" + certs.Cert, "JOBLOCK_REDIS_KEY=" + certs.ServerKey}, nil,
			"-redis-cert [JOBLOCK_REDIS_CERT] " + certs.Cert + " with -redis-key [JOBLOCK_REDIS_KEY] " + certs.ServerKey + ": tls: private key does not match public key"},
		{"password file missing", []string{"JOBLOCK_REDIS_PASSWORD_FILE=/nope/pw"}, nil, "-redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE]: open /nope/pw: no such file or directory"},
		{"schedule name", nil, []string{"-schedule", "nightly=@daily"}, `invalid value "nightly=@daily" for flag -schedule: schedule "nightly=@daily": want NAME=SPEC with NAME one of cache-warmup, daily-cleanup, lock-cleanup`},
		{"schedule spec", nil, []string{"-schedule", "daily-cleanup=0 25 * * *"}, `invalid value "daily-cleanup=0 25 * * *" for flag -schedule: schedule of daily-cleanup: "0 25 * * *": end of range (25) above maximum (23)`},
		{"schedule zone", []string{"JOBLOCK_SCHEDULES=daily-cleanup=CRON_TZ=Mars/Olympus 0 3 * * *"}, nil, `JOBLOCK_SCHEDULES: schedule of daily-cleanup: "CRON_TZ=Mars/Olympus 0 3 * * *": provided bad location Mars/Olympus`},
		{"schedule zone without a schedule", []string{"JOBLOCK_SCHEDULES=daily-cleanup=CRON_TZ=Europe/Berlin"}, nil, `JOBLOCK_SCHEDULES: schedule of daily-cleanup: "CRON_TZ=Europe/Berlin": no schedule after CRON_TZ=Europe/Berlin`},
		{"schedule that never fires", nil, []string{"-schedule", "daily-cleanup=0 0 30 2 *"}, `invalid value "daily-cleanup=0 0 30 2 *" for flag -schedule: schedule of daily-cleanup: "0 0 30 2 *": it never fires`},
		{"schedule every 0s", []string{"JOBLOCK_SCHEDULES=daily-cleanup=@every 0s"}, nil, `JOBLOCK_SCHEDULES: schedule of daily-cleanup: "@every 0s": the interval must be whole seconds, at least 1s`},
		{"schedule every -1m", nil, []string{"-schedule", "lock-cleanup=@every -1m"}, `invalid value "lock-cleanup=@every -1m" for flag -schedule: schedule of lock-cleanup: "@every -1m": the interval must be whole seconds, at least 1s`},
		{"schedule every 1ms", nil, []string{"-schedule", "cache-warmup=@every 1ms"}, `invalid value "cache-warmup=@every 1ms" for flag -schedule: schedule of cache-warmup: "@every 1ms": the interval must be whole seconds, at least 1s`},
		{"schedule zone default", []string{"JOBLOCK_SCHEDULE_TZ=Mars/Olympus"}, nil, `-schedule-tz [JOBLOCK_SCHEDULE_TZ] "Mars/Olympus": not a time zone`},
		{"short admin token", []string{"JOBLOCK_ADMIN_TOKEN=hunter2"}, nil, "JOBLOCK_ADMIN_TOKEN is 7 characters: use at least 16"},
		{"admin token with a line break", []string{"JOBLOCK_ADMIN_TOKEN=0123456789abcdef0123\n"}, nil, "JOBLOCK_ADMIN_TOKEN holds white space or a control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Later entries win: the case's own over these.
			env := append([]string{"JOBLOCK_REDIS_URL=redis://127.0.0.1:1/0", "JOBLOCK_HTTP=127.0.0.1:0"}, tt.env...)
			_, stderr, code := runWorker(t, env, tt.args...)
			assert.Equal(t, 2, code, stderr)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			assert.True(t, strings.HasPrefix(lines[len(lines)-1], "worker: "+tt.want), "want the last line to start with %q:\n%s", tt.want, stderr)
			assert.NotContains(t, stderr, "redis unreachable", "a bad setting is reported before connecting")
			secrettest.AssertNone(t, "worker", stderr, pw)
		})
	}
}

func TestFlagWinsOverBadEnvironment(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	_, stderr, code := runWorker(t, []string{"JOBLOCK_CONCURRENCY=ten", "JOBLOCK_LEASE=15", "JOBLOCK_REDIS_URL=redis://" + addr},
		"-concurrency", "2", "-lease", "15s", "-http", "")
	assert.Equal(t, 1, code, "the flags replace the values that do not parse: the worker goes on to Redis")
	assert.Contains(t, stderr, "redis unreachable: no Redis answered at redis://"+addr)
}

func TestVersion(t *testing.T) {
	for _, env := range [][]string{nil, unrelatedBadSettings} {
		out, stderr, code := runWorker(t, env, "-version")
		assert.Equal(t, 0, code, stderr)
		assert.Regexp(t, `^worker \S+ .*go1\.\d+`, out)
	}
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
