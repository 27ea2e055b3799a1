package main_test

import (
	"bufio"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cli "github.com/joblock/joblock/cmd/lockctl"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/secrettest"
	"github.com/joblock/joblock/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// envAsLockctl makes the test binary run as lockctl, so the tests drive a
// real lockctl process without building one inside their time budget.
const envAsLockctl = "JOBLOCK_TEST_AS_LOCKCTL"

func TestMain(m *testing.M) {
	if os.Getenv(envAsLockctl) == "1" {
		cli.Main()
		return
	}
	goleak.VerifyTestMain(m)
}

// engineEnvs returns the environment selecting each engine for a test, and
// the Redis behind the redis one, which was started for the test: no
// holder predates it, so no restart grace.
func engineEnvs(t *testing.T) (map[string][]string, *redistest.Server) {
	srv := redistest.New(t)
	return map[string][]string{
		"file":  {"JOBLOCK_ENGINE=file", "JOBLOCK_LOCK_DIR=" + t.TempDir()},
		"redis": {"JOBLOCK_ENGINE=redis", "JOBLOCK_REDIS_URL=redis://" + srv.Addr, "JOBLOCK_PREFIX=" + srv.Prefix, noGrace},
	}, srv
}

// noGrace turns the restart grace off, for a Redis started for the test.
const noGrace = "JOBLOCK_RESTART_GRACE=0"

func first[A, B any](a A, _ B) A { return a }

func lockctl(env []string, args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(testenv.ChildEnviron(envAsLockctl+"=1"), env...)
	return c
}

// run runs lockctl to the end and returns stdout, stderr and exit code.
func run(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	c := lockctl(env, args...)
	var out, errOut strings.Builder
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errOut.String(), code
}

func TestAcquireReleaseAcrossProcesses(t *testing.T) {
	for engine, env := range first(engineEnvs(t)) {
		t.Run(engine, func(t *testing.T) {
			id, _, code := run(t, env, "acquire", "-ttl", "10s", "nightly-export")
			require.Equal(t, 0, code)
			id = strings.TrimSpace(id)
			require.True(t, strings.HasPrefix(id, "lock_"), id)

			_, stderr, code := run(t, env, "acquire", "nightly-export")
			assert.Equal(t, 3, code, "held key")
			assert.Contains(t, stderr, id, "says who holds it")

			out, _, code := run(t, env, "status", "nightly-export")
			assert.Equal(t, 0, code)
			assert.Contains(t, out, id)

			_, _, code = run(t, env, "release", "nightly-export", "lock_not_mine")
			assert.Equal(t, 4, code, "a foreign lock id releases nothing")
			_, _, code = run(t, env, "release", "nightly-export", id)
			assert.Equal(t, 0, code, "a later process releases by lock id")
			_, _, code = run(t, env, "release", "nightly-export", id)
			assert.Equal(t, 4, code, "second release")
			out, _, code = run(t, env, "status", "nightly-export")
			assert.Equal(t, 4, code)
			assert.Contains(t, out, "free")
		})
	}
}

func TestTwoRunsOnOneKey(t *testing.T) {
	for engine, env := range first(engineEnvs(t)) {
		t.Run(engine, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "started")
			first := lockctl(env, "run", "-lease", "2s", "report", "--", "sh", "-c", "touch "+marker+"; sleep 2; exit 7")
			require.NoError(t, first.Start())
			require.Eventually(t, func() bool { _, err := os.Stat(marker); return err == nil }, 10*time.Second, 10*time.Millisecond)

			_, stderr, code := run(t, env, "run", "report", "--", "echo", "should not run")
			assert.Equal(t, 3, code, "the second run must report the key held")
			assert.Contains(t, stderr, "not running echo")

			err := first.Wait()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, 7, ee.ExitCode(), "COMMAND's exit code passes through")

			out, _, code := run(t, env, "run", "report", "--", "sh", "-c", `echo "$JOBLOCK_KEY $JOBLOCK_FENCE"`)
			assert.Equal(t, 0, code, "free again once the first run ended")
			assert.Contains(t, out, "report ")

			_, _, code = run(t, env, "run", "-on-held", "wait", "-wait", "5s", "report", "--", "true")
			assert.Equal(t, 0, code)
		})
	}
}

