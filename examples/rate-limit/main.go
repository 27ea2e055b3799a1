// Command rate-limit: at most one call to a rate-limited API per second
// across every process. A caller waits up to 2s for the slot; the slot is
// not released after the call but expires after its 1s TTL, which is what
// enforces the rate.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
)

func main() {
	dir, _ := os.MkdirTemp("", "joblock-api")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	start := time.Now()
	call := func(endpoint string) error {
		// acquireWithWait('api-rate-limit', 1, 2, 50)
		_, err := lock.ObtainWait(context.Background(), locker, "api-rate-limit", time.Second,
			lock.Wait{MaxWait: 2 * time.Second, Interval: 50 * time.Millisecond})
		if errors.Is(err, lock.ErrNotObtained) {
			return errors.New("rate limit exceeded")
		}
		if err != nil {
			return err
		}
		_ = endpoint // httpGet(endpoint)
		return nil
	}

	var mu sync.Mutex
	var calledAt []time.Duration
	limited := 0
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := call(fmt.Sprintf("/v1/rates/%d", i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				limited++
				return
			}
			calledAt = append(calledAt, time.Since(start))
		}()
	}
	wg.Wait()
	slices.Sort(calledAt)
	gap := time.Duration(0)
	for i := 1; i < len(calledAt); i++ {
		if d := calledAt[i] - calledAt[i-1]; gap == 0 || d < gap {
			gap = d
		}
	}
	fmt.Printf("%d calls made, closest two %d ms apart; %d refused: rate limit exceeded\n", len(calledAt), gap.Milliseconds(), limited)
}
