package redislock_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireGraceError requires err to be the restart grace's refusal of key.
func requireGraceError(t *testing.T, err error, key string, grace time.Duration) *lock.HeldError {
	t.Helper()
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	require.ErrorIs(t, err, lock.ErrNotObtained)
	require.ErrorIs(t, err, lock.ErrRestartGrace)
	assert.Equal(t, key, held.Key)
	assert.Positive(t, held.TTL)
	// Uptime is counted in whole seconds: up to a second more.
	assert.LessOrEqual(t, held.TTL, grace+time.Second, "the refusal outlasts the grace")
	assert.Contains(t, held.Holder, "redis restarted ")
	assert.Contains(t, held.Holder, "ago; new locks wait out the "+grace.String()+" grace")
	return held
}

// commandCalls returns how often the Redis c talks to has run each
// command, from INFO commandstats ("script|load", "evalsha", "info", ...).
// The INFO it sends is counted from the next call on.
func commandCalls(t *testing.T, c *redis.Client) map[string]int {
	t.Helper()
	info, err := c.InfoMap(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	out := map[string]int{}
	for name, v := range info["Commandstats"] {
		calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
		out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(calls)
	}
	return out
}

func TestBrandNewRedisWaitsOutTheGrace(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	const grace = time.Minute // far longer than the test: the server is younger
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(grace))
	ctx := context.Background()

	_, err := l.Obtain(ctx, "job", time.Second)
	requireGraceError(t, err, "job", grace)
	_, err = l.ObtainLimit(ctx, "slots", 3, time.Second)
	requireGraceError(t, err, "slots", grace)
	_, ok, err := l.Inspect(ctx, "job")
	require.NoError(t, err)
	assert.False(t, ok, "a refusal leaves no lock")

	// Refreshes and releases are not held back: they find their lock gone.
	_, err = l.Refresh(ctx, lock.Lease{Key: "job", Token: "lock_GONE"}, time.Second)
	require.ErrorIs(t, err, lock.ErrNotHeld)
	require.ErrorIs(t, l.Release(ctx, lock.Lease{Key: "slots", Token: "slot_GONE"}), lock.ErrNotHeld)

	assert.Zero(t, commandCalls(t, c)["script|load"], "the obtain script was loaded on a node under the grace")
}

// TestRestartGraceKeepsNewHoldersOut: Redis without persistence restarts
// while work holds a lock. Another Locker is refused with the grace's
// error until the grace ends, and by then the holder has been told, with
// lock.ErrLost, that its lock is gone.
func TestRestartGraceKeepsNewHoldersOut(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const grace = 3 * time.Second
	lease := grace // a holder's lease may be as long as the grace
	mk := func() *redislock.Locker {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { _ = c.Close() })
		return redislock.New(c, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(grace))
	}
	holder, contender := mk(), mk()
	ctx := context.Background()

	holding := make(chan lock.Lease)
	told := make(chan struct{})
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The server has just started: wait out its first grace.
		_, runErr = lock.NewRenewer(holder).Run(ctx, "job", func(ctx context.Context) error {
			l, _ := lock.LeaseFromContext(ctx)
			holding <- l
			<-ctx.Done()
			close(told)
			return context.Cause(ctx)
		}, lock.WithLease(lease), lock.WithWait(lock.Wait{MaxWait: time.Minute, Interval: 50 * time.Millisecond}))
	}()
	first := <-holding
	srv.Restart(t) // empty: the lock is gone

	refusals := 0
	var got lock.Lease
	for deadline := time.Now().Add(time.Minute); ; {
		l, err := contender.Obtain(ctx, "job", time.Second)
		if err == nil {
			got = l
			break
		}
		requireGraceError(t, err, "job", grace)
		refusals++
		require.True(t, time.Now().Before(deadline), "still refused after a minute")
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-told:
	default:
		t.Fatal("the key went to a new holder before the old one was told its lock was gone")
	}
	assert.Positive(t, refusals, "the restarted server granted a lock at once")
	assert.Greater(t, got.Fence, first.Fence)
	up, err := uptimeOf(srv.Client(t))
	require.NoError(t, err)
	assert.Greater(t, up, grace, "granted before the server had been up for the grace (an uptime in whole seconds above it)")
	<-done
	require.ErrorIs(t, runErr, lock.ErrLost)
}

