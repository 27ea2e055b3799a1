package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// target is one of the configured Redis URLs and the setting it comes
// from, for errors.
type target struct {
	url     string
	setting string // "-flag [VARIABLE]"
}

// asynqTarget is the Redis asynq uses.
func (c *Config) asynqTarget() target {
	return target{c.RedisURL, "-redis-url [JOBLOCK_REDIS_URL]"}
}

// lockTarget is the Redis the Redis engine keeps its locks in.
func (c *Config) lockTarget() target {
	if c.LockRedisURL == "" {
		return c.asynqTarget()
	}
	return target{c.LockRedisURL, "-lock-redis-url [JOBLOCK_LOCK_REDIS_URL]"}
}

// redisError names the setting that was wrong and keeps secrets out.
func (c *Config) redisError(tg target, err error) error {
	return redactErr(fmt.Errorf("%s %s: %w", tg.setting, Redact(tg.url), err), c.secrets()...)
}

// RedisClient returns a new client for the configured Redis (RedisURL): a
// *redis.Client for redis://, rediss:// and unix://, a Sentinel failover
// *redis.Client for redis-sentinel://, a *redis.ClusterClient for
// redis-cluster://. It does not connect. A password from
// JOBLOCK_REDIS_PASSWORD or -redis-password-file wins over the URL's.
// Errors name the setting that is wrong and never contain a password. The
// caller closes the client.
func (c *Config) RedisClient() (redis.UniversalClient, error) { return c.client(c.asynqTarget()) }

// LockRedisClient is RedisClient for the Redis of the Redis engine's
// locks: LockRedisURL's, or RedisURL's when that is empty.
func (c *Config) LockRedisClient() (redis.UniversalClient, error) { return c.client(c.lockTarget()) }

func (c *Config) client(tg target) (redis.UniversalClient, error) {
	u, err := parseRedisURL(tg.url)
	if err != nil {
		return nil, c.redisError(tg, err)
	}
	pw, err := c.redisPassword()
	if err != nil {
		return nil, err
	}
	if pw != "" {
		u.pass = pw
	}
	tlsConf, err := c.tlsConfig(u.tls)
	if err != nil {
		return nil, redactErr(err, c.secrets()...)
	}
	switch u.topo {
	case sentinel:
		return c.sentinelClient(tg, u, tlsConf)
	case cluster:
		return c.clusterClient(tg, u, tlsConf)
	}
	opt, err := redis.ParseURL(u.goRedisURL())
	if err != nil {
		return nil, c.redisError(tg, err)
	}
	if tlsConf != nil {
		tlsConf.ServerName = opt.TLSConfig.ServerName
		opt.TLSConfig = withURLTLS(tlsConf, opt.TLSConfig)
	}
	return redis.NewClient(opt), nil
}

func (c *Config) sentinelClient(tg target, u redisURL, tlsConf *tls.Config) (redis.UniversalClient, error) {
	// go-redis's failover URL takes its credentials as the Sentinels'; ours
	// are the data nodes', as in every other form.
	opt, err := redis.ParseFailoverURL(u.goRedisURL())
	if err != nil {
		return nil, c.redisError(tg, err)
	}
	if opt.MasterName == "" {
		return nil, c.redisError(tg, errors.New("no master_name: add ?master_name=NAME, the name the Sentinels monitor"))
	}
	if u.user != "" || u.pass != "" {
		opt.Username, opt.Password = u.user, u.pass
	}
	opt.SentinelUsername, opt.SentinelPassword = "", c.SentinelPassword
	opt.TLSConfig = withURLTLS(tlsConf, opt.TLSConfig) // each node checked against its own address
	return redis.NewFailoverClient(opt), nil
}

func (c *Config) clusterClient(tg target, u redisURL, tlsConf *tls.Config) (redis.UniversalClient, error) {
	if u.db != 0 {
		return nil, c.redisError(tg, fmt.Errorf("database %d: a Cluster has only database 0", u.db))
	}
	opt, err := redis.ParseClusterURL(u.goRedisURL())
	if err != nil {
		return nil, c.redisError(tg, err)
	}
	opt.TLSConfig = withURLTLS(tlsConf, opt.TLSConfig)
	return redis.NewClusterClient(opt), nil
}

// withURLTLS keeps what the URL itself said about TLS (go-redis's
// skip_verify option) in ours.
func withURLTLS(ours, fromURL *tls.Config) *tls.Config {
	if ours != nil && fromURL != nil {
		ours.InsecureSkipVerify = fromURL.InsecureSkipVerify
	}
	return ours
}

