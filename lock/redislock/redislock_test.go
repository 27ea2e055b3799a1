package redislock_test

import (
	"os"
	"strings"
	"testing"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

const (
	envAddr    = "JOBLOCK_REDISLOCK_ADDR"
	envPrefix  = "JOBLOCK_REDISLOCK_PREFIX"
	envCluster = "JOBLOCK_REDISLOCK_CLUSTER" // comma-separated node addresses
)

func TestMain(m *testing.M) {
	locktest.ChildMain(func() (lock.Locker, error) {
		if nodes := os.Getenv(envCluster); nodes != "" {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(nodes, ",")})
			return redislock.New(c, redislock.WithPrefix(os.Getenv(envPrefix))), nil
		}
		c := redis.NewClient(&redis.Options{Addr: os.Getenv(envAddr)})
		return redislock.New(c, redislock.WithPrefix(os.Getenv(envPrefix))), nil
	})
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	srv := redistest.New(t)
	t.Logf("Redis: %s at %s", srv.Kind, srv.Addr)
	c := srv.Client(t)
	var opts []locktest.Option
	if srv.Kind == redistest.KindMiniredis {
		opts = append(opts, locktest.WithoutRealTimeExpiry("TTL timing needs a real Redis: miniredis emulates TTLs; install redis-server or set REDIS_ADDR"))
	}
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c, redislock.WithPrefix(srv.Prefix)) }, opts...)
}

func TestConformanceCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c) })
}

func TestConformanceLimitThree(t *testing.T) {
	srv := redistest.New(t)
	c := srv.Client(t)
	opts := []locktest.Option{locktest.WithLimit(3)}
	if srv.Kind == redistest.KindMiniredis {
		opts = append(opts, locktest.WithoutRealTimeExpiry("TTL timing needs a real Redis: miniredis emulates TTLs; install redis-server or set REDIS_ADDR"))
	}
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c, redislock.WithPrefix(srv.Prefix)) }, opts...)
}

func TestConformanceClusterLimitThree(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c) }, locktest.WithLimit(3))
}
