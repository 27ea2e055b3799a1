package redislock

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
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
	batch     *batcher // nil when the client cannot pipeline
	prefix    string
	retention time.Duration
	meta      string // " <pid> <host>" appended to each lock's value
	retArg    any    // retention in ms, boxed once
	lastTTL   atomic.Pointer[ttlArg]
	err       error // an option that cannot work, returned by every operation
	grace     time.Duration
	// The obtain scripts, gated by the grace (see grace.go).
	obtain, obtainSlot script
}

var _ lock.Locker = (*Locker)(nil)

// Option configures a Locker.
type Option func(*Locker)

// WithPrefix sets the prefix of every key the Locker writes. Default
// DefaultPrefix. A prefix must pass ValidatePrefix; otherwise every
// operation of the Locker returns its error.
func WithPrefix(p string) Option { return func(l *Locker) { l.prefix = p } }

// ValidatePrefix reports why p cannot prefix the Locker's keys: it holds
// "{" or "}", which would change what Redis Cluster hashes, so that a
// lock and its fencing counter could land in different slots (CROSSSLOT
// on a Cluster, though a single node takes them).
func ValidatePrefix(p string) error {
	if strings.ContainsAny(p, "{}") {
		return fmt.Errorf("redislock: prefix %q holds '{' or '}', which Redis Cluster reads as a hash tag: choose one without", p)
	}
	return nil
}

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
	host = strings.Join(strings.Fields(host), "_")
	if host == "" {
		host = "-"
	}
	l := &Locker{client: client, prefix: DefaultPrefix, retention: 24 * time.Hour, meta: " " + strconv.Itoa(os.Getpid()) + " " + host,
		grace: DefaultRestartGrace}
	for _, o := range opts {
		o(l)
	}
	l.retArg = l.retention.Milliseconds()
	l.err = ValidatePrefix(l.prefix)
	l.obtain, l.obtainSlot = l.obtainScripts()
	if p, ok := client.(pipeliner); ok {
		l.batch = &batcher{client: p}
	}
	return l
}

// run runs a script, batched with concurrent callers' when the client can
// pipeline.
func (l *Locker) run(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	return l.exec(ctx, s, true, keys, args...)
}

// exec runs a script by its hash, and when Redis does not know it (NOSCRIPT)
// sends it whole if load is true, which also loads it.
func (l *Locker) exec(ctx context.Context, s *redis.Script, load bool, keys []string, args ...any) *redis.Cmd {
	if l.err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(l.err)
		return cmd
	}
	if l.batch != nil {
		return l.batch.run(ctx, s, load, keys, args...)
	}
	if load {
		return s.Run(ctx, l.client, keys, args...)
	}
	return s.EvalSha(ctx, l.client, keys, args...)
}

// tagEscape goes in front of a key that starts with "}". Redis Cluster
// hashes the text between the first "{" and the next "}", or the whole
// key when that text is empty: "{}abc}" would hash whole, and differently
// from its counter "{}abc}:fence". With the escape the hash tag is
// "\x00" for both. No key holds a control character (lock.ValidateKey), so
// no other key's name can collide with an escaped one.
const tagEscape = "\x00"

// escape returns what goes before key inside the braces.
func escape(key string) string {
	if strings.HasPrefix(key, "}") {
		return tagEscape
	}
	return ""
}

func (l *Locker) lockKey(key string) string { return l.prefix + "{" + escape(key) + key + "}" }

// keys returns the Redis keys of key, in one hash slot: its lock, its
// fencing counter, and the slots and holders of a key taken with a limit
// (see slots.go). The four share one allocation: the lock's name is a
// prefix of the counter's.
func (l *Locker) keys(key string) []string {
	var b strings.Builder
	base := len(l.prefix) + 1 + len(escape(key)) + len(key) + 1
	b.Grow(3*base + len(":fence:slots:holders"))
	for _, suffix := range []string{":fence", ":slots", ":holders"} {
		b.WriteString(l.prefix)
		b.WriteByte('{')
		b.WriteString(escape(key))
		b.WriteString(key)
		b.WriteByte('}')
		b.WriteString(suffix)
	}
	all := b.String()
	slots := base + len(":fence")
	holders := slots + base + len(":slots")
	return []string{all[:base], all[:slots], all[slots:holders], all[holders:]}
}

// keyOf is the lock key whose Redis key is k (see lockKey).
func (l *Locker) keyOf(k string) string {
	k = strings.TrimSuffix(strings.TrimPrefix(k, l.prefix+"{"), "}")
	return strings.TrimPrefix(k, tagEscape)
}

type ttlArg struct {
	ttl time.Duration
	arg any
}

