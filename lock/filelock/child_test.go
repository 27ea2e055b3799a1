package filelock_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/locktest"
	"golang.org/x/sys/unix"
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

// holdFlock takes an exclusive flock on path, says so on stdout, and
// holds it until the process is killed.
func holdFlock(path string) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Flock(fd, unix.LOCK_EX)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "locked")
	_ = w.Flush()
	for {
		time.Sleep(time.Hour)
	}
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