// TestRunLimit: two runs of a key with -limit 2 go at once, a third is
// refused (exit 3) until one ends; status and list show each slot, and
// acquire and release work on slots too.
func TestRunLimit(t *testing.T) {
	for engine, env := range first(engineEnvs(t)) {
		t.Run(engine, func(t *testing.T) {
			dir := t.TempDir()
			stop := filepath.Join(dir, "stop")
			var runs []*exec.Cmd
			for i := range 2 {
				marker := filepath.Join(dir, "started"+strconv.Itoa(i))
				c := lockctl(env, "run", "-limit", "2", "-lease", "2s", "import", "--", "sh", "-c",
					"touch "+marker+"; while [ ! -e "+stop+" ]; do sleep 0.05; done")
				require.NoError(t, c.Start())
				t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
				require.Eventually(t, func() bool { _, err := os.Stat(marker); return err == nil }, 10*time.Second, 10*time.Millisecond)
				runs = append(runs, c)
			}
			_, stderr, code := run(t, env, "run", "-limit", "2", "import", "--", "echo", "third")
			assert.Equal(t, 3, code, "a third run while two go: %s", stderr)
			_, _, code = run(t, env, "acquire", "-limit", "2", "import")
			assert.Equal(t, 3, code)

			out, _, code := run(t, env, "status", "import")
			assert.Equal(t, 0, code)
			assert.Contains(t, out, "import: 2 of 2 slots held\n")
			assert.Equal(t, 2, strings.Count(out, "  slot held by slot_"), out)
			out, _, code = run(t, env, "status", "-json", "import")
			assert.Equal(t, 0, code)
			var st struct {
				Locked bool `json:"locked"`
				Slots  []struct {
					State string `json:"state"`
					Limit int    `json:"limit"`
				} `json:"slots"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &st))
			assert.True(t, st.Locked)
			require.Len(t, st.Slots, 2)
			for _, sl := range st.Slots {
				assert.Equal(t, "held", sl.State)
				assert.Equal(t, 2, sl.Limit)
			}
			out, _, code = run(t, env, "list")
			assert.Equal(t, 0, code)
			rows := 0
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) > 0 && f[0] == "import" {
					rows++
					assert.Equal(t, "2", f[len(f)-1], "the LIMIT column: %q", line)
				}
			}
			assert.Equal(t, 2, rows, out)

			require.NoError(t, os.WriteFile(stop, nil, 0o600))
			for _, c := range runs {
				require.NoError(t, c.Wait())
			}
			id, _, code := run(t, env, "acquire", "-limit", "2", "-ttl", "10s", "import")
			require.Equal(t, 0, code, "free again once the runs ended")
			id = strings.TrimSpace(id)
			assert.True(t, strings.HasPrefix(id, "slot_"), id)
			_, _, code = run(t, env, "run", "-limit", "2", "import", "--", "true")
			assert.Equal(t, 0, code, "one slot of two taken")
			_, _, code = run(t, env, "release", "import", id)
			assert.Equal(t, 0, code)
			out, _, code = run(t, env, "status", "import")
			assert.Equal(t, 4, code, "free: %s", out)
		})
	}
}

func TestRunOncePerWindow(t *testing.T) {
	env := first(engineEnvs(t))["file"]
	_, _, code := run(t, env, "run", "-window", "3s", "digest", "--", "true")
	require.Equal(t, 0, code)
	_, _, code = run(t, env, "run", "-window", "3s", "digest", "--", "true")
	assert.Equal(t, 3, code, "second run inside the window")
	_, _, code = run(t, env, "run", "-window", "3s", "-wait", "6s", "digest", "--", "true")
	assert.Equal(t, 0, code, "next window")
	_, _, code = run(t, env, "run", "-window", "3s", "other", "--", "false")
	assert.Equal(t, 1, code, "COMMAND's failure passes through")
	_, _, code = run(t, env, "run", "-window", "3s", "other", "--", "true")
	assert.Equal(t, 0, code, "a failed run does not use up its window")
}

func TestKilledRunFreesAfterTTL(t *testing.T) {
	envs, srv := engineEnvs(t)
	for engine, env := range envs {
		t.Run(engine, func(t *testing.T) {
			if engine == "redis" {
				srv.RequireReal(t, "TTL expiry in real time")
			}
			pidFile := filepath.Join(t.TempDir(), "pid")
			c := lockctl(env, "run", "-lease", "3s", "job", "--", "sh", "-c", "echo $$ > "+pidFile+".tmp; mv "+pidFile+".tmp "+pidFile+"; exec sleep 30")
			require.NoError(t, c.Start())
			var pid int
			require.Eventually(t, func() bool {
				raw, err := os.ReadFile(pidFile)
				pid, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
				return err == nil
			}, 10*time.Second, 10*time.Millisecond)
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			require.NoError(t, c.Process.Signal(syscall.SIGKILL))
			_ = c.Wait()

			_, _, code := run(t, env, "acquire", "job")
			assert.Equal(t, 3, code, "the lock outlives the killed lockctl until its lease ends")
			if runtime.GOOS == "linux" {
				// The kernel kills COMMAND with lockctl.
				require.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 10*time.Millisecond,
					"COMMAND outlived the killed lockctl")
			}
			// Free within one lease of 3s; 15s is generous against a loaded machine.
			_, _, code = run(t, env, "acquire", "-wait", "15s", "job")
			assert.Equal(t, 0, code, "the lock of a killed run is stuck")
		})
	}
}

// alive reports whether process pid runs: it exists and is not a zombie
// (an orphan's is reaped by whoever is PID 1 here, perhaps late).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return runtime.GOOS != "linux"
	}
	// pid (comm) S ...: the state follows the last ')'.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// TestRunStopsCommandsProcessGroup: when lockctl stops COMMAND
// (-max-run-time here, a lost lock alike), the processes COMMAND started
// get SIGTERM too, and one that ignores it SIGKILL after -kill-after.
func TestRunStopsCommandsProcessGroup(t *testing.T) {
	env := first(engineEnvs(t))["file"]
	pidFile := filepath.Join(t.TempDir(), "pid")
	_, _, code := run(t, env, "run", "-max-run-time", "300ms", "job", "--", "sh", "-c", "sleep 30 & echo $! > "+pidFile+"; wait")
	assert.Equal(t, 128+int(syscall.SIGTERM), code)
	raw, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	child, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	require.Eventually(t, func() bool { return !alive(child) }, 10*time.Second, 10*time.Millisecond,
		"the command's own child outlived it")

	_, stderr, code := run(t, env, "run", "-max-run-time", "300ms", "-kill-after", "300ms", "stubborn", "--", "sh", "-c", `trap "" TERM; sleep 30`)
	assert.Equal(t, 128+int(syscall.SIGKILL), code, stderr)
	assert.Contains(t, stderr, "lockctl: sh still running 300ms after SIGTERM: sending SIGKILL")
	_, _, code = run(t, env, "acquire", "stubborn")
	assert.Equal(t, 0, code, "released once the command was gone")
}

func TestServeStdio(t *testing.T) {
	for engine, env := range first(engineEnvs(t)) {
		t.Run(engine, func(t *testing.T) {
			a := newStream(t, env)
			b := newStream(t, env)
			got := a.do(t, `{"key":"abc123","action":"acquire","timeout":30}`)
			assert.Equal(t, true, got["locked"])
			assert.Equal(t, false, got["already_locked"])
			id := got["lock_id"].(string)

			got = b.do(t, `{"key":"abc123","action":"acquire"}`)
			assert.Equal(t, map[string]any{"locked": false, "lock_id": nil, "expires_at": nil, "already_locked": true, "locked_by": id}, got)

			got = b.do(t, `{"key": "abc123", "action": `)
			assert.Contains(t, got["error"], "bad request")
			got = b.do(t, `{"key":"abc123","action":"steal"}`)
			assert.Contains(t, got["error"], "unknown action")
			got = b.do(t, `{"action":"acquire"}`)
			assert.Contains(t, got["error"], "key is required")
			// A field the spec does not have is no setting dropped, and bytes
			// that are not UTF-8 make no key: "a\xffb" and "a\xfeb" would
			// both be "a\ufffdb", one lock.
			refused := func(err string) map[string]any {
				return map[string]any{"locked": false, "lock_id": nil, "expires_at": nil, "already_locked": false, "error": err}
			}
			got = b.do(t, `{"key":"abc123","action":"acquire","ttl":300}`)
			assert.Equal(t, refused(`bad request "{\"key\":\"abc123\",\"action\":\"acquire\",\"ttl\":300}": `+
				`lock: unknown field "ttl" in request: the fields are key, action, timeout, lock_id and limit`), got)
			for _, c := range []string{"\xff", "\xfe"} {
				got = b.do(t, `{"key":"a`+c+`b","action":"acquire"}`)
				assert.Equal(t, refused(fmt.Sprintf(`bad request %q: lock: request is not valid UTF-8: byte %#x at offset 9`,
					`{"key":"a`+c+`b","action":"acquire"}`, c[0])), got)
			}

			got = a.do(t, `{"key":"abc123","action":"release"}`)
			assert.Equal(t, map[string]any{"locked": false, "lock_id": id, "expires_at": nil, "already_locked": false, "released": true}, got)
			got = b.do(t, `{"key":"abc123","action":"acquire","timeout":5}`)
			assert.Equal(t, true, got["locked"], "the stream went on after bad lines")

			// The optional limit: two holders of "pool", across processes.
			got = a.do(t, `{"key":"pool","action":"acquire","limit":2}`)
			assert.Equal(t, true, got["locked"])
			got = b.do(t, `{"key":"pool","action":"acquire","limit":2}`)
			assert.Equal(t, true, got["locked"])
			c := newStream(t, env)
			got = c.do(t, `{"key":"pool","action":"acquire","limit":2}`)
			assert.Equal(t, true, got["already_locked"], "a third holder of two slots")
			got = c.do(t, `{"key":"pool","action":"acquire","limit":0}`)
			assert.Contains(t, got["error"], "invalid limit: 0")
			c.close(t)
			a.close(t)
			b.close(t)
		})
	}
}

