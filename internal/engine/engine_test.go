package engine

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const pw = "s3cr3t-pw"

func TestRedisClientForms(t *testing.T) {
	tests := []struct {
		give     string
		wantAddr string // *redis.Client, one server
		wantDB   int
		wantTLS  bool
		wantPass string
		cluster  []string // *redis.ClusterClient seeds
		sentinel bool
	}{
		{give: "redis://:" + pw + "@127.0.0.1:6380/2", wantAddr: "127.0.0.1:6380", wantDB: 2, wantPass: pw},
		{give: "redis://localhost", wantAddr: "localhost:6379"},
		{give: "rediss://user:" + pw + "@redis.example:6390/1?dial_timeout=2s", wantAddr: "redis.example:6390", wantDB: 1, wantTLS: true, wantPass: pw},
		{give: "unix:///run/redis.sock?db=3", wantAddr: "/run/redis.sock", wantDB: 3},
		{give: "redis-sentinel://:" + pw + "@10.0.0.1,10.0.0.2:5000/4?master_name=mymaster", sentinel: true, wantDB: 4, wantPass: pw},
		{give: "rediss-sentinel://s1:26379/0?master_name=m", sentinel: true, wantTLS: true},
		{give: "redis-cluster://:" + pw + "@n1:7000,n2:7001,n3", cluster: []string{"n1:7000", "n2:7001", "n3:6379"}, wantPass: pw},
		{give: "rediss-cluster://[::1]:7000,n2:7001/0", cluster: []string{"[::1]:7000", "n2:7001"}, wantTLS: true},
	}
	for _, tt := range tests {
		t.Run(Redact(tt.give), func(t *testing.T) {
			c := Config{RedisURL: tt.give}
			rdb, err := c.RedisClient()
			require.NoError(t, err)
			defer rdb.Close()
			switch {
			case tt.cluster != nil:
				cc, ok := rdb.(*redis.ClusterClient)
				require.True(t, ok, "%T", rdb)
				assert.Equal(t, tt.cluster, cc.Options().Addrs)
				assert.Equal(t, tt.wantPass, cc.Options().Password)
				assert.Equal(t, tt.wantTLS, cc.Options().TLSConfig != nil)
			default:
				cl, ok := rdb.(*redis.Client)
				require.True(t, ok, "%T", rdb)
				o := cl.Options()
				if tt.sentinel {
					assert.Equal(t, "FailoverClient", o.Addr)
				} else {
					assert.Equal(t, tt.wantAddr, o.Addr)
				}
				assert.Equal(t, tt.wantDB, o.DB)
				assert.Equal(t, tt.wantPass, o.Password)
				assert.Equal(t, tt.wantTLS, o.TLSConfig != nil)
			}
		})
	}
}

func TestSentinelHosts(t *testing.T) {
	u, err := parseRedisURL("redis-sentinel://:" + pw + "@a,b:5000,[::1]/0?master_name=m")
	require.NoError(t, err)
	assert.Equal(t, []string{"a:26379", "b:5000", "[::1]:26379"}, u.hosts)
	assert.Equal(t, pw, u.pass)
}

func TestBadRedisConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	tests := []struct {
		name string
		give Config
		want string
	}{
		{"no scheme", Config{RedisURL: pw + "@host:6379"}, "not a URL"},
		{"unknown scheme", Config{RedisURL: "http://:" + pw + "@host"}, `unknown scheme "http"`},
		{"bad port", Config{RedisURL: "redis://:" + pw + "@host:port/0"}, "invalid port"},
		{"bad escape in the password", Config{RedisURL: "redis://:" + pw + "%zz@host/0"}, "invalid URL escape"},
		{"unescaped slash in the password", Config{RedisURL: "redis://:ab/" + pw + "@host/0"}, "percent-encode them"},
		{"two hosts, one server", Config{RedisURL: "redis://:" + pw + "@a:1,b:2/0"}, "use redis-sentinel:// or redis-cluster://"},
		{"bad database", Config{RedisURL: "redis://:" + pw + "@host/x"}, "invalid database number"},
		{"unknown option", Config{RedisURL: "redis://:" + pw + "@host/0?colour=red"}, "unexpected option: colour"},
		{"sentinel without master", Config{RedisURL: "redis-sentinel://:" + pw + "@s1/0"}, "no master_name"},
		{"sentinel without host", Config{RedisURL: "redis-sentinel://:" + pw + "@/0?master_name=m"}, "no host"},
		{"cluster database", Config{RedisURL: "redis-cluster://:" + pw + "@n1/5"}, "only database 0"},
		{"CA without TLS", Config{RedisURL: "redis://:" + pw + "@host", RedisCA: notPEM}, "JOBLOCK_REDIS_CA] is set but -redis-url is not a TLS URL"},
		{"CA missing", Config{RedisURL: "rediss://:" + pw + "@host", RedisCA: filepath.Join(dir, "nope.pem")}, "JOBLOCK_REDIS_CA]: open"},
		{"CA not PEM", Config{RedisURL: "rediss://:" + pw + "@host", RedisCA: notPEM}, "no PEM certificate"},
		{"cert without key", Config{RedisURL: "rediss://:" + pw + "@host", RedisCert: notPEM}, "go together"},
		{"cert unreadable", Config{RedisURL: "rediss://:" + pw + "@host", RedisCert: notPEM, RedisKey: notPEM}, "client certificate " + notPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.give.RedisClient()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), pw, "the password leaked into the error")
			tt.give.Engine = File
			assert.Error(t, tt.give.Check(true), "Check reports it before anything connects")
			assert.NoError(t, tt.give.Check(false), "the file engine alone does not need Redis")
		})
	}
}

