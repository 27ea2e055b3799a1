package middleware

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
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

// releasedPrefix leads the channel where a key's release is published.
const releasedPrefix = "joblock:released:"

// releasedChannel is where the release of lockKey is published.
func releasedChannel(lockKey string) string { return releasedPrefix + lockKey }

// releases is the one subscription through which a middleware hears of
// the releases of the keys its Runs wait for: one connection per
// middleware, not per waiting task, open while anything waits.
type releases struct {
	mu   sync.Mutex
	sub  *redis.PubSub
	done chan struct{} // closed when sub's reader has stopped
	keys map[string]int
}

// listen passes on the releases of lockKey published by any process to
// the Runs of this middleware waiting for it, until stop is called. Once
// the subscription is confirmed it wakes a waiter: a release that came
// between its refusal and the subscription would otherwise go unheard.
func (m *middleware) listen(lockKey string) (stop func()) {
	r := &m.releases
	r.mu.Lock()
	if r.sub == nil {
		r.sub = m.broker.Subscribe(context.Background())
		r.done = make(chan struct{})
		r.keys = map[string]int{}
		go m.hear(r.sub, r.done)
	}
	r.keys[lockKey]++
	if r.keys[lockKey] == 1 {
		_ = r.sub.Subscribe(context.Background(), releasedChannel(lockKey))
	}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.keys[lockKey]--
		if r.keys[lockKey] > 0 {
			r.mu.Unlock()
			return
		}
		delete(r.keys, lockKey)
		if len(r.keys) > 0 {
			_ = r.sub.Unsubscribe(context.Background(), releasedChannel(lockKey))
			r.mu.Unlock()
			return
		}
		sub, done := r.sub, r.done
		r.sub = nil
		r.mu.Unlock()
		_ = sub.Close()
		<-done
	}
}

// hear wakes waiters as sub reports releases, and once each subscription
// is confirmed, until sub is closed.
func (m *middleware) hear(sub *redis.PubSub, done chan struct{}) {
	defer close(done)
	for msg := range sub.ChannelWithSubscriptions() {
		switch msg := msg.(type) {
		case *redis.Message:
			m.renewer.Wake(strings.TrimPrefix(msg.Channel, releasedPrefix))
		case *redis.Subscription:
			if msg.Kind == "subscribe" {
				m.renewer.Wake(strings.TrimPrefix(msg.Channel, releasedPrefix))
			}
		}
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

// removeWaiter takes a task off the list of lockKey's waiters.
func (m *middleware) removeWaiter(ctx context.Context, lockKey, queue, id string) {
	if m.broker == nil || id == "" {
		return
	}
	_ = m.broker.ZRem(context.WithoutCancel(ctx), waitersKey(lockKey), queue+"\x00"+id).Err()
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
		if m.runWaiter(queue, id) {
			ev.Kind, ev.TaskID, ev.Err = HandedOff, id, nil
			m.emit(ev)
			return
		}
	}
}

// runWaiter moves a waiting task to pending. A task refused a moment ago
// may still be active, on its way back to asynq's retry set: it is tried
// a few more times before it is given up.
func (m *middleware) runWaiter(queue, id string) bool {
	for range 10 {
		if m.inspect.RunTask(queue, id) == nil {
			return true
		}
		info, err := m.inspect.GetTaskInfo(queue, id)
		if err != nil || info.State != asynq.TaskStateActive {
			return false // ran on its timer, or is gone
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