func TestNoGraceCostOnANodeUpLongerThanTheGrace(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	const grace = time.Second
	waitUp(t, grace, srv.Addr)
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(grace))
	ctx := context.Background()
	pair := func(l *redislock.Locker, key string) {
		lease, err := l.Obtain(ctx, key, time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx, lease))
	}
	pair(l, "warm") // the first obtain on the node loads the script there

	before := commandCalls(t, c)
	const n = 100
	for i := range n {
		pair(l, "k"+strconv.Itoa(i))
	}
	// Another process's Locker, on a client of its own, finds the script
	// loaded too.
	other := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer other.Close()
	pair(redislock.New(other, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(grace)), "other")
	after := commandCalls(t, c)

	assert.Equal(t, 2*(n+1), after["evalsha"]-before["evalsha"], "one EVALSHA per obtain and per release")
	assert.Equal(t, 1, after["info"]-before["info"], "INFO sent by anyone but commandCalls")
	assert.Zero(t, after["script|load"]-before["script|load"], "SCRIPT LOAD")
	assert.Zero(t, after["eval"]-before["eval"], "EVAL")
}

func TestRestartGraceOnCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	const grace = 5 * time.Second // the cluster must be ok again within it
	waitUp(t, grace, cl.Addrs...)
	l := redislock.New(c, redislock.WithRestartGrace(grace))
	ctx := context.Background()

	// A key on each master, and the masters' own clients.
	keyOn := map[string]string{}
	for i := 0; len(keyOn) < len(cl.Addrs); i++ {
		key := "k" + strconv.Itoa(i)
		node, err := c.MasterForKey(ctx, redislock.DefaultPrefix+"{"+key+"}")
		require.NoError(t, err)
		if _, ok := keyOn[node.Options().Addr]; !ok {
			keyOn[node.Options().Addr] = key
		}
	}
	nodes := map[string]*redis.Client{}
	for _, addr := range cl.Addrs {
		nodes[addr] = redis.NewClient(&redis.Options{Addr: addr})
		defer nodes[addr].Close()
	}
	leases := map[string]lock.Lease{}
	for addr, key := range keyOn {
		lease, err := l.Obtain(ctx, key, time.Minute)
		require.NoError(t, err, "on %s", addr)
		leases[addr] = lease
	}

	restarted := cl.Addrs[1]
	cl.Restart(t, 1)
	before := map[string]map[string]int{}
	for addr, n := range nodes {
		before[addr] = commandCalls(t, n)
	}
	for addr, key := range keyOn {
		_, err := l.Obtain(ctx, key, time.Minute)
		if addr == restarted {
			requireGraceError(t, err, key, grace)
			continue
		}
		// Still held by its lease: the node kept it, and no grace came
		// between.
		var held *lock.HeldError
		require.ErrorAs(t, err, &held, "on %s", addr)
		assert.NotErrorIs(t, err, lock.ErrRestartGrace, "on %s", addr)
		assert.Equal(t, leases[addr].Token, held.Holder)
		// A free key there is granted at once.
		other, ok := otherKeyOn(ctx, t, c, addr)
		require.True(t, ok)
		_, err = l.Obtain(ctx, other, time.Minute)
		require.NoError(t, err, "a key on %s, which did not restart", addr)
	}
	for addr, n := range nodes {
		after := commandCalls(t, n)
		if addr == restarted {
			continue
		}
		assert.Equal(t, 1, after["info"]-before[addr]["info"], "INFO on %s, which did not restart", addr)
		assert.Zero(t, after["script|load"]-before[addr]["script|load"], "SCRIPT LOAD on %s, which did not restart", addr)
	}

	lease, err := lock.ObtainWait(ctx, l, keyOn[restarted], time.Minute, lock.Wait{MaxWait: time.Minute, Interval: 50 * time.Millisecond})
	require.NoError(t, err)
	assert.Greater(t, lease.Fence, leases[restarted].Fence)
	up, err := uptimeOf(nodes[restarted])
	require.NoError(t, err)
	assert.Greater(t, up, grace)
}

