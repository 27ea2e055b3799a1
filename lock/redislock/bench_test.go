package redislock_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock/redislock"
)

// BenchmarkObtainRelease is one Obtain and one Release per op, each
// goroutine on a key of its own, without a restart grace and with one (on
// a node up for longer than the grace, as in production): the grace must
// cost nothing on the way to a lock.
func BenchmarkObtainRelease(b *testing.B) {
	srv := redistest.Start(b)
	const grace = time.Second
	waitUp(b, grace, srv.Addr)
	for _, bc := range []struct {
		name string
		opt  redislock.Option
	}{
		{"no-grace", redislock.WithRestartGrace(0)},
		{"grace", redislock.WithRestartGrace(grace)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := redislock.New(srv.Client(b), redislock.WithPrefix(srv.Prefix+bc.name+":"), bc.opt)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				key := rand.Text()
				for pb.Next() {
					lease, err := l.Obtain(ctx, key, 10*time.Second)
					if err != nil {
						b.Error(err)
						return
					}
					if err := l.Release(ctx, lease); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
