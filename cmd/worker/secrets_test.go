package main_test

import (
	"crypto/rand"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/stretchr/testify/assert"
)

// requireNoSecret fails t if out holds secret in any form it could be
// printed in.
func requireNoSecret(t *testing.T, what, out, secret string) {
	t.Helper()
	for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
		assert.NotContains(t, out, form, "%s printed a secret:\n%s", what, out)
	}
}

func TestNoSecretInOutput(t *testing.T) {
	// '/' and '@' make the password need escaping in a URL.
	pw := "pw/" + rand.Text()[:12] + "@x"
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
	requireNoSecret(t, "the worker's log", w.logs.String(), pw)
	requireNoSecret(t, "the worker's log", w.logs.String(), token)
	requireNoSecret(t, "the worker's HTTP endpoints", served.String(), pw)
	assert.Contains(t, w.logs.String(), "redis://:xxxxx@"+srv.Addr, "the URL is shown, redacted")

	wrongPW := "wrong-" + rand.Text()
	free := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	tests := []struct {
		name   string
		secret string
		env    []string
		args   []string
	}{
		{"help", pw, env, []string{"-h"}},
		{"wrong password", wrongPW, nil, []string{"-redis-url", "redis://:" + url.PathEscape(wrongPW) + "@" + srv.Addr + "/0"}},
		{"no Redis there", pw, nil, []string{"-redis-url", "redis://:" + url.PathEscape(pw) + "@" + free + "/0"}},
		{"bad port", pw, nil, []string{"-redis-url", "redis://:" + url.PathEscape(pw) + "@" + srv.Addr + "x/0"}},
		{"bad escape", pw, nil, []string{"-redis-url", "redis://:" + pw + "%zz@" + srv.Addr + "/0"}},
		{"password in the query", pw, nil, []string{"-redis-url", "redis://" + srv.Addr + "/0?password=" + url.QueryEscape(pw) + "&bogus=1"}},
		{"no Sentinel there", pw, []string{"JOBLOCK_REDIS_SENTINEL_PASSWORD=" + pw},
			[]string{"-redis-url", "redis-sentinel://:" + url.PathEscape(pw) + "@" + free + "/0?master_name=m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := runWorker(t, tt.env, append([]string{"-http", ""}, tt.args...)...)
			if tt.name != "help" {
				assert.NotZero(t, code, stderr)
			}
			requireNoSecret(t, "worker "+tt.name, out+stderr, tt.secret)
		})
	}
}