// otherKeyOn returns a key, never used before, that lives on the master at
// addr.
func otherKeyOn(ctx context.Context, t *testing.T, c *redis.ClusterClient, addr string) (string, bool) {
	for i := range 1000 {
		key := "free" + strconv.Itoa(i) + "-" + addr
		node, err := c.MasterForKey(ctx, redislock.DefaultPrefix+"{"+key+"}")
		require.NoError(t, err)
		if node.Options().Addr == addr {
			return key, true
		}
	}
	return "", false
}

func TestRestartGraceBehindSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t, 1)
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.Addrs})
	t.Cleanup(func() { _ = c.Close() })
	const grace = 5 * time.Second // the client must be back on the master within it
	waitUp(t, grace, s.Master(t))
	l := redislock.New(c, redislock.WithPrefix(s.Prefix), redislock.WithRestartGrace(grace))
	ctx := context.Background()
	first, err := l.Obtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	s.RestartMaster(t)
	// The failover client's old connections broke with the restart: the
	// first command finds that out.
	var refused error
	require.Eventually(t, func() bool {
		_, refused = l.Obtain(ctx, "job", time.Minute)
		return errors.Is(refused, lock.ErrNotObtained)
	}, 30*time.Second, 50*time.Millisecond, "last error: %v", refused)
	requireGraceError(t, refused, "job", grace)

	lease, err := lock.ObtainWait(ctx, l, "job", time.Minute, lock.Wait{MaxWait: time.Minute, Interval: 50 * time.Millisecond})
	require.NoError(t, err)
	assert.Greater(t, lease.Fence, first.Fence)
}

// scripterOnly hides every method of a client but redis.Scripter's, as a
// wrapper or a fake would.
type scripterOnly struct{ redis.Scripter }

func TestRestartGraceThroughABareScripter(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	const long = time.Minute
	_, err := redislock.New(scripterOnly{c}, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(long)).Obtain(ctx, "job", time.Second)
	requireGraceError(t, err, "job", long)
	_, err = redislock.New(scripterOnly{c}, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(long)).ObtainLimit(ctx, "slots", 2, time.Second)
	requireGraceError(t, err, "slots", long)

	const short = time.Second
	waitUp(t, short, srv.Addr)
	l := redislock.New(scripterOnly{c}, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(short))
	lease, err := l.Obtain(ctx, "job", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))
	lease, err = l.ObtainLimit(ctx, "slots", 2, time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx, lease))
}

func TestBatchedGatedObtainAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	loaded := &gatedEvals{}
	c.AddHook(loaded)
	c.AddHook(slowHook{single: 20 * time.Millisecond}) // so that later callers go out batched
	const grace = time.Second
	waitUp(t, grace, srv.Addr)
	l := redislock.New(c, redislock.WithPrefix(srv.Prefix), redislock.WithRestartGrace(grace))
	ctx := context.Background()
	_, err := l.Obtain(ctx, "warm", time.Second)
	require.NoError(t, err)
	require.NoError(t, c.ScriptFlush(ctx).Err()) // as a restart would, but the node is up for longer than the grace

	obtainReleaseConcurrently(t, l, 32)
	assert.Zero(t, loaded.whole, "a gated obtain script was sent whole (EVAL), which loads it unchecked")
	assert.Positive(t, loaded.noscript, "no obtain met NOSCRIPT")
}

// gatedEvals counts, in single commands and pipelines, EVALs of a gated
// obtain script and EVALSHAs that met NOSCRIPT.
type gatedEvals struct {
	mu              sync.Mutex
	whole, noscript int
}

func (h *gatedEvals) see(cmds ...redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range cmds {
		args := c.Args()
		if len(args) > 1 && c.Name() == "eval" && strings.Contains(args[1].(string), "the restart grace") {
			h.whole++
		}
		if c.Name() == "evalsha" && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			h.noscript++
		}
	}
}

func (h *gatedEvals) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *gatedEvals) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.see(cmd)
		return err
	}
}

func (h *gatedEvals) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.see(cmds...)
		return err
	}
}
