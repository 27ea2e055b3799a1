package filelock_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/locktest"
)

const (
	envDir = "JOBLOCK_FILELOCK_DIR"
	// envFlock names a file for a child to hold under flock until killed.
	envFlock = "JOBLOCK_FILELOCK_FLOCK"
	// envScan names a directory for a child to scan and clean up, then
	// report what it saw as JSON.
	envScan = "JOBLOCK_FILELOCK_SCAN"
)

// runChild serves the cross-process tests' child processes. It returns
// true when this process was one and is done.
func runChild() bool {
	locktest.ChildMain(func() (lock.Locker, error) { return filelock.New(os.Getenv(envDir)) })
	if path := os.Getenv(envFlock); path != "" {
		holdFlock(path)
		return true
	}
	if dir := os.Getenv(envScan); dir != "" {
		scanChild(dir)
		return true
	}
	return runTimeNSChild()
}

// scanReport is what scanChild saw.
type scanReport struct {
	Stats   lock.Stats `json:"stats"`
	Cleaned int        `json:"cleaned"`
	Err     string     `json:"err"`
}

func scanChild(dir string) {
	var r scanReport
	err := func() error {
		l, err := filelock.New(dir)
		if err != nil {
			return err
		}
		defer l.Close()
		ctx := context.Background()
		if r.Cleaned, err = l.Cleanup(ctx); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
		if r.Stats, err = lock.NewManager(l).GetStats(ctx); err != nil {
			return fmt.Errorf("stats: %w", err)
		}
		return nil
	}()
	if err != nil {
		r.Err = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}