type stream struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func newStream(t *testing.T, env []string) *stream {
	c := lockctl(env, "serve-stdio")
	in, err := c.StdinPipe()
	require.NoError(t, err)
	out, err := c.StdoutPipe()
	require.NoError(t, err)
	c.Stderr = os.Stderr
	require.NoError(t, c.Start())
	return &stream{cmd: c, in: in, out: bufio.NewReader(out)}
}

func (s *stream) do(t *testing.T, line string) map[string]any {
	t.Helper()
	_, err := io.WriteString(s.in, line+"\n")
	require.NoError(t, err)
	reply, err := s.out.ReadString('\n')
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(reply), &m), reply)
	return m
}

func (s *stream) close(t *testing.T) {
	require.NoError(t, s.in.Close())
	require.NoError(t, s.cmd.Wait(), "serve-stdio exits 0 at end of input")
}

// Help asked of a command prints the usage on stdout and succeeds.
func TestCommandHelp(t *testing.T) {
	env := first(engineEnvs(t))["file"]
	for _, args := range [][]string{{"stats", "-h"}, {"acquire", "-help"}, {"run", "-h"}, {"cleanup", "--help"}} {
		stdout, stderr, code := run(t, env, args...)
		assert.Equal(t, 0, code, "%v: %s", args, stderr)
		assert.Contains(t, stdout, "lockctl: joblock's locks", "%v", args)
		assert.Empty(t, stderr, "%v", args)
	}
}

