// Package engine holds the configuration the worker and lockctl share, by
// flags or environment with the same defaults: which lock engine, and the
// Redis that asynq and the Redis engine use (one, unless the locks get a
// Redis of their own).
//
// # Redis URLs
//
//	redis://[[user]:password@]host[:port][/db][?option=value...]
//	rediss://...                                  TLS
//	redis-sentinel://[[user]:password@]host[:port][,host[:port]...][/db]?master_name=NAME
//	rediss-sentinel://...                         TLS to the Sentinels and the master
//	redis-cluster://[[user]:password@]host[:port][,host[:port]...]
//	rediss-cluster://...                          TLS
//	unix://[[user]:password@]/path/to/redis.sock[?db=N]
//
// The credentials are always the data nodes'. A password given apart from
// the URL, in JOBLOCK_REDIS_PASSWORD or in the file -redis-password-file
// names, wins over the URL's (over both URLs', when the locks have a Redis
// of their own: -lock-redis-url) and needs no percent-encoding. Sentinels that
// require a password of their own get it from
// JOBLOCK_REDIS_SENTINEL_PASSWORD. A Sentinel host without a port gets
// 26379, any other 6379. Options are
// go-redis's URL options (dial_timeout, read_timeout, pool_size, ...).
// For TLS, JOBLOCK_REDIS_CA names a PEM file of CAs to trust instead of the
// system's, and JOBLOCK_REDIS_CERT with JOBLOCK_REDIS_KEY a client
// certificate; each certificate is checked against the address dialled.
//
// Nothing this package prints or returns contains a password: URLs are
// shown through Redact.
package engine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// Config selects and configures an engine and the Redis behind it.
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
	// RedisURL is the Redis server, in one of the forms the package
	// comment lists. Env JOBLOCK_REDIS_URL, default DefaultRedisURL.
	RedisURL string
	// LockRedisURL is the Redis of the Redis engine's locks when they are
	// not to share RedisURL's (say, a Redis without persistence for locks
	// beside a persistent one for asynq's queues), in the same forms. Env
	// JOBLOCK_LOCK_REDIS_URL, default "": RedisURL's.
	LockRedisURL string
	// RestartGrace is the Redis engine's restart grace (see
	// redislock.WithRestartGrace): how long after a Redis node started it
	// grants no new lock there; 0 disables it. Env JOBLOCK_RESTART_GRACE,
	// default redislock.DefaultRestartGrace.
	RestartGrace time.Duration
	// Prefix is the Redis engine's key prefix. Env JOBLOCK_PREFIX, default
	// redislock.DefaultPrefix.
	Prefix string
	// RedisCA is a PEM file of CAs to trust for TLS. Env JOBLOCK_REDIS_CA,
	// default none: the system's roots.
	RedisCA string
	// RedisCert and RedisKey are a client certificate and its key, for a
	// Redis that asks for one. Env JOBLOCK_REDIS_CERT, JOBLOCK_REDIS_KEY,
	// default none.
	RedisCert, RedisKey string
	// RedisPassword is the data nodes' password, winning over the URL's.
	// Env JOBLOCK_REDIS_PASSWORD only (a flag would show it in ps),
	// default none.
	RedisPassword string
	// RedisPasswordFile is a file holding the data nodes' password (a
	// trailing line break is ignored), winning over the URL's; set it or
	// RedisPassword, not both. Env JOBLOCK_REDIS_PASSWORD_FILE, default
	// none.
	RedisPasswordFile string
	// SentinelPassword is the Sentinels' own password, if they have one.
	// Env JOBLOCK_REDIS_SENTINEL_PASSWORD only (a flag would show it in
	// ps), default none.
	SentinelPassword string

	// badEnv and badGrace are variables FromEnv could not read
	// (JOBLOCK_SHARED_GROUP, JOBLOCK_RESTART_GRACE), reported by Check
	// unless the flag that stands for it was given.
	badEnv, badGrace error
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// DefaultDir is the file engine's directory when none is configured:
// /dev/shm/joblock-<uid> where /dev/shm is a tmpfs this user can create
// entries in (locks need not outlive a reboot, and a new lock file costs
// far less on a tmpfs than on a disk filesystem: see the README's
// performance section), else /tmp/joblock-<uid>. It reads no environment
// variable ($XDG_RUNTIME_DIR, $TMPDIR): processes of one user must agree
// on the directory whatever their environment, or their locks would not
// exclude each other. filelock.New creates it with mode 0700 and refuses
// it if another user made it first.
func DefaultDir() string {
	name := "joblock-" + strconv.Itoa(os.Geteuid())
	if usableTmpfs(sharedMemory) {
		return filepath.Join(sharedMemory, name)
	}
	return filepath.Join(fallbackTemp, name)
}

