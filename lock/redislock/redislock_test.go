package redislock_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
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
			return redislock.New(c, redislock.WithPrefix(os.Getenv(envPrefix)), noGrace), nil
		}
		c := redis.NewClient(&redis.Options{Addr: os.Getenv(envAddr)})
		return redislock.New(c, redislock.WithPrefix(os.Getenv(envPrefix)), noGrace), nil
	})
	goleak.VerifyTestMain(m)
}

// noGrace is for tests on a Redis started for the test, where no holder
// can predate the start, that are not about the restart grace.
var noGrace = redislock.WithRestartGrace(0)

// testGrace is the restart grace of the conformance runs, which take every
// lock through the gated obtain scripts once the nodes have been up for
// it.
const testGrace = time.Second

// graceFor returns the option the conformance runs on srv use: testGrace
// once srv has been up for it, no grace on miniredis, which has no uptime.
func graceFor(t *testing.T, srv *redistest.Server) redislock.Option {
	if srv.Kind == redistest.KindMiniredis {
		return noGrace
	}
	waitUp(t, testGrace, srv.Addr)
	return redislock.WithRestartGrace(testGrace)
}

// waitUp waits until the Redis at each of addrs has been up for d as a
// restart grace of d counts it: its uptime, in whole seconds, above d.
func waitUp(t testing.TB, d time.Duration, addrs ...string) {
	t.Helper()
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		require.Eventually(t, func() bool {
			up, err := uptimeOf(c)
			return err == nil && up > d
		}, 30*time.Second, 20*time.Millisecond, "%s never reached an uptime above %s", addr, d)
		_ = c.Close()
	}
}

// uptimeOf returns the uptime of the Redis c talks to.
func uptimeOf(c *redis.Client) (time.Duration, error) {
	info, err := c.InfoMap(context.Background(), "server").Result()
	if err != nil {
		return 0, err
	}
	secs, err := strconv.Atoi(info["Server"]["uptime_in_seconds"])
	return time.Duration(secs) * time.Second, err
}

func TestConformance(t *testing.T) {
	srv := redistest.New(t)
	t.Logf("Redis: %s at %s", srv.Kind, srv.Addr)
	c := srv.Client(t)
	var opts []locktest.Option
	if srv.Kind == redistest.KindMiniredis {
		opts = append(opts, locktest.WithoutRealTimeExpiry("TTL timing needs a real Redis: miniredis emulates TTLs; install redis-server or set REDIS_ADDR"))
	}
	grace := graceFor(t, srv)
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c, redislock.WithPrefix(srv.Prefix), grace) }, opts...)
}

func TestConformanceCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	waitUp(t, testGrace, cl.Addrs...)
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c, redislock.WithRestartGrace(testGrace)) })
}

func TestConformanceLimitThree(t *testing.T) {
	srv := redistest.New(t)
	c := srv.Client(t)
	opts := []locktest.Option{locktest.WithLimit(3)}
	if srv.Kind == redistest.KindMiniredis {
		opts = append(opts, locktest.WithoutRealTimeExpiry("TTL timing needs a real Redis: miniredis emulates TTLs; install redis-server or set REDIS_ADDR"))
	}
	grace := graceFor(t, srv)
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c, redislock.WithPrefix(srv.Prefix), grace) }, opts...)
}

func TestConformanceClusterLimitThree(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	waitUp(t, testGrace, cl.Addrs...)
	locktest.Run(t, func(t *testing.T) lock.Locker { return redislock.New(c, redislock.WithRestartGrace(testGrace)) }, locktest.WithLimit(3))
}
