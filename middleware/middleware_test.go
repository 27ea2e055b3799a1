package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newFileLocker(t *testing.T) *filelock.Locker {
	t.Helper()
	l, err := filelock.New(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// events records what the observer saw.
type events struct {
	mu   sync.Mutex
	list []middleware.Event
}

func (e *events) observe(ev middleware.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

func (e *events) kinds() []middleware.EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []middleware.EventKind
	for _, ev := range e.list {
		out = append(out, ev.Kind)
	}
	return out
}

// harness wraps a handler in the middleware with one rule for "job".
type harness struct {
	locker  lock.Locker
	handler asynq.Handler
	events  *events
	calls   int
	mu      sync.Mutex
}

func newHarness(t *testing.T, l lock.Locker, r middleware.Rule, fn func(context.Context, *asynq.Task) error) *harness {
	t.Helper()
	h := &harness{locker: l, events: &events{}}
	mw, err := middleware.New(l, middleware.WithRule("job", r), middleware.WithObserver(h.events.observe), middleware.WithPrefix("t:"))
	require.NoError(t, err)
	h.handler = mw(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		h.mu.Lock()
		h.calls++
		h.mu.Unlock()
		if fn != nil {
			return fn(ctx, task)
		}
		return nil
	}))
	return h
}

func (h *harness) run(payload string) error {
	return h.handler.ProcessTask(context.Background(), asynq.NewTask("job", []byte(payload)))
}

// hold takes the key a "job" task with payload {"id":1} maps to.
func hold(t *testing.T, l lock.Locker, ttl time.Duration) lock.Lease {
	t.Helper()
	lease, err := l.Obtain(context.Background(), "t:job-1", ttl)
	require.NoError(t, err)
	return lease
}

func TestPolicies(t *testing.T) {
	rule := func(p middleware.Policy) middleware.Rule {
		return middleware.Rule{Template: "job-{{.id}}", Lease: 2 * time.Second, Policy: p, MaxWait: 200 * time.Millisecond, WaitInterval: 10 * time.Millisecond}
	}
	t.Run("runs when free and releases", func(t *testing.T) {
		l := newFileLocker(t)
		h := newHarness(t, l, rule(middleware.Retry), func(ctx context.Context, _ *asynq.Task) error {
			lease, ok := lock.LeaseFromContext(ctx)
			require.True(t, ok, "the handler reads its lease from ctx")
			assert.Equal(t, "t:job-1", lease.Key)
			assert.NotZero(t, lease.Fence)
			return nil
		})
		require.NoError(t, h.run(`{"id":1}`))
		assert.Equal(t, 1, h.calls)
		assert.Equal(t, []middleware.EventKind{middleware.Obtained, middleware.Released}, h.events.kinds())
		_, ok, err := l.Inspect(context.Background(), "t:job-1")
		require.NoError(t, err)
		assert.False(t, ok)
	})
	t.Run("skip", func(t *testing.T) {
		l := newFileLocker(t)
		h := newHarness(t, l, rule(middleware.Skip), nil)
		hold(t, l, time.Minute)
		require.NoError(t, h.run(`{"id":1}`), "a skipped duplicate completes")
		assert.Zero(t, h.calls)
		assert.Equal(t, []middleware.EventKind{middleware.Duplicate}, h.events.kinds())
		assert.Equal(t, middleware.Skip, h.events.list[0].Policy)
	})
	t.Run("retry is not a failure and comes back when the holder ends", func(t *testing.T) {
		l := newFileLocker(t)
		h := newHarness(t, l, rule(middleware.Retry), nil)
		holder := hold(t, l, 8*time.Second)
		err := h.run(`{"id":1}`)
		require.ErrorIs(t, err, middleware.ErrDuplicate)
		assert.NotContains(t, err.Error(), holder.Token, "asynq keeps the error: it must not hold the lock id")
		assert.NotErrorIs(t, err, asynq.SkipRetry)
		assert.Zero(t, h.calls)
		assert.False(t, middleware.IsFailure(nil)(err))
		assert.True(t, middleware.IsFailure(nil)(errors.New("other")))
		userIsFailure := func(error) bool { return false }
		assert.False(t, middleware.IsFailure(userIsFailure)(errors.New("other")), "the user's own IsFailure decides other errors")

		// Between a quarter of what was left of the holder's lease when the
		// duplicate was refused and all of it, however late that was.
		var dup *middleware.DuplicateError
		require.ErrorAs(t, err, &dup)
		require.Positive(t, dup.TTL)
		assert.LessOrEqual(t, dup.TTL, 8*time.Second)
		delay := middleware.RetryDelayFunc(nil)
		for range 20 {
			d := delay(3, err, asynq.NewTask("job", nil))
			assert.GreaterOrEqual(t, d, max(dup.TTL/4, middleware.MinRetryDelay))
			assert.LessOrEqual(t, d, max(dup.TTL, middleware.MinRetryDelay))
		}
		fallback := func(int, error, *asynq.Task) time.Duration { return 42 * time.Second }
		assert.Equal(t, 42*time.Second, middleware.RetryDelayFunc(fallback)(1, errors.New("x"), nil))
	})
	t.Run("fail archives", func(t *testing.T) {
		l := newFileLocker(t)
		h := newHarness(t, l, rule(middleware.Fail), nil)
		hold(t, l, time.Minute)
		err := h.run(`{"id":1}`)
		require.ErrorIs(t, err, asynq.SkipRetry)
		require.ErrorIs(t, err, middleware.ErrDuplicate)
		assert.Zero(t, h.calls)
	})
	t.Run("wait gets the lock once it is released", func(t *testing.T) {
		l := newFileLocker(t)
		h := newHarness(t, l, rule(middleware.Wait), nil)
		lease := hold(t, l, time.Minute)
		go func() {
			time.Sleep(50 * time.Millisecond)
			assert.NoError(t, l.Release(context.Background(), lease))
		}()
		require.NoError(t, h.run(`{"id":1}`))
		assert.Equal(t, 1, h.calls)
		assert.Equal(t, []middleware.EventKind{middleware.Waited, middleware.Obtained, middleware.Released}, h.events.kinds())
	})
	t.Run("wait then retry", func(t *testing.T) {
		l := newFileLocker(t)
		h := newHarness(t, l, rule(middleware.Wait), nil)
		hold(t, l, time.Minute)
		start := time.Now()
		err := h.run(`{"id":1}`)
		require.ErrorIs(t, err, middleware.ErrDuplicate)
		assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
		assert.Zero(t, h.calls)
		assert.Equal(t, []middleware.EventKind{middleware.Waited, middleware.Duplicate}, h.events.kinds())
	})
	t.Run("wait then skip", func(t *testing.T) {
		l := newFileLocker(t)
		r := rule(middleware.Wait)
		r.AfterWait = middleware.Skip
		h := newHarness(t, l, r, nil)
		hold(t, l, time.Minute)
		require.NoError(t, h.run(`{"id":1}`))
		assert.Zero(t, h.calls)
	})
}

