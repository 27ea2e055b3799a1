package main_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/fsfault"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHealthFailsWhenLockDirTakesNoNewFiles(t *testing.T) {
	srv := redistest.Start(t)
	denied := "permission denied" // mode bits
	if os.Geteuid() == 0 {
		denied = "operation not permitted" // chattr +i
	}
	tests := []struct {
		name string
		// dir returns the lock directory; breakIt makes it refuse new
		// files and returns what undoes that.
		dir     func(t *testing.T) string
		breakIt func(t testing.TB, dir string) (undo func())
		want    string
	}{
		{
			name:    "immutable",
			dir:     func(t *testing.T) string { return filepath.Join(t.TempDir(), "locks") },
			breakIt: fsfault.DenyNewFiles,
			want:    denied,
		},
		{
			name: "full",
			dir:  func(t *testing.T) string { return filepath.Join(fsfault.Tmpfs(t, "size=256k"), "locks") },
			breakIt: func(t testing.TB, dir string) func() {
				filler := fsfault.Fill(t, dir)
				return func() { require.NoError(t, os.Remove(filler)) }
			},
			want: "no space left on device",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			cfg := engine.Config{Engine: engine.File, Dir: dir, RedisURL: srv.URL(), Prefix: srv.Prefix}
			w := startWorker(t, append(cfg.Env(), "JOBLOCK_ROLE=worker"))
			code, h := w.health(t, "/healthz")
			require.Equal(t, http.StatusOK, code, "%+v", h) // its own lock file exists from here on

			undo := tt.breakIt(t, dir)
			code, h = w.health(t, "/healthz")
			assert.Equal(t, http.StatusServiceUnavailable, code)
			assert.Equal(t, []string{"lock_engine"}, h.Failed)
			assert.Contains(t, h.Checks["lock_engine"], "lock directory takes no new lock file")
			assert.Contains(t, h.Checks["lock_engine"], dir, "names the directory")
			assert.Contains(t, h.Checks["lock_engine"], tt.want)

			undo()
			require.Eventually(t, func() bool { code, _ := w.health(t, "/healthz"); return code == http.StatusOK },
				10*time.Second, 20*time.Millisecond, "healthy again once the directory takes new files")
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			for _, e := range entries {
				assert.NotContains(t, e.Name(), "probe", "the probe files are removed")
			}
			w.stop(t)
		})
	}
}