// ttlArg returns ttl in ms as a script argument, reusing the boxed value of
// the last TTL seen: callers mostly pass the same TTL every time.
func (l *Locker) ttlArg(ttl time.Duration) any {
	if last := l.lastTTL.Load(); last != nil && last.ttl == ttl {
		return last.arg
	}
	a := &ttlArg{ttl: ttl, arg: ttl.Milliseconds()}
	l.lastTTL.Store(a)
	return a.arg
}

func wrap(op, key string, err error) error {
	return fmt.Errorf("redislock: %s %q: %w", op, key, err)
}

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// tokenLen is the length of an owner token: "lock_" and 128 random bits in
// base32.
const tokenLen = 5 + 26

// holder returns the start of a new lock's value, "<token> <acquired ms>
// <pid> <host>", in one allocation; the owner token is its first tokenLen
// bytes.
func (l *Locker) holder(now time.Time) string {
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // never fails since Go 1.24
	var tok [tokenLen - len("lock_")]byte
	tokenEncoding.Encode(tok[:], raw[:])
	var ms [20]byte
	var b strings.Builder
	b.Grow(tokenLen + 1 + len(ms) + len(l.meta))
	b.WriteString("lock_")
	b.Write(tok[:])
	b.WriteByte(' ')
	b.Write(strconv.AppendInt(ms[:0], now.UnixMilli(), 10))
	b.WriteString(l.meta)
	return b.String()
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
	holder := l.holder(start)
	res, err := l.obtainRun(ctx, l.obtain, key, l.keys(key), holder, l.ttlArg(ttl), l.retArg)
	if err != nil {
		return lock.Lease{}, l.obtainError(key, err)
	}
	if r, ok := res.(int64); ok {
		return lock.Lease{Key: key, Token: holder[:tokenLen], Fence: uint64(r), ExpiresAt: start.Add(ttl)}, nil
	}
	return lock.Lease{}, l.refusal(key, res)
}

// obtainError is the error of an obtain that failed with err: a refusal
// by the grace as it is, anything else wrapped.
func (l *Locker) obtainError(key string, err error) error {
	var held *lock.HeldError
	if errors.As(err, &held) {
		return held
	}
	return wrap("obtain", key, err)
}

// refusal reads an obtain script's reply other than a fencing token: the
// value of the lock (or slot) that holds key and its remaining ms, and the
// holders' limit when it is not the one asked; or the uptime of a node
// under the grace.
func (l *Locker) refusal(key string, res any) error {
	r, _ := res.([]any)
	switch len(r) {
	case 1:
		if up, ok := r[0].(int64); ok {
			return l.graceError(key, up)
		}
	case 2, 3:
		v, _ := r[0].(string)
		pttl, _ := r[1].(int64)
		held := &lock.HeldError{Key: key, Holder: parseValue(v).token, TTL: time.Duration(max(pttl, 0)) * time.Millisecond}
		if len(r) == 3 {
			// Held with another limit than the one asked.
			limit, _ := r[2].(int64)
			held.HeldLimit = int(limit)
		}
		return held
	}
	return wrap("obtain", key, fmt.Errorf("unexpected reply %v", res))
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
	if isSlotToken(lease.Token) {
		return l.refreshWith(ctx, refreshSlotScript, l.slotKeys(lease.Key), lease, ttl)
	}
	return l.refreshWith(ctx, refreshScript, l.keys(lease.Key)[:2], lease, ttl)
}

// refreshWith refreshes lease with script, a lock's or a slot's, over
// keys: the script returns the record's value, or nil when lease no
// longer holds it.
func (l *Locker) refreshWith(ctx context.Context, script *redis.Script, keys []string, lease lock.Lease, ttl time.Duration) (lock.Lease, error) {
	start := time.Now()
	v, err := l.run(ctx, script, keys, lease.Token, l.ttlArg(ttl), l.retArg).Text()
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
	if isSlotToken(lease.Token) {
		return l.releaseSlot(ctx, lease)
	}
	n, err := l.run(ctx, releaseScript, []string{l.lockKey(lease.Key)}, lease.Token).Int64()
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
	res, err := l.run(ctx, inspectScript, []string{l.lockKey(key)}).Slice()
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

// parseValue reads "<token> <acquired ms> <pid> <host> <fence>".
func parseValue(v string) value {
	f := strings.Fields(v)
	var out value
	if len(f) > 0 {
		out.token = f[0]
	}
	if len(f) > 1 {
		ms, _ := strconv.ParseInt(f[1], 10, 64)
		out.acquired = time.UnixMilli(ms)
	}
	if len(f) > 2 {
		out.pid, _ = strconv.Atoi(f[2])
	}
	if len(f) > 3 {
		out.host = f[3]
	}
	if len(f) > 4 {
		out.fence, _ = strconv.ParseUint(f[len(f)-1], 10, 64)
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
