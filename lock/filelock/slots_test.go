package filelock_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func slotsPath(dir, key string) string {
	return strings.TrimSuffix(lockPath(dir, key), ".lock") + ".slots"
}

func TestCorruptSlotsFileHealsAfterTheGrace(t *testing.T) {
	// A slots file that is not one (half written by a crash, "null", a
	// JSON value of another shape) holds its key for the corrupt-file
	// grace, like a lock file, and is then started over.
	ctx := context.Background()
	for _, tt := range []struct{ name, give string }{
		{"half written", `{"key":"k","limit":3,"fence":7,"slots":[{"lock_id":"slot_`},
		{"null", "null"},
		{"an array", "[1,2,3]"},
		{"a slot that is no record", `{"key":"k","limit":3,"fence":7,"slots":[{}]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newFakeClock("boot-a")
			l := newLocker(t, dir, filelock.WithClock(clk), filelock.WithCorruptGrace(time.Second))
			first, err := l.ObtainLimit(ctx, "k", 3, time.Second)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(slotsPath(dir, "k"), []byte(tt.give), 0o600))

			_, err = l.ObtainLimit(ctx, "k", 3, time.Second)
			var held *lock.HeldError
			require.ErrorAs(t, err, &held, "a corrupt slots file may be mid-write: held for the grace")
			assert.Contains(t, held.Holder, "unreadable")
			assert.LessOrEqual(t, held.TTL, time.Second)

			clk.advance(2 * time.Second)
			lease, err := l.ObtainLimit(ctx, "k", 3, time.Second)
			require.NoError(t, err, "a corrupt slots file past its grace is started over")
			assert.Greater(t, lease.Fence, first.Fence)
			slots, err := l.InspectSlots(ctx, "k")
			require.NoError(t, err)
			require.Len(t, slots, 1)
			assert.Equal(t, lease.Token, slots[0].Token)
		})
	}
}

func TestSlotsAllocateByTheFile(t *testing.T) {
	// A slot operation reads the slots file into a buffer the size of the
	// file, not one of the 1 MiB it may reach.
	ctx := context.Background()
	l := newLocker(t, t.TempDir())
	_, err := l.ObtainLimit(ctx, "k", 3, time.Minute)
	require.NoError(t, err)
	res := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.InspectSlots(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	assert.Less(t, res.AllocedBytesPerOp(), int64(64<<10))
}

func TestSlotsFileLeftAloneByScanWhileEmpty(t *testing.T) {
	// An empty slots file is one being created: neither a record nor a
	// stray.
	ctx := context.Background()
	dir := t.TempDir()
	l := newLocker(t, dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(slotsPath(dir, "k"))), nil, 0o600))
	stats, err := lock.NewManager(l).GetStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, lock.Stats{}, stats)
}

func TestPlainLocksAndSlotsNeverOverlap(t *testing.T) {
	// Goroutines with Lockers of their own take one key, some as a plain
	// lock, some as one of two slots, and hold it a moment: a plain holder
	// is never inside with anyone, slot holders never more than two.
	ctx := context.Background()
	dir := t.TempDir()
	var mu sync.Mutex
	plain, slotted, entries := 0, 0, 0
	var wg sync.WaitGroup
	for g := range 6 {
		l := newLocker(t, dir)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 150 {
				var lease lock.Lease
				var err error
				if g%2 == 0 {
					lease, err = l.Obtain(ctx, "mixed", time.Minute)
				} else {
					lease, err = l.ObtainLimit(ctx, "mixed", 2, time.Minute)
				}
				if err != nil {
					assert.ErrorIs(t, err, lock.ErrNotObtained)
					continue
				}
				mu.Lock()
				if g%2 == 0 {
					plain++
				} else {
					slotted++
				}
				entries++
				p, s := plain, slotted
				mu.Unlock()
				assert.True(t, (p == 1 && s == 0) || (p == 0 && s <= 2), "plain %d and slots %d inside at once", p, s)
				time.Sleep(50 * time.Microsecond)
				mu.Lock()
				if g%2 == 0 {
					plain--
				} else {
					slotted--
				}
				mu.Unlock()
				assert.NoError(t, l.Release(ctx, lease))
			}
		}()
	}
	wg.Wait()
	assert.Positive(t, entries)
}
