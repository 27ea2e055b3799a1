package filelock_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/joblock/joblock/lock/filelock"
)

func ExampleNew() {
	dir, _ := os.MkdirTemp("", "joblock-example")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir) // an unusable directory is an error here
	if err != nil {
		panic(err)
	}
	defer locker.Close()

	lease, _ := locker.Obtain(context.Background(), "export-user-42", 10*time.Minute)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		fmt.Println(e.Name()) // md5("export-user-42") + ".lock", as the spec names it
	}
	fmt.Println(locker.Release(context.Background(), lease))
	// Output:
	// .fence
	// 4cfc1ea45e8158fac1e1e4e2e326b82e.lock
	// <nil>
}