func TestBadInputFailsWithoutRetry(t *testing.T) {
	l := newFileLocker(t)
	h := newHarness(t, l, middleware.Rule{Template: "job-{{.id}}"}, nil)
	for _, tt := range []struct{ name, payload, want string }{
		{"missing field", `{"user":1}`, `payload has no field "id"`},
		{"null field", `{"id":null}`, `field "id" is null`},
		{"empty field", `{"id":""}`, `field "id" is empty or only white space`},
		{"white space field", `{"id":" "}`, `field "id" is empty or only white space`},
		{"not JSON", `id=1`, "payload is not JSON: invalid character 'i' looking for beginning of value"},
		{"control character", `{"id":"a\nb"}`, `lock: invalid key: field "id" holds control character U+000A`},
		{"duplicate", `{"id":1,"ID":2}`, `field "id" is ambiguous: the payload has it as both "id" and "ID", and a handler may read either`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := h.run(tt.payload)
			require.ErrorIs(t, err, asynq.SkipRetry)
			assert.EqualError(t, err, `middleware: task "job": `+tt.want+": "+asynq.SkipRetry.Error())
		})
	}
	assert.Zero(t, h.calls)
}

// TestKeyFieldsAsHandlersReadThem: encoding/json gives a struct field the
// last member whose name matches it under case folding, so these two
// payloads are one export of user 2 to a handler. The template must not
// give them two keys (export-user-1, export-user-3) that would let both
// run at once: it refuses them, on both paths.
func TestKeyFieldsAsHandlersReadThem(t *testing.T) {
	payloads := []string{`{"user_id":1,"USER_ID":2}`, `{"user_id":3,"uſer_id":2}`}
	for _, p := range payloads {
		var task struct {
			UserID int `json:"user_id"`
		}
		require.NoError(t, json.Unmarshal([]byte(p), &task))
		require.Equal(t, 2, task.UserID, "what a handler sees of %s", p)
	}
	for _, template := range []string{"export-user-{{.user_id}}", `export-user-{{printf "%v" .user_id}}`} {
		t.Run(template, func(t *testing.T) {
			h := newHarness(t, newFileLocker(t), middleware.Rule{Template: template}, nil)
			for _, p := range payloads {
				err := h.run(p)
				require.ErrorIs(t, err, asynq.SkipRetry)
				assert.Contains(t, err.Error(), `field "user_id" is ambiguous`)
			}
			assert.Zero(t, h.calls)
		})
	}
}

