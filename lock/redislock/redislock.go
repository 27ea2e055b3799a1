package redislock

import (
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/redis/go-redis/v9"
)

var (
	//go:embed obtain.lua
	obtainSrc string
	//go:embed refresh.lua
	refreshSrc string
	//go:embed release.lua
	releaseSrc string
	//go:embed inspect.lua
	inspectSrc string

	obtainScript  = redis.NewScript(obtainSrc)
	refreshScript = redis.NewScript(refreshSrc)
	releaseScript = redis.NewScript(releaseSrc)
	inspectScript = redis.NewScript(inspectSrc)
)

// DefaultPrefix is the key prefix when WithPrefix is not given.
const DefaultPrefix = "joblock:"

// Locker is the Redis engine. It implements lock.Locker and is safe for
// concurrent use.
type Locker struct {
	client    redis.Scripter
	prefix    string
	retention time.Duration
	meta      string // " <pid> <host>" appended to each lock's value
}

var _ lock.Locker = (*Locker)(nil)

// Option configures a Locker.
type Option func(*Locker)

// WithPrefix sets the prefix of every key the Locker writes. Default
// DefaultPrefix.
func WithPrefix(p string) Option { return func(l *Locker) { l.prefix = p } }

// WithFenceRetention sets how long a key's fencing counter is kept after
// the key was last obtained or refreshed. Default 24h; values under a
// second mean a second.
func WithFenceRetention(d time.Duration) Option {
	return func(l *Locker) { l.retention = max(d, time.Second) }
}

// New returns a Locker on client: a *redis.Client (single node or Sentinel
// failover), a *redis.ClusterClient, any redis.UniversalClient, or any
// redis.Scripter. Scan needs a client that can also SCAN (every
// go-redis client can); a bare Scripter gets an error from Scan.
func New(client redis.Scripter, opts ...Option) *Locker {
	host, _ := os.Hostname()
	host = strings.ReplaceAll(host, " ", "_")
	l := &Locker{client: client, prefix: DefaultPrefix, retention: 24 * time.Hour, meta: " " + strconv.Itoa(os.Getpid()) + " " + host}
	for _, o := range opts {
		o(l)
	}
	return l
}

func (l *Locker) lockKey(key string) string { return l.prefix + "{" + key + "}" }

func (l *Locker) keys(key string) []string {
	k := l.lockKey(key)
	return []string{k, k + ":fence"}
}

func wrap(op, key string, err error) error {
	return fmt.Errorf("redislock: %s %q: %w", op, key, err)
}

// validToken rejects tokens that could not have come from Obtain, since a
// space would let a forged token match a longer value's prefix.
func validToken(t string) bool { return t != "" && !strings.ContainsAny(t, " \t\r\n") }

// Obtain implements lock.Locker in one round trip.
func (l *Locker) Obtain(ctx context.Context, key string, ttl time.Duration) (lock.Lease, error) {
	if err := lock.ValidateKey(key); err != nil {
		return lock.Lease{}, err
	}
	if err := lock.ValidateTTL(ttl); err != nil {
		return lock.Lease{}, err
	}
	start := time.Now()
	token := "lock_" + rand.Text()
	details := strconv.FormatInt(start.UnixMilli(), 10) + l.meta
	res, err := obtainScript.Run(ctx, l.client, l.keys(key), token, ttl.Milliseconds(), details, l.retention.Milliseconds()).Slice()
	if err != nil {
		return lock.Lease{}, wrap("obtain", key, err)
	}
	if len(res) < 2 {
		return lock.Lease{}, wrap("obtain", key, fmt.Errorf("unexpected reply %v", res))
	}
	if ok, _ := res[0].(int64); ok == 0 {
		v, _ := res[1].(string)
		var pttl int64
		if len(res) > 2 {
			pttl, _ = res[2].(int64)
		}
		return lock.Lease{}, &lock.HeldError{Key: key, Holder: parseValue(v).token, TTL: time.Duration(max(pttl, 0)) * time.Millisecond}
	}
	fence, err := toUint(res[1])
	if err != nil {
		return lock.Lease{}, wrap("obtain", key, err)
	}
	return lock.Lease{Key: key, Token: token, Fence: fence, ExpiresAt: start.Add(ttl)}, nil
}

