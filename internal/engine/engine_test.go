package engine

import (
	"context"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/internal/secrettest"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const pw = "s3cr3t-pw"

func TestRedisClientForms(t *testing.T) {
	tests := []struct {
		give     string
		password string // JOBLOCK_REDIS_PASSWORD
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
		{give: "redis://:" + url.PathEscape(hardPW) + "@[::1]:6380/3", wantAddr: "[::1]:6380", wantDB: 3, wantPass: hardPW},
		{give: "redis://user:" + url.QueryEscape(hardPW) + "@h", wantAddr: "h:6379", wantPass: strings.ReplaceAll(hardPW, " ", "+")},
		{give: "redis://:@h:1", wantAddr: "h:1"},
		{give: "unix://:" + url.PathEscape(hardPW) + "@/run/redis.sock?db=2", wantAddr: "/run/redis.sock", wantDB: 2, wantPass: hardPW},
		// A password given apart wins over the URL's, in every form.
		{give: "redis://:old@h/1", password: hardPW, wantAddr: "h:6379", wantDB: 1, wantPass: hardPW},
		{give: "redis://h/1", password: hardPW, wantAddr: "h:6379", wantDB: 1, wantPass: hardPW},
		{give: "redis-sentinel://:old@s1/0?master_name=m", password: hardPW, sentinel: true, wantPass: hardPW},
		{give: "redis-cluster://n1:7000", password: hardPW, cluster: []string{"n1:7000"}, wantPass: hardPW},
	}
	for _, tt := range tests {
		t.Run(Redact(tt.give), func(t *testing.T) {
			c := Config{RedisURL: tt.give, RedisPassword: tt.password}
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

// hardPW is a password that breaks a URL unless percent-encoded.
const hardPW = "Tr0ub4dor&3#Zq9x %zzWv7k/Pm4n?Hj2c@"

func TestBadRedisConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	certs := redistest.NewTLSFiles(t)
	pwFile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte(pw+"\n"), 0o600))
	emptyFile := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(emptyFile, []byte("\n"), 0o600))
	tests := []struct {
		name string
		give Config
		want string
	}{
		{"no scheme", Config{RedisURL: pw + "@host:6379"}, "not a URL"},
		{"unknown scheme", Config{RedisURL: "http://:" + pw + "@host"}, `unknown scheme "http"`},
		{"password as scheme", Config{RedisURL: ":" + pw + "#@://host"}, "no scheme before '://'"},
		{"bad port", Config{RedisURL: "redis://:" + pw + "@host:port/0"}, "a port that is not a number from 1 to 65535"},
		{"port out of range", Config{RedisURL: "redis://:" + pw + "@host:99999/0"}, "a port that is not a number from 1 to 65535"},
		{"port zero", Config{RedisURL: "redis://:" + pw + "@host:0/0"}, "a port that is not a number from 1 to 65535"},
		{"bad escape in the password", Config{RedisURL: "redis://:" + pw + "%zz@host/0"}, "does not start a percent-escape"},
		{"'#' in the password", Config{RedisURL: "redis://:" + pw + "#x@127.0.0.1:6390/0"}, "a '#' in it"},
		{"'#' in a rediss password", Config{RedisURL: "rediss://:" + pw + "#x@127.0.0.1:6390/0"}, "'#' as %23"},
		{"'#' in a sentinel password", Config{RedisURL: "redis-sentinel://:" + pw + "#x@s1,s2/0?master_name=m"}, "'#' as %23"},
		{"'#' in a user:password", Config{RedisURL: "redis://user:" + pw + "#x@host/0"}, "'#' as %23"},
		{"'#' in a unix password", Config{RedisURL: "unix://:" + pw + "#x@/run/redis.sock"}, "'#' as %23"},
		{"space in the password", Config{RedisURL: "redis://:" + pw + " x@host/0"}, "a character a URL does not allow in a user name or password"},
		{"the hard password unescaped", Config{RedisURL: "redis://:" + hardPW + "@host/0"}, "must be percent-encoded"},
		{"unescaped slash in the password", Config{RedisURL: "redis://:ab/" + pw + "@host/0"}, "an '@' after the host"},
		{"unescaped question mark in the password", Config{RedisURL: "redis://:ab?" + pw + "@host/0"}, "an '@' after the host"},
		{"unbalanced bracket", Config{RedisURL: "redis://:" + pw + "@[::1/0"}, "unbalanced brackets"},
		{"bracket after the host", Config{RedisURL: "redis://:" + pw + "@[::1]x/0"}, "unbalanced brackets"},
		{"not IPv6 in brackets", Config{RedisURL: "redis://:" + pw + "@[host]:1/0"}, "not an IPv6 address"},
		{"IPv6 without brackets", Config{RedisURL: "redis://:" + pw + "@::1/0"}, "without brackets"},
		{"bad host character", Config{RedisURL: "redis://:" + pw + "@ho$t/0"}, "a host name with a character"},
		{"no host", Config{RedisURL: "redis://"}, "no host"},
		{"no host after @", Config{RedisURL: "redis://@"}, "no host"},
		{"no host after :@", Config{RedisURL: "redis://:@"}, "no host"},
		{"no host, a password", Config{RedisURL: "redis://:" + pw + "@/0"}, "no host"},
		{"bad escape in the query", Config{RedisURL: "redis://:" + pw + "@host/0?foo=%zz"}, "the options after '?' do not parse"},
		{"'@' in the query", Config{RedisURL: "redis://:" + pw + "@host/0?client_name=me@x"}, "an '@' after the host"},
		{"two hosts, one server", Config{RedisURL: "redis://:" + pw + "@a:1,b:2/0"}, "use redis-sentinel:// or redis-cluster://"},
		{"second host bad", Config{RedisURL: "redis-cluster://:" + pw + "@a:1,b:x"}, "host 2 of 2: a port that is not"},
		{"bad database", Config{RedisURL: "redis://:" + pw + "@host/x"}, "the database, after the host, is not a number"},
		{"unknown option", Config{RedisURL: "redis://:" + pw + "@host/0?colour=red"}, "unexpected option: colour"},
		{"sentinel without master", Config{RedisURL: "redis-sentinel://:" + pw + "@s1/0"}, "no master_name"},
		{"sentinel without host", Config{RedisURL: "redis-sentinel://:" + pw + "@/0?master_name=m"}, "no host"},
		{"cluster database", Config{RedisURL: "redis-cluster://:" + pw + "@n1/5"}, "database 5: a Cluster has only database 0"},
		{"unix without socket", Config{RedisURL: "unix://:" + pw + "@"}, "no socket path"},
		{"unix with a host", Config{RedisURL: "unix://:" + pw + "@host/run/redis.sock"}, "no socket path"},
		{"CA without TLS", Config{RedisURL: "redis://:" + pw + "@host", RedisCA: notPEM}, "JOBLOCK_REDIS_CA] is set but -redis-url is not a TLS URL"},
		{"CA missing", Config{RedisURL: "rediss://:" + pw + "@host", RedisCA: filepath.Join(dir, "nope.pem")}, "JOBLOCK_REDIS_CA]: open"},
		{"CA not PEM", Config{RedisURL: "rediss://:" + pw + "@host", RedisCA: notPEM}, "no PEM certificate"},
		{"cert without key", Config{RedisURL: "rediss://:" + pw + "@host", RedisCert: notPEM}, "go together"},
		{"cert unreadable", Config{RedisURL: "rediss://:" + pw + "@host", RedisCert: notPEM, RedisKey: notPEM},
			"-redis-cert [JOBLOCK_REDIS_CERT] " + notPEM + " with -redis-key [JOBLOCK_REDIS_KEY] " + notPEM},
		{"cert and key that do not match", Config{RedisURL: "rediss://:" + pw + "@host", RedisCert: certs.Cert, RedisKey: certs.ServerKey},
			"-redis-cert [JOBLOCK_REDIS_CERT] " + certs.Cert + " with -redis-key [JOBLOCK_REDIS_KEY] " + certs.ServerKey + ": tls: private key does not match public key"},
		{"password twice", Config{RedisURL: "redis://host", RedisPassword: pw, RedisPasswordFile: pwFile}, "JOBLOCK_REDIS_PASSWORD and -redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE] are both set"},
		{"password file missing", Config{RedisURL: "redis://host", RedisPasswordFile: filepath.Join(dir, "nope")}, "-redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE]: open"},
		{"password file empty", Config{RedisURL: "redis://host", RedisPasswordFile: emptyFile}, "-redis-password-file [JOBLOCK_REDIS_PASSWORD_FILE] " + emptyFile + " is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.give.RedisClient()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			secrettest.AssertNone(t, "the error", err.Error(), pw)
			secrettest.AssertNone(t, "the error", err.Error(), hardPW)
			if strings.HasPrefix(err.Error(), "-redis-url") {
				assert.True(t, strings.HasPrefix(err.Error(), "-redis-url [JOBLOCK_REDIS_URL] "+Redact(tt.give.RedisURL)+": "),
					"names the setting, and shows the URL redacted: %s", err)
			}
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

// boundHelp binds a Config to a new flag set, from the environment, and
// returns them with the set's help text.
func boundHelp() (*Config, *flag.FlagSet, string) {
	var c Config
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var help strings.Builder
	fs.SetOutput(&help)
	c.Bind(fs, "asynq's Redis")
	fs.PrintDefaults()
	return &c, fs, help.String()
}

func TestHelpShowsNoPassword(t *testing.T) {
	t.Setenv("JOBLOCK_REDIS_URL", "redis://:"+pw+"@127.0.0.1:6379/0")
	c, fs, help := boundHelp()
	assert.Contains(t, help, "redis://:xxxxx@127.0.0.1:6379/0")
	assert.NotContains(t, help, pw)
	assert.Equal(t, "redis://:"+pw+"@127.0.0.1:6379/0", c.RedisURL, "the value itself is intact")
	require.NoError(t, fs.Parse([]string{"-redis-url", "redis://other:6379/1"}))
	assert.Equal(t, "redis://other:6379/1", c.RedisURL)
}

func TestSharedGroupVariable(t *testing.T) {
	bind := func(args ...string) (Config, error) {
		var c Config
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		c.Bind(fs, "asynq's Redis")
		require.NoError(t, fs.Parse(args))
		return c, c.Check(false)
	}
	t.Setenv("JOBLOCK_SHARED_GROUP", "yes")
	_, err := bind()
	require.EqualError(t, err, `-shared-group: JOBLOCK_SHARED_GROUP="yes": want 1, 0, true or false`)
	c, err := bind("-shared-group")
	require.NoError(t, err, "the flag wins over the variable")
	assert.True(t, c.SharedGroup)
	c, err = bind("-shared-group=false")
	require.NoError(t, err)
	assert.False(t, c.SharedGroup)
	t.Setenv("JOBLOCK_SHARED_GROUP", "1")
	c, err = bind()
	require.NoError(t, err)
	assert.True(t, c.SharedGroup)
}

// requirePing pings the Redis c configures and requires success (want
// nil) or an error matching want that contains every one of msgs and no
// part of any secret.
func requirePing(t *testing.T, c Config, want error, msgs []string, secrets ...string) {
	t.Helper()
	rdb, err := c.RedisClient()
	require.NoError(t, err)
	defer rdb.Close()
	err = c.Ping(context.Background(), rdb)
	if want == nil {
		require.NoError(t, err)
		return
	}
	require.ErrorIs(t, err, want)
	for _, m := range msgs {
		assert.Contains(t, err.Error(), m)
	}
	for _, s := range secrets {
		secrettest.AssertNone(t, "the error", err.Error(), s)
	}
}

func TestPingSaysWhy(t *testing.T) {
	srv := redistest.Start(t, redistest.WithPassword(hardPW))
	wrong := "Wr0ngPassw0rd#" + hardPW[:6]
	pwFile := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte(hardPW+"\n"), 0o600))
	refused := []string{"redis refused the credentials at redis://", "check the password", "JOBLOCK_REDIS_PASSWORD", "and the user name"}
	tests := []struct {
		name string
		give Config
		want error
		msgs []string
	}{
		{"right password, encoded", Config{RedisURL: srv.URL()}, nil, nil},
		{"wrong password", Config{RedisURL: "redis://:" + url.PathEscape(wrong) + "@" + srv.Addr + "/0"}, ErrRedisAuth, append(refused, "WRONGPASS")},
		{"wrong user", Config{RedisURL: "redis://nobody:" + url.PathEscape(hardPW) + "@" + srv.Addr + "/0"}, ErrRedisAuth, append(refused, "WRONGPASS")},
		{"no password", Config{RedisURL: "redis://" + srv.Addr + "/0"}, ErrRedisAuth, []string{"refused the credentials", "NOAUTH"}},
		{"JOBLOCK_REDIS_PASSWORD wins", Config{RedisURL: "redis://:" + url.PathEscape(wrong) + "@" + srv.Addr + "/0", RedisPassword: hardPW}, nil, nil},
		{"-redis-password-file wins", Config{RedisURL: "redis://:" + url.PathEscape(wrong) + "@" + srv.Addr + "/0", RedisPasswordFile: pwFile}, nil, nil},
		{"wrong JOBLOCK_REDIS_PASSWORD", Config{RedisURL: srv.URL(), RedisPassword: wrong}, ErrRedisAuth, refused},
		{"nothing there", Config{RedisURL: "redis://:" + url.PathEscape(hardPW) + "@127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) + "/0"},
			ErrRedisUnreachable, []string{"no Redis answered", "redis-server"}},
		// A server answered: no advice to start one.
		{"database beyond the server's", Config{RedisURL: "redis://:" + url.PathEscape(hardPW) + "@" + srv.Addr + "/99"},
			ErrRedisRefused, []string{"redis answered with an error at redis://:xxxxx@" + srv.Addr + "/99 (ERR DB index is out of range)", "check the database number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requirePing(t, tt.give, tt.want, tt.msgs, hardPW, wrong)
		})
	}
}

func TestTLS(t *testing.T) {
	srv := redistest.Start(t, redistest.WithTLS(), redistest.WithPassword(pw))
	srv.RequireReal(t, "TLS")
	other := redistest.NewTLSFiles(t)
	where := "rediss://:xxxxx@" + srv.Addr + "/0"
	tests := []struct {
		name string
		give Config
		want error
		msgs []string
	}{
		{"CA and client certificate", Config{RedisCA: srv.TLS.CA, RedisCert: srv.TLS.Cert, RedisKey: srv.TLS.Key}, nil, nil},
		// The server's alert, or the connection it closed (see Ping).
		{"no client certificate", Config{RedisCA: srv.TLS.CA}, ErrRedisTLS, []string{"-redis-cert / -redis-key"}},
		{"client certificate of another CA", Config{RedisCA: srv.TLS.CA, RedisCert: other.Cert, RedisKey: other.Key}, ErrRedisTLS, []string{"-redis-cert / -redis-key"}},
		{"wrong CA", Config{RedisCA: other.CA, RedisCert: srv.TLS.Cert, RedisKey: srv.TLS.Key}, ErrRedisTLS, []string{"certificate signed by unknown authority", "-redis-ca [JOBLOCK_REDIS_CA]"}},
		{"system roots only", Config{RedisCert: srv.TLS.Cert, RedisKey: srv.TLS.Key}, ErrRedisTLS, []string{"certificate signed by unknown authority"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.give
			c.RedisURL = srv.URL()
			requirePing(t, c, tt.want, append(tt.msgs, "redis TLS handshake failed with "+where+" ("), pw)
		})
	}
	// An operator's mistake: a TLS server given a redis:// URL.
	c := Config{RedisURL: strings.Replace(srv.URL(), "rediss://", "redis://", 1)}
	requirePing(t, c, ErrRedisUnreachable, []string{"closed the connection", "use a rediss:// URL"}, pw)
	// And the other way round: a plain server given a rediss:// URL.
	plain := redistest.Start(t, redistest.WithPassword(pw))
	c = Config{RedisURL: strings.Replace(plain.URL(), "redis://", "rediss://", 1), RedisCA: srv.TLS.CA}
	requirePing(t, c, ErrRedisUnreachable, []string{"no Redis completed a TLS handshake at rediss://", "use a redis:// URL"}, pw)
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

func TestDefaultDirIgnoresTheEnvironment(t *testing.T) {
	// Two processes of one user with different environments (a login
	// shell with $XDG_RUNTIME_DIR, a cron job without; a $TMPDIR set by
	// one service only) must lock in the same directory.
	want := filepath.Join("/tmp", "joblock-"+strconv.Itoa(os.Geteuid()))
	if usableTmpfs(sharedMemory) {
		want = filepath.Join(sharedMemory, "joblock-"+strconv.Itoa(os.Geteuid()))
	}
	tests := []struct {
		name   string
		xdg    string
		tmpdir string
	}{
		{"no variables", "", ""},
		{"runtime dir", t.TempDir(), ""},
		{"TMPDIR", "", t.TempDir()},
		{"both", t.TempDir(), t.TempDir()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("XDG_RUNTIME_DIR", tt.xdg)
			t.Setenv("TMPDIR", tt.tmpdir)
			assert.Equal(t, want, DefaultDir())
		})
	}
}

func TestUsableTmpfs(t *testing.T) {
	if dir := t.TempDir(); !onTmpfs(dir) {
		assert.False(t, usableTmpfs(dir), "a directory off tmpfs")
	}
	assert.False(t, usableTmpfs(filepath.Join(t.TempDir(), "missing")))
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	assert.False(t, usableTmpfs(file), "a file is not a directory")
	if onTmpfs(sharedMemory) {
		assert.True(t, usableTmpfs(sharedMemory))
	}
}

func TestDefaultDirIsPrivate(t *testing.T) {
	t.Setenv("JOBLOCK_LOCK_DIR", "")
	c := FromEnv()
	require.Equal(t, DefaultDir(), c.Dir)
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
	require.NoError(t, os.Chmod(dir, os.ModeSetgid|0o770))
	c := Config{Engine: File, Dir: dir}
	_, _, err := c.Open(context.Background())
	require.ErrorIs(t, err, filelock.ErrUnsafeDir)
	assert.Contains(t, err.Error(), "chmod 0700 "+dir)
	assert.Contains(t, err.Error(), "-shared-group or JOBLOCK_SHARED_GROUP=1")

	c.SharedGroup = true
	_, closeFn, err := c.Open(context.Background())
	require.NoError(t, err, "a group-writable setgid directory is what -shared-group is for")
	require.NoError(t, closeFn())
}

func TestOpenSquattedDirSaysRemoveItOrPickAnother(t *testing.T) {
	// Another user made the directory (the default one, say) first:
	// sharing it with them is no fix.
	dir := filepath.Join(t.TempDir(), "locks")
	require.NoError(t, os.Mkdir(dir, 0o700))
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Skipf("cannot give %s to another user here (%v): needs root", dir, err)
	}
	c := Config{Engine: File, Dir: dir}
	_, _, err := c.Open(context.Background())
	require.ErrorIs(t, err, filelock.ErrUnsafeDir)
	assert.Contains(t, err.Error(), "remove it")
	assert.Contains(t, err.Error(), "-lock-dir or JOBLOCK_LOCK_DIR")
	assert.NotContains(t, err.Error(), "shared-group")
	assert.NotContains(t, err.Error(), "SHARED_GROUP")
	assert.NotContains(t, err.Error(), "WithSharedGroup")
}

func TestEnvRoundTrip(t *testing.T) {
	want := Config{Engine: Redis, Dir: "/srv/locks", SharedGroup: true, RedisURL: "redis://10.0.0.1:6379/2", Prefix: "app:"}
	for _, kv := range want.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	assert.Equal(t, want, FromEnv())
}

func TestLockRedisURL(t *testing.T) {
	asynqURL, lockURL := "redis://:"+pw+"@127.0.0.1:6379/0", "redis://:lock-"+pw+"@127.0.0.1:6380/2"
	t.Setenv("JOBLOCK_REDIS_URL", asynqURL)
	t.Setenv("JOBLOCK_LOCK_REDIS_URL", lockURL)
	c, fs, help := boundHelp()
	assert.Contains(t, help, "redis://:xxxxx@127.0.0.1:6380/2")
	secrettest.AssertNone(t, "the help", help, pw)
	require.NoError(t, fs.Parse(nil))
	assert.Equal(t, lockURL, c.LockRedisURL)
	assert.Contains(t, c.Env(), "JOBLOCK_LOCK_REDIS_URL="+lockURL)

	c.Engine = Redis
	assert.Contains(t, c.Describe(), "redis engine at redis://:xxxxx@127.0.0.1:6380/2")
	secrettest.AssertNone(t, "the description", c.Describe(), pw)
	lc, err := c.LockRedisClient()
	require.NoError(t, err)
	defer lc.Close()
	assert.Equal(t, "127.0.0.1:6380", lc.(*redis.Client).Options().Addr)
	assert.Equal(t, 2, lc.(*redis.Client).Options().DB)
	ac, err := c.RedisClient()
	require.NoError(t, err)
	defer ac.Close()
	assert.Equal(t, "127.0.0.1:6379", ac.(*redis.Client).Options().Addr)

	c.LockRedisURL = "redis://:" + pw + "#x@127.0.0.1:6380/0"
	for _, needRedis := range []bool{true, false} {
		err := c.Check(needRedis)
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), "-lock-redis-url [JOBLOCK_LOCK_REDIS_URL] "+Redact(c.LockRedisURL)+": "), err.Error())
		secrettest.AssertNone(t, "the error", err.Error(), pw)
	}
	c.Engine = File
	assert.NoError(t, c.Check(true), "the file engine keeps no lock in Redis")

	// Unset, the locks share asynq's Redis.
	c = &Config{Engine: Redis, RedisURL: asynqURL}
	lc2, err := c.LockRedisClient()
	require.NoError(t, err)
	defer lc2.Close()
	assert.Equal(t, "127.0.0.1:6379", lc2.(*redis.Client).Options().Addr)
	assert.Contains(t, c.Describe(), "redis engine at redis://:xxxxx@127.0.0.1:6379/0")
}

