// Command export-prevention: a user clicks "export" twice; the second
// request is refused while the first export runs.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
)

func main() {
	dir, _ := os.MkdirTemp("", "joblock-export")
	defer os.RemoveAll(dir)
	locker, err := filelock.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()
	m := lock.NewManager(locker)

	export := func(userID int) error {
		key := fmt.Sprintf("export-user-%d", userID)
		// The lock lasts 15s past a crash, however long the export runs; an
		// export may run for at most 10 minutes.
		err := m.Do(context.Background(), key, func(ctx context.Context) error {
			time.Sleep(300 * time.Millisecond) // fetchAllUserData(); generateExport(); emailDownloadLink()
			return nil
		}, lock.WithMaxRunTime(10*time.Minute))
		if errors.Is(err, lock.ErrNotObtained) {
			return errors.New("export already running")
		}
		return err
	}

	first := make(chan error)
	go func() { first <- export(42) }()
	time.Sleep(50 * time.Millisecond)
	fmt.Println("second export:", export(42))
	fmt.Println("first export:", <-first)
	fmt.Println("export after it finished:", export(42))
}