// Refresh implements lock.Locker in one round trip.
func (l *Locker) Refresh(ctx context.Context, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	if err := lock.ValidateKey(lease.Key); err != nil {
		return lock.Lease{}, err
	}
	if err := lock.ValidateTTL(ttl); err != nil {
		return lock.Lease{}, err
	}
	if !validToken(lease.Token) {
		return lock.Lease{}, lock.ErrNotHeld
	}
	start := time.Now()
	v, err := refreshScript.Run(ctx, l.client, l.keys(lease.Key), lease.Token, ttl.Milliseconds(), l.retention.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return lock.Lease{}, lock.ErrNotHeld
	}
	if err != nil {
		return lock.Lease{}, wrap("refresh", lease.Key, err)
	}
	lease.Fence = parseValue(v).fence
	lease.ExpiresAt = start.Add(ttl)
	return lease, nil
}

// Release implements lock.Locker in one round trip.
func (l *Locker) Release(ctx context.Context, lease lock.Lease) error {
	if err := lock.ValidateKey(lease.Key); err != nil {
		return err
	}
	if !validToken(lease.Token) {
		return lock.ErrNotHeld
	}
	n, err := releaseScript.Run(ctx, l.client, []string{l.lockKey(lease.Key)}, lease.Token).Int64()
	if err != nil {
		return wrap("release", lease.Key, err)
	}
	if n == 0 {
		return lock.ErrNotHeld
	}
	return nil
}

// Inspect implements lock.Locker in one round trip. Redis forgets expired
// and released locks, so a record, when found, is always held.
func (l *Locker) Inspect(ctx context.Context, key string) (lock.Record, bool, error) {
	if err := lock.ValidateKey(key); err != nil {
		return lock.Record{}, false, err
	}
	res, err := inspectScript.Run(ctx, l.client, []string{l.lockKey(key)}).Slice()
	if errors.Is(err, redis.Nil) {
		return lock.Record{}, false, nil
	}
	if err != nil {
		return lock.Record{}, false, wrap("inspect", key, err)
	}
	if len(res) != 2 {
		return lock.Record{}, false, wrap("inspect", key, fmt.Errorf("unexpected reply %v", res))
	}
	v, _ := res[0].(string)
	pttl, _ := res[1].(int64)
	return record(key, v, pttl), true, nil
}

// Cleanup implements lock.Locker. Redis expires locks by itself and Release
// deletes them, so there is never anything to remove: it returns 0.
func (l *Locker) Cleanup(ctx context.Context) (int, error) { return 0, ctx.Err() }

type value struct {
	token    string
	fence    uint64
	acquired time.Time
	pid      int
	host     string
}

func parseValue(v string) value {
	f := strings.SplitN(v, " ", 5)
	var out value
	out.token = f[0]
	if len(f) > 1 {
		out.fence, _ = strconv.ParseUint(f[1], 10, 64)
	}
	if len(f) > 2 {
		ms, _ := strconv.ParseInt(f[2], 10, 64)
		out.acquired = time.UnixMilli(ms)
	}
	if len(f) > 3 {
		out.pid, _ = strconv.Atoi(f[3])
	}
	if len(f) > 4 {
		out.host = f[4]
	}
	return out
}

func record(key, v string, pttl int64) lock.Record {
	p := parseValue(v)
	ttl := time.Duration(max(pttl, 0)) * time.Millisecond
	return lock.Record{
		Key:        key,
		Token:      p.token,
		Fence:      p.fence,
		AcquiredAt: p.acquired,
		ExpiresAt:  time.Now().Add(ttl),
		PID:        p.pid,
		Host:       p.host,
		State:      lock.Held,
		TTL:        ttl,
	}
}

func toUint(v any) (uint64, error) {
	switch x := v.(type) {
	case int64:
		return uint64(x), nil
	case string:
		return strconv.ParseUint(x, 10, 64)
	}
	return 0, fmt.Errorf("unexpected fencing token %v (%T)", v, v)
}