func TestUsageErrors(t *testing.T) {
	env := first(engineEnvs(t))["file"]
	tests := []struct {
		args []string
		want string // on stderr
	}{
		{nil, ""},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"acquire"}, "acquire: want KEY, got 0 argument(s)"},
		{[]string{"release", "k"}, "release: want KEY LOCK_ID, got 1 argument(s)"},
		{[]string{"acquire", "-ttl", "x", "k"}, `acquire: invalid value "x" for flag -ttl`},
		{[]string{"run", "-on-held", "maybe", "k", "--", "true"}, `run: -on-held must be exit or wait, not "maybe"`},
		{[]string{"run"}, "run: no KEY: want lockctl run [flags] KEY -- COMMAND [ARG...], flags before KEY"},
		{[]string{"run", "k"}, `run: no -- after KEY "k"`},
		{[]string{"run", "k", "--"}, "run: no COMMAND after --"},
		{[]string{"run", "k", "true"}, `run: no -- after KEY "k"`},
		// A flag after KEY would have been run as the command.
		{[]string{"run", "k", "-engine", "redis", "--", "sh", "-c", "exit 0"}, `run: flag -engine after KEY "k": want lockctl run [flags] KEY -- COMMAND [ARG...], flags before KEY`},
		{[]string{"run", "k", "-lease", "5s", "--", "true"}, `run: flag -lease after KEY "k"`},
	}
	for _, tt := range tests {
		_, stderr, code := run(t, env, tt.args...)
		assert.Equal(t, 2, code, "%v: %s", tt.args, stderr)
		assert.Contains(t, stderr, tt.want, "%v", tt.args)
	}
	for _, tt := range []struct{ give, want string }{
		{"0s", "-ttl: lock: invalid ttl: 0s, must be positive"},
		{"-1s", "-ttl: lock: invalid ttl: -1s, must be positive"},
		{"500us", "is under the minimum of 1ms"},
		{"8761h", "8761h0m0s is over the maximum of 8760h0m0s"},
	} {
		_, stderr, code := run(t, env, "acquire", "-ttl", tt.give, "k")
		assert.Equal(t, 2, code, "-ttl %s", tt.give)
		assert.Contains(t, stderr, tt.want)
	}
	_, stderr, code := run(t, env, "run", "-wait", "-1s", "k", "--", "true")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "-wait must not be negative, got -1s")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "-window", "9000h", "k", "--", "true"}, "run: -window: lock: invalid ttl: a window of 9000h0m0s is over the maximum"},
		{[]string{"run", "-lease", "1ms", "k", "--", "true"}, "run: -lease: lock: invalid ttl: a lease of 1ms is under the minimum of 100ms"},
		{[]string{"run", "-kill-after", "0s", "k", "--", "true"}, "run: -kill-after must be positive, got 0s"},
	} {
		_, stderr, code = run(t, env, tt.args...)
		assert.Equal(t, 2, code, "%v", tt.args)
		assert.Contains(t, stderr, tt.want)
	}
	for _, args := range [][]string{{"run", "-limit", "0", "k", "--", "true"}, {"acquire", "-limit", "1001", "k"}} {
		_, stderr, code = run(t, env, args...)
		assert.Equal(t, 2, code, "%v", args)
		assert.Contains(t, stderr, args[0]+": -limit: lock: invalid limit: "+args[2]+", want 1 to 1000 holders")
	}

	out, _, code := run(t, env, "help")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "Exit codes:")

	_, stderr, code = run(t, []string{"JOBLOCK_ENGINE=redis", "JOBLOCK_REDIS_URL=redis://127.0.0.1:1"}, "acquire", "k")
	assert.Equal(t, 1, code, "Redis down is an error, not 'held'")
	assert.Contains(t, stderr, "127.0.0.1:1")
	_, stderr, code = run(t, []string{"JOBLOCK_LOCK_DIR=/proc/nope/locks"}, "acquire", "k")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "/proc/nope")
}

