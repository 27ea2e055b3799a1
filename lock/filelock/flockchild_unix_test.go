//go:build linux || darwin

package filelock_test

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

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
