package redislock_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/redislock"
	"github.com/redis/go-redis/v9"
)

// Needs a Redis, so it is compiled but not run.
func ExampleNew() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	// Or redis.NewClusterClient(...), redis.NewFailoverClient(...) for Sentinel.
	locker := redislock.New(client, redislock.WithPrefix("myapp:"))

	ctx := context.Background()
	lease, err := locker.Obtain(ctx, "nightly-export", 10*time.Minute)
	if errors.Is(err, lock.ErrNotObtained) {
		return // another host runs it
	}
	if err != nil {
		log.Fatal(err) // Redis down is an error, never "already locked"
	}
	defer locker.Release(ctx, lease)
}
