package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// URL schemes a Redis URL may have. The plain and TLS forms of each
// topology differ only in the trailing "s" of "redis".
const (
	schemeRedis         = "redis"           // one server
	schemeRedisTLS      = "rediss"          // one server over TLS
	schemeUnix          = "unix"            // one server on a unix socket
	schemeSentinel      = "redis-sentinel"  // a master found through Sentinel
	schemeSentinelTLS   = "rediss-sentinel" // the same, every connection over TLS
	schemeCluster       = "redis-cluster"   // a Redis Cluster, seed nodes listed
	schemeClusterTLS    = "rediss-cluster"  // the same over TLS
	defaultSentinelPort = "26379"
	defaultRedisPort    = "6379"
)

// topology is what a Redis URL points at.
type topology int

const (
	single topology = iota + 1
	sentinel
	cluster
)

// redisURL is a parsed Redis URL: the go-redis URL that carries its options
// (timeouts, pool size, ...) and what go-redis's own URL forms cannot say.
type redisURL struct {
	topo  topology
	tls   bool
	hosts []string // every host:port listed (Sentinel and Cluster)
	// base is a go-redis URL (redis:// or rediss://, unix://) for the first
	// host, with the original credentials, path and query.
	base string
	user string
	pass string
}

// parseRedisURL parses raw without ever quoting it in an error, since it
// may carry a password.
func parseRedisURL(raw string) (redisURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return redisURL{}, errors.New("not a URL: want redis://, rediss://, redis-sentinel://, redis-cluster:// (or their rediss- forms) or unix://")
	}
	var u redisURL
	switch strings.ToLower(scheme) {
	case schemeRedis, schemeUnix:
		u.topo = single
	case schemeRedisTLS:
		u.topo, u.tls = single, true
	case schemeSentinel:
		u.topo = sentinel
	case schemeSentinelTLS:
		u.topo, u.tls = sentinel, true
	case schemeCluster:
		u.topo = cluster
	case schemeClusterTLS:
		u.topo, u.tls = cluster, true
	default:
		return redisURL{}, fmt.Errorf("unknown scheme %q: want redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster, rediss-cluster or unix", scheme)
	}
	if strings.ToLower(scheme) == schemeUnix {
		u.base = raw
	} else {
		authority, tail := rest, ""
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			authority, tail = rest[:i], rest[i:]
		}
		userinfo, hostList := "", authority
		if i := strings.LastIndex(authority, "@"); i >= 0 {
			userinfo, hostList = authority[:i+1], authority[i+1:]
		}
		if userinfo == "" && strings.Contains(tail, "@") {
			return redisURL{}, errors.New("an '@' after the host: if the password holds a '/', '?', '#' or '@', percent-encode them (%2F, %3F, %23, %40)")
		}
		hosts, err := splitHosts(hostList, u.topo)
		if err != nil {
			return redisURL{}, err
		}
		u.hosts = hosts
		goScheme := schemeRedis
		if u.tls {
			goScheme = schemeRedisTLS
		}
		u.base = goScheme + "://" + userinfo + hosts[0] + tail
	}
	parsed, err := url.Parse(u.base)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the whole URL, password included
		}
		return redisURL{}, err
	}
	if parsed.User != nil {
		u.user = parsed.User.Username()
		u.pass, _ = parsed.User.Password()
	}
	return u, nil
}

// splitHosts splits a comma-separated host list, giving a missing port its
// default. One server takes one host.
func splitHosts(list string, topo topology) ([]string, error) {
	if list == "" {
		if topo == single {
			return []string{net.JoinHostPort("localhost", defaultRedisPort)}, nil
		}
		return nil, errors.New("no host: list one or more host:port, separated by commas")
	}
	parts := strings.Split(list, ",")
	if topo == single && len(parts) > 1 {
		return nil, errors.New("several hosts in a redis:// URL: use redis-sentinel:// or redis-cluster:// to list more than one")
	}
	port := defaultRedisPort
	if topo == sentinel {
		port = defaultSentinelPort
	}
	hosts := make([]string, 0, len(parts))
	for _, p := range parts {
		h, pt, err := net.SplitHostPort(p)
		if err != nil {
			h, pt = strings.Trim(p, "[]"), port
		}
		if h == "" || strings.ContainsAny(h, "[]") {
			return nil, fmt.Errorf("bad host %q in the host list", p)
		}
		hosts = append(hosts, net.JoinHostPort(h, pt))
	}
	return hosts, nil
}

// redisError names the setting that was wrong and keeps secrets out.
func (c *Config) redisError(err error) error {
	return redactErr(fmt.Errorf("-redis-url [JOBLOCK_REDIS_URL] %s: %w", Redact(c.RedisURL), err), c.secrets()...)
}

