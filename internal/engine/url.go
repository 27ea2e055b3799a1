package engine

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
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

// redisURL is a Redis URL taken apart: what go-redis's own URL forms
// cannot say (several hosts, Sentinel and Cluster over TLS), and the rest,
// decoded.
type redisURL struct {
	topo   topology
	tls    bool
	unix   bool
	user   string
	pass   string
	hosts  []string // host:port each, at least one; none for unix://
	socket string   // unix:// only: the socket's path
	db     int
	query  url.Values // go-redis's options (dial_timeout, pool_size, ...)
}

// encodeHint says how to write a password that breaks a URL.
const encodeHint = "special characters in a user name or password must be percent-encoded " +
	"('#' as %23, '@' as %40, '/' as %2F, '?' as %3F, '%' as %25, a space as %20), " +
	"or give the password in JOBLOCK_REDIS_PASSWORD or -redis-password-file instead"

// Why a Redis URL does not parse. None of them quotes the URL: any part of
// it may be a password, and a password with special characters is what
// most often breaks one.
var (
	errNotURL = errors.New("not a URL: want redis://, rediss://, redis-sentinel://, redis-cluster:// " +
		"(or their rediss- forms) or unix://")
	errFragment       = errors.New("a '#' in it, which would end the URL there: " + encodeHint)
	errAtAfterHost    = errors.New("an '@' after the host: " + encodeHint)
	errUserinfoChar   = errors.New("a character a URL does not allow in a user name or password: " + encodeHint)
	errUserinfoEscape = errors.New("a '%' in the user name or password that does not start a " +
		"percent-escape of two hex digits: " + encodeHint)
	errNoHost   = errors.New("no host: give HOST[:PORT] (Sentinel and Cluster: one or more, separated by commas)")
	errSeveral  = errors.New("several hosts in a redis:// URL: use redis-sentinel:// or redis-cluster:// to list more than one")
	errBrackets = errors.New("unbalanced brackets: an IPv6 address goes in brackets, as in [::1] or [::1]:6379")
	errIPv6     = errors.New("what is in brackets is not an IPv6 address")
	errBareIPv6 = errors.New("an IPv6 address without brackets: write it as [::1]:6379")
	errHostChar = errors.New("a host name with a character other than letters, digits, '-', '.' and '_'")
	errPort     = errors.New("a port that is not a number from 1 to 65535")
	errDB       = errors.New("the database, after the host, is not a number: want /0, /1 and so on")
	errQuery    = errors.New("the options after '?' do not parse: want name=value pairs joined by '&', " +
		"with '%', '&', ';' and '#' in a value percent-encoded")
	errSocket = errors.New("no socket path: want unix://[[USER]:PASSWORD@]/path/to/redis.sock[?db=N]")
)

// parseRedisURL takes raw apart, checking every part, and never quotes it
// in an error.
func parseRedisURL(raw string) (redisURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return redisURL{}, errNotURL
	}
	u, err := fromScheme(scheme)
	if err != nil {
		return redisURL{}, err
	}
	if strings.Contains(rest, "#") {
		return redisURL{}, errFragment
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if strings.Contains(tail, "@") {
		// The password held a '/' or a '?', and the URL was cut there.
		return redisURL{}, errAtAfterHost
	}
	hostList := authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		if u.user, u.pass, err = parseUserinfo(authority[:i]); err != nil {
			return redisURL{}, err
		}
		hostList = authority[i+1:]
	}
	path, query, _ := strings.Cut(tail, "?")
	if u.query, err = url.ParseQuery(query); err != nil {
		return redisURL{}, errQuery
	}
	if u.unix {
		u.socket, err = socketPath(hostList, path)
		return u, err
	}
	if u.hosts, err = splitHosts(hostList, u.topo); err != nil {
		return redisURL{}, err
	}
	u.db, err = parseDB(path)
	return u, err
}

// fromScheme returns a redisURL of the topology scheme names.
func fromScheme(scheme string) (redisURL, error) {
	switch strings.ToLower(scheme) {
	case schemeRedis:
		return redisURL{topo: single}, nil
	case schemeUnix:
		return redisURL{topo: single, unix: true}, nil
	case schemeRedisTLS:
		return redisURL{topo: single, tls: true}, nil
	case schemeSentinel:
		return redisURL{topo: sentinel}, nil
	case schemeSentinelTLS:
		return redisURL{topo: sentinel, tls: true}, nil
	case schemeCluster:
		return redisURL{topo: cluster}, nil
	case schemeClusterTLS:
		return redisURL{topo: cluster, tls: true}, nil
	}
	const want = "want redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster, rediss-cluster or unix"
	if !isScheme(scheme) {
		// Not a scheme at all, so perhaps part of a password: not quoted.
		return redisURL{}, errors.New("no scheme before '://': " + want)
	}
	return redisURL{}, fmt.Errorf("unknown scheme %q: %s", scheme, want)
}

