package main_test

import (
	"crypto/rand"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/secrettest"
	"github.com/stretchr/testify/assert"
)

// hardPassword returns a fresh password holding what breaks a URL unless
// percent-encoded: '/', '@', '#', '%', '&' and a space, between runs of
// letters and digits long enough to be caught if printed.
func hardPassword() string {
	r := func() string { return rand.Text()[:8] }
	return "pw/" + r() + "@" + r() + "#" + r() + "%zz " + r() + "&3"
}

func TestNoSecretInOutput(t *testing.T) {
	pw := hardPassword()
	token := "admin-" + rand.Text()
	srv := redistest.Start(t, redistest.WithPassword(pw))
	cfg := engine.Config{Engine: engine.Redis, RedisURL: srv.URL(), Prefix: srv.Prefix}
	env := append(cfg.Env(), "JOBLOCK_ADMIN_TOKEN="+token, "JOBLOCK_REDIS_SENTINEL_PASSWORD="+pw)

	// A worker's whole life at debug level, every endpoint asked, with and
	// without the admin token.
	w := startWorker(t, env)
	requireDeduplicated(t, asynqClient(t, cfg), []*workerProc{w}, "secret-test", 5)
	var served strings.Builder
	for _, auth := range []string{"", "Authorization: Bearer " + token, "Authorization: Bearer wrong-" + token} {
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/locks"} {
			var headers []string
			if auth != "" {
				headers = append(headers, auth)
			}
			_, body := w.request(t, path, headers...)
			served.WriteString(body)
		}
	}
	w.stop(t)
	secrettest.AssertNone(t, "the worker's log", w.logs.String(), pw)
	secrettest.AssertNone(t, "the worker's log", w.logs.String(), token)
	secrettest.AssertNone(t, "the worker's HTTP endpoints", served.String(), pw)
	assert.Contains(t, w.logs.String(), "redis://:xxxxx@"+srv.Addr, "the URL is shown, redacted")

	wrongPW := "Wr0ng/" + hardPassword()
	free := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	raw := func(scheme, userinfo, hosts, tail string) []string {
		return []string{"-redis-url", scheme + "://" + userinfo + "@" + hosts + tail}
	}
	tests := []struct {
		name   string
		secret string
		env    []string
		args   []string
	}{
		{"help", pw, env, []string{"-h"}},
		{"wrong password", wrongPW, nil, raw("redis", ":"+url.PathEscape(wrongPW), srv.Addr, "/0")},
		{"wrong JOBLOCK_REDIS_PASSWORD", wrongPW, []string{"JOBLOCK_REDIS_PASSWORD=" + wrongPW}, []string{"-redis-url", "redis://" + srv.Addr + "/0"}},
		{"no Redis there", pw, nil, raw("redis", ":"+url.PathEscape(pw), free, "/0")},
		{"bad port", pw, nil, raw("redis", ":"+url.PathEscape(pw), srv.Addr+"x", "/0")},
		{"password in the query", pw, nil, []string{"-redis-url", "redis://" + srv.Addr + "/0?password=" + url.QueryEscape(pw) + "&bogus=1"}},
		{"no Sentinel there", pw, []string{"JOBLOCK_REDIS_SENTINEL_PASSWORD=" + pw}, raw("redis-sentinel", ":"+url.PathEscape(pw), free, "/0?master_name=m")},
		// Passwords written into the URL as they are, unencoded.
		{"'#' in the password", "Tr0ub4dor&3#", nil, raw("redis", ":Tr0ub4dor&3#", "127.0.0.1:6390", "/0")},
		{"'#' in a rediss:// password", "Tr0ub4dor&3#", nil, raw("rediss", ":Tr0ub4dor&3#", "127.0.0.1:6390", "/0")},
		{"'#' in a Sentinel password", "Tr0ub4dor&3#", nil, raw("redis-sentinel", ":Tr0ub4dor&3#", "s1,s2", "/0?master_name=m")},
		{"'#' in a user:password", "Tr0ub4dor&3#", nil, raw("redis", "admin:Tr0ub4dor&3#", "127.0.0.1:6390", "/0")},
		{"'#' in a unix:// password", "Tr0ub4dor&3#", nil, raw("unix", ":Tr0ub4dor&3#", "", "/run/redis.sock")},
		{"'%zz' in the password", pw, nil, raw("redis", ":"+pw, srv.Addr, "/0")},
		{"a space in the password", "Sp4ce Bar9 Qu0te", nil, raw("redis", ":Sp4ce Bar9 Qu0te", srv.Addr, "/0")},
		{"every special character", pw, nil, raw("rediss", "user:"+pw, srv.Addr, "/0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := runWorker(t, tt.env, append([]string{"-http", ""}, tt.args...)...)
			if tt.name != "help" {
				assert.NotZero(t, code, stderr)
			}
			secrettest.AssertNone(t, "worker "+tt.name, out+stderr, tt.secret)
		})
	}
}
