package bench

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"github.com/joblock/joblock/lock/filelock"
)

func testingProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkFilePair: one op takes and frees a lock on one file. gofrs/flock
// only excludes (no TTL, no owner token, no fencing, no holder details), so
// it is the floor for a file lock.
func BenchmarkFilePair(b *testing.B) {
	b.Run("joblock-filelock", func(b *testing.B) {
		b.ReportAllocs()
		l, err := filelock.New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		ctx := context.Background()
		for b.Loop() {
			lease, err := l.Obtain(ctx, "hot", time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx, lease); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
	})
	b.Run("gofrs-flock", func(b *testing.B) {
		b.ReportAllocs()
		f := flock.New(filepath.Join(b.TempDir(), "hot.lock"))
		defer f.Close()
		for b.Loop() {
			ok, err := f.TryLock()
			if err != nil || !ok {
				b.Fatalf("trylock: %v %v", ok, err)
			}
			if err := f.Unlock(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
	})
}
