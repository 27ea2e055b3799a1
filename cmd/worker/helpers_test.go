package main_test

import (
	"bufio"
	"context"
	"encoding/json"
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
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// workerCmd returns a command that runs the worker with args, in the
// environment env adds to this process's.
func workerCmd(env []string, args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(testenv.ChildEnviron(envAsWorker+"=1"), env...)
	return c
}

// runWorker runs the worker to the end and returns its stdout, stderr and
// exit code.
func runWorker(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	c := workerCmd(env, args...)
	var out, errOut strings.Builder
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errOut.String(), code
}

type workerProc struct {
	cmd    *exec.Cmd
	http   string
	logs   *syncBuffer
	exited chan struct{} // closed when the log ends: the process is gone
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

// startWorker starts a worker with env and args, serving HTTP on a free
// port, and waits until it serves.
func startWorker(t *testing.T, env []string, args ...string) *workerProc {
	t.Helper()
	port := redistest.FreePort(t)
	w := &workerProc{http: "127.0.0.1:" + strconv.Itoa(port), logs: &syncBuffer{}, exited: make(chan struct{})}
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
		defer close(w.exited)
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
	case <-w.exited:
		t.Fatalf("worker exited before serving:\n%s", w.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("worker did not start:\n%s", w.logs.String())
	}
	return w
}

// stop sends SIGTERM and requires a clean exit.
func (w *workerProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	<-w.exited
	require.NoError(t, w.cmd.Wait(), "SIGTERM must end the worker with exit code 0\n%s", w.logs.String())
}

// request GETs path with headers ("Name: value") and returns the status
// code and body.
func (w *workerProc) request(t *testing.T, path string, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+w.http+path, nil)
	require.NoError(t, err)
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// get GETs path and requires 200.
func (w *workerProc) get(t *testing.T, path string) string {
	t.Helper()
	code, body := w.request(t, path)
	require.Equal(t, http.StatusOK, code, body)
	return body
}

// health is the JSON body of /healthz and /readyz.
type health struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
	Failed []string          `json:"failed"`
}

// health GETs /healthz or /readyz and decodes it.
func (w *workerProc) health(t *testing.T, path string) (int, health) {
	t.Helper()
	code, body := w.request(t, path)
	var h health
	require.NoError(t, json.Unmarshal([]byte(body), &h), body)
	return code, h
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

// sum adds up a metric over workers.
func sum(t *testing.T, ws []*workerProc, name, match string) float64 {
	var n float64
	for _, w := range ws {
		n += w.metric(t, name, match)
	}
	return n
}

// asynqClient returns an asynq client on the Redis cfg configures, the
// way the worker connects to it, closed when t ends.
func asynqClient(t *testing.T, cfg engine.Config) *asynq.Client {
	t.Helper()
	rdb, err := cfg.RedisClient()
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() }) // the client shares it
	return asynq.NewClientFromRedisClient(rdb)
}

// requireDeduplicated enqueues n identical cache:regenerate tasks for key
// and requires that the workers account for each exactly once, as run or
// as a duplicate skipped, with at least one of each, within a minute.
func requireDeduplicated(t *testing.T, client *asynq.Client, ws []*workerProc, key string, n int) {
	t.Helper()
	ran0 := sum(t, ws, "joblock_tasks_executed_total", `task="cache:regenerate"`)
	dup0 := sum(t, ws, "joblock_duplicates_total", `task="cache:regenerate"`)
	for range n {
		_, err := client.EnqueueContext(context.Background(), asynq.NewTask("cache:regenerate", []byte(`{"key": "`+key+`"}`)))
		require.NoError(t, err)
	}
	var ran, dup float64
	require.Eventually(t, func() bool {
		ran = sum(t, ws, "joblock_tasks_executed_total", `task="cache:regenerate"`) - ran0
		dup = sum(t, ws, "joblock_duplicates_total", `task="cache:regenerate"`) - dup0
		return ran+dup >= float64(n)
	}, time.Minute, 50*time.Millisecond, "%d cache tasks for %s: %v ran, %v duplicates", n, key, ran, dup)
	assert.Equal(t, float64(n), ran+dup, "every task accounted for once")
	assert.GreaterOrEqual(t, ran, 1.0, "%s never regenerated", key)
	assert.Positive(t, dup, "%d identical tasks at once and no duplicate skipped", n)
	t.Logf("%s: %v ran, %v skipped as duplicates", key, ran, dup)
}

// startLog returns the log a worker wrote up to serving HTTP.
func (w *workerProc) startLog() string {
	l := w.logs.String()
	if i := strings.Index(l, "http listening"); i >= 0 {
		if j := strings.IndexByte(l[i:], '\n'); j >= 0 {
			return l[:i+j+1]
		}
	}
	return l
}

// requireCleanStart requires a start with no warning or error and nothing
// but structured log lines (no maintnotifications warning, no go-redis
// line of its own).
func requireCleanStart(t *testing.T, w *workerProc) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(w.startLog()), "\n") {
		assert.True(t, strings.HasPrefix(line, "time="), "unstructured log line: %s", line)
		assert.NotRegexp(t, `level=(WARN|ERROR)`, line)
		assert.NotContains(t, line, "maintnotifications")
	}
}
