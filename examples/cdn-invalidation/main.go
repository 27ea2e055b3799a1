// Command cdn-invalidation: three processes notice the same changed image;
// one purges and warms the CDN, the others leave it to that one.
package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
)

func main() {
	dir, _ := os.MkdirTemp("", "joblock-cdn")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()
	m := lock.NewManager(locker)

	invalidate := func(url string) string {
		sum := md5.Sum([]byte(url))
		key := "cdn-invalidate-" + hex.EncodeToString(sum[:])
		// Do renews the lock (a 15s lease) while the purge runs, releases it
		// after, and stops a purge that hangs for more than a minute.
		err := m.Do(context.Background(), key, func(ctx context.Context) error {
			time.Sleep(200 * time.Millisecond) // cdn.Purge(url); cdn.Warmup(url)
			return nil
		}, lock.WithMaxRunTime(time.Minute))
		switch {
		case errors.Is(err, lock.ErrNotObtained):
			return "left to another process"
		case err != nil:
			log.Fatal(err)
		}
		return "purged and warmed"
	}

	var wg sync.WaitGroup
	results := make([]string, 3)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = invalidate("https://cdn.example.com/img/42.png") }()
	}
	wg.Wait()
	purged := 0
	for _, r := range results {
		if r == "purged and warmed" {
			purged++
		}
	}
	fmt.Printf("CDN purged %d time(s) for 3 notifications\n", purged)
}
