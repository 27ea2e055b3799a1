package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDeleteArchivedDuplicates(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "asynq's Inspector")
	opt := asynq.RedisClientOpt{Addr: srv.Addr}
	rdb := srv.Client(t)
	ctx := context.Background()
	queues := map[string]int{"cleanup-test": 1}
	mux := asynq.NewServeMux()
	mux.HandleFunc("export:user", func(_ context.Context, task *asynq.Task) error {
		key := `asynq:export-user-"` + string(task.Payload()) + `"`
		dup := &middleware.DuplicateError{TaskType: "export:user", Key: key, Holder: "lock_x", TTL: time.Minute}
		return fmt.Errorf("%w: %w", dup, asynq.SkipRetry)
	})
	mux.HandleFunc("other", func(context.Context, *asynq.Task) error {
		return fmt.Errorf("%w: %w", errors.New("a real failure"), asynq.SkipRetry)
	})
	server := asynq.NewServer(opt, asynq.Config{Queues: queues, LogLevel: asynq.FatalLevel})
	require.NoError(t, server.Start(mux))
	client := asynq.NewClient(opt)
	defer client.Close()
	for _, task := range []*asynq.Task{asynq.NewTask("export:user", []byte("1")), asynq.NewTask("export:user", []byte("2")),
		asynq.NewTask("export:user", []byte("3")), asynq.NewTask("other", nil)} {
		_, err := client.Enqueue(task, asynq.Queue("cleanup-test"))
		require.NoError(t, err)
	}
	in := asynq.NewInspector(opt)
	defer in.Close()
	require.Eventually(t, func() bool {
		tasks, err := in.ListArchivedTasks("cleanup-test")
		return err == nil && len(tasks) == 4
	}, 20*time.Second, 50*time.Millisecond)
	server.Shutdown()
	// The export of user 1 completed after its duplicate was archived; the
	// one of user 2 completed before (so not the run the duplicate met);
	// user 3's never did.
	require.NoError(t, rdb.Set(ctx, completedKey(`asynq:export-user-"1"`), time.Now().UnixMilli(), time.Hour).Err())
	require.NoError(t, rdb.Set(ctx, completedKey(`asynq:export-user-"2"`), time.Now().Add(-time.Hour).UnixMilli(), time.Hour).Err())

	n, err := deleteArchivedDuplicates(ctx, in, rdb, queues)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	left, err := in.ListArchivedTasks("cleanup-test")
	require.NoError(t, err)
	var kept []string
	for _, ti := range left {
		kept = append(kept, ti.Type+" "+string(ti.Payload))
	}
	assert.ElementsMatch(t, []string{"export:user 2", "export:user 3", "other "}, kept,
		"real failures, and duplicates of work not completed since, are kept")
}
