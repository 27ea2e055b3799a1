package main_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	worker "github.com/joblock/joblock/cmd/worker"
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

// workerCmd returns a command that runs the worker with args, in the
// environment env adds to this process's.
func workerCmd(env []string, args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(append(os.Environ(), envAsWorker+"=1"), env...)
	return c
}

type workerProc struct {
	cmd  *exec.Cmd
	http string
	logs *syncBuffer
}

// syncBuffer collects a process's log while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) WriteString(v string) {
	s.mu.Lock()
	s.b.WriteString(v)
	s.mu.Unlock()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startWorker(t *testing.T, env []string, args ...string) *workerProc {
	port := redistest.FreePort(t)
	w := &workerProc{http: "127.0.0.1:" + strconv.Itoa(port), logs: &syncBuffer{}}
	w.cmd = workerCmd(env, append([]string{"-http", w.http, "-log-level", "debug"}, args...)...)
	stderr, err := w.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, w.cmd.Start())
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			_ = w.cmd.Process.Kill()
			_ = w.cmd.Wait()
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			w.logs.WriteString(sc.Text() + "\n")
			if !signalled && strings.Contains(sc.Text(), "http listening") {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("worker did not start")
	}
	return w
}

func (w *workerProc) get(t *testing.T, path string) string {
	resp, err := http.Get("http://" + w.http + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

// metric sums a Prometheus counter's samples whose labels contain match.
func (w *workerProc) metric(t *testing.T, name, match string) float64 {
	re := regexp.MustCompile(`(?m)^` + name + `\{([^}]*)\} (\S+)$`)
	var sum float64
	for _, m := range re.FindAllStringSubmatch(w.get(t, "/metrics"), -1) {
		if strings.Contains(m[1], match) {
			v, err := strconv.ParseFloat(m[2], 64)
			require.NoError(t, err)
			sum += v
		}
	}
	return sum
}

func TestTwoWorkersEndToEnd(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the worker")
	env := []string{"JOBLOCK_REDIS_URL=redis://" + srv.Addr, "JOBLOCK_ENGINE=redis", "JOBLOCK_PREFIX=" + srv.Prefix, "JOBLOCK_ROLE=worker"}
	a := startWorker(t, env)
	b := startWorker(t, env)
	assert.Contains(t, a.logs.String(), "coordinates processes on every host")
	assert.Equal(t, "ok\n", a.get(t, "/healthz"))

	client := asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr})
	defer client.Close()
	enqueue := func(typ, payload string, n int) {
		for range n {
			_, err := client.Enqueue(asynq.NewTask(typ, []byte(payload)))
			require.NoError(t, err)
		}
	}
	enqueue("export:user", `{"user_id": 42}`, 1)
	// The export runs for a second: /locks shows its lock meanwhile.
	require.Eventually(t, func() bool {
		return strings.Contains(a.get(t, "/locks"), "export-user-42") || strings.Contains(b.get(t, "/locks"), "export-user-42")
	}, 10*time.Second, 20*time.Millisecond, "/locks never showed the running export's lock")
	enqueue("cache:regenerate", `{"key": "product-123"}`, 20)

	both := func(name, match string) float64 { return a.metric(t, name, match) + b.metric(t, name, match) }
	require.Eventually(t, func() bool {
		return both("joblock_tasks_executed_total", `task="cache:regenerate"`)+
			both("joblock_duplicates_total", `task="cache:regenerate"`) == 20
	}, 30*time.Second, 100*time.Millisecond, "the 20 cache tasks were neither run nor deduplicated: %v ran, %v duplicates\n%s",
		both("joblock_tasks_executed_total", `task="cache:regenerate"`), both("joblock_duplicates_total", `task="cache:regenerate"`), a.logs.String()+"\n----\n"+b.logs.String())
	runs := both("joblock_tasks_executed_total", `task="cache:regenerate"`)
	dups := both("joblock_duplicates_total", `policy="skip",task="cache:regenerate"`)
	t.Logf("cache:regenerate: %v ran, %v skipped as duplicates", runs, dups)
	assert.Positive(t, dups, "20 identical tasks at once and no duplicate skipped")
	assert.GreaterOrEqual(t, runs, 1.0)
	assert.Contains(t, a.get(t, "/metrics"), "joblock_locks_active")

	for _, w := range []*workerProc{a, b} {
		require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	}
	for _, w := range []*workerProc{a, b} {
		require.NoError(t, w.cmd.Wait(), "SIGTERM must end the worker with exit code 0")
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
	// The last summary shows duplicates deduplicated for the cache use case.
	last := string(out)[strings.LastIndex(string(out), "joblock demo"):]
	m := regexp.MustCompile(`cache regeneration\s+cache:regenerate\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(last)
	require.NotNil(t, m, last)
	dups, _ := strconv.Atoi(m[3])
	assert.Positive(t, dups, last)
}

func TestNoRedisExitsAtOnce(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	start := time.Now()
	out, err := workerCmd(nil, "-redis-url", "redis://"+addr, "-http", "").CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, string(out))
	assert.NotZero(t, ee.ExitCode())
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Contains(t, string(out), addr, "names the address it tried")
	assert.Contains(t, string(out), "redis-server", "says how to start Redis")
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-concurrency", "0"}, {"-lease", "0s"}, {"-queues", "x"}, {"extra"}, {"-log-level", "loud"}, {"-role", "boss"}} {
		out, err := workerCmd(nil, append(args, "-redis-url", "redis://127.0.0.1:1")...).CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v: %s", args, out)
	}

}
