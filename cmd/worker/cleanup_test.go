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
	queues := map[string]int{"cleanup-test": 1}
	mux := asynq.NewServeMux()
	mux.HandleFunc("export:user", func(context.Context, *asynq.Task) error {
		dup := &middleware.DuplicateError{TaskType: "export:user", Key: "export-user-1", Holder: "lock_x", TTL: time.Minute}
		return fmt.Errorf("%w: %w", dup, asynq.SkipRetry)
	})
	mux.HandleFunc("other", func(context.Context, *asynq.Task) error {
		return fmt.Errorf("%w: %w", errors.New("a real failure"), asynq.SkipRetry)
	})
	server := asynq.NewServer(opt, asynq.Config{Queues: queues, LogLevel: asynq.FatalLevel})
	require.NoError(t, server.Start(mux))
	client := asynq.NewClient(opt)
	defer client.Close()
	for _, typ := range []string{"export:user", "other"} {
		_, err := client.Enqueue(asynq.NewTask(typ, nil), asynq.Queue("cleanup-test"))
		require.NoError(t, err)
	}
	in := asynq.NewInspector(opt)
	defer in.Close()
	require.Eventually(t, func() bool {
		tasks, err := in.ListArchivedTasks("cleanup-test")
		return err == nil && len(tasks) == 2
	}, 20*time.Second, 50*time.Millisecond)
	server.Shutdown()

	n, err := deleteArchivedDuplicates(in, queues)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	left, err := in.ListArchivedTasks("cleanup-test")
	require.NoError(t, err)
	require.Len(t, left, 1)
	assert.Equal(t, "other", left[0].Type, "real failures are kept")
}
