package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
)

const ttl = 10 * time.Second

func redisClient(b *testing.B) *redis.Client {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 16})
	if err := c.Ping(context.Background()).Err(); err != nil {
		b.Skipf("no Redis at %s: %v", addr, err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// pairFunc obtains and releases key once.
type pairFunc func(ctx context.Context, key string) error

var (
	handObtain  = redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])`)
	handRelease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

func contenders(b *testing.B, c *redis.Client) map[string]pairFunc {
	jl := redislock.New(c, redislock.WithPrefix("joblockbench:"+rand.Text()[:8]+":"))
	bl := bsm.New(c)
	rs := redsync.New(goredis.NewPool(c))
	return map[string]pairFunc{
		"joblock": func(ctx context.Context, key string) error {
			l, err := jl.Obtain(ctx, key, ttl)
			if err != nil {
				return err
			}
			return jl.Release(ctx, l)
		},
		"bsm-redislock": func(ctx context.Context, key string) error {
			l, err := bl.Obtain(ctx, "bsm:"+key, ttl, nil)
			if err != nil {
				return err
			}
			return l.Release(ctx)
		},
		"redsync": func(ctx context.Context, key string) error {
			m := rs.NewMutex("redsync:"+key, redsync.WithExpiry(ttl), redsync.WithTries(1))
			if err := m.LockContext(ctx); err != nil {
				return err
			}
			ok, err := m.UnlockContext(ctx)
			if err == nil && !ok {
				err = errors.New("redsync: unlock refused")
			}
			return err
		},
		// The floor: SET NX PX to obtain, compare-and-delete to release,
		// nothing else (no fencing, no holder details).
		"handwritten": func(ctx context.Context, key string) error {
			token := rand.Text()
			k := "hand:" + key
			if err := handObtain.Run(ctx, c, []string{k}, token, ttl.Milliseconds()).Err(); err != nil {
				return err
			}
			return handRelease.Run(ctx, c, []string{k}, token).Err()
		},
	}
}

// BenchmarkRedisPair: one op is an uncontended obtain+release. With g8,
// eight goroutines each work on a key of their own.
func BenchmarkRedisPair(b *testing.B) {
	c := redisClient(b)
	impls := contenders(b, c)
	run := rand.Text()[:8]
	for _, name := range []string{"joblock", "bsm-redislock", "redsync", "handwritten"} {
		pair := impls[name]
		b.Run(name+"/g1", func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			key := run + ":g1"
			for b.Loop() {
				if err := pair(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
		})
		b.Run(name+"/g8", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(max(8/testingProcs(), 1))
			var id atomic.Int32
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				key := run + ":g8:" + strconv.Itoa(int(id.Add(1)))
				for pb.Next() {
					if err := pair(ctx, key); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
		})
	}
}
