package redislock_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBatchedObtainAfterScriptFlush(t *testing.T) {
	srv := redistest.New(t)
	if srv.Kind != redistest.KindServer {
		t.Skip("flushes the server's script cache: needs a server of the test's own")
	}
	c := srv.Client(t)
	evals := &evalCounter{}
	c.AddHook(evals)
	// Slow single calls fill the in-flight slots, so later callers queue
	// and go out batched.
	c.AddHook(slowHook{single: 20 * time.Millisecond})
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), noGrace)
	ctx := context.Background()
	_, err := l.Obtain(ctx, "warm", time.Second) // loads the script
	require.NoError(t, err)
	require.NoError(t, c.ScriptFlush(ctx).Err())

	// Enough concurrent callers that some are batched into pipelines, whose
	// EVALSHA fails with NOSCRIPT and must fall back to EVAL.
	obtainReleaseConcurrently(t, l, 32)
	assert.Positive(t, evals.pipelined.Load(), "no batched EVAL ran: the NOSCRIPT fallback was not exercised")
}

// evalCounter counts EVAL commands sent inside pipelines.
type evalCounter struct{ pipelined atomic.Int32 }

// obtainReleaseConcurrently obtains and releases n keys of its own, each
// on a goroutine of its own, all at once, and waits for them.
func obtainReleaseConcurrently(t *testing.T, l *redislock.Locker, n int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := l.Obtain(ctx, "k"+strconv.Itoa(i), time.Second)
			if assert.NoError(t, err) {
				assert.NoError(t, l.Release(ctx, lease))
			}
		}()
	}
	wg.Wait()
}

func (h *evalCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *evalCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *evalCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "eval" {
				h.pipelined.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// slowHook delays commands and pipelines, as a slow network would.
type slowHook struct{ single, pipeline time.Duration }

func (h slowHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h slowHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		time.Sleep(h.single)
		return next(ctx, cmd)
	}
}

func (h slowHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		time.Sleep(h.pipeline)
		return next(ctx, cmds)
	}
}

// gateHook holds every command until its gate is closed, as a server that
// stopped answering would, and counts the calls it holds.
type gateHook struct {
	gate chan struct{}
	held *atomic.Int32
}

func (h gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.held.Add(1)
		select {
		case <-h.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		return next(ctx, cmd)
	}
}

func (h gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.held.Add(1)
		select {
		case <-h.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		return next(ctx, cmds)
	}
}

func TestQueuedCallerWithdrawsOnDeadline(t *testing.T) {
	srv := redistest.New(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	gate := make(chan struct{})
	var gated atomic.Int32
	c.AddHook(gateHook{gate: gate, held: &gated})
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), noGrace)

	// Fill every in-flight slot with slow calls, then queue callers with a
	// short deadline: they must give up on time, and what they asked for
	// must never be sent.
	var wg sync.WaitGroup
	var slowDone atomic.Int32
	for i := range redislock.MaxInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Obtain(context.Background(), "slow"+strconv.Itoa(i), time.Minute)
			slowDone.Add(1)
			assert.NoError(t, err)
		}()
	}
	require.Eventually(t, func() bool { return gated.Load() == redislock.MaxInFlight }, 10*time.Second, time.Millisecond,
		"the slow calls did not take every in-flight slot")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := l.Obtain(ctx, "queued", 5*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Zero(t, slowDone.Load(), "a queued caller waited for the calls ahead of it, past its deadline")
	assert.EqualValues(t, redislock.MaxInFlight, gated.Load(), "the queued call went out")
	close(gate)
	wg.Wait()

	_, ok, err := l.Inspect(context.Background(), "queued")
	require.NoError(t, err)
	assert.False(t, ok, "a withdrawn call was sent anyway")
	_, err = l.Obtain(context.Background(), "queued", time.Second)
	require.NoError(t, err)
	var held *lock.HeldError
	_, err = l.Obtain(context.Background(), "slow0", time.Second)
	require.ErrorAs(t, err, &held, "the slow calls did obtain their locks")
}
