package lock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
)

func ExampleManager_Process() {
	dir, _ := os.MkdirTemp("", "joblock-example")
	defer os.RemoveAll(dir)
	engine, _ := filelock.New(dir)
	defer engine.Close()
	ctx := context.Background()
	first, second := lock.NewManager(engine), lock.NewManager(engine) // two processes

	var req lock.Request
	_ = json.Unmarshal([]byte(`{"key":"abc123","action":"acquire","timeout":30}`), &req)
	res := first.Process(ctx, req)
	fmt.Println("first locked:", res.Locked)

	res = second.Process(ctx, req)
	out, _ := json.Marshal(lock.Result{Locked: res.Locked, AlreadyLocked: res.AlreadyLocked})
	fmt.Println("second:", string(out))

	res = first.Process(ctx, lock.Request{Key: "abc123", Action: "release"})
	fmt.Println("released:", *res.Released)
	// Output:
	// first locked: true
	// second: {"locked":false,"lock_id":null,"expires_at":null,"already_locked":true}
	// released: true
}

func ExampleManager_Do() {
	dir, _ := os.MkdirTemp("", "joblock-example")
	defer os.RemoveAll(dir)
	engine, _ := filelock.New(dir)
	defer engine.Close()
	m := lock.NewManager(engine)

	// The lock lasts 15s unless renewed, and is renewed every 5s for as
	// long as the work runs; the work may run at most an hour.
	err := m.Do(context.Background(), "cache:product-123", func(ctx context.Context) error {
		lease, _ := lock.LeaseFromContext(ctx)
		_ = lease.Fence // hand it to the store you write, so it can refuse a stale writer
		// ctx is cancelled, with cause lock.ErrLost, if the lock cannot be renewed.
		fmt.Println("regenerating under", lease.Key)
		return nil
	}, lock.WithLease(15*time.Second), lock.WithMaxRunTime(time.Hour))
	fmt.Println("err:", err)
	// Output:
	// regenerating under cache:product-123
	// err: <nil>
}

func ExampleObtainWait() {
	dir, _ := os.MkdirTemp("", "joblock-example")
	defer os.RemoveAll(dir)
	engine, _ := filelock.New(dir)
	defer engine.Close()
	ctx := context.Background()

	_, _ = engine.Obtain(ctx, "api-rate-limit", 150*time.Millisecond) // someone took the slot
	start := time.Now()
	_, err := lock.ObtainWait(ctx, engine, "api-rate-limit", time.Second,
		lock.Wait{MaxWait: 2 * time.Second, Interval: 20 * time.Millisecond})
	fmt.Println("got the slot:", err == nil, "after waiting:", time.Since(start) >= 100*time.Millisecond)

	_, err = lock.ObtainWait(ctx, engine, "api-rate-limit", time.Second, lock.Wait{MaxWait: 50 * time.Millisecond})
	var held *lock.HeldError
	fmt.Println("timed out:", errors.As(err, &held))
	// Output:
	// got the slot: true after waiting: true
	// timed out: true
}
