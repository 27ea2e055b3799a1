package redislock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/joblock/joblock/lock"
	"github.com/redis/go-redis/v9"
)

// scanBatch is the SCAN COUNT hint and the pipeline size for reading locks.
const scanBatch = 500

// Scan implements lock.Locker with SCAN over every primary (all masters of
// a Cluster), reading each batch of locks in one pipeline. It needs a
// go-redis client, not a bare Scripter.
func (l *Locker) Scan(ctx context.Context, fn func(lock.Record) bool) error {
	var mu sync.Mutex
	stopped := false
	emit := func(r lock.Record) bool {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return false
		}
		stopped = !fn(r)
		return !stopped
	}
	if l.err != nil {
		return l.err
	}
	var err error
	switch c := l.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return l.scanNode(ctx, node, emit)
		})
	case redis.Cmdable:
		err = l.scanNode(ctx, c, emit)
	default:
		return fmt.Errorf("redislock: scan needs a go-redis client that can SCAN, not %T", l.client)
	}
	if err != nil {
		return fmt.Errorf("redislock: scan: %w", err)
	}
	return nil
}

// pattern matches lock keys under the prefix and not their counters: a
// lock key always ends in "}", a counter key in ":fence".
func (l *Locker) pattern() string {
	var b strings.Builder
	for _, r := range l.prefix {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String() + "{*}"
}

func (l *Locker) scanNode(ctx context.Context, node redis.Cmdable, emit func(lock.Record) bool) error {
	more, err := l.scanKeys(ctx, node, l.pattern(), func(keys []string) (bool, error) { return l.readBatch(ctx, node, keys, emit) })
	if err != nil || !more {
		return err
	}
	_, err = l.scanKeys(ctx, node, l.pattern()+":slots", func(keys []string) (bool, error) { return l.readSlots(ctx, node, keys, emit) })
	return err
}

// scanKeys calls read with each batch of node's keys that match pattern,
// until read says stop (more is then false).
func (l *Locker) scanKeys(ctx context.Context, node redis.Cmdable, pattern string, read func(keys []string) (bool, error)) (bool, error) {
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, pattern, scanBatch).Result()
		if err != nil {
			return false, err
		}
		if len(keys) > 0 {
			if more, err := read(keys); err != nil || !more {
				return false, err
			}
		}
		if next == 0 {
			return true, nil
		}
		cursor = next
	}
}

// failed reports whether a pipeline's error is the connection's or the
// server's as a whole, rather than one command's answer (a key gone, or
// of another type), which the caller reads command by command.
func failed(err error) bool {
	var reply redis.Error
	return err != nil && !errors.Is(err, redis.Nil) && !errors.As(err, &reply)
}

// skipped is the record of a key under the prefix that a Redis error
// answered (WRONGTYPE: a key of another type, made by someone else): ok is
// false for a key that is merely gone.
func skipped(k string, err error) (lock.Record, bool) {
	var reply redis.Error
	if errors.Is(err, redis.Nil) || !errors.As(err, &reply) {
		return lock.Record{}, false
	}
	return lock.Record{State: lock.Skipped, Note: fmt.Sprintf("%s is not a lock record: %v (left alone)", k, err)}, true
}

// readSlots reads a batch of slots keys in one pipeline.
func (l *Locker) readSlots(ctx context.Context, node redis.Cmdable, keys []string, emit func(lock.Record) bool) (bool, error) {
	cmds := make([]*redis.Cmd, len(keys))
	_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			base := strings.TrimSuffix(k, ":slots")
			cmds[i] = p.Eval(ctx, inspectSlotsSrc, []string{k, base + ":holders"})
		}
		return nil
	})
	if failed(err) {
		return false, err
	}
	for i, k := range keys {
		res, err := cmds[i].Slice()
		if err != nil {
			if skip, ok := skipped(k, err); ok && !emit(skip) {
				return false, nil
			}
			continue // gone since SCAN saw it, or skipped
		}
		for _, r := range slotRecords(l.keyOf(strings.TrimSuffix(k, ":slots")), res) {
			if !emit(r) {
				return false, nil
			}
		}
	}
	return true, nil
}

func (l *Locker) readBatch(ctx context.Context, node redis.Cmdable, keys []string, emit func(lock.Record) bool) (bool, error) {
	gets := make([]*redis.StringCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			gets[i] = p.Get(ctx, k)
			ttls[i] = p.PTTL(ctx, k)
		}
		return nil
	})
	if failed(err) {
		return false, err
	}
	for i, k := range keys {
		v, err := gets[i].Result()
		if err != nil {
			if skip, ok := skipped(k, err); ok && !emit(skip) {
				return false, nil
			}
			continue // expired or released since SCAN saw it, or skipped
		}
		if !emit(record(l.keyOf(k), v, ttls[i].Val().Milliseconds())) {
			return false, nil
		}
	}
	return true, nil
}
