// Package engine opens the lock engine that the worker and lockctl are
// configured with, by flags or environment, with the same defaults.
package engine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
)

// Engine names.
const (
	File  = "file"
	Redis = "redis"
)

// Config selects and configures an engine.
type Config struct {
	// Engine is File or Redis. Env JOBLOCK_ENGINE, default File.
	Engine string
	// Dir is the file engine's lock directory. Env JOBLOCK_LOCK_DIR,
	// default DefaultDir().
	Dir string
	// SharedGroup lets users of one group share Dir (see
	// filelock.WithSharedGroup). Env JOBLOCK_SHARED_GROUP=1, default off:
	// Dir must be private to this user.
	SharedGroup bool
	// RedisURL is the Redis engine's server (redis://host:port/db). Env
	// JOBLOCK_REDIS_URL, default redis://127.0.0.1:6379/0.
	RedisURL string
	// Prefix is the Redis engine's key prefix. Env JOBLOCK_PREFIX, default
	// redislock.DefaultPrefix.
	Prefix string
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// DefaultDir is the file engine's directory when none is configured, one
// per user: $XDG_RUNTIME_DIR/joblock when XDG_RUNTIME_DIR names a
// directory (a private tmpfs on systemd hosts: fast, and emptied at
// reboot, which locks can afford), else joblock-<uid> in the system's
// temporary directory. filelock.New creates it with mode 0700 and refuses
// it if another user made it first.
func DefaultDir() string {
	if run := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(run) {
		if st, err := os.Stat(run); err == nil && st.IsDir() {
			return filepath.Join(run, "joblock")
		}
	}
	name := "joblock"
	if uid := os.Geteuid(); uid >= 0 {
		name += "-" + strconv.Itoa(uid)
	}
	return filepath.Join(os.TempDir(), name)
}

// DefaultRedisURL is the Redis URL when none is configured.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// FromEnv returns the configuration the environment gives, with defaults
// for what it does not.
func FromEnv() Config {
	return Config{
		Engine:      env("JOBLOCK_ENGINE", File),
		Dir:         env("JOBLOCK_LOCK_DIR", DefaultDir()),
		SharedGroup: isTrue(os.Getenv("JOBLOCK_SHARED_GROUP")),
		RedisURL:    env("JOBLOCK_REDIS_URL", DefaultRedisURL),
		Prefix:      env("JOBLOCK_PREFIX", redislock.DefaultPrefix),
	}
}

func isTrue(v string) bool {
	b, _ := strconv.ParseBool(v)
	return b
}

// Bind registers the engine flags on fs, their defaults taken from the
// environment (FromEnv).
func (c *Config) Bind(fs *flag.FlagSet) {
	d := FromEnv()
	fs.StringVar(&c.Engine, "engine", d.Engine, "lock engine: file (one host) or redis (many hosts) [JOBLOCK_ENGINE]")
	fs.StringVar(&c.Dir, "lock-dir", d.Dir, "file engine: lock directory, private to this user [JOBLOCK_LOCK_DIR]")
	fs.BoolVar(&c.SharedGroup, "shared-group", d.SharedGroup, "file engine: let the users of the lock directory's group share it [JOBLOCK_SHARED_GROUP=1]")
	fs.StringVar(&c.RedisURL, "redis-url", d.RedisURL, "redis engine: server URL [JOBLOCK_REDIS_URL]")
	fs.StringVar(&c.Prefix, "prefix", d.Prefix, "redis engine: key prefix [JOBLOCK_PREFIX]")
}

// Env returns the environment that makes FromEnv return c, for starting
// processes on the same engine.
func (c Config) Env() []string {
	return []string{"JOBLOCK_ENGINE=" + c.Engine, "JOBLOCK_LOCK_DIR=" + c.Dir,
		"JOBLOCK_SHARED_GROUP=" + strconv.FormatBool(c.SharedGroup),
		"JOBLOCK_REDIS_URL=" + c.RedisURL, "JOBLOCK_PREFIX=" + c.Prefix}
}

// Describe says which engine c opens, for logs.
func (c *Config) Describe() string {
	if c.Engine == Redis {
		return fmt.Sprintf("redis engine at %s (prefix %q): coordinates processes on every host using this Redis", c.RedisURL, c.Prefix)
	}
	if c.SharedGroup {
		return fmt.Sprintf("file engine in %s, shared by its group: coordinates processes on this host only", c.Dir)
	}
	return fmt.Sprintf("file engine in %s: coordinates processes on this host only", c.Dir)
}

// Open opens the configured engine and checks that it can be used: the
// directory for the file engine, a PING for Redis. close releases what it
// holds open (no lock).
func (c *Config) Open(ctx context.Context) (l lock.Locker, close func() error, err error) {
	switch c.Engine {
	case File:
		var opts []filelock.Option
		if c.SharedGroup {
			opts = append(opts, filelock.WithSharedGroup())
		}
		fl, err := filelock.New(c.Dir, opts...)
		if errors.Is(err, filelock.ErrUnsafeDir) && !c.SharedGroup {
			err = fmt.Errorf("%w (WithSharedGroup is -shared-group or JOBLOCK_SHARED_GROUP=1 here; -lock-dir or JOBLOCK_LOCK_DIR picks another directory)", err)
		}
		if err != nil {
			return nil, nil, err
		}
		return fl, fl.Close, nil
	case Redis:
		rdb, err := c.RedisClient()
		if err != nil {
			return nil, nil, err
		}
		if err := Ping(ctx, rdb, c.RedisURL); err != nil {
			_ = rdb.Close()
			return nil, nil, err
		}
		return redislock.New(rdb, redislock.WithPrefix(c.Prefix)), rdb.Close, nil
	}
	return nil, nil, fmt.Errorf("unknown lock engine %q: want %q or %q", c.Engine, File, Redis)
}

// RedisClient returns a client for RedisURL.
func (c *Config) RedisClient() (*redis.Client, error) {
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %w", c.RedisURL, err)
	}
	return redis.NewClient(opt), nil
}

// ErrRedisUnreachable says Redis did not answer.
var ErrRedisUnreachable = errors.New("redis unreachable")

// Ping checks, once and without retries, that the Redis rdb talks to
// answers within a few seconds, and otherwise says where it looked and how
// to start one.
func Ping(ctx context.Context, rdb *redis.Client, url string) error {
	opt := *rdb.Options()
	opt.MaxRetries = -1
	opt.DialTimeout = 2 * time.Second
	probe := redis.NewClient(&opt)
	defer probe.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := probe.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: no Redis answered at %s (%v); start one with `redis-server` or `docker run -p 6379:6379 redis:7`, or point JOBLOCK_REDIS_URL at yours",
			ErrRedisUnreachable, url, err)
	}
	return nil
}
