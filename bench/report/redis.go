package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
)

const redisTTL = 10 * time.Second

var (
	handObtain  = redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])`)
	handRelease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

// redisPairs are the contenders: one obtain and release of key each, under
// prefix run.
func redisPairs(c *redis.Client, run string) (names []string, pairs map[string]func(ctx context.Context, key string) error) {
	jl := redislock.New(c, redislock.WithPrefix(run))
	bl := bsm.New(c)
	rs := redsync.New(goredis.NewPool(c))
	pairs = map[string]func(ctx context.Context, key string) error{
		"joblock redislock": func(ctx context.Context, key string) error {
			l, err := jl.Obtain(ctx, key, redisTTL)
			if err != nil {
				return err
			}
			return jl.Release(ctx, l)
		},
		"bsm/redislock": func(ctx context.Context, key string) error {
			l, err := bl.Obtain(ctx, run+"bsm:"+key, redisTTL, nil)
			if err != nil {
				return err
			}
			return l.Release(ctx)
		},
		"redsync (one pool)": func(ctx context.Context, key string) error {
			m := rs.NewMutex(run+"redsync:"+key, redsync.WithExpiry(redisTTL), redsync.WithTries(1))
			if err := m.LockContext(ctx); err != nil {
				return err
			}
			ok, err := m.UnlockContext(ctx)
			if err == nil && !ok {
				err = errors.New("redsync: unlock refused")
			}
			return err
		},
		// The floor: SET NX PX, compare-and-delete, nothing else (no
		// fencing, no holder details).
		"hand-written SET NX PX + compare-and-delete EVAL (the floor)": func(ctx context.Context, key string) error {
			token := rand.Text()
			k := run + "hand:" + key
			if err := handObtain.Run(ctx, c, []string{k}, token, redisTTL.Milliseconds()).Err(); err != nil {
				return err
			}
			return handRelease.Run(ctx, c, []string{k}, token).Err()
		},
	}
	return []string{"joblock redislock", "bsm/redislock", "redsync (one pool)", "hand-written SET NX PX + compare-and-delete EVAL (the floor)"}, pairs
}

// parallelPairs runs pair on g goroutines, each on a key of its own, for d
// and returns pairs per second.
func parallelPairs(ctx context.Context, g int, d time.Duration, pair func(ctx context.Context, key string) error) (float64, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "g" + strconv.Itoa(g) + ":" + strconv.Itoa(i)
			for time.Now().Before(deadline) {
				if err := pair(ctx, key); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		return 0, *err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

func redisSection(ctx context.Context, o options, rdb *redis.Client) error {
	run := "joblockbench:" + rand.Text()[:8] + ":"
	defer deleteRedisPrefix(ctx, rdb, run) // the fencing counters the pairs leave
	names, pairs := redisPairs(rdb, run)
	fmt.Printf("\n### Redis engine\n\nOne obtain + release per op, each goroutine on a key of its own, 1s per measurement, the local redis-server.\n")
	for _, g := range []int{1, 8, 32, 128} {
		ms, err := interleave(o.rounds, names, func(name string) (float64, error) {
			return parallelPairs(ctx, g, time.Second, pairs[name])
		})
		if err != nil {
			return err
		}
		base := ms[1].median() // bsm/redislock
		table(fmt.Sprintf("%d goroutine(s)", g), "pairs/s", "vs bsm/redislock")
		for _, m := range ms {
			row(m.name, thousands(m.median()), fmt.Sprintf("%.2fx", m.median()/base))
		}
	}
	return nil
}
