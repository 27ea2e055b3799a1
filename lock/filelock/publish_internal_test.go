//go:build linux || darwin

package filelock

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEveryWayToPublish runs racing first obtains with each way publish
// may have to use: each round one winner, the others naming it, and no
// temporary file left.
func TestEveryWayToPublish(t *testing.T) {
	for _, how := range []int32{viaTmpfile, viaProcLink, viaTempName} {
		t.Run(fmt.Sprint(how), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			var ls []*Locker
			for range 3 {
				l, err := New(dir)
				require.NoError(t, err)
				t.Cleanup(func() { _ = l.Close() })
				l.publishVia.Store(how)
				ls = append(ls, l)
			}
			for r := range 50 {
				key := fmt.Sprintf("k%d", r)
				errs := make([]error, len(ls))
				tokens := make([]string, len(ls))
				var wg sync.WaitGroup
				for i, l := range ls {
					wg.Add(1)
					go func() {
						defer wg.Done()
						lease, err := l.Obtain(ctx, key, time.Minute)
						tokens[i], errs[i] = lease.Token, err
					}()
				}
				wg.Wait()
				var winner string
				for i, err := range errs {
					if err == nil {
						require.Empty(t, winner)
						winner = tokens[i]
					}
				}
				for _, err := range errs {
					if err != nil {
						var held *lock.HeldError
						require.ErrorAs(t, err, &held)
						require.Equal(t, winner, held.Holder)
					}
				}
			}
			if how != viaTempName {
				assert.Equal(t, how, ls[0].publishVia.Load(), "this host supports the way asked for")
			}
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			for _, e := range entries {
				assert.False(t, strings.HasPrefix(e.Name(), tempPrefix), "left behind: %s", e.Name())
			}
		})
	}
}

func TestCleanupRemovesStaleTemporaryFiles(t *testing.T) {
	// A process that died between creating a temporary file and renaming
	// it leaves the file: Cleanup removes it once it is older than the
	// corrupt-file grace, and leaves a fresh one (being published).
	ctx := context.Background()
	dir := t.TempDir()
	l, err := New(dir, WithCorruptGrace(time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	stale := filepath.Join(dir, tempPrefix+"stale")
	require.NoError(t, os.WriteFile(stale, []byte("{}"), 0o600))
	time.Sleep(20 * time.Millisecond)
	n, err := l.Cleanup(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "a temporary file is no record")
	assert.NoFileExists(t, stale)

	l2, err := New(dir, WithCorruptGrace(time.Hour))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l2.Close() })
	fresh := filepath.Join(dir, tempPrefix+"fresh")
	require.NoError(t, os.WriteFile(fresh, []byte("{}"), 0o600))
	_, err = l2.Cleanup(ctx)
	require.NoError(t, err)
	assert.FileExists(t, fresh)
}