func TestRunMaxRunTime(t *testing.T) {
	env := first(engineEnvs(t))["file"]
	_, stderr, code := run(t, env, "run", "-max-run-time", "200ms", "slow", "--", "sleep", "30")
	assert.Equal(t, 128+int(syscall.SIGTERM), code, "COMMAND was stopped with SIGTERM")
	assert.Contains(t, stderr, "ran longer than -max-run-time 200ms")
	_, _, code = run(t, env, "acquire", "slow")
	assert.Equal(t, 0, code, "the stopped run released its key")
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "-version", "--version"} {
		out, _, code := run(t, nil, arg)
		assert.Equal(t, 0, code)
		assert.Regexp(t, `^lockctl \S+ .*go1\.\d+`, out)
	}
}

func TestListAgreesWithStats(t *testing.T) {
	env := first(engineEnvs(t))["file"]
	for _, key := range []string{"a", "b", "c"} {
		_, _, code := run(t, env, "acquire", "-ttl", "1m", key)
		require.Equal(t, 0, code)
	}
	for _, key := range []string{"a", "b"} {
		id, _, _ := run(t, env, "status", "-json", key)
		var st struct {
			Record struct {
				Token string `json:"lock_id"`
			} `json:"record"`
		}
		require.NoError(t, json.Unmarshal([]byte(id), &st))
		_, _, code := run(t, env, "release", key, st.Record.Token)
		require.Equal(t, 0, code)
	}
	out, _, code := run(t, env, "stats", "-json")
	require.Equal(t, 0, code)
	var stats struct {
		Total int `json:"total_locks"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &stats))
	listed := func(args ...string) []string {
		out, _, code := run(t, env, append([]string{"list", "-json"}, args...)...)
		require.Equal(t, 0, code)
		var recs []struct {
			Key string `json:"key"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &recs))
		var keys []string
		for _, r := range recs {
			keys = append(keys, r.Key)
		}
		return keys
	}
	assert.Equal(t, 1, stats.Total)
	assert.Equal(t, []string{"c"}, listed(), "list shows the locks stats counts")
	assert.ElementsMatch(t, []string{"a", "b", "c"}, listed("-all"), "-all adds the released records")
}

