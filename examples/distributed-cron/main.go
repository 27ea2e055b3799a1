// Command distributed-cron: two servers schedule the same job every second;
// each tick runs on one of them only. (Daily: Spec "@daily".)
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
	"github.com/joblock/joblock/scheduler"
)

func main() {
	dir, _ := os.MkdirTemp("", "joblock-cron")
	defer os.RemoveAll(dir)

	var mu sync.Mutex
	runs := map[string][]string{} // tick key -> servers that ran it
	var schedulers []*scheduler.Scheduler
	for _, server := range []string{"web-1", "web-2"} {
		locker, err := filelock.New(dir) // on many hosts: a shared Redis
		if err != nil {
			log.Fatal(err)
		}
		defer locker.Close()
		s := scheduler.New(locker)
		_, err = s.Add(scheduler.Job{
			Name: "daily-cleanup",
			Spec: "@every 1s",
			Run: func(ctx context.Context) error {
				lease, _ := lock.LeaseFromContext(ctx)
				mu.Lock()
				runs[lease.Key] = append(runs[lease.Key], server)
				mu.Unlock()
				return nil // cleanupOldFiles(); sendDailyReport()
			},
		})
		if err != nil {
			log.Fatal(err)
		}
		s.Start()
		schedulers = append(schedulers, s)
	}
	time.Sleep(3500 * time.Millisecond)
	for _, s := range schedulers {
		_ = s.Stop(context.Background())
	}
	twice := 0
	for _, servers := range runs {
		if len(servers) > 1 {
			twice++
		}
	}
	fmt.Printf("%d ticks, %d run on both servers\n", len(runs), twice)
}
