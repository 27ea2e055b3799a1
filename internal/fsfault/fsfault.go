//go:build linux

// Package fsfault makes a directory fail the way disks fail, for tests:
// it refuses new files, or its filesystem is full. Where this process may
// not arrange that, the test is skipped with the reason.
package fsfault

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// DenyNewFiles makes dir refuse new entries while the files in it stay
// writable: by mode bits for an ordinary user, and with the immutable
// attribute (chattr +i) for root, whom mode bits do not stop. undo
// restores it; t's cleanup does too.
func DenyNewFiles(t testing.TB, dir string) (undo func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		return once(t, func() { _ = os.Chmod(dir, fi.Mode().Perm()) })
	}
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("running as root and chattr +i is unavailable here (%v: %s)", err, out)
	}
	return once(t, func() { _ = exec.Command("chattr", "-i", dir).Run() })
}

// once returns f made idempotent, and has t's cleanup call it.
func once(t testing.TB, f func()) func() {
	var o sync.Once
	undo := func() { o.Do(f) }
	t.Cleanup(undo)
	return undo
}

// Tmpfs mounts a tmpfs with opts (say "size=64k") at a new directory and
// returns it, unmounted when t ends. Its root is private (mode 0700), as a
// lock directory must be, unless opts say otherwise.
func Tmpfs(t testing.TB, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if !strings.Contains(opts, "mode=") {
		opts += ",mode=0700"
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, strings.TrimPrefix(opts, ",")); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// Fill writes a file in dir until its filesystem is full and returns the
// file's path: removing it frees the space.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return filepath.Clean(f.Name())
		}
	}
}