func TestUnknownEngineBeforeRedis(t *testing.T) {
	_, stderr, code := run(t, []string{"JOBLOCK_ENGINE=etcd", "JOBLOCK_REDIS_URL=redis://127.0.0.1:1/0"}, "list")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `-engine [JOBLOCK_ENGINE]: unknown lock engine "etcd"`)
	assert.NotContains(t, stderr, "unreachable")
}

func TestNoSecretInOutput(t *testing.T) {
	r := func() string { return rand.Text()[:8] }
	pw := "pw/" + r() + "@" + r() + "#" + r() + "%zz " + r() + "&3"
	srv := redistest.Start(t, redistest.WithPassword(pw))
	env := []string{"JOBLOCK_ENGINE=redis", "JOBLOCK_REDIS_URL=" + srv.URL(), "JOBLOCK_PREFIX=" + srv.Prefix, noGrace}
	// The form docker-compose.yml uses: the password apart from the URL,
	// not encoded.
	pwEnv := []string{"JOBLOCK_ENGINE=redis", "JOBLOCK_REDIS_URL=redis://" + srv.Addr + "/0", "JOBLOCK_REDIS_PASSWORD=" + pw, "JOBLOCK_PREFIX=" + srv.Prefix, noGrace}
	wrongPW := "Wr0ng/" + r() + "#" + r()
	free := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	redisEngine := []string{"JOBLOCK_ENGINE=redis", noGrace}
	tests := []struct {
		name     string
		secret   string
		env      []string
		args     []string
		wantCode int
	}{
		{"acquire", pw, env, []string{"acquire", "-ttl", "1m", "k"}, 0},
		{"status", pw, env, []string{"status", "k"}, 0},
		{"list", pw, env, []string{"list"}, 0},
		{"list -json", pw, env, []string{"list", "-json"}, 0},
		{"stats", pw, env, []string{"stats"}, 0},
		{"list, password apart", pw, pwEnv, []string{"list", "-json"}, 0},
		{"help", pw, env, []string{"help"}, 0},
		{"bad flag", pw, env, []string{"list", "-nope"}, 2},
		{"wrong password", wrongPW, []string{"JOBLOCK_ENGINE=redis", "JOBLOCK_REDIS_URL=redis://:" + url.PathEscape(wrongPW) + "@" + srv.Addr + "/0"}, []string{"list"}, 1},
		{"wrong JOBLOCK_REDIS_PASSWORD", wrongPW, append(pwEnv, "JOBLOCK_REDIS_PASSWORD="+wrongPW), []string{"list"}, 1},
		{"no Redis there", pw, redisEngine, []string{"list", "-redis-url", "redis://:" + url.PathEscape(pw) + "@" + free + "/0"}, 1},
		{"bad port", pw, redisEngine, []string{"list", "-redis-url", "redis://:" + url.PathEscape(pw) + "@" + srv.Addr + "x/0"}, 2},
		{"unescaped password", pw, redisEngine, []string{"list", "-redis-url", "redis://:" + pw + "@" + srv.Addr + "/0"}, 2},
		{"'#' in the password", "Tr0ub4dor&3#", redisEngine, []string{"list", "-redis-url", "redis://:Tr0ub4dor&3#@127.0.0.1:6390/0"}, 2},
		{"'#' in a rediss:// user:password", "Tr0ub4dor&3#", redisEngine, []string{"list", "-redis-url", "rediss://u:Tr0ub4dor&3#@127.0.0.1:6390/0"}, 2},
		{"'#' in a Sentinel password", "Tr0ub4dor&3#", redisEngine, []string{"list", "-redis-url", "redis-sentinel://:Tr0ub4dor&3#@s1,s2/0?master_name=m"}, 2},
		{"'#' in a unix:// password", "Tr0ub4dor&3#", redisEngine, []string{"list", "-redis-url", "unix://:Tr0ub4dor&3#@/run/redis.sock"}, 2},
		{"'%zz' in the password", "Tr0ub4dor%zzQu1ck", redisEngine, []string{"list", "-redis-url", "redis://:Tr0ub4dor%zzQu1ck@127.0.0.1:6390/0"}, 2},
		{"a space in the password", "Sp4ce Bar9 Qu0te", redisEngine, []string{"list", "-redis-url", "redis://:Sp4ce Bar9 Qu0te@127.0.0.1:6390/0"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := run(t, tt.env, tt.args...)
			assert.Equal(t, tt.wantCode, code, stderr)
			secrettest.AssertNone(t, "lockctl "+tt.name, out+stderr, tt.secret)
		})
	}
}

