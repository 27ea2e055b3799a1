// Command debounced-reindex: a document is edited twenty times in quick
// succession, and every edit asks for the search index to be updated. With
// a unique rule that debounces, the queue holds one reindex task per
// document at a time, each edit replaces it and pushes it back, and the
// index is updated once, with the last version, after the edits stop.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/middleware"
	"github.com/redis/go-redis/v9"
)

func main() {
	// An in-process Redis for asynq; use your own in real life.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	dir, _ := os.MkdirTemp("", "joblock-reindex")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir) // on many hosts: redislock.New(rdb)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	// One declaration for the enqueuers and the workers.
	rule := middleware.WithRule("search:reindex", middleware.Rule{
		Template:    "reindex-{{.doc}}",
		Unique:      middleware.UniqueUntilExecuting, // one waiting reindex per document
		OnConflict:  middleware.Debounce,             // a newer edit replaces it ...
		DebounceFor: 300 * time.Millisecond,          // ... and it waits for the edits to stop
	})
	client, err := middleware.NewClient(rdb, locker, rule)
	if err != nil {
		log.Fatal(err)
	}
	mw, err := middleware.New(locker, rule)
	if err != nil {
		log.Fatal(err)
	}

	var reindexed atomic.Int32
	var version atomic.Int32
	mux := asynq.NewServeMux()
	mux.Use(mw)
	mux.HandleFunc("search:reindex", func(ctx context.Context, t *asynq.Task) error {
		var p struct{ Doc, Version int }
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return err
		}
		reindexed.Add(1)
		version.Store(int32(p.Version))
		return nil
	})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 4, LogLevel: asynq.FatalLevel,
		DelayedTaskCheckInterval: 50 * time.Millisecond})
	if err := srv.Start(mux); err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()

	const edits = 20
	for v := 1; v <= edits; v++ { // the user types
		payload, _ := json.Marshal(map[string]int{"doc": 7, "version": v})
		if _, err := client.Enqueue(asynq.NewTask("search:reindex", payload)); err != nil {
			log.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for reindexed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // would a second reindex come?
	fmt.Printf("%d edits, %d reindex(es), of version %d\n", edits, reindexed.Load(), version.Load())
}