func TestPingLockNamesItsSetting(t *testing.T) {
	srv := redistest.Start(t)
	free := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	c := Config{Engine: Redis, RedisURL: "redis://" + srv.Addr + "/0", LockRedisURL: "redis://:" + pw + "@" + free + "/0"}
	rdb, err := c.RedisClient()
	require.NoError(t, err)
	defer rdb.Close()
	require.NoError(t, c.Ping(context.Background(), rdb))
	lrdb, err := c.LockRedisClient()
	require.NoError(t, err)
	defer lrdb.Close()
	err = c.PingLock(context.Background(), lrdb)
	require.ErrorIs(t, err, ErrRedisUnreachable)
	assert.Contains(t, err.Error(), "no Redis answered at redis://:xxxxx@"+free+"/0")
	assert.Contains(t, err.Error(), "point -lock-redis-url [JOBLOCK_LOCK_REDIS_URL] at yours")
	secrettest.AssertNone(t, "the error", err.Error(), pw)
	_, _, err = c.Open(context.Background())
	require.ErrorIs(t, err, ErrRedisUnreachable, "Open uses the locks' Redis")
}

func TestRestartGraceSetting(t *testing.T) {
	bind := func(args ...string) (Config, error) {
		var c Config
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(&strings.Builder{})
		c.Bind(fs, "asynq's Redis")
		if err := fs.Parse(args); err != nil {
			return c, err
		}
		return c, c.Check(false)
	}
	c, err := bind()
	require.NoError(t, err)
	assert.Equal(t, redislock.DefaultRestartGrace, c.RestartGrace)
	assert.Contains(t, c.Env(), "JOBLOCK_RESTART_GRACE=15s")
	t.Setenv("JOBLOCK_RESTART_GRACE", "20")
	_, err = bind()
	require.EqualError(t, err, `-restart-grace: JOBLOCK_RESTART_GRACE="20": want a duration such as 15s or 1m, or 0`)
	c, err = bind("-restart-grace", "1m")
	require.NoError(t, err, "the flag wins over the variable")
	assert.Equal(t, time.Minute, c.RestartGrace)
	t.Setenv("JOBLOCK_RESTART_GRACE", "0")
	c, err = bind()
	require.NoError(t, err)
	assert.Zero(t, c.RestartGrace, "0 disables it")
	_, err = bind("-restart-grace", "-1s")
	require.Error(t, err)
}
