package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/middleware"
)

func ExampleNew() {
	dir, _ := os.MkdirTemp("", "joblock-example")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir)
	if err != nil {
		panic(err)
	}
	defer locker.Close()

	mw, err := middleware.New(locker,
		middleware.WithRule("export:user", middleware.Rule{
			Template: "export-user-{{.user_id}}",
			Policy:   middleware.Skip, // a second export of the same user is dropped
		}))
	if err != nil {
		panic(err)
	}
	mux := asynq.NewServeMux()
	mux.Use(mw)
	mux.HandleFunc("export:user", func(ctx context.Context, t *asynq.Task) error {
		lease, _ := lock.LeaseFromContext(ctx)
		fmt.Println("exporting under", lease.Key)
		return nil
	})

	// An asynq server calls the mux like this for every task it takes.
	err = mux.ProcessTask(context.Background(), asynq.NewTask("export:user", []byte(`{"user_id": 42}`)))
	fmt.Println("err:", err)

	err = mux.ProcessTask(context.Background(), asynq.NewTask("export:user", []byte(`{"id": 42}`)))
	fmt.Println("retried:", !errors.Is(err, asynq.SkipRetry))
	// Output:
	// exporting under asynq:export-user-42
	// err: <nil>
	// retried: false
}

func ExampleIsFailure() {
	// Duplicates sent back by the Retry policy do not use up retries and
	// come back when the holder's lock is due to end.
	cfg := asynq.Config{
		IsFailure:      middleware.IsFailure(nil),
		RetryDelayFunc: middleware.RetryDelayFunc(nil),
	}
	fmt.Println(cfg.IsFailure(&middleware.DuplicateError{}), cfg.IsFailure(errors.New("boom")))
	// Output: false true
}