const (
	// sharedMemory is where Linux mounts a tmpfs for every user.
	sharedMemory = "/dev/shm"
	// fallbackTemp is the system's temporary directory, named literally:
	// $TMPDIR differs between the environments of one user's processes.
	fallbackTemp = "/tmp"
)

// usableTmpfs reports whether path is a directory on a tmpfs in which
// this process may create entries.
func usableTmpfs(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir() && onTmpfs(path) && writable(path)
}

// envBool reads a boolean variable: unset is false, and a value that is
// not 1/0 or true/false is an error naming it.
func envBool(name string) (bool, error) {
	v := os.Getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want 1, 0, true or false", name, v)
	}
	return b, nil
}

// envDuration reads a duration variable: unset is def, and a value that
// does not parse is an error naming it.
func envDuration(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return def, fmt.Errorf("%s=%q: want a duration such as 15s or 1m, or 0", name, v)
	}
	return d, nil
}

// durationFlag is a duration flag whose setting wins over a bad variable.
type durationFlag struct {
	v   *time.Duration
	bad *error
}

func (d durationFlag) String() string {
	if d.v == nil {
		return "0s"
	}
	return d.v.String()
}

func (d durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return errors.New("must not be negative")
	}
	*d.v, *d.bad = v, nil
	return nil
}

// boolFlag is a boolean flag whose setting wins over a bad variable.
type boolFlag struct {
	v   *bool
	bad *error
}

func (b boolFlag) String() string {
	if b.v == nil {
		return "false"
	}
	return strconv.FormatBool(*b.v)
}

func (b boolFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*b.v, *b.bad = v, nil
	return nil
}

func (b boolFlag) IsBoolFlag() bool { return true }

// DefaultRedisURL is the Redis URL when none is configured.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// FromEnv returns the configuration the environment gives, with defaults
// for what it does not.
func FromEnv() Config {
	shared, badEnv := envBool("JOBLOCK_SHARED_GROUP")
	grace, badGrace := envDuration("JOBLOCK_RESTART_GRACE", redislock.DefaultRestartGrace)
	return Config{
		badEnv:            badEnv,
		badGrace:          badGrace,
		LockRedisURL:      os.Getenv("JOBLOCK_LOCK_REDIS_URL"),
		RestartGrace:      grace,
		Engine:            env("JOBLOCK_ENGINE", File),
		Dir:               env("JOBLOCK_LOCK_DIR", DefaultDir()),
		SharedGroup:       shared,
		RedisURL:          env("JOBLOCK_REDIS_URL", DefaultRedisURL),
		Prefix:            env("JOBLOCK_PREFIX", redislock.DefaultPrefix),
		RedisCA:           os.Getenv("JOBLOCK_REDIS_CA"),
		RedisCert:         os.Getenv("JOBLOCK_REDIS_CERT"),
		RedisKey:          os.Getenv("JOBLOCK_REDIS_KEY"),
		RedisPassword:     os.Getenv("JOBLOCK_REDIS_PASSWORD"),
		RedisPasswordFile: os.Getenv("JOBLOCK_REDIS_PASSWORD_FILE"),
		SentinelPassword:  os.Getenv("JOBLOCK_REDIS_SENTINEL_PASSWORD"),
	}
}