// parseUserinfo decodes "USER[:PASSWORD]", accepting what a URL allows
// there and nothing else.
func parseUserinfo(s string) (user, pass string, err error) {
	for i := 0; i < len(s); i++ {
		if !userinfoByte(s[i]) {
			return "", "", errUserinfoChar
		}
	}
	rawUser, rawPass, _ := strings.Cut(s, ":")
	if user, err = url.PathUnescape(rawUser); err != nil {
		return "", "", errUserinfoEscape
	}
	if pass, err = url.PathUnescape(rawPass); err != nil {
		return "", "", errUserinfoEscape
	}
	return user, pass, nil
}

// userinfoByte says whether b may stand unescaped in a URL's user
// information (RFC 3986's unreserved and sub-delims characters, ':', and
// '%' for escapes), as net/url accepts it.
func userinfoByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:%@", b) >= 0
}

// splitHosts splits a comma-separated host list, giving a host without a
// port the default one. One server takes one host.
func splitHosts(list string, topo topology) ([]string, error) {
	if list == "" {
		return nil, errNoHost
	}
	parts := strings.Split(list, ",")
	if topo == single && len(parts) > 1 {
		return nil, errSeveral
	}
	port := defaultRedisPort
	if topo == sentinel {
		port = defaultSentinelPort
	}
	hosts := make([]string, 0, len(parts))
	for i, p := range parts {
		h, err := hostPort(p, port)
		if err != nil {
			if len(parts) > 1 {
				err = fmt.Errorf("host %d of %d: %w", i+1, len(parts), err)
			}
			return nil, err
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

// hostPort checks HOST[:PORT] or [IPv6][:PORT] and returns it as
// host:port.
func hostPort(s, defaultPort string) (string, error) {
	host, port := s, defaultPort
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", errBrackets
		}
		host = s[1:end]
		switch after := s[end+1:]; {
		case after == "":
		case after[0] == ':':
			port = after[1:]
		default:
			return "", errBrackets
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", errIPv6
		}
	} else {
		if strings.ContainsAny(s, "[]") {
			return "", errBrackets
		}
		switch strings.Count(s, ":") {
		case 0:
		case 1:
			host, port, _ = strings.Cut(s, ":")
		default:
			return "", errBareIPv6
		}
		if host == "" {
			return "", errNoHost
		}
		if strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") != "" {
			return "", errHostChar
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", errPort
	}
	return net.JoinHostPort(host, port), nil
}

// parseDB reads the database number from a URL's path: "", "/" or "/N".
func parseDB(path string) (int, error) {
	p := strings.Trim(path, "/")
	if p == "" {
		return 0, nil
	}
	if strings.Trim(p, "0123456789") != "" {
		return 0, errDB
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0, errDB
	}
	return n, nil
}

// socketPath returns a unix:// URL's socket path.
func socketPath(hostList, path string) (string, error) {
	p, err := url.PathUnescape(path)
	if hostList != "" || err != nil || strings.Trim(p, "/") == "" {
		return "", errSocket
	}
	return p, nil
}

// goRedisURL returns the URL go-redis's parsers take for u, every part
// escaped as a URL needs: the first host (a Sentinel or Cluster URL lists
// the others as addr= options), the credentials, database and options.
func (u redisURL) goRedisURL() string {
	g := url.URL{Scheme: schemeRedis}
	if u.tls {
		g.Scheme = schemeRedisTLS
	}
	switch {
	case u.pass != "":
		g.User = url.UserPassword(u.user, u.pass)
	case u.user != "":
		g.User = url.User(u.user)
	}
	q := url.Values{}
	for k, vs := range u.query {
		q[k] = append([]string(nil), vs...)
	}
	if u.unix {
		g.Scheme, g.Path = schemeUnix, u.socket
	} else {
		g.Host = u.hosts[0]
		for _, h := range u.hosts[1:] {
			q.Add("addr", h)
		}
		if u.topo != cluster {
			g.Path = "/" + strconv.Itoa(u.db)
		}
	}
	g.RawQuery = q.Encode()
	return g.String()
}