// tlsConfig builds the TLS settings from the CA and client certificate
// files, or returns nil when the URL does not ask for TLS. ServerName is
// left empty so that each connection checks the certificate against the
// address it dials.
func (c *Config) tlsConfig(useTLS bool) (*tls.Config, error) {
	if !useTLS {
		if c.anyTLS() {
			return nil, nil // the files are the other URL's
		}
		which := "-redis-url is not a TLS URL"
		if c.LockRedisURL != "" {
			which = "neither -redis-url nor -lock-redis-url is a TLS URL"
		}
		for _, f := range []struct{ name, val string }{{"-redis-ca [JOBLOCK_REDIS_CA]", c.RedisCA}, {"-redis-cert [JOBLOCK_REDIS_CERT]", c.RedisCert}, {"-redis-key [JOBLOCK_REDIS_KEY]", c.RedisKey}} {
			if f.val != "" {
				return nil, fmt.Errorf("%s is set but %s: use rediss://, rediss-sentinel:// or rediss-cluster://", f.name, which)
			}
		}
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.RedisCA != "" {
		pem, err := os.ReadFile(c.RedisCA)
		if err != nil {
			return nil, fmt.Errorf("-redis-ca [JOBLOCK_REDIS_CA]: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-redis-ca [JOBLOCK_REDIS_CA] %s: no PEM certificate in it", c.RedisCA)
		}
	}
	if (c.RedisCert == "") != (c.RedisKey == "") {
		return nil, errors.New("-redis-cert [JOBLOCK_REDIS_CERT] and -redis-key [JOBLOCK_REDIS_KEY] go together: set both for a client certificate, or neither")
	}
	if c.RedisCert != "" {
		cert, err := tls.LoadX509KeyPair(c.RedisCert, c.RedisKey)
		if err != nil {
			return nil, fmt.Errorf("-redis-cert [JOBLOCK_REDIS_CERT] %s with -redis-key [JOBLOCK_REDIS_KEY] %s: %w", c.RedisCert, c.RedisKey, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// anyTLS says whether a configured URL asks for TLS.
func (c *Config) anyTLS() bool {
	for _, raw := range []string{c.RedisURL, c.LockRedisURL} {
		if u, err := parseRedisURL(raw); err == nil && u.tls {
			return true
		}
	}
	return false
}

// Errors Ping returns, each with a message saying what to check.
var (
	// ErrRedisUnreachable says no Redis answered: nothing listening, or
	// nothing that answered in time.
	ErrRedisUnreachable = errors.New("redis unreachable")
	// ErrRedisAuth says a Redis answered and refused the credentials.
	ErrRedisAuth = errors.New("redis refused the credentials")
	// ErrRedisTLS says the TLS handshake with Redis failed: the server's
	// certificate was not trusted, or the server refused the client's.
	ErrRedisTLS = errors.New("redis TLS handshake failed")
	// ErrRedisRefused says a Redis answered with an error other than a
	// refusal of the credentials: a database number beyond the server's,
	// a server still loading its data, an unknown option.
	ErrRedisRefused = errors.New("redis answered with an error")
)

// Ping checks, once, that the Redis rdb talks to (RedisClient's) answers
// within a few seconds. Otherwise it returns an error that says where it
// looked (the URL redacted) and what to do, matching ErrRedisAuth when the
// server refused the credentials, ErrRedisTLS when the TLS handshake
// failed, ErrRedisRefused when the server answered with another error, and
// ErrRedisUnreachable when nothing answered. It uses rdb
// itself: no second client, no copied options.
func (c *Config) Ping(ctx context.Context, rdb redis.UniversalClient) error {
	return c.ping(ctx, rdb, c.asynqTarget())
}

// PingLock is Ping for a client LockRedisClient returned.
func (c *Config) PingLock(ctx context.Context, rdb redis.UniversalClient) error {
	return c.ping(ctx, rdb, c.lockTarget())
}

func (c *Config) ping(ctx context.Context, rdb redis.UniversalClient, tg target) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := rdb.Ping(ctx).Err()
	if err == nil {
		return nil
	}
	where := Redact(tg.url)
	u, _ := parseRedisURL(tg.url) // parsed already by the client
	// A server that wants a client certificate and gets none, or one it
	// does not trust, sends an alert after a TLS 1.3 handshake that this
	// side may never read: it sees the connection closed instead.
	closed := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	switch {
	case isAuthError(err):
		err = fmt.Errorf("%w at %s (%v): check the password "+
			"(JOBLOCK_REDIS_PASSWORD, -redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE] or the one in %s) and the user name",
			ErrRedisAuth, where, err, tg.setting)
	case isTLSError(err) || (u.tls && closed):
		err = fmt.Errorf("%w with %s (%v): check -redis-ca [JOBLOCK_REDIS_CA] (the CA that signed the server's certificate), "+
			"that the URL's host is one the certificate names, and -redis-cert / -redis-key [JOBLOCK_REDIS_CERT, JOBLOCK_REDIS_KEY] if the server asks for a client certificate",
			ErrRedisTLS, where, err)
	case closed:
		err = fmt.Errorf("%w: the server at %s closed the connection without answering (%v): if it speaks only TLS, use a rediss:// URL",
			ErrRedisUnreachable, where, err)
	case isReply(err):
		err = fmt.Errorf("%w at %s (%v): check the database number and the options in %s, and that the server is ready",
			ErrRedisRefused, where, err, tg.setting)
	case u.tls && errors.Is(err, context.DeadlineExceeded):
		// A server that does not speak TLS waits for the rest of a command
		// that a TLS greeting never ends.
		err = fmt.Errorf("%w: no Redis completed a TLS handshake at %s (%v): if the server there does not speak TLS, use a redis:// URL; "+
			"else start one, or point %s at yours", ErrRedisUnreachable, where, err, tg.setting)
	default:
		err = fmt.Errorf("%w: no Redis answered at %s (%v); start one with `redis-server`, or point %s at yours",
			ErrRedisUnreachable, where, err, tg.setting)
	}
	return redactErr(err, c.secrets()...)
}

// isAuthError says whether err is a server refusing a client's
// credentials: a password it does not know, none when it wants one, or one
// when it has none.
func isAuthError(err error) bool {
	return redis.IsAuthError(err) || redis.HasErrorPrefix(err, "ERR AUTH") || redis.HasErrorPrefix(err, "ERR invalid password")
}

// isReply says whether err is an error the server sent as its answer.
func isReply(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}

// isTLSError says whether err comes from a failed TLS handshake: a
// certificate this side does not trust, an alert from the server (which
// refused ours), or a server that does not speak TLS.
func isTLSError(err error) bool {
	var (
		verify *tls.CertificateVerificationError
		header tls.RecordHeaderError
		op     *net.OpError
	)
	return errors.As(err, &verify) || errors.As(err, &header) || (errors.As(err, &op) && op.Op == "remote error")
}

// secrets returns the configured secrets, in the forms they may appear in
// a message.
func (c *Config) secrets() []string {
	var s []string
	add := func(v string) {
		if v != "" {
			s = append(s, v, url.QueryEscape(v), url.PathEscape(v))
		}
	}
	for _, raw := range []string{c.RedisURL, c.LockRedisURL} {
		if u, err := parseRedisURL(raw); err == nil {
			add(u.pass)
			for _, p := range secretParams {
				add(u.query.Get(p))
			}
		}
		if _, rest, ok := strings.Cut(raw, "://"); ok {
			// A URL that does not parse may still hold a password: whatever
			// follows the first ':' of the user information.
			if userinfo, _, ok := cutUserinfo(rest); ok {
				if _, pw, ok := strings.Cut(userinfo, ":"); ok {
					add(pw)
				}
			}
		}
	}
	if pw, err := c.redisPassword(); err == nil {
		add(pw)
	}
	add(c.SentinelPassword)
	return s
}

// redisPassword returns the password from JOBLOCK_REDIS_PASSWORD or
// -redis-password-file, or "" when neither is set. A file's trailing line
// break is not part of the password.
func (c *Config) redisPassword() (string, error) {
	if c.RedisPasswordFile == "" {
		return c.RedisPassword, nil
	}
	if c.RedisPassword != "" {
		return "", errors.New("JOBLOCK_REDIS_PASSWORD and -redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE] are both set: set one of them")
	}
	b, err := os.ReadFile(c.RedisPasswordFile)
	if err != nil {
		return "", fmt.Errorf("-redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE]: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("-redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE] %s is empty", c.RedisPasswordFile)
	}
	return pw, nil
}