func TestWindow(t *testing.T) {
	l := newFileLocker(t)
	fail := false
	const window = time.Minute
	h := newHarness(t, l, middleware.Rule{Template: "job-{{.id}}", Lease: time.Second, Window: window},
		func(context.Context, *asynq.Task) error {
			if fail {
				return errors.New("boom")
			}
			return nil
		})
	require.NoError(t, h.run(`{"id":1}`))
	rec, ok, err := l.Inspect(context.Background(), "t:job-1")
	require.NoError(t, err)
	require.True(t, ok, "a successful run keeps its key for the window")
	assert.Equal(t, lock.Held, rec.State)
	assert.Greater(t, rec.TTL, 50*time.Second, "kept for the window, not for one lease")
	require.ErrorIs(t, h.run(`{"id":1}`), middleware.ErrDuplicate, "the same key in the same window is a duplicate")
	assert.Equal(t, 1, h.calls)

	require.NoError(t, l.Release(context.Background(), lock.Lease{Key: "t:job-1", Token: rec.Token}))
	fail = true
	require.Error(t, h.run(`{"id":1}`))
	_, ok, err = l.Inspect(context.Background(), "t:job-1")
	require.NoError(t, err)
	assert.False(t, ok, "a failed run frees the key for its retry")
}

func TestLostLockCancelsHandler(t *testing.T) {
	l := newFileLocker(t)
	h := newHarness(t, l, middleware.Rule{Template: "job-{{.id}}", Lease: 300 * time.Millisecond}, func(ctx context.Context, _ *asynq.Task) error {
		lease, _ := lock.LeaseFromContext(ctx)
		// An operator frees the lock behind the handler's back.
		require.NoError(t, l.Release(context.Background(), lease))
		select {
		case <-ctx.Done():
			require.ErrorIs(t, context.Cause(ctx), lock.ErrLost)
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("the handler was never told its lock was gone")
		}
	})
	err := h.run(`{"id":1}`)
	require.ErrorIs(t, err, lock.ErrLost)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, []middleware.EventKind{middleware.Obtained, middleware.Lost}, h.events.kinds())
}

func TestPanickingHandlerFreesItsKey(t *testing.T) {
	l := newFileLocker(t)
	h := newHarness(t, l, middleware.Rule{Template: "job-{{.id}}", Lease: time.Minute, Policy: middleware.Fail},
		func(context.Context, *asynq.Task) error { panic("boom") })
	func() {
		defer func() { assert.Equal(t, "boom", recover(), "the panic goes on to asynq's recoverer") }()
		_ = h.run(`{"id":1}`)
	}()
	_, ok, err := l.Inspect(context.Background(), "t:job-1")
	require.NoError(t, err)
	assert.False(t, ok, "the panicking handler's lock outlived it: its retry would be a duplicate")
	assert.Equal(t, []middleware.EventKind{middleware.Obtained, middleware.Released}, h.events.kinds())
}

func TestMaxRunTime(t *testing.T) {
	l := newFileLocker(t)
	h := newHarness(t, l, middleware.Rule{Template: "job-{{.id}}", MaxRunTime: 50 * time.Millisecond},
		func(ctx context.Context, _ *asynq.Task) error {
			<-ctx.Done()
			return context.Cause(ctx)
		})
	require.ErrorIs(t, h.run(`{"id":1}`), lock.ErrMaxRunTime)
	assert.Equal(t, []middleware.EventKind{middleware.Obtained, middleware.Released}, h.events.kinds())
}