func TestServeStdioOverLongLine(t *testing.T) {
	env := first(engineEnvs(t))["file"]
	s := newStream(t, env)
	got := s.do(t, strings.Repeat("x", cli.MaxLine+1))
	assert.Equal(t, "bad request: line of 1048577 bytes is over the limit of 1048576 bytes", got["error"])
	got = s.do(t, `{"key":"abc123","action":"acquire","timeout":30}`)
	assert.Equal(t, true, got["locked"], "the stream goes on after an over-long line")
	s.close(t)
}

func TestStrayEntriesInTheLockDirectory(t *testing.T) {
	// Five expired records, and a symlink, a directory and a FIFO named
	// like lock files: cleanup removes the five and leaves the rest, list
	// and stats name and count what was skipped.
	dir := t.TempDir()
	env := []string{"JOBLOCK_ENGINE=file", "JOBLOCK_LOCK_DIR=" + dir}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		_, stderr, code := run(t, env, "acquire", "-ttl", "1ms", k)
		require.Equal(t, 0, code, stderr)
	}
	time.Sleep(20 * time.Millisecond)
	name := func(key string) string {
		sum := md5.Sum([]byte(key))
		return filepath.Join(dir, hex.EncodeToString(sum[:])+".lock")
	}
	require.NoError(t, os.Symlink("/etc/passwd", name("stray-symlink")))
	require.NoError(t, os.Mkdir(name("stray-dir"), 0o700))
	require.NoError(t, syscall.Mkfifo(name("stray-fifo"), 0o600))

	out, stderr, code := run(t, env, "stats")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "expired_locks   5\n")
	assert.Contains(t, out, "skipped_entries 3 ")

	out, stderr, code = run(t, env, "cleanup")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "removed 5 expired or released lock records\n", out)

	out, stderr, code = run(t, env, "list")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "skipped 3 entries that are not lock records")
	for key, what := range map[string]string{"stray-symlink": "a symlink", "stray-dir": "a directory", "stray-fifo": "a fifo"} {
		assert.Contains(t, out, filepath.Base(name(key))+" is "+what)
		_, err := os.Lstat(name(key))
		assert.NoError(t, err, "%s must be left alone", key)
	}

	_, stderr, code = run(t, env, "acquire", "stray-fifo")
	assert.Equal(t, 1, code, "an error, not 'held'")
	assert.Contains(t, stderr, "is a fifo, not a lock file: remove it")
}

// TestAcquireDuringARestartGrace: on a Redis that has just started, the
// restart grace refuses new locks, and lockctl says so plainly: the key is
// not obtained (exit 3), for how long, and why, with no holder to name.
func TestAcquireDuringARestartGrace(t *testing.T) {
	srv := redistest.Start(t)
	env := []string{"JOBLOCK_ENGINE=redis", "JOBLOCK_REDIS_URL=redis://" + srv.Addr, "JOBLOCK_PREFIX=" + srv.Prefix,
		"JOBLOCK_RESTART_GRACE=1m"} // longer than the test: the server is younger
	_, stderr, code := run(t, env, "acquire", "nightly-export")
	assert.Equal(t, 3, code, "refused like a held key")
	assert.Contains(t, stderr, `key "nightly-export" is refused for another`)
	assert.Contains(t, stderr, "ago; new locks wait out the 1m0s grace")

	out, _, code := run(t, env, "acquire", "-json", "nightly-export")
	assert.Equal(t, 3, code)
	var res struct {
		AlreadyLocked bool   `json:"already_locked"`
		LockedBy      string `json:"locked_by"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	assert.True(t, res.AlreadyLocked)
	assert.Contains(t, res.LockedBy, "redis restarted ")

	out, _, code = run(t, env, "status", "nightly-export")
	assert.Equal(t, 4, code, "a refusal leaves no lock")
	assert.Contains(t, out, "free")
}