// RedisClient returns a new client for the configured Redis: a
// *redis.Client for redis://, rediss:// and unix://, a Sentinel failover
// *redis.Client for redis-sentinel://, a *redis.ClusterClient for
// redis-cluster://. It does not connect. Errors name the setting that is
// wrong and never contain a password. The caller closes the client.
func (c *Config) RedisClient() (redis.UniversalClient, error) {
	u, err := parseRedisURL(c.RedisURL)
	if err != nil {
		return nil, c.redisError(err)
	}
	tlsConf, err := c.tlsConfig(u.tls)
	if err != nil {
		return nil, redactErr(err, c.secrets()...)
	}
	switch u.topo {
	case sentinel:
		return c.sentinelClient(u, tlsConf)
	case cluster:
		return c.clusterClient(u, tlsConf)
	}
	opt, err := redis.ParseURL(u.base)
	if err != nil {
		return nil, c.redisError(err)
	}
	if tlsConf != nil {
		tlsConf.ServerName = opt.TLSConfig.ServerName
		opt.TLSConfig = withURLTLS(tlsConf, opt.TLSConfig)
	}
	return redis.NewClient(opt), nil
}

func (c *Config) sentinelClient(u redisURL, tlsConf *tls.Config) (redis.UniversalClient, error) {
	// go-redis's failover URL takes its credentials as the Sentinels'; ours
	// are the data nodes', as in every other form.
	opt, err := redis.ParseFailoverURL(withAddrs(u))
	if err != nil {
		return nil, c.redisError(err)
	}
	if opt.MasterName == "" {
		return nil, c.redisError(errors.New("no master_name: add ?master_name=NAME, the name the Sentinels monitor"))
	}
	if u.user != "" || u.pass != "" {
		opt.Username, opt.Password = u.user, u.pass
	}
	opt.SentinelUsername, opt.SentinelPassword = "", c.SentinelPassword
	opt.TLSConfig = withURLTLS(tlsConf, opt.TLSConfig) // each node checked against its own address
	return redis.NewFailoverClient(opt), nil
}

func (c *Config) clusterClient(u redisURL, tlsConf *tls.Config) (redis.UniversalClient, error) {
	parsed, _ := url.Parse(u.base) // parsed once already in parseRedisURL
	if p := strings.Trim(parsed.Path, "/"); p != "" && p != "0" {
		return nil, c.redisError(fmt.Errorf("database %q: a Cluster has only database 0", p))
	}
	parsed.Path = ""
	u.base = parsed.String()
	opt, err := redis.ParseClusterURL(withAddrs(u))
	if err != nil {
		return nil, c.redisError(err)
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

// withAddrs returns u's go-redis URL with the hosts after the first as
// addr= query parameters, as go-redis's Sentinel and Cluster URLs list them.
func withAddrs(u redisURL) string {
	s := u.base
	for _, h := range u.hosts[1:] {
		if strings.Contains(s, "?") {
			s += "&"
		} else {
			s += "?"
		}
		s += "addr=" + url.QueryEscape(h)
	}
	return s
}

// tlsConfig builds the TLS settings from the CA and client certificate
// files, or returns nil when the URL does not ask for TLS. ServerName is
// left empty so that each connection checks the certificate against the
// address it dials.
func (c *Config) tlsConfig(useTLS bool) (*tls.Config, error) {
	if !useTLS {
		for _, f := range []struct{ name, val string }{{"-redis-ca [JOBLOCK_REDIS_CA]", c.RedisCA}, {"-redis-cert [JOBLOCK_REDIS_CERT]", c.RedisCert}, {"-redis-key [JOBLOCK_REDIS_KEY]", c.RedisKey}} {
			if f.val != "" {
				return nil, fmt.Errorf("%s is set but -redis-url is not a TLS URL: use rediss://, rediss-sentinel:// or rediss-cluster://", f.name)
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
			return nil, fmt.Errorf("client certificate %s with key %s: %w", c.RedisCert, c.RedisKey, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// ErrRedisUnreachable says Redis did not answer.
var ErrRedisUnreachable = errors.New("redis unreachable")

// Ping checks, once, that the Redis rdb talks to answers within a few
// seconds, and otherwise returns an error matching ErrRedisUnreachable that
// says where it looked (the URL redacted) and how to start a Redis. It uses
// rdb itself: no second client, no copied options.
func (c *Config) Ping(ctx context.Context, rdb redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return redactErr(fmt.Errorf("%w: no Redis answered at %s (%v); start one with `redis-server`, or point -redis-url / JOBLOCK_REDIS_URL at yours",
			ErrRedisUnreachable, Redact(c.RedisURL), err), c.secrets()...)
	}
	return nil
}

// secrets returns the configured secrets, in the forms they may appear in
// a message.
func (c *Config) secrets() []string {
	var s []string
	if u, err := parseRedisURL(c.RedisURL); err == nil && u.pass != "" {
		s = append(s, u.pass, url.QueryEscape(u.pass), url.PathEscape(u.pass))
	}
	if _, rest, ok := strings.Cut(c.RedisURL, "://"); ok {
		// A URL that does not parse may still hold a password: whatever
		// follows the first ':' of the user information.
		if userinfo, _, ok := cutUserinfo(rest); ok {
			if _, pw, ok := strings.Cut(userinfo, ":"); ok && pw != "" {
				s = append(s, pw)
			}
		}
	}
	if c.SentinelPassword != "" {
		s = append(s, c.SentinelPassword)
	}
	return s
}