func TestRuleMatching(t *testing.T) {
	l := newFileLocker(t)
	var got []string
	mw, err := middleware.New(l,
		middleware.WithPrefix(""),
		middleware.WithRule("export:user", middleware.Rule{Template: "exact"}),
		middleware.WithRule("export:*", middleware.Rule{Template: "short"}),
		middleware.WithRule("export:us*", middleware.Rule{Template: "long"}),
		middleware.WithDefaultRule(middleware.Rule{Template: "default"}),
		middleware.WithObserver(func(e middleware.Event) {
			if e.Kind == middleware.Obtained {
				got = append(got, e.Key)
			}
		}))
	require.NoError(t, err)
	h := mw(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	for _, typ := range []string{"export:user", "export:usage", "export:x", "cache"} {
		require.NoError(t, h.ProcessTask(context.Background(), asynq.NewTask(typ, nil)))
	}
	assert.Equal(t, []string{"exact", "long", "short", "default"}, got)
}

func TestNewRejectsBadRules(t *testing.T) {
	l := newFileLocker(t)
	for _, tt := range []struct {
		name string
		rule middleware.Rule
		want string
	}{
		{"lease", middleware.Rule{Lease: time.Microsecond}, "lease"},
		{"negative max run time", middleware.Rule{MaxRunTime: -time.Second}, "MaxRunTime"},
		{"negative window", middleware.Rule{Window: -time.Second}, "Window: lock: invalid ttl: a window of -1s, must not be negative"},
		{"window over the maximum", middleware.Rule{Window: lock.MaxTTL + time.Hour}, "a window of 8761h0m0s is over the maximum"},
		{"lease under the minimum", middleware.Rule{Lease: 10 * time.Millisecond}, "a lease of 10ms is under the minimum of 100ms"},
		{"negative wait", middleware.Rule{Policy: middleware.Wait, MaxWait: -time.Second}, "MaxWait -1s"},
		{"policy", middleware.Rule{Policy: middleware.Policy(9)}, "unknown policy"},
		{"after wait", middleware.Rule{Policy: middleware.Wait, AfterWait: middleware.Fail}, "AfterWait"},
		{"template", middleware.Rule{Template: "{{.a"}, "template"},
		{"negative limit", middleware.Rule{Limit: -1}, "Limit: lock: invalid limit: -1"},
		{"limit too high", middleware.Rule{Limit: lock.MaxLimit + 1}, "invalid limit: 1001"},
		{"limit of a unique run", middleware.Rule{Limit: 2, Unique: middleware.UniqueUntilExecuted}, "one at a time"},
		// Its runs take no lock: a Limit would be ignored.
		{"limit of runs not kept apart", middleware.Rule{Limit: 2, Unique: middleware.UniqueUntilExecuting}, "whose runs are not kept apart"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := middleware.New(l, middleware.WithRule("x", tt.rule))
			require.ErrorContains(t, err, `rule "x"`)
			assert.ErrorContains(t, err, tt.want)
		})
	}
	_, err := middleware.New(nil)
	require.Error(t, err)
	_, err = middleware.New(onlyLocker{l}, middleware.WithRule("x", middleware.Rule{Limit: 2}))
	require.ErrorContains(t, err, "a Limit of 2 needs an engine that is a lock.Limiter")
}

// onlyLocker hides every method of an engine but lock.Locker's.
type onlyLocker struct{ lock.Locker }

// TestLimit: a rule with a Limit of 2 runs two tasks of a key at once,
// and a third is a duplicate until one of them ends.
func TestLimit(t *testing.T) {
	l := newFileLocker(t)
	entered, release := make(chan struct{}), make(chan struct{})
	h := newHarness(t, l, middleware.Rule{Template: "job-{{.id}}", Limit: 2, Policy: middleware.Fail}, func(ctx context.Context, _ *asynq.Task) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- h.run(`{"id":1}`) }()
		<-entered
	}
	err := h.run(`{"id":1}`)
	require.ErrorIs(t, err, middleware.ErrDuplicate, "a third task while two run")
	go func() { errs <- h.run(`{"id":2}`) }()
	<-entered // another key has slots of its own
	release <- struct{}{}
	require.NoError(t, <-errs)
	go func() { errs <- h.run(`{"id":1}`) }()
	<-entered // a slot freed, and the next task takes it
	close(release)
	for range 3 {
		require.NoError(t, <-errs)
	}
}

// TestLockGoneAtReleaseIsLost: a lock that vanished while the handler ran
// (a Redis restart without persistence, an operator) is reported as lost
// when the release finds it gone, even if no renewal noticed first.
func TestLockGoneAtReleaseIsLost(t *testing.T) {
	l := newFileLocker(t)
	h := newHarness(t, l, middleware.Rule{Template: "job-{{.id}}", Lease: time.Minute}, func(ctx context.Context, _ *asynq.Task) error {
		lease, _ := lock.LeaseFromContext(ctx)
		return l.Release(context.Background(), lease)
	})
	require.NoError(t, h.run(`{"id":1}`), "the handler's own success stands")
	assert.Equal(t, []middleware.EventKind{middleware.Obtained, middleware.Lost}, h.events.kinds())
}

// TestDebugLog: what the middleware logs at debug level when asked to,
// though it builds none of it otherwise.
func TestDebugLog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "held" {
				return slog.Attr{}
			}
			if a.Key == "fence" && a.Value.Kind() == slog.KindUint64 && a.Value.Uint64() > 0 {
				// The file engine's tokens start at the wall clock in µs.
				return slog.String("fence", "N")
			}
			return a
		}}))
	mw, err := middleware.New(newFileLocker(t), middleware.WithRule("job", middleware.Rule{Template: "job-{{.id}}"}),
		middleware.WithPrefix("t:"), middleware.WithLogger(logger))
	require.NoError(t, err)
	h := mw(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	require.NoError(t, h.ProcessTask(context.Background(), asynq.NewTask("job", []byte(`{"id":1}`))))
	assert.Equal(t, "level=DEBUG msg=\"joblock: lock obtained\" task=job key=t:job-1 fence=N\n"+
		"level=DEBUG msg=\"joblock: lock released\" task=job key=t:job-1\n", buf.String())
}
