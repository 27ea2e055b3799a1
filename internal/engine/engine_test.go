package engine

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDefaultDir(t *testing.T) {
	tmp := t.TempDir()
	run := t.TempDir()
	perUser := filepath.Join(tmp, "joblock-"+strconv.Itoa(os.Geteuid()))
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
	t.Setenv("TMPDIR", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", "")
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
