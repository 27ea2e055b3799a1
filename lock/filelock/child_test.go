package filelock_test

import (
	"os"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/locktest"
)

const envDir = "JOBLOCK_FILELOCK_DIR"

// runChild serves the cross-process tests' child processes. It returns
// true when this process was one and is done.
func runChild() bool {
	locktest.ChildMain(func() (lock.Locker, error) { return filelock.New(os.Getenv(envDir)) })
	return runTimeNSChild()
}