// Bind registers the engine and Redis flags on fs, their defaults taken
// from the environment (FromEnv). redisUse says, in -redis-url's help,
// what the program uses Redis for.
func (c *Config) Bind(fs *flag.FlagSet, redisUse string) {
	*c = FromEnv()
	fs.StringVar(&c.Engine, "engine", c.Engine, "lock engine: file (one host) or redis (many hosts) [JOBLOCK_ENGINE]")
	fs.StringVar(&c.Dir, "lock-dir", c.Dir, "file engine: lock directory, private to this user [JOBLOCK_LOCK_DIR]")
	fs.Var(boolFlag{&c.SharedGroup, &c.badEnv}, "shared-group", "file engine: let the users of the lock directory's group share it [JOBLOCK_SHARED_GROUP=1]")
	fs.Var(secretURL{&c.RedisURL}, "redis-url", redisUse+": a redis://, rediss:// (TLS), redis-sentinel://, redis-cluster:// or unix:// `URL`, "+
		"a password in it percent-encoded ('#' as %23, ...) [JOBLOCK_REDIS_URL]")
	fs.Var(secretURL{&c.LockRedisURL}, "lock-redis-url", "redis engine: the Redis of the locks, when not -redis-url's, a `URL` of the same forms; "+
		"it may run without persistence (see -restart-grace), which asynq's Redis must not [JOBLOCK_LOCK_REDIS_URL]")
	fs.Var(durationFlag{&c.RestartGrace, &c.badGrace}, "restart-grace", "redis engine: after a Redis node starts, no new lock on it for this long, "+
		"so that the holders of locks a restart lost learn of it first: at least the longest lease of any holder; 0 disables [JOBLOCK_RESTART_GRACE]")
	fs.StringVar(&c.Prefix, "prefix", c.Prefix, "redis engine: key prefix [JOBLOCK_PREFIX]")
	fs.StringVar(&c.RedisCA, "redis-ca", c.RedisCA, "TLS: PEM file of CAs to trust instead of the system's [JOBLOCK_REDIS_CA]")
	fs.StringVar(&c.RedisCert, "redis-cert", c.RedisCert, "TLS: client certificate (PEM), with -redis-key [JOBLOCK_REDIS_CERT]")
	fs.StringVar(&c.RedisKey, "redis-key", c.RedisKey, "TLS: client certificate's key (PEM) [JOBLOCK_REDIS_KEY]")
	fs.StringVar(&c.RedisPasswordFile, "redis-password-file", c.RedisPasswordFile, "a `FILE` holding Redis's password, which wins over the URL's; "+
		"or give the password itself in JOBLOCK_REDIS_PASSWORD [JOBLOCK_REDIS_PASSWORD_FILE]")
}

// secretURL is a flag.Value for a URL that may hold a password: the help
// text shows its default redacted.
type secretURL struct{ s *string }

func (v secretURL) String() string {
	if v.s == nil {
		return ""
	}
	return Redact(*v.s)
}

func (v secretURL) Set(s string) error { *v.s = s; return nil }

// Env returns the environment that makes FromEnv return c, for starting
// processes on the same engine.
func (c Config) Env() []string {
	return []string{"JOBLOCK_ENGINE=" + c.Engine, "JOBLOCK_LOCK_DIR=" + c.Dir,
		"JOBLOCK_SHARED_GROUP=" + strconv.FormatBool(c.SharedGroup),
		"JOBLOCK_REDIS_URL=" + c.RedisURL, "JOBLOCK_LOCK_REDIS_URL=" + c.LockRedisURL,
		"JOBLOCK_RESTART_GRACE=" + c.RestartGrace.String(), "JOBLOCK_PREFIX=" + c.Prefix,
		"JOBLOCK_REDIS_CA=" + c.RedisCA, "JOBLOCK_REDIS_CERT=" + c.RedisCert, "JOBLOCK_REDIS_KEY=" + c.RedisKey,
		"JOBLOCK_REDIS_PASSWORD=" + c.RedisPassword, "JOBLOCK_REDIS_PASSWORD_FILE=" + c.RedisPasswordFile,
		"JOBLOCK_REDIS_SENTINEL_PASSWORD=" + c.SentinelPassword}
}

