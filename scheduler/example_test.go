package scheduler_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/scheduler"
	"github.com/robfig/cron/v3"
)

// The spec's "daily cleanup on one server": two servers fire the same 03:00
// tick, only one runs it.
func ExampleOncePerTick() {
	dir, _ := os.MkdirTemp("", "joblock-example")
	defer os.RemoveAll(dir)
	daily, _ := cron.ParseStandard("0 3 * * *")
	// Both servers' crons fire at 03:00, a few hundred ms apart.
	fired := time.Date(2026, 11, 25, 3, 0, 0, 200e6, time.UTC)

	for i, server := range []string{"web-1", "web-2"} {
		locker, _ := filelock.New(dir) // on many hosts: redislock.New(redisClient)
		clock := func() time.Time { return fired.Add(time.Duration(i) * 300 * time.Millisecond) }
		cleanup := scheduler.OncePerTick(locker, "daily-cleanup", daily, scheduler.WithClock(clock))(
			scheduler.Func(func(ctx context.Context) error {
				fmt.Println("daily cleanup ran on", server)
				return nil
			}))
		cleanup.Run() // what this server's cron does at 03:00
		locker.Close()
	}
	// Output: daily cleanup ran on web-1
}

func ExampleScheduler() {
	dir, _ := os.MkdirTemp("", "joblock-example")
	defer os.RemoveAll(dir)
	locker, _ := filelock.New(dir)
	defer locker.Close()

	s := scheduler.New(locker, scheduler.WithLocation(time.UTC))
	_, err := s.Add(scheduler.Job{
		Name: "daily-cleanup",
		Spec: "0 3 * * *",
		Run: func(ctx context.Context) error {
			// cleanupOldFiles(ctx); sendDailyReport(ctx)
			return nil
		},
	})
	fmt.Println("added:", err == nil)
	_, err = s.Add(scheduler.Job{Name: "export", Spec: "every day at noon", Run: func(context.Context) error { return nil }})
	fmt.Println(err != nil)

	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fmt.Println("stopped:", s.Stop(ctx))
	// Output:
	// added: true
	// true
	// stopped: <nil>
}
