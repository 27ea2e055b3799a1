package filelock_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFencingTokensNeverWrap(t *testing.T) {
	ctx := context.Background()
	expired := func(fence uint64) string {
		return fmt.Sprintf(`{"lock_id":"lock_forged","key":"k","expires_at":%d,"acquired_at":1,"pid":1,"fence":%d}`,
			time.Now().Add(-time.Minute).Unix(), fence)
	}
	tests := []struct {
		name      string
		lockFile  string // "" for none
		floor     string // "" to leave the floor alone
		wantFence uint64 // 0: refused
		wantFrom  string // the file the refusal names
	}{
		{"forged lock file at the largest token", expired(math.MaxUint64), "", 0, ".lock"},
		{"forged floor at the largest token", "", "18446744073709551615\n", 0, ".fence"},
		{"one below the largest still works", expired(math.MaxUint64 - 1), "", math.MaxUint64, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := newLocker(t, dir)
			path := lockPath(dir, "k")
			if tt.lockFile != "" {
				require.NoError(t, os.WriteFile(path, []byte(tt.lockFile), 0o600))
			}
			if tt.floor != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, ".fence"), []byte(tt.floor), 0o600))
			}
			before, _ := os.ReadFile(path)

			lease, err := l.Obtain(ctx, "k", time.Minute)
			if tt.wantFence != 0 {
				require.NoError(t, err)
				assert.Equal(t, tt.wantFence, lease.Fence)
				require.NoError(t, l.Release(ctx, lease))
				_, err = l.Obtain(ctx, "k", time.Minute)
				require.ErrorIs(t, err, filelock.ErrFenceExhausted, "the token after the largest must be refused, not wrapped to 0")
				return
			}
			require.ErrorIs(t, err, filelock.ErrFenceExhausted)
			assert.NotErrorIs(t, err, lock.ErrNotObtained)
			assert.Contains(t, err.Error(), "18446744073709551615")
			assert.Contains(t, err.Error(), tt.wantFrom)
			after, _ := os.ReadFile(path)
			assert.Equal(t, string(before), string(after), "a refused obtain writes nothing")
		})
	}
}
