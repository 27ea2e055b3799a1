// Command tenant-import: customers upload files to import, and one big
// customer uploads ten at once. Two workers of five goroutines each could
// run all ten, leaving nothing for anyone else; with a limit of two per
// tenant, each tenant runs at most two imports at a time, across both
// workers, and every import still runs.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
)

// running counts each tenant's imports in progress, and the most at once.
type running struct {
	mu        sync.Mutex
	now, most map[string]int
	done      int
}

func (r *running) enter(tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now[tenant]++
	r.most[tenant] = max(r.most[tenant], r.now[tenant])
}

func (r *running) exit(tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now[tenant]--
	r.done++
}

func main() {
	// An in-process Redis for asynq; use your own in real life.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	dir, _ := os.MkdirTemp("", "joblock-import")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir) // on many hosts: redislock.New(rdb)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	mw, err := middleware.New(locker,
		middleware.WithRule("import:file", middleware.Rule{
			Template: "import-{{.tenant}}", // the limit is per tenant
			Limit:    2,                    // two imports of a tenant at once, across every worker
			Policy:   middleware.Retry,     // the others go back to the queue ...
		}),
		middleware.WithRedisClient(rdb)) // ... and are handed a slot the moment one frees
	if err != nil {
		log.Fatal(err)
	}

	r := &running{now: map[string]int{}, most: map[string]int{}}
	mux := asynq.NewServeMux()
	mux.Use(mw)
	mux.HandleFunc("import:file", func(ctx context.Context, t *asynq.Task) error {
		var p struct{ Tenant, File string }
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return err
		}
		r.enter(p.Tenant)
		defer r.exit(p.Tenant)
		time.Sleep(100 * time.Millisecond) // the import
		return nil
	})
	// Two workers, as two hosts would run them.
	for range 2 {
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:       5,
			IsFailure:         middleware.IsFailure(nil),      // a refused import is not a failure
			RetryDelayFunc:    middleware.RetryDelayFunc(nil), // nor does it come back before its time
			TaskCheckInterval: 20 * time.Millisecond,
			LogLevel:          asynq.FatalLevel,
		})
		if err := srv.Start(mux); err != nil {
			log.Fatal(err)
		}
		defer srv.Shutdown()
	}

	client := asynq.NewClientFromRedisClient(rdb)
	uploads := map[string]int{"acme": 10, "globex": 3, "initech": 2}
	total := 0
	for tenant, n := range uploads {
		for i := range n {
			payload, _ := json.Marshal(map[string]string{"tenant": tenant, "file": fmt.Sprintf("upload-%d.csv", i)})
			if _, err := client.Enqueue(asynq.NewTask("import:file", payload)); err != nil {
				log.Fatal(err)
			}
			total++
		}
	}
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		done := r.done
		r.mu.Unlock()
		if done == total {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Printf("%d of %d imports ran\n", r.done, total)
	tenants := make([]string, 0, len(uploads))
	for tenant := range uploads {
		tenants = append(tenants, tenant)
	}
	sort.Strings(tenants)
	for _, tenant := range tenants {
		fmt.Printf("%s: %d imports, at most %d at once\n", tenant, uploads[tenant], r.most[tenant])
	}
}