func TestCheckUnknownEngineFirst(t *testing.T) {
	c := Config{Engine: "etcd", RedisURL: "redis://127.0.0.1:1/0"}
	err := c.Check(true)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown lock engine "etcd"`)
	_, _, err = c.Open(context.Background())
	assert.Contains(t, err.Error(), `unknown lock engine "etcd"`, "named before any Redis check")
}

func TestRedact(t *testing.T) {
	tests := []struct{ give, want string }{
		{"redis://:" + pw + "@h:1/0", "redis://:xxxxx@h:1/0"},
		{"redis://user:" + pw + "@h:1/0", "redis://user:xxxxx@h:1/0"},
		{"redis://user@h", "redis://user@h"},
		{"redis://h:1/0", "redis://h:1/0"},
		{"redis-sentinel://:" + pw + "@a:1,b:2/0?master_name=m", "redis-sentinel://:xxxxx@a:1,b:2/0?master_name=m"},
		{"redis://:p%40" + pw + "@h:bad/0", "redis://:xxxxx@h:bad/0"},
		{"redis://h/0?password=" + pw + "&dial_timeout=1s", "redis://h/0?dial_timeout=1s&password=xxxxx"},
		{"redis://h/0?password=%zz" + pw, "redis://(unparseable URL)"},
		{pw, "(not a URL)"},
		{"redis://:pw/" + pw + "@h:1/0", "redis://:xxxxx@h:1/0"},
		{"redis://h:1/0?client_name=a@b", "redis://h:xxxxx@b"}, // more hidden than needed, never less
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, Redact(tt.give))
	}
}

func TestHelpShowsNoPassword(t *testing.T) {
	t.Setenv("JOBLOCK_REDIS_URL", "redis://:"+pw+"@127.0.0.1:6379/0")
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var help strings.Builder
	fs.SetOutput(&help)
	c.Bind(fs, "asynq's Redis")
	fs.PrintDefaults()
	assert.Contains(t, help.String(), "redis://:xxxxx@127.0.0.1:6379/0")
	assert.NotContains(t, help.String(), pw)
	assert.Equal(t, "redis://:"+pw+"@127.0.0.1:6379/0", c.RedisURL, "the value itself is intact")
	require.NoError(t, fs.Parse([]string{"-redis-url", "redis://other:6379/1"}))
	assert.Equal(t, "redis://other:6379/1", c.RedisURL)
}

func TestTLS(t *testing.T) {
	srv := redistest.Start(t, redistest.WithTLS(), redistest.WithPassword(pw))
	srv.RequireReal(t, "TLS")
	tests := []struct {
		name    string
		give    Config
		wantErr string
	}{
		{"CA and client certificate", Config{RedisCA: srv.TLS.CA, RedisCert: srv.TLS.Cert, RedisKey: srv.TLS.Key}, ""},
		{"no client certificate", Config{RedisCA: srv.TLS.CA}, "redis unreachable"},
		{"system roots only", Config{RedisCert: srv.TLS.Cert, RedisKey: srv.TLS.Key}, "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.give
			c.RedisURL = srv.URL()
			rdb, err := c.RedisClient()
			require.NoError(t, err)
			defer rdb.Close()
			err = c.Ping(context.Background(), rdb)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrRedisUnreachable)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Contains(t, err.Error(), "rediss://:xxxxx@"+srv.Addr, "says where it looked")
			assert.NotContains(t, err.Error(), pw)
		})
	}
	// An operator's mistake: a TLS server given a redis:// URL.
	c := Config{RedisURL: strings.Replace(srv.URL(), "rediss://", "redis://", 1)}
	rdb, err := c.RedisClient()
	require.NoError(t, err)
	defer rdb.Close()
	assert.ErrorIs(t, c.Ping(context.Background(), rdb), ErrRedisUnreachable)
}

func TestSkipVerifyFromURL(t *testing.T) {
	for _, give := range []string{"rediss://h/0?skip_verify=true", "rediss-sentinel://s/0?master_name=m&skip_verify=true"} {
		c := Config{RedisURL: give}
		rdb, err := c.RedisClient()
		require.NoError(t, err)
		assert.True(t, rdb.(*redis.Client).Options().TLSConfig.InsecureSkipVerify, give)
		require.NoError(t, rdb.Close())
	}
}

func TestDefaultDir(t *testing.T) {
	tmp := t.TempDir()
	run := t.TempDir()
	perUser := filepath.Join(tmp, "joblock-"+strconv.Itoa(os.Geteuid()))
	if isDir(sharedMemory) && onTmpfs(sharedMemory) {
		perUser = filepath.Join(sharedMemory, "joblock-"+strconv.Itoa(os.Geteuid()))
	}
	tests := []struct {
		name string
		xdg  string
		want string
	}{
		{"runtime dir", run, filepath.Join(run, "joblock")},
		{"no runtime dir", "", perUser},
		{"runtime dir missing", filepath.Join(run, "missing"), perUser},
		{"runtime dir not absolute", "run/user/1000", perUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TMPDIR", tmp)
			t.Setenv("XDG_RUNTIME_DIR", tt.xdg)
			assert.Equal(t, tt.want, DefaultDir())
		})
	}
}

func TestDefaultDirIsPrivate(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	t.Setenv("JOBLOCK_LOCK_DIR", "")
	c := FromEnv()
	l, closeFn, err := c.Open(context.Background())
	require.NoError(t, err)
	require.NotNil(t, l)
	require.NoError(t, closeFn())
	st, err := os.Stat(DefaultDir())
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o700, st.Mode())
}

func TestOpenUnsafeDirSaysWhichFlagFixesIt(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o770))
	c := Config{Engine: File, Dir: dir}
	_, _, err := c.Open(context.Background())
	require.ErrorIs(t, err, filelock.ErrUnsafeDir)
	assert.Contains(t, err.Error(), "chmod 0700 "+dir)
	assert.Contains(t, err.Error(), "-shared-group or JOBLOCK_SHARED_GROUP=1")

	c.SharedGroup = true
	_, closeFn, err := c.Open(context.Background())
	require.NoError(t, err, "a group-writable directory is what -shared-group is for")
	require.NoError(t, closeFn())
}

func TestEnvRoundTrip(t *testing.T) {
	want := Config{Engine: Redis, Dir: "/srv/locks", SharedGroup: true, RedisURL: "redis://10.0.0.1:6379/2", Prefix: "app:"}
	for _, kv := range want.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	assert.Equal(t, want, FromEnv())
}
