// Command job-dedup: job 7 is delivered to three workers. The lock makes
// them take turns (acquireWithWait), and the job's "complete" mark makes the
// later ones find nothing left to do.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
)

func main() {
	dir, _ := os.MkdirTemp("", "joblock-jobs")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	var mu sync.Mutex
	complete := map[int]bool{} // markJobComplete / isJobComplete: a database in real life
	processed := 0

	processJob := func(jobID int) {
		m := lock.NewManager(locker) // one per worker, like a LockManager per PHP process
		key := fmt.Sprintf("job-%d", jobID)
		// acquireWithWait($lockKey, 300, 5)
		if _, err := m.AcquireWithWait(context.Background(), key, 300*time.Second, 5*time.Second, 50*time.Millisecond); err != nil {
			return // already being processed past the wait, or a failure
		}
		defer m.Release(context.Background(), key)
		mu.Lock()
		done := complete[jobID]
		mu.Unlock()
		if done {
			return
		}
		time.Sleep(100 * time.Millisecond) // fetchJob(); processJobData()
		mu.Lock()
		complete[jobID] = true
		processed++
		mu.Unlock()
	}

	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); processJob(7) }()
	}
	wg.Wait()
	fmt.Printf("job 7 delivered 3 times, processed %d time(s)\n", processed)
}