// Check reports a configuration that cannot work, before anything
// connects: an unknown engine and, for each Redis that is used (RedisURL's
// when needRedis is true, the locks' when the engine is Redis), a URL or
// TLS setting that does not parse or load. Errors name the flag and
// environment variable at fault.
func (c *Config) Check(needRedis bool) error {
	if c.badEnv != nil {
		return fmt.Errorf("-shared-group: %w", c.badEnv)
	}
	if c.badGrace != nil {
		return fmt.Errorf("-restart-grace: %w", c.badGrace)
	}
	switch c.Engine {
	case File, Redis:
	default:
		return unknownEngine(c.Engine)
	}
	if c.Engine == Redis {
		if err := redislock.ValidatePrefix(c.Prefix); err != nil {
			return fmt.Errorf("-prefix [JOBLOCK_PREFIX]: %w", err)
		}
	}
	if c.RestartGrace < 0 {
		return fmt.Errorf("-restart-grace [JOBLOCK_RESTART_GRACE] %s: must not be negative (0 disables it)", c.RestartGrace)
	}
	var clients []func() (redis.UniversalClient, error)
	if needRedis {
		clients = append(clients, c.RedisClient)
	}
	if c.Engine == Redis && (c.LockRedisURL != "" || !needRedis) {
		clients = append(clients, c.LockRedisClient)
	}
	for _, open := range clients {
		rdb, err := open()
		if err != nil {
			return err
		}
		if err := rdb.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Describe says which engine c opens, for logs, with no secret in it.
func (c *Config) Describe() string {
	if c.Engine == Redis {
		return fmt.Sprintf("redis engine at %s (prefix %q, restart grace %s): coordinates processes on every host using this Redis",
			Redact(c.lockTarget().url), c.Prefix, c.RestartGrace)
	}
	if c.SharedGroup {
		return fmt.Sprintf("file engine in %s, shared by its group: coordinates processes on this host only", c.Dir)
	}
	return fmt.Sprintf("file engine in %s: coordinates processes on this host only", c.Dir)
}

// Open opens the configured engine on a Redis client of its own (the
// Redis engine, on LockRedisClient's Redis) and checks that it can be
// used: the directory for the file engine, a PING for Redis. close
// releases what it holds open (no lock).
func (c *Config) Open(ctx context.Context) (l lock.Locker, close func() error, err error) {
	if err := c.Check(false); err != nil {
		return nil, nil, err
	}
	if c.Engine != Redis {
		return c.OpenWith(nil)
	}
	rdb, err := c.LockRedisClient()
	if err != nil {
		return nil, nil, err
	}
	if err := c.PingLock(ctx, rdb); err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	l, _, err = c.OpenWith(rdb)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return l, rdb.Close, nil
}

// OpenWith opens the configured engine, the Redis engine on rdb (a
// LockRedisClient, which the caller has checked with PingLock and closes
// itself; it may be nil for the file engine). close releases what the
// engine holds open, never rdb.
func (c *Config) OpenWith(rdb redis.UniversalClient) (l lock.Locker, close func() error, err error) {
	switch c.Engine {
	case File:
		var opts []filelock.Option
		if c.SharedGroup {
			opts = append(opts, filelock.WithSharedGroup())
		}
		fl, err := filelock.New(c.Dir, opts...)
		switch {
		case !errors.Is(err, filelock.ErrUnsafeDir):
		case strings.Contains(err.Error(), "WithSharedGroup") && !c.SharedGroup:
			// A group-writable directory: sharing it may be the point.
			err = fmt.Errorf("%w (WithSharedGroup is -shared-group or JOBLOCK_SHARED_GROUP=1 here; -lock-dir or JOBLOCK_LOCK_DIR picks another directory)", err)
		default:
			err = fmt.Errorf("%w (-lock-dir or JOBLOCK_LOCK_DIR picks another directory)", err)
		}
		if err != nil {
			return nil, nil, err
		}
		return fl, fl.Close, nil
	case Redis:
		if rdb == nil {
			return nil, nil, fmt.Errorf("engine: the redis engine needs a Redis client")
		}
		return redislock.New(rdb, redislock.WithPrefix(c.Prefix), redislock.WithRestartGrace(c.RestartGrace)), func() error { return nil }, nil
	}
	return nil, nil, unknownEngine(c.Engine)
}

func unknownEngine(name string) error {
	return fmt.Errorf("-engine [JOBLOCK_ENGINE]: unknown lock engine %q: want %q or %q", name, File, Redis)
}
