// Command cache-regeneration: five requests miss the same cache entry at
// once; one regenerates it, the others serve the stale copy instead of
// piling onto the database.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
)

func main() {
	dir, _ := os.MkdirTemp("", "joblock-cache")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir) // many hosts: redislock.New(redis.NewClient(...))
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	var regenerated, stale atomic.Int32
	var wg sync.WaitGroup
	for req := 1; req <= 5; req++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			lease, err := locker.Obtain(ctx, "cache:product-123", 30*time.Second)
			if errors.Is(err, lock.ErrNotObtained) {
				stale.Add(1) // another request is regenerating: use the stale cache
				return
			}
			if err != nil {
				log.Fatal(err) // a real failure, not "locked"
			}
			defer locker.Release(ctx, lease)
			time.Sleep(200 * time.Millisecond) // expensiveQuery(); cache.Set(...)
			regenerated.Add(1)
		}()
	}
	wg.Wait()
	fmt.Printf("regenerated %d time(s), %d request(s) served the stale cache\n", regenerated.Load(), stale.Load())
}
