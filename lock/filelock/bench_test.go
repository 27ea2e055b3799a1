package filelock_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
)

// Run with: go test -run '^$' -bench . -benchmem ./lock/filelock

const manyKeys = 10_000

func benchLocker(b *testing.B, dir string) *filelock.Locker {
	b.Helper()
	l, err := filelock.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l
}

func pair(b *testing.B, l lock.Locker, key string) {
	ctx := context.Background()
	lease, err := l.Obtain(ctx, key, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Release(ctx, lease); err != nil {
		b.Fatal(err)
	}
}

func keyNames(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// BenchmarkPairHotKey: acquire+release of one key, over and over.
func BenchmarkPairHotKey(b *testing.B) {
	l := benchLocker(b, b.TempDir())
	for b.Loop() {
		pair(b, l, "hot")
	}
}

// BenchmarkPair100Keys: acquire+release cycling over 100 reused keys.
func BenchmarkPair100Keys(b *testing.B) {
	l := benchLocker(b, b.TempDir())
	keys := keyNames("reused-", 100)
	i := 0
	for b.Loop() {
		pair(b, l, keys[i%len(keys)])
		i++
	}
}

// BenchmarkPair10kNewKeys: one op is acquire+release of 10,000 keys never
// used before, the spec's "10,000 acquire+release operations".
func BenchmarkPair10kNewKeys(b *testing.B) {
	l := benchLocker(b, b.TempDir())
	round := 0
	for b.Loop() {
		for _, k := range keyNames(fmt.Sprintf("new-%d-", round), manyKeys) {
			pair(b, l, k)
		}
		round++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*manyKeys), "ns/pair")
}

// BenchmarkAcquire10k: one op acquires 10,000 free keys.
func BenchmarkAcquire10k(b *testing.B) {
	ctx := context.Background()
	keys := keyNames("k-", manyKeys)
	for b.Loop() {
		b.StopTimer()
		l := benchLocker(b, b.TempDir())
		b.StartTimer()
		for _, k := range keys {
			if _, err := l.Obtain(ctx, k, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRelease10k: one op releases 10,000 held keys.
func BenchmarkRelease10k(b *testing.B) {
	ctx := context.Background()
	keys := keyNames("k-", manyKeys)
	l := benchLocker(b, b.TempDir())
	leases := make([]lock.Lease, len(keys))
	for b.Loop() {
		b.StopTimer()
		for i, k := range keys {
			var err error
			if leases[i], err = l.Obtain(ctx, k, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for _, lease := range leases {
			if err := l.Release(ctx, lease); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCleanup10kExpired: one op removes 10,000 expired records.
func BenchmarkCleanup10kExpired(b *testing.B) {
	ctx := context.Background()
	keys := keyNames("k-", manyKeys)
	l := benchLocker(b, b.TempDir())
	for b.Loop() {
		b.StopTimer()
		for _, k := range keys {
			if _, err := l.Obtain(ctx, k, time.Millisecond); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(2 * time.Millisecond)
		b.StartTimer()
		n, err := l.Cleanup(ctx)
		if err != nil || n != manyKeys {
			b.Fatalf("cleanup removed %d of %d: %v", n, manyKeys, err)
		}
	}
}

// BenchmarkStats10k: one op is GetStats over 10,000 records.
func BenchmarkStats10k(b *testing.B) {
	ctx := context.Background()
	l := benchLocker(b, b.TempDir())
	m := lock.NewManager(l)
	for _, k := range keyNames("k-", manyKeys) {
		if _, err := l.Obtain(ctx, k, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		s, err := m.GetStats(ctx)
		if err != nil || s.ActiveLocks != manyKeys {
			b.Fatalf("stats %+v: %v", s, err)
		}
	}
}

// BenchmarkChurn: ten successive rounds on one directory, each acquiring
// and releasing 10,000 new keys and then removing their files, to show the
// cost per pair does not climb as the filesystem churns.
func BenchmarkChurn(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	l := benchLocker(b, dir)
	for round := 1; round <= 10; round++ {
		b.Run(fmt.Sprintf("round-%02d", round), func(b *testing.B) {
			n := 0
			for b.Loop() {
				for _, k := range keyNames(fmt.Sprintf("churn-%d-%d-", round, n), manyKeys) {
					pair(b, l, k)
				}
				n++
				b.StopTimer()
				if _, err := l.Cleanup(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*manyKeys), "ns/pair")
		})
	}
}
