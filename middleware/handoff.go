package middleware

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Handing a released key to a waiting duplicate. Duplicates sent back
// under Retry come back on a timer (RetryDelayFunc), which can only guess
// when the holder will finish. With the asynq server's Redis
// (WithRedisClient), each duplicate also signs up in a list of the key's
// waiters, and the holder, once it has released the key, moves the oldest
// waiter from asynq's retry set to pending, so it starts at once. The
// holder also publishes the release, so duplicates waiting under Wait in
// any process try again at once rather than at their next interval.

// waitersTTL bounds how long a key's list of waiters outlives its last
// entry.
const waitersTTL = 24 * time.Hour

func waitersKey(lockKey string) string { return "joblock:waiters:" + lockKey }

// releasedChannel is where the release of lockKey is published.
func releasedChannel(lockKey string) string { return "joblock:released:" + lockKey }

// listen passes on the releases of lockKey published by any process to
// the Runs of this middleware waiting for it, until stop is called.
func (m *middleware) listen(lockKey string) (stop func()) {
	sub := m.broker.Subscribe(context.Background(), releasedChannel(lockKey))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range sub.Channel() {
			m.renewer.Wake(lockKey)
		}
	}()
	return func() {
		_ = sub.Close()
		<-done
	}
}

// addWaiter signs the task up as waiting for lockKey.
func (m *middleware) addWaiter(ctx context.Context, lockKey, queue, id string) {
	if m.broker == nil || id == "" {
		return
	}
	key := waitersKey(lockKey)
	_, err := m.broker.TxPipelined(context.WithoutCancel(ctx), func(p redis.Pipeliner) error {
		p.ZAddNX(ctx, key, redis.Z{Score: float64(time.Now().UnixMilli()), Member: queue + "\x00" + id})
		p.PExpire(ctx, key, waitersTTL)
		return nil
	})
	if err != nil {
		m.log.WarnContext(ctx, "joblock: could not sign a duplicate up for the key; it comes back on its timer", "key", lockKey, "err", err)
	}
}

// handOff publishes the release of ev.Key and moves the oldest duplicate
// waiting for it to pending. It drops waiters that asynq cannot move (they
// ran on their timers, or are running), ten at most.
func (m *middleware) handOff(ctx context.Context, ev Event) {
	if m.broker == nil {
		return
	}
	m.handOffKey(context.WithoutCancel(ctx), ev)
}

// handOffKey is handOff's work, apart so that tasks without a broker do not
// pay for the closure's captures.
func (m *middleware) handOffKey(ctx context.Context, ev Event) {
	key := ev.Key
	for i := range 10 {
		var pop *redis.ZSliceCmd
		_, err := m.broker.Pipelined(ctx, func(p redis.Pipeliner) error {
			if i == 0 {
				p.Publish(ctx, releasedChannel(key), "")
			}
			pop = p.ZPopMin(ctx, waitersKey(key), 1)
			return nil
		})
		popped, perr := pop.Result()
		if err != nil || perr != nil || len(popped) == 0 {
			return
		}
		member, _ := popped[0].Member.(string)
		queue, id, _ := strings.Cut(member, "\x00")
		if m.inspect.RunTask(queue, id) == nil {
			ev.Kind, ev.TaskID, ev.Err = HandedOff, id, nil
			m.emit(ev)
			return
		}
	}
}
